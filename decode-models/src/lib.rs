//! GPT-2 for `decode`, on burn.
//!
//! - [`gpt2`]: the model ([`Gpt2`]), generic over the burn backend, implementing
//!   [`decode_core::LanguageModel`] with a [`KvCache`]. Two paths compute it
//!   ([`gpt2::ComputePath`]): on a CPU, the host path (plain Rust over host memory, bound by
//!   memory bandwidth; f32, f16, bf16 or q8_0 / q4_0 weights: [`gpt2::Quantization`]);
//!   elsewhere, burn tensor operations. [`Gpt2::load`] takes a HuggingFace directory or a GGUF
//!   file.
//! - [`config`]: HuggingFace `config.json` ([`Gpt2Config`]), validated.
//! - [`weights`]: GPT-2's weights in memory (f32, f16 or bf16), every tensor's shape checked.
//! - [`gguf`]: llama.cpp's GPT-2 GGUF files: metadata, config, tensor infos, tokenizer, checked.
//! - [`tokenizer`]: the GPT-2 byte-level BPE ([`Tokenizer`]) and a UTF-8-safe [`StreamDecoder`].
//! - [`backend`]: the CPU backend (burn-flex, measured fastest); ndarray, CUDA and wgpu behind
//!   features, with one-line errors where a GPU or driver is missing.
//!
//! Generating text takes decode-samplers' engine as well (or the `decode` crate, which bundles
//! the three):
//!
//! ```no_run
//! use decode_core::GenerationConfig;
//! use decode_models::{backend::{Cpu, cpu_device}, Gpt2, Tokenizer};
//! use decode_samplers::Engine;
//! # fn main() -> decode_core::Result<()> {
//! let model = Gpt2::<Cpu>::load("path/to/gpt2", &cpu_device())?;
//! let tokenizer = Tokenizer::from_dir("path/to/gpt2")?;
//! let prompt = tokenizer.encode("Hello world")?;
//! let config = GenerationConfig {
//!     max_new_tokens: Some(20),
//!     ..GenerationConfig::default()
//! };
//! let out = Engine::new(&model, &config).run(&[prompt])?;
//! println!("{}", tokenizer.decode(&out[0].sequences[0].ids)?);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod backend;
pub mod cache;
mod checkpoint;
pub mod config;
pub mod gguf;
pub mod gpt2;
pub mod tokenizer;
pub mod weights;

pub use cache::KvCache;
pub use config::{Activation, Gpt2Config};
pub use decode_core::StreamDecoder;
pub use gpt2::Gpt2;
pub use tokenizer::Tokenizer;
