//! `decode`: text generation with transformer language models on burn.
//!
//! This crate gathers the workspace under one name:
//! - [`core`] (`decode-core`): the [`LanguageModel`](core::LanguageModel) trait, the KV cache,
//!   errors and the generation loop;
//! - [`models`] (`decode-models`): GPT-2 on burn, checkpoint loading, the tokenizer, backends;
//! - [`samplers`] (`decode-samplers`): from logits to tokens, beam search;
//! - [`generate_text`]: the loop with a tokenizer, streaming text deltas and stop strings;
//! - [`embedded`]: the small KJV target + draft pair that ships in the repository.

pub mod embedded;
mod text;

pub use decode_core as core;
pub use decode_models as models;
pub use decode_samplers as samplers;

pub use decode_core::{Error, Flow, GenerationConfig, Result};
pub use text::{Speculation, TextDelta, generate_text};

/// The README's Rust examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
