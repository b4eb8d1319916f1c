use std::collections::BTreeMap;

use decode_core::sampling::Candidates;
use decode_core::{Context, Error, LogitsProcessor, Result};

/// Adds a fixed bias to chosen tokens' logits (OpenAI's `logit_bias`; transformers'
/// `sequence_bias` for one-token sequences).
#[derive(Debug, Clone, Default)]
pub struct LogitBias {
    bias: Vec<(u32, f32)>,
}

impl LogitBias {
    /// From token → bias.
    pub fn new(bias: &BTreeMap<u32, f32>) -> Result<Self> {
        decode_core::config::finite_logit_bias(bias)?;
        Ok(LogitBias {
            bias: bias.iter().map(|(&t, &b)| (t, b)).collect(),
        })
    }
}

impl LogitsProcessor for LogitBias {
    fn apply(&mut self, _ctx: &Context<'_>, logits: &mut [f32]) {
        for &(t, b) in &self.bias {
            if let Some(x) = logits.get_mut(t as usize) {
                *x += b;
            }
        }
    }

    fn apply_candidates(&mut self, _ctx: &Context<'_>, candidates: &mut Candidates) {
        // −∞ plus a finite bias stays −∞: only the listed ids matter.
        for &(t, b) in &self.bias {
            if let Some(x) = candidates.get_mut(t) {
                *x += b;
            }
        }
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}

/// Never produces the listed tokens (transformers' `bad_words_ids` of one token each).
#[derive(Debug, Clone, Default)]
pub struct BanTokens {
    tokens: Vec<u32>,
}

impl BanTokens {
    /// From the ids to ban.
    pub fn new(tokens: &[u32]) -> Self {
        BanTokens {
            tokens: tokens.to_vec(),
        }
    }
}

impl LogitsProcessor for BanTokens {
    fn apply(&mut self, _ctx: &Context<'_>, logits: &mut [f32]) {
        for &t in &self.tokens {
            if let Some(x) = logits.get_mut(t as usize) {
                *x = f32::NEG_INFINITY;
            }
        }
    }

    fn apply_candidates(&mut self, _ctx: &Context<'_>, candidates: &mut Candidates) {
        for &t in &self.tokens {
            if let Some(x) = candidates.get_mut(t) {
                *x = f32::NEG_INFINITY;
            }
        }
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}

/// transformers' `NoBadWordsLogitsProcessor`: never produces the listed token sequences. The last
/// token of each is banned wherever the context (prompt included) ends with the rest of it; a
/// one-token sequence is banned always. Sequences that are just an EOS id are dropped, as
/// transformers drops them.
#[derive(Debug, Clone, Default)]
pub struct NoBadWords {
    sequences: Vec<Vec<u32>>,
}

impl NoBadWords {
    /// From the sequences to ban (an empty one is refused) and the EOS ids.
    pub fn new(sequences: &[Vec<u32>], eos_token_ids: &[u32]) -> Result<Self> {
        if sequences.iter().any(Vec::is_empty) {
            return Err(Error::invalid("bad_words_ids", "holds an empty sequence"));
        }
        let sequences = sequences
            .iter()
            .filter(|s| !(s.len() == 1 && eos_token_ids.contains(&s[0])))
            .cloned()
            .collect();
        Ok(NoBadWords { sequences })
    }
}

impl LogitsProcessor for NoBadWords {
    fn apply(&mut self, ctx: &Context<'_>, logits: &mut [f32]) {
        for sequence in &self.sequences {
            if let Some((&last, prefix)) = sequence.split_last()
                && ctx.tokens.ends_with(prefix)
                && let Some(x) = logits.get_mut(last as usize)
            {
                *x = f32::NEG_INFINITY;
            }
        }
    }

    fn apply_candidates(&mut self, ctx: &Context<'_>, candidates: &mut Candidates) {
        for sequence in &self.sequences {
            if let Some((&last, prefix)) = sequence.split_last()
                && ctx.tokens.ends_with(prefix)
                && let Some(x) = candidates.get_mut(last)
            {
                *x = f32::NEG_INFINITY;
            }
        }
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_words_ban_the_last_token_after_the_rest() {
        let mut p = NoBadWords::new(&[vec![3], vec![1, 2], vec![7]], &[7]).unwrap();
        let mut logits = vec![0f32; 8];
        p.apply(&Context::new(&[5, 1], 1), &mut logits);
        assert_eq!(logits[3], f32::NEG_INFINITY); // one token: always
        assert_eq!(logits[2], f32::NEG_INFINITY); // context ends with [1]
        assert_eq!(logits[7], 0.0); // [eos] is dropped
        let mut logits = vec![0f32; 8];
        p.apply(&Context::new(&[1, 5], 1), &mut logits);
        assert_eq!(logits[2], 0.0);
        assert!(NoBadWords::new(&[vec![]], &[]).is_err());
    }
}
