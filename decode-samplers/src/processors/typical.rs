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
    shifted: Vec<f32>,
    order: Vec<u32>,
}

impl TypicalP {
    /// `mass` in (0, 1].
    pub fn new(mass: f64, min_tokens_to_keep: usize) -> Result<Self> {
        if !(mass > 0.0 && mass <= 1.0) {
            return Err(Error::invalid(
                "typical-p",
                format!("must be in (0, 1], not {mass}"),
            ));
        }
        Ok(TypicalP {
            mass,
            min_tokens_to_keep: min_tokens_to_keep.max(1),
            logp: Vec::new(),
            probs: Vec::new(),
            shifted: Vec::new(),
            order: Vec::new(),
        })
    }
}

impl LogitsProcessor for TypicalP {
    fn apply(&mut self, _ctx: &Context<'_>, logits: &mut [f32]) {
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
        self.shifted.clear();
        self.shifted
            .extend(self.logp.iter().map(|&l| (-l - entropy).abs()));
        self.order.clear();
        self.order.extend(0..logits.len() as u32);
        let shifted = &self.shifted;
        self.order.sort_by(|&a, &b| {
            shifted[a as usize]
                .total_cmp(&shifted[b as usize])
                .then(a.cmp(&b))
        });
        let mass = self.mass as f32;
        let mut cumulative = 0f64;
        let mut below = 0;
        for &id in &self.order {
            cumulative += self.probs[id as usize] as f64;
            if (cumulative as f32) < mass {
                below += 1;
            } else {
                break;
            }
        }
        let last = below.min(self.order.len() - 1);
        let cutoff = self.shifted[self.order[last] as usize];
        for (rank, &id) in self.order.iter().enumerate() {
            if rank >= self.min_tokens_to_keep && self.shifted[id as usize] > cutoff {
                logits[id as usize] = f32::NEG_INFINITY;
            }
        }
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}
