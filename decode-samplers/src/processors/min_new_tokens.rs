use decode_core::sampling::Candidates;
use decode_core::{Context, LogitsProcessor};

/// Masks the end-of-sequence ids until `min_new_tokens` tokens have been generated.
#[derive(Debug, Clone)]
pub struct MinNewTokens {
    min_new_tokens: usize,
    eos_token_ids: Vec<u32>,
}

impl MinNewTokens {
    /// At least `min_new_tokens` before any of `eos_token_ids`.
    pub fn new(min_new_tokens: usize, eos_token_ids: &[u32]) -> Self {
        MinNewTokens {
            min_new_tokens,
            eos_token_ids: eos_token_ids.to_vec(),
        }
    }
}

impl LogitsProcessor for MinNewTokens {
    fn apply(&mut self, ctx: &Context<'_>, logits: &mut [f32]) {
        if ctx.generated().len() < self.min_new_tokens {
            for &t in &self.eos_token_ids {
                if let Some(x) = logits.get_mut(t as usize) {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
    }

    fn apply_candidates(&mut self, ctx: &Context<'_>, candidates: &mut Candidates) {
        if ctx.generated().len() < self.min_new_tokens {
            for &t in &self.eos_token_ids {
                if let Some(x) = candidates.get_mut(t) {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}
