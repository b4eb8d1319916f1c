use decode_core::{Context, Error, LogitsProcessor, Result};

use crate::probs::softmax_into;

/// Removes tokens less likely than `min_p` times the most likely one (keeping at least
/// `min_tokens_to_keep`).
#[derive(Debug, Clone)]
pub struct MinP {
    min_p: f64,
    min_tokens_to_keep: usize,
    probs: Vec<f32>,
    order: Vec<u32>,
}

impl MinP {
    /// `min_p` in [0, 1].
    pub fn new(min_p: f64, min_tokens_to_keep: usize) -> Result<Self> {
        if !(0.0..=1.0).contains(&min_p) {
            return Err(Error::invalid(
                "min-p",
                format!("must be in [0, 1], not {min_p}"),
            ));
        }
        Ok(MinP {
            min_p,
            min_tokens_to_keep: min_tokens_to_keep.max(1),
            probs: Vec::new(),
            order: Vec::new(),
        })
    }
}

impl LogitsProcessor for MinP {
    fn apply(&mut self, _ctx: &Context<'_>, logits: &mut [f32]) {
        if logits.is_empty() {
            return;
        }
        softmax_into(logits, &mut self.probs);
        let top = self.probs.iter().copied().fold(0f32, f32::max);
        let threshold = (self.min_p as f32) * top;
        let kept = self.probs.iter().filter(|&&p| p >= threshold).count();
        if kept >= self.min_tokens_to_keep {
            for (x, &p) in logits.iter_mut().zip(&self.probs) {
                if p < threshold {
                    *x = f32::NEG_INFINITY;
                }
            }
            return;
        }
        // Too few survive: keep the `min_tokens_to_keep` most likely instead.
        self.order.clear();
        self.order.extend(0..logits.len() as u32);
        let keep = self.min_tokens_to_keep.min(logits.len());
        let logits_ref = &*logits;
        self.order.select_nth_unstable_by(keep - 1, |&a, &b| {
            logits_ref[b as usize]
                .total_cmp(&logits_ref[a as usize])
                .then(a.cmp(&b))
        });
        let mut keep_mask = vec![false; logits.len()];
        for &id in &self.order[..keep] {
            keep_mask[id as usize] = true;
        }
        for (i, x) in logits.iter_mut().enumerate() {
            if !keep_mask[i] && self.probs[i] < threshold {
                *x = f32::NEG_INFINITY;
            }
        }
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}
