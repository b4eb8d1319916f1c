//! The key/value cache contract ([`Cache`]): what generation strategies need from a model's cache.
//!
//! A cache holds, per layer, the keys and values of every token a sequence has seen, so a decode
//! step only computes the new token. Rolling back is `truncate` (later writes overwrite), following
//! beams is `reorder`; padding and per-row rollbacks ([`Cache::rollback`]) become hidden slots, so
//! rows can advance by different amounts in one batch. `decode-models` implements it on burn
//! tensors (`KvCache`); a model of your own brings its own.

use crate::Result;

/// What generation strategies need from a model's cache.
pub trait Cache {
    /// Number of rows (sequences) in the batch.
    fn rows(&self) -> usize;
    /// Number of slots written (the same for every row; some may be hidden).
    fn len(&self) -> usize;
    /// Whether nothing has been written.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Per row, the number of real tokens seen: the position id of its next token.
    fn positions(&self) -> &[usize];
    /// Forgets every slot from `len` on, in O(1). `len` must not exceed [`Cache::len`].
    fn truncate(&mut self, len: usize) -> Result<()>;
    /// Keeps the rows listed, in that order (duplicates allowed): the batch becomes `rows.len()` rows.
    fn reorder(&mut self, rows: &[usize]) -> Result<()>;
    /// Rolls one row back to its first `keep` real tokens: later slots of that row stay allocated
    /// but are never attended to again and do not count as positions. This lets the rows of a
    /// batch keep different numbers of tokens (speculative decoding at batch > 1); [`Cache::trim`]
    /// then frees the slots no row uses.
    fn rollback(&mut self, row: usize, keep: usize) -> Result<()>;

    /// Truncates to the last slot any row still uses.
    fn trim(&mut self);
}
