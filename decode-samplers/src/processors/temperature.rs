use decode_core::sampling::Candidates;
use decode_core::{Context, LogitsProcessor, Result};

/// Divides every logit by `temperature` (> 0): below 1 sharpens, above 1 flattens.
#[derive(Debug, Clone)]
pub struct Temperature {
    temperature: f64,
}

impl Temperature {
    /// Refuses a temperature that is not a positive number in f32, where it is applied: one that
    /// becomes 0 or subnormal as an f32 (below 1.2e-38) would divide the logits into ±∞ or NaN.
    pub fn new(temperature: f64) -> Result<Self> {
        decode_core::config::positive_f32("temperature", temperature)?;
        Ok(Temperature { temperature })
    }
}

impl LogitsProcessor for Temperature {
    fn apply(&mut self, _ctx: &Context<'_>, logits: &mut [f32]) {
        divide(logits, self.temperature as f32);
    }

    fn apply_candidates(&mut self, _ctx: &Context<'_>, candidates: &mut Candidates) {
        // −∞ / t = −∞: the unlisted entries need nothing.
        divide(candidates.logits_mut(), self.temperature as f32);
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}

/// `x / t` for every `x` (a division, not a multiplication by `1 / t`, which rounds differently).
/// A plain loop without branches: it compiles to packed divisions.
fn divide(logits: &mut [f32], t: f32) {
    for x in logits {
        *x /= t;
    }
}
