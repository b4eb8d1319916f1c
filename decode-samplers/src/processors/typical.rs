use decode_core::sampling::Candidates;
use decode_core::{Context, Error, LogitsProcessor, Result};

use crate::probs::{log_softmax_into, softmax_into};

/// Locally typical sampling (Meister et al.): keeps the tokens whose surprise is closest to the
/// distribution's entropy, up to probability mass `p`.
#[derive(Debug, Clone)]
pub struct TypicalP {
    mass: f64,
    min_tokens_to_keep: usize,
    logp: Vec<f32>,
    probs: Vec<f32>,
    /// (surprise − entropy, id) pairs, sorted: sorting pairs beats sorting ids through a row.
    order: Vec<(f32, u32)>,
}

impl TypicalP {
    /// `mass` in (0, 1].
    pub fn new(mass: f64, min_tokens_to_keep: usize) -> Result<Self> {
        if !(mass > 0.0 && mass <= 1.0) {
            return Err(Error::invalid(
                "typical_p",
                format!("must be in (0, 1], not {mass}"),
            ));
        }
        Ok(TypicalP {
            mass,
            min_tokens_to_keep: min_tokens_to_keep.max(1),
            logp: Vec::new(),
            probs: Vec::new(),
            order: Vec::new(),
        })
    }
}

impl TypicalP {
    /// `−∞` for every entry of `logits` typical-p removes. On a dense row `unlisted` is 0. On
    /// candidates `logits` are the listed ones, all finite with finite log-probabilities, and
    /// `unlisted` more entries are `−∞`: those have probability 0, no entropy term and a surprise
    /// of `+∞`, so they sort after every listed entry and only matter when the walk runs past all
    /// the listed ones (then the cutoff is `+∞` and nothing goes).
    fn mask(&mut self, logits: &mut [f32], unlisted: usize) {
        if logits.is_empty() {
            return;
        }
        log_softmax_into(logits, &mut self.logp);
        softmax_into(logits, &mut self.probs);
        // Entropy; removed tokens (0 · -inf) count for nothing, as nansum does.
        let entropy: f64 = self
            .logp
            .iter()
            .zip(&self.probs)
            .filter(|(l, _)| l.is_finite())
            .map(|(&l, &p)| -(l as f64) * p as f64)
            .sum();
        let entropy = entropy as f32;
        self.order.clear();
        let shifted = self.logp.iter().map(|&l| (-l - entropy).abs());
        self.order.extend(shifted.zip(0u32..));
        // Ids break ties, so the order is total and an unstable sort gives the stable one's.
        self.order
            .sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mass = self.mass as f32;
        let mut cumulative = 0f64;
        let mut below = 0;
        for &(_, id) in &self.order {
            cumulative += self.probs.get(id as usize).copied().unwrap_or(0.0) as f64;
            if (cumulative as f32) < mass {
                below += 1;
            } else {
                break;
            }
        }
        if below == self.order.len() && unlisted > 0 {
            return; // the dense walk ends among the unlisted: cutoff +∞
        }
        let last = below.min(self.order.len() - 1);
        let cutoff = self.order.get(last).map_or(f32::INFINITY, |&(s, _)| s);
        for (rank, &(shifted, id)) in self.order.iter().enumerate() {
            if rank >= self.min_tokens_to_keep
                && shifted > cutoff
                && let Some(x) = logits.get_mut(id as usize)
            {
                *x = f32::NEG_INFINITY;
            }
        }
    }
}

impl LogitsProcessor for TypicalP {
    fn apply(&mut self, _ctx: &Context<'_>, logits: &mut [f32]) {
        self.mask(logits, 0);
    }

    fn cuts(&self) -> bool {
        true
    }

    fn apply_candidates(&mut self, ctx: &Context<'_>, candidates: &mut Candidates) {
        candidates.retain(|_, x| x != f32::NEG_INFINITY);
        if candidates.is_empty() {
            return; // all −∞: typical-p changes nothing
        }
        // NaN, +∞, or logits ~1e38 apart (a log-probability underflows to −∞) break the ordering
        // argument of `mask`: then the dense way, rare enough not to matter.
        let regular = candidates.logits().iter().all(|x| x.is_finite()) && {
            let max = candidates
                .logits()
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max);
            candidates
                .logits()
                .iter()
                .all(|&x| (x - max) > f32::NEG_INFINITY)
        };
        if !regular {
            candidates.with_dense(|row| self.apply(ctx, row));
            return;
        }
        let unlisted = candidates.vocab_size().saturating_sub(candidates.len());
        self.mask(candidates.logits_mut(), unlisted);
        candidates.retain(|_, x| x != f32::NEG_INFINITY);
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}
