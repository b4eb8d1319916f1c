//! Decoding: from logits to tokens, and the generation engine that drives a model with them.
//!
//! - [`engine`]: the one generation loop ([`Engine`] → [`Generation`]): plain decoding (greedy or
//!   sampling), speculative decoding and beam search over any [`decode_core::LanguageModel`],
//!   sharing one definition of a sequence in flight, its stop conditions (EOS, length, stop
//!   strings, the caller's stop) and its statistics; step by step, as an iterator, or to the end.
//! - [`processors`]: temperature, top-k, top-p, min-p, typical-p, repetition / frequency /
//!   presence penalties, no-repeat-n-gram, logit bias, banned tokens, bad words, min-new-tokens —
//!   each equal to its transformers counterpart.
//! - [`select`]: greedy and seeded multinomial selectors.
//! - [`SamplerChain`]: processors in order, then a selector; built by hand or from a
//!   [`decode_core::GenerationConfig`] ([`SamplerChain::from_config`]).
//! - [`beam`]: transformers' beam search (the engine runs it when `num_beams > 1`).
//! - [`speculative`]: lossless speculative decoding: drafters (draft model, prompt lookup, your
//!   own), the verify step, draft-length schedules.
//! - [`probs`]: softmax helpers shared by all of them.
//!
//! A processor of your own is any [`decode_core::LogitsProcessor`], or a closure via
//! [`SamplerChain::with_fn`]. Nothing here depends on burn: any model that implements
//! [`decode_core::LanguageModel`] works.

#![warn(missing_docs)]

pub mod beam;
pub mod chain;
pub mod config;
pub mod engine;
pub mod probs;
pub mod processors;
pub mod select;
pub mod speculative;

pub use chain::SamplerChain;
pub use engine::{Engine, Flow, Generation, GenerationOutput, GenerationStats, TextDelta};
pub use select::{Greedy, Multinomial};
