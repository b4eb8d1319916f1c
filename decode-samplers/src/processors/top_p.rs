use decode_core::sampling::Candidates;
use decode_core::{Context, Error, LogitsProcessor, Result};

use crate::probs::{finite_ascending_pairs, softmax_into};

/// Nucleus sampling: keeps the smallest set of most likely tokens whose probability reaches `p`,
/// including the token that crosses `p`.
///
/// As transformers does: sort ascending, remove tokens while the cumulative probability stays
/// `≤ 1 − p`. Only tokens still in play are sorted (after a top-k, just k).
#[derive(Debug, Clone)]
pub struct TopP {
    p: f64,
    min_tokens_to_keep: usize,
    /// The finite entries as (logit, id), ascending.
    order: Vec<(f32, u32)>,
    probs: Vec<f32>,
}

impl TopP {
    /// `p` in (0, 1]; `min_tokens_to_keep ≥ 1`.
    pub fn new(p: f64, min_tokens_to_keep: usize) -> Result<Self> {
        if !(p > 0.0 && p <= 1.0) {
            return Err(Error::invalid(
                "top_p",
                format!("must be in (0, 1], not {p}"),
            ));
        }
        Ok(TopP {
            p,
            min_tokens_to_keep: min_tokens_to_keep.max(1),
            order: Vec::new(),
            probs: Vec::new(),
        })
    }
}

impl TopP {
    /// `−∞` for every entry of `logits` the nucleus leaves out. On candidates `logits` is the
    /// listed logits: their softmax and ascending order are the dense row's at those ids (the
    /// unlisted −∞ have probability 0 and are not finite, so they are in neither).
    fn mask(&mut self, logits: &mut [f32]) {
        softmax_into(logits, &mut self.probs);
        finite_ascending_pairs(logits, &mut self.order);
        let threshold = (1.0 - self.p) as f32;
        let removable = self.order.len().saturating_sub(self.min_tokens_to_keep);
        let mut cumulative = 0f64;
        for &(_, i) in self.order.iter().take(removable) {
            let i = i as usize;
            cumulative += self.probs.get(i).copied().unwrap_or(0.0) as f64;
            if cumulative as f32 > threshold {
                break;
            }
            if let Some(x) = logits.get_mut(i) {
                *x = f32::NEG_INFINITY;
            }
        }
    }
}

impl LogitsProcessor for TopP {
    fn apply(&mut self, _ctx: &Context<'_>, logits: &mut [f32]) {
        self.mask(logits);
    }

    fn cuts(&self) -> bool {
        true
    }

    fn apply_candidates(&mut self, _ctx: &Context<'_>, candidates: &mut Candidates) {
        self.mask(candidates.logits_mut());
        candidates.retain(|_, x| x != f32::NEG_INFINITY);
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}
