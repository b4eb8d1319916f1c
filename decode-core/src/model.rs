//! The language-model contract.

use crate::{Batch, Cache, Logits, Result};

/// A causal language model that scores new tokens from a key/value cache.
///
/// One call to [`LanguageModel::forward`] runs every row of a batch over its new tokens and returns
/// the next-token logits at *every* new position: a prefill uses the last one, a decode step its only
/// one, and speculative verification all γ+1 of them from a single pass.
pub trait LanguageModel {
    /// The model's key/value cache.
    type Cache: Cache;

    /// Number of token ids the model scores.
    fn vocab_size(&self) -> usize;

    /// Longest sequence (prompt plus generated tokens) the model can attend over.
    fn context_length(&self) -> usize;

    /// Token ids that end a sequence.
    fn eos_token_ids(&self) -> &[u32];

    /// An empty cache for `rows` sequences with room for `positions` positions each (the most a
    /// request will hold; the cache may still grow past them). An error, not an abort, when the
    /// memory cannot be had.
    fn new_cache(&self, rows: usize, positions: usize) -> Result<Self::Cache>;

    /// Bytes the cache holds per row and position (keys and values of every layer), for the
    /// memory estimate a request is checked against before anything is allocated: a cache made
    /// by `new_cache(rows, positions)` holds `rows × positions ×` this. 0 (the default) when
    /// unknown: such a model's requests are bounded by their rows and positions only.
    fn cache_bytes_per_position(&self) -> usize {
        0
    }

    /// Bytes a forward pass allocates per input token besides the cache and the logits (its
    /// activations), for the same estimate. 0 (the default) when unknown.
    fn pass_bytes_per_token(&self) -> usize {
        0
    }

    /// Appends `batch` to `cache` and returns logits for every new position
    /// (`batch.rows() × batch.steps() × vocab_size`).
    ///
    /// Errors (and leaves the cache as it was) when a real id is outside the vocabulary, when a row
    /// would pass [`LanguageModel::context_length`], or when the batch and cache disagree on rows.
    fn forward(&self, batch: &Batch, cache: &mut Self::Cache) -> Result<Logits>;

    /// Like [`LanguageModel::forward`], but returns only each row's last position
    /// (`rows × 1 × vocab_size`): all a prompt's prefill needs. Models override it to skip the LM
    /// head on the other positions.
    fn forward_last(&self, batch: &Batch, cache: &mut Self::Cache) -> Result<Logits> {
        let all = self.forward(batch, cache)?;
        let data = (0..all.rows()).flat_map(|r| all.last(r).to_vec()).collect();
        Logits::new(all.rows(), 1, all.vocab(), data)
    }
}
