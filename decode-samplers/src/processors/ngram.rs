use decode_core::sampling::Candidates;
use decode_core::{Context, Error, LogitsProcessor, Result};

/// Forbids any token that would repeat an n-gram already in the sequence (prompt included).
#[derive(Debug, Clone)]
pub struct NoRepeatNGram {
    n: usize,
}

impl NoRepeatNGram {
    /// `n ≥ 1`.
    pub fn new(n: usize) -> Result<Self> {
        if n == 0 {
            return Err(Error::invalid("no_repeat_ngram_size", "must be at least 1"));
        }
        Ok(NoRepeatNGram { n })
    }
}

impl NoRepeatNGram {
    /// Calls `ban` with every token that would repeat an n-gram of `tokens`.
    fn banned(&self, tokens: &[u32], mut ban: impl FnMut(u32)) {
        let n = self.n;
        // The last n − 1 tokens (n ≥ 1); none to look for when the sequence is shorter.
        let Some(prefix) = (tokens.len() + 1)
            .checked_sub(n)
            .and_then(|start| tokens.get(start..))
        else {
            return;
        };
        for window in tokens.windows(n) {
            if let Some((&last, head)) = window.split_last()
                && head == prefix
            {
                ban(last);
            }
        }
    }
}

impl LogitsProcessor for NoRepeatNGram {
    fn apply(&mut self, ctx: &Context<'_>, logits: &mut [f32]) {
        self.banned(ctx.tokens, |t| {
            if let Some(x) = logits.get_mut(t as usize) {
                *x = f32::NEG_INFINITY;
            }
        });
    }

    fn apply_candidates(&mut self, ctx: &Context<'_>, candidates: &mut Candidates) {
        self.banned(ctx.tokens, |t| {
            if let Some(x) = candidates.get_mut(t) {
                *x = f32::NEG_INFINITY;
            }
        });
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}
