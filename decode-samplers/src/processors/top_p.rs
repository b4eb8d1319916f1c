use decode_core::{Context, Error, LogitsProcessor, Result};

use crate::probs::{finite_ascending, softmax_into};

/// Nucleus sampling: keeps the smallest set of most likely tokens whose probability reaches `p`,
/// including the token that crosses `p`.
///
/// As transformers does: sort ascending, remove tokens while the cumulative probability stays
/// `≤ 1 − p`. Only tokens still in play are sorted (after a top-k, just k).
#[derive(Debug, Clone)]
pub struct TopP {
    p: f64,
    min_tokens_to_keep: usize,
    order: Vec<u32>,
    probs: Vec<f32>,
}

impl TopP {
    /// `p` in (0, 1]; `min_tokens_to_keep ≥ 1`.
    pub fn new(p: f64, min_tokens_to_keep: usize) -> Result<Self> {
        if !(p > 0.0 && p <= 1.0) {
            return Err(Error::invalid(
                "top-p",
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

impl LogitsProcessor for TopP {
    fn apply(&mut self, _ctx: &Context<'_>, logits: &mut [f32]) {
        softmax_into(logits, &mut self.probs);
        finite_ascending(logits, &mut self.order);
        let threshold = (1.0 - self.p) as f32;
        let removable = self.order.len().saturating_sub(self.min_tokens_to_keep);
        let mut cumulative = 0f64;
        for &id in &self.order[..removable] {
            cumulative += self.probs[id as usize] as f64;
            if cumulative as f32 > threshold {
                break;
            }
            logits[id as usize] = f32::NEG_INFINITY;
        }
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}
