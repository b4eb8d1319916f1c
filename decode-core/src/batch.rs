//! What goes into a forward pass ([`Batch`]) and what comes out ([`Logits`]).

use crate::{Error, Result};

/// New tokens for every row of a batch: `rows × steps` ids, row-major.
///
/// All rows feed the same number of tokens. Rows of different lengths are left-padded
/// ([`Batch::left_padded`]); padding positions are never attended to and do not advance a row's
/// position ids, exactly as transformers treats an `attention_mask`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    rows: usize,
    steps: usize,
    tokens: Vec<u32>,
    /// `false` marks a padding position. `None` when every position is a real token.
    real: Option<Vec<bool>>,
}

impl Batch {
    /// One row.
    pub fn single(tokens: &[u32]) -> Self {
        Batch {
            rows: 1,
            steps: tokens.len(),
            tokens: tokens.to_vec(),
            real: None,
        }
    }

    /// One token per row (a decode step).
    pub fn column(tokens: &[u32]) -> Self {
        Batch {
            rows: tokens.len(),
            steps: 1,
            tokens: tokens.to_vec(),
            real: None,
        }
    }

    /// Rows of any lengths, left-padded with `pad_id` to the longest.
    pub fn left_padded(rows: &[Vec<u32>], pad_id: u32) -> Self {
        Self::padded(rows, pad_id, true)
    }

    /// One token per row, where `real[row] == false` marks a row that only pads (a finished
    /// sequence of a batch): it is masked and does not advance.
    pub fn column_masked(tokens: &[u32], real: &[bool]) -> Self {
        Batch {
            rows: tokens.len(),
            steps: 1,
            tokens: tokens.to_vec(),
            real: real.contains(&false).then(|| real.to_vec()),
        }
    }

    /// Rows of any lengths, right-padded with `pad_id` (masked) to the longest: each row's last real
    /// token is at `row.len() - 1`. Speculative decoding feeds drafts of different lengths this way.
    pub fn right_padded(rows: &[Vec<u32>], pad_id: u32) -> Self {
        Self::padded(rows, pad_id, false)
    }

    fn padded(rows: &[Vec<u32>], pad_id: u32, left: bool) -> Self {
        let steps = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut tokens = Vec::with_capacity(rows.len() * steps);
        let mut real = Vec::with_capacity(rows.len() * steps);
        for row in rows {
            let pads = steps - row.len();
            let (before, after) = if left { (pads, 0) } else { (0, pads) };
            tokens.extend(std::iter::repeat_n(pad_id, before));
            tokens.extend_from_slice(row);
            tokens.extend(std::iter::repeat_n(pad_id, after));
            real.extend(std::iter::repeat_n(false, before));
            real.extend(std::iter::repeat_n(true, row.len()));
            real.extend(std::iter::repeat_n(false, after));
        }
        let real = real.contains(&false).then_some(real);
        Batch {
            rows: rows.len(),
            steps,
            tokens,
            real,
        }
    }

    /// Rows of equal length.
    pub fn from_rows(rows: &[Vec<u32>]) -> Result<Self> {
        let steps = rows.first().map_or(0, Vec::len);
        if let Some(bad) = rows.iter().find(|r| r.len() != steps) {
            return Err(Error::Shape(format!(
                "batch rows differ in length ({} and {}); use Batch::left_padded",
                steps,
                bad.len()
            )));
        }
        Ok(Batch {
            rows: rows.len(),
            steps,
            tokens: rows.concat(),
            real: None,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of new tokens per row.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// All ids, row-major.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The ids of one row.
    pub fn row(&self, row: usize) -> &[u32] {
        &self.tokens[row * self.steps..(row + 1) * self.steps]
    }

    /// Whether position `step` of `row` is a real token (not padding).
    pub fn is_real(&self, row: usize, step: usize) -> bool {
        self.real
            .as_ref()
            .is_none_or(|real| real[row * self.steps + step])
    }

    /// Whether any position is padding.
    pub fn has_padding(&self) -> bool {
        self.real.is_some()
    }

    /// Checks every real id against a vocabulary of `vocab_size`.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<()> {
        for (i, &id) in self.tokens.iter().enumerate() {
            if id as usize >= vocab_size
                && self.is_real(i / self.steps.max(1), i % self.steps.max(1))
            {
                return Err(Error::TokenOutOfRange { id, vocab_size });
            }
        }
        Ok(())
    }
}

/// Next-token logits for every new position of every row: `rows × steps × vocab`, row-major, f32.
///
/// Position `t` of row `b` holds the logits of the token that follows the `t`-th new token.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    rows: usize,
    steps: usize,
    vocab: usize,
    data: Vec<f32>,
}

impl Logits {
    /// Wraps `data` (`rows × steps × vocab`).
    pub fn new(rows: usize, steps: usize, vocab: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != rows * steps * vocab {
            return Err(Error::Shape(format!(
                "logits hold {} values, expected {rows}×{steps}×{vocab}",
                data.len()
            )));
        }
        Ok(Logits {
            rows,
            steps,
            vocab,
            data,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of positions per row.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// The logits at position `step` of `row`.
    pub fn get(&self, row: usize, step: usize) -> &[f32] {
        let start = (row * self.steps + step) * self.vocab;
        &self.data[start..start + self.vocab]
    }

    /// The logits at the last position of `row`.
    pub fn last(&self, row: usize) -> &[f32] {
        self.get(row, self.steps - 1)
    }

    /// All values, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
}

/// Index of the largest value; the first one on ties. NaN never wins: the result is the largest
/// non-NaN value's index (0 for an empty or all-NaN slice, which the engine refuses first).
pub fn argmax(values: &[f32]) -> u32 {
    // Two passes that vectorise (a running best with its index does not): the largest value
    // (`f32::max` ignores NaN) in 16 lanes, then the first index holding it.
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = values.chunks_exact(16);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(v);
        }
    }
    let max = lanes.iter().fold(tail, |m, &v| m.max(v));
    values
        .iter()
        .position(|&v| v == max)
        .map_or(0, |i| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_first_tie_and_never_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, 2.0]), 2);
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY]), 1);
        assert_eq!(argmax(&[1.0, f32::NAN, 0.5]), 0);
    }

    #[test]
    fn left_padding_marks_pads() {
        let b = Batch::left_padded(&[vec![1, 2, 3], vec![4]], 0);
        assert_eq!(b.tokens(), &[1, 2, 3, 0, 0, 4]);
        assert!(!b.is_real(1, 0) && !b.is_real(1, 1) && b.is_real(1, 2));
        assert!(b.is_real(0, 0));
    }

    #[test]
    fn ragged_rows_are_refused() {
        assert!(matches!(
            Batch::from_rows(&[vec![1, 2], vec![3]]),
            Err(Error::Shape(_))
        ));
    }

    #[test]
    fn vocab_check_ignores_padding() {
        let b = Batch::left_padded(&[vec![1, 2], vec![3]], 999);
        assert!(b.check_vocab(10).is_ok());
        assert!(matches!(
            Batch::single(&[10]).check_vocab(10),
            Err(Error::TokenOutOfRange { id: 10, .. })
        ));
    }
}
