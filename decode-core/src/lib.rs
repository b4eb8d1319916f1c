//! The contracts of `decode`: what a language model is, how its key/value cache behaves, the one
//! error type, and the plain generation loop that drives them.
//!
//! Nothing here knows GPT-2. `decode-models` implements [`LanguageModel`] for GPT-2 on burn;
//! `decode-samplers` turns logits into tokens. Speculative decoding and beam search need exactly two
//! things from a cache: [`Cache::truncate`] (roll back) and [`Cache::reorder`] (follow beams).

pub mod batch;
pub mod cache;
pub mod error;
pub mod generate;
pub mod model;

pub use batch::{Batch, Logits};
pub use cache::{Cache, KvCache};
pub use error::{Error, Result};
pub use generate::{GenerationOutput, GenerationStats, Sequence, greedy};
pub use model::LanguageModel;
