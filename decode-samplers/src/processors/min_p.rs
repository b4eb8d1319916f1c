use decode_core::sampling::Candidates;
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
    keep_mask: Vec<bool>,
}

impl MinP {
    /// `min_p` in [0, 1].
    pub fn new(min_p: f64, min_tokens_to_keep: usize) -> Result<Self> {
        if !(0.0..=1.0).contains(&min_p) {
            return Err(Error::invalid(
                "min_p",
                format!("must be in [0, 1], not {min_p}"),
            ));
        }
        Ok(MinP {
            min_p,
            min_tokens_to_keep: min_tokens_to_keep.max(1),
            probs: Vec::new(),
            order: Vec::new(),
            keep_mask: Vec::new(),
        })
    }
}

impl MinP {
    /// The probabilities of `logits` into `self.probs`, and the one below which a token goes:
    /// `min_p` times the largest.
    fn threshold(&mut self, logits: &[f32]) -> f32 {
        softmax_into(logits, &mut self.probs);
        // The largest probability, NaN ignored as `f32::max` ignores it; sixteen running maxima
        // vectorise where a fold of `f32::max` is one long dependency chain.
        let mut lanes = [0f32; 16];
        let (rows, tail) = self.probs.as_chunks::<16>();
        for row in rows {
            for (lane, &p) in lanes.iter_mut().zip(row) {
                *lane = if p > *lane { p } else { *lane };
            }
        }
        let top = lanes.iter().chain(tail).copied().fold(0f32, f32::max);
        (self.min_p as f32) * top
    }

    /// Whether at least `min_tokens_to_keep` probabilities reach `threshold`.
    fn enough_kept(&self, threshold: f32) -> bool {
        let kept = self.probs.iter().filter(|&&p| p >= threshold).count();
        kept >= self.min_tokens_to_keep
    }

    /// `−∞` for every entry of `logits` min-p removes: the dense row, or the listed logits of
    /// candidates. The unlisted `−∞` have probability 0: they change neither the softmax nor the
    /// maximum, count as kept only when the threshold is 0 (and then nothing is removed either
    /// way), and rank below every listed entry above `−∞` (so the `min_tokens_to_keep` most likely
    /// are among the listed ones).
    fn mask(&mut self, logits: &mut [f32]) {
        if logits.is_empty() {
            return;
        }
        let threshold = self.threshold(logits);
        if self.enough_kept(threshold) {
            for (x, &p) in logits.iter_mut().zip(&self.probs) {
                // A select and a store, no branch: packed compare and blend.
                *x = if p < threshold { f32::NEG_INFINITY } else { *x };
            }
            return;
        }
        // Too few survive: keep the `min_tokens_to_keep` most likely instead.
        self.order.clear();
        self.order.extend(0..logits.len() as u32);
        let keep = self.min_tokens_to_keep.min(logits.len());
        let logits_ref = &*logits;
        let by_logit_desc =
            |a: &u32, b: &u32| match (logits_ref.get(*a as usize), logits_ref.get(*b as usize)) {
                (Some(x), Some(y)) => y.total_cmp(x).then(a.cmp(b)),
                _ => a.cmp(b),
            };
        if let Some(last) = keep.checked_sub(1) {
            self.order.select_nth_unstable_by(last, by_logit_desc);
        }
        self.keep_mask.clear();
        self.keep_mask.resize(logits.len(), false);
        for &id in self.order.iter().take(keep) {
            if let Some(k) = self.keep_mask.get_mut(id as usize) {
                *k = true;
            }
        }
        for ((x, &p), &k) in logits.iter_mut().zip(&self.probs).zip(&self.keep_mask) {
            if !k && p < threshold {
                *x = f32::NEG_INFINITY;
            }
        }
    }
}

impl LogitsProcessor for MinP {
    fn apply(&mut self, _ctx: &Context<'_>, logits: &mut [f32]) {
        self.mask(logits);
    }

    fn cuts(&self) -> bool {
        true
    }

    fn apply_and_gather(
        &mut self,
        ctx: &Context<'_>,
        logits: &mut [f32],
        candidates: &mut Candidates,
    ) {
        if !logits.is_empty() {
            let threshold = self.threshold(logits);
            if self.enough_kept(threshold) {
                // The survivors straight from the probabilities, without masking `logits` (the
                // chain writes the row back): one pass instead of a mask and a gather.
                candidates.clear(logits.len());
                for (id, (&x, &p)) in logits.iter().zip(&self.probs).enumerate() {
                    if (p >= threshold || p.is_nan()) && x != f32::NEG_INFINITY {
                        candidates.push(id as u32, x);
                    }
                }
                return;
            }
        }
        self.apply(ctx, logits);
        candidates.gather(logits);
    }

    fn apply_candidates(&mut self, _ctx: &Context<'_>, candidates: &mut Candidates) {
        self.mask(candidates.logits_mut());
        candidates.retain(|_, x| x != f32::NEG_INFINITY);
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}
