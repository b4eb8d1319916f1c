//! The contracts of `decode`: what a language model is ([`LanguageModel`]), what its key/value
//! cache must do ([`Cache`]), what goes in and out of a forward pass ([`Batch`], [`Logits`]), how
//! logits become tokens ([`LogitsProcessor`], [`Selector`]), what a tokenizer offers the
//! generation engine ([`TokenText`]), the settings of a generation ([`GenerationConfig`]) and the
//! one error type ([`Error`]).
//!
//! Nothing here knows GPT-2 or burn. `decode-models` implements [`LanguageModel`] for GPT-2 on
//! burn; `decode-samplers` turns logits into tokens and runs the generation engine over any
//! [`LanguageModel`]. Speculative decoding and beam search need exactly two things from a cache:
//! roll back ([`Cache::truncate`], or [`Cache::rollback`] per row) and follow beams
//! ([`Cache::reorder`]). [`memory`] says how much memory the process may still use, for the
//! estimate every request is checked against.

#![warn(missing_docs)]

pub mod batch;
pub mod cache;
pub mod config;
pub mod error;
pub mod files;
pub mod memory;
pub mod model;
pub mod sampling;
pub mod text;

pub use batch::{Batch, Logits, argmax};
pub use cache::Cache;
pub use config::{EarlyStopping, GenerationConfig};
pub use error::{Error, Result};
pub use model::LanguageModel;
pub use sampling::{Candidates, Context, LogitsProcessor, Selector};
pub use text::{StreamDecoder, TokenText};
