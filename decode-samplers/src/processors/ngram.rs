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
            return Err(Error::invalid("no-repeat-ngram-size", "must be at least 1"));
        }
        Ok(NoRepeatNGram { n })
    }
}

impl LogitsProcessor for NoRepeatNGram {
    fn apply(&mut self, ctx: &Context<'_>, logits: &mut [f32]) {
        let (tokens, n) = (ctx.tokens, self.n);
        if tokens.len() + 1 < n {
            return;
        }
        let prefix = &tokens[tokens.len() + 1 - n..];
        for window in tokens.windows(n) {
            if &window[..n - 1] == prefix
                && let Some(x) = logits.get_mut(window[n - 1] as usize)
            {
                *x = f32::NEG_INFINITY;
            }
        }
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}
