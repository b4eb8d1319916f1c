//! From logits to tokens.
//!
//! - [`processors`]: temperature, top-k, top-p, min-p, typical-p, repetition / frequency /
//!   presence penalties, no-repeat-n-gram, logit bias, banned tokens, min-new-tokens — each equal to
//!   its transformers counterpart.
//! - [`select`]: greedy and seeded multinomial selectors.
//! - [`SamplerChain`]: processors in order, then a selector; built by hand or from a
//!   [`decode_core::GenerationConfig`] ([`SamplerChain::from_config`]).
//! - [`beam_search`]: transformers' beam search over any [`decode_core::LanguageModel`].
//! - [`speculative`]: lossless speculative decoding (draft model, prompt lookup, your drafter).
//! - [`probs`]: softmax helpers shared by all of them.
//!
//! A processor of your own is any [`decode_core::LogitsProcessor`], or a closure via
//! [`SamplerChain::with_fn`].

pub mod beam;
pub mod chain;
pub mod config;
pub mod probs;
pub mod processors;
pub mod select;
pub mod speculative;

pub use beam::beam_search;
pub use chain::SamplerChain;
pub use select::{Greedy, Multinomial};
