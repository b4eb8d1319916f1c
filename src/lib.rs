//! `decode`: text generation with transformer language models on burn.
//!
//! Start with [`Generator`]: a model, its tokenizer and its settings in one object.
//!
//! ```no_run
//! # fn main() -> decode::Result<()> {
//! let generator = decode::Generator::from_dir(decode::embedded::target_dir()?)?;
//! for delta in generator.stream("And God said")? {
//!     print!("{}", delta?.text); // each token's text, as it is generated
//! }
//! # Ok(()) }
//! ```
//!
//! The crates underneath, for those who compose their own:
//! - [`core`] (`decode-core`): the contracts: [`LanguageModel`](core::LanguageModel), the
//!   [`Cache`](core::Cache) trait, [`GenerationConfig`], errors;
//! - [`kernels`] (`decode-kernels`): the CPU kernels any model uses (tiles, q8_0/q4_0 products,
//!   norms, activations, rotary embeddings, attention over a cache);
//! - [`models`] (`decode-models`): GPT-2 on burn, its KV cache, checkpoint loading, the tokenizer,
//!   backends;
//! - [`samplers`] (`decode-samplers`): from logits to tokens, and the generation
//!   [`Engine`](samplers::Engine) (plain, speculative, beam search) over any model;
//! - [`embedded`]: the small KJV target + draft pair that ships with the repository.

#![warn(missing_docs)]

pub mod embedded;
mod generator;

pub use decode_core as core;
pub use decode_kernels as kernels;
pub use decode_models as models;
pub use decode_samplers as samplers;

pub use decode_core::{Error, GenerationConfig, Result};
pub use decode_models::gpt2::{LoadOptions, Quantization};
pub use decode_samplers::engine::{Flow, GenerationStats, StopReason, TextDelta};
pub use generator::{Completion, Generator, Output, Stream};

/// The README's Rust examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
