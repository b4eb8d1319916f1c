//! The contracts of `decode`: what a language model is, how its key/value cache behaves, the one
//! error type, and the plain generation loop that drives them.
//!
//! Nothing here knows GPT-2. `decode-models` implements [`LanguageModel`] for GPT-2 on burn;
//! `decode-samplers` turns logits into tokens. Speculative decoding and beam search need exactly two
//! things from a cache: roll back ([`Cache::truncate`], or [`Cache::rollback`] per row) and follow
//! beams ([`Cache::reorder`]).

pub mod batch;
pub mod cache;
pub mod config;
pub mod error;
pub mod files;
pub mod generate;
pub mod model;
pub mod sampling;

pub use batch::{Batch, Logits};
pub use cache::Cache;
pub use config::{EarlyStopping, GenerationConfig};
pub use error::{Error, Result};
pub use generate::{
    Flow, GenerationOutput, GenerationStats, PositionStats, Sequence, SpeculativeStats, TokenEvent,
    generate, greedy,
};
pub use model::LanguageModel;
pub use sampling::{Context, LogitsProcessor, Sampler, Selector};
