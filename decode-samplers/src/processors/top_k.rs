use decode_core::{Context, Error, LogitsProcessor, Result};

/// Keeps the `k` highest logits (and every logit tied with the k-th), removes the rest.
///
/// Finds the k-th value with a partial selection (O(vocab)), not a sort.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    scratch: Vec<f32>,
}

impl TopK {
    /// `k ≥ 1`; `min_tokens_to_keep` raises `k` as in transformers.
    pub fn new(k: usize, min_tokens_to_keep: usize) -> Result<Self> {
        if k == 0 {
            return Err(Error::invalid(
                "top-k",
                "must be at least 1 (omit it to disable)",
            ));
        }
        Ok(TopK {
            k: k.max(min_tokens_to_keep),
            scratch: Vec::new(),
        })
    }
}

impl LogitsProcessor for TopK {
    fn apply(&mut self, _ctx: &Context<'_>, logits: &mut [f32]) {
        let k = self.k.min(logits.len());
        if k == 0 || k == logits.len() {
            return;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(logits);
        let (_, kth, _) = self
            .scratch
            .select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        let kth = *kth;
        logits
            .iter_mut()
            .filter(|x| **x < kth)
            .for_each(|x| *x = f32::NEG_INFINITY);
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}
