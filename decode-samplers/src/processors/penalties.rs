use decode_core::sampling::Candidates;
use decode_core::{Context, Error, LogitsProcessor, Result};

/// transformers' repetition penalty (Keskar et al.): every token already in the sequence (prompt
/// included) has its logit divided by `penalty` when positive and multiplied when negative, once
/// however often it occurs.
#[derive(Debug, Clone)]
pub struct RepetitionPenalty {
    penalty: f64,
    /// Marks for the tokens of the context, all `false` between calls: each call clears the marks
    /// it set, so it costs O(context), not O(vocabulary).
    seen: Vec<bool>,
}

impl RepetitionPenalty {
    /// `penalty > 0`; 1 changes nothing, above 1 discourages repeats.
    pub fn new(penalty: f64) -> Result<Self> {
        decode_core::config::positive_f32("repetition_penalty", penalty)?;
        Ok(RepetitionPenalty {
            penalty,
            seen: Vec::new(),
        })
    }
}

impl RepetitionPenalty {
    /// Marks the context's tokens below `vocab` in `self.seen`.
    fn mark(&mut self, tokens: &[u32], vocab: usize) {
        if self.seen.len() < vocab {
            self.seen.resize(vocab, false);
        }
        for &t in tokens {
            if (t as usize) < vocab
                && let Some(s) = self.seen.get_mut(t as usize)
            {
                *s = true;
            }
        }
    }

    /// Clears the marks `mark` set.
    fn unmark(&mut self, tokens: &[u32]) {
        for &t in tokens {
            if let Some(s) = self.seen.get_mut(t as usize) {
                *s = false;
            }
        }
    }
}

/// `x` under repetition penalty `penalty`.
fn penalise(x: f32, penalty: f32) -> f32 {
    if x < 0.0 { x * penalty } else { x / penalty }
}

impl LogitsProcessor for RepetitionPenalty {
    fn apply(&mut self, ctx: &Context<'_>, logits: &mut [f32]) {
        let penalty = self.penalty as f32;
        self.mark(ctx.tokens, logits.len());
        // Once per distinct token: its first occurrence penalises and clears the mark (so every
        // mark is cleared by the end).
        for &t in ctx.tokens {
            if let (Some(s), Some(x)) = (self.seen.get_mut(t as usize), logits.get_mut(t as usize))
                && *s
            {
                *s = false;
                *x = penalise(*x, penalty);
            }
        }
    }

    fn apply_candidates(&mut self, ctx: &Context<'_>, candidates: &mut Candidates) {
        // −∞ penalised stays −∞: only the listed ids matter.
        let penalty = self.penalty as f32;
        self.mark(ctx.tokens, candidates.vocab_size());
        let (ids, logits) = candidates.ids_and_logits_mut();
        for (&id, x) in ids.iter().zip(logits) {
            if self.seen.get(id as usize).copied().unwrap_or(false) {
                *x = penalise(*x, penalty);
            }
        }
        self.unmark(ctx.tokens);
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}

/// OpenAI's frequency and presence penalties over the generated tokens:
/// `logit[t] -= count[t] · frequency + (count[t] > 0) · presence`.
#[derive(Debug, Clone)]
pub struct FrequencyPresencePenalty {
    frequency: f64,
    presence: f64,
    /// Occurrences of each generated token, all 0 between calls: each call clears the counts it
    /// set, so it costs O(generated), not O(vocabulary).
    counts: Vec<u32>,
}

impl FrequencyPresencePenalty {
    /// Each penalty in [-2, 2], as OpenAI allows.
    pub fn new(frequency: f64, presence: f64) -> Result<Self> {
        for (name, v) in [
            ("frequency_penalty", frequency),
            ("presence_penalty", presence),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(Error::invalid(name, format!("must be in [-2, 2], not {v}")));
            }
        }
        Ok(FrequencyPresencePenalty {
            frequency,
            presence,
            counts: Vec::new(),
        })
    }
}

impl FrequencyPresencePenalty {
    /// Counts the generated tokens below `vocab` in `self.counts`.
    fn count(&mut self, generated: &[u32], vocab: usize) {
        if self.counts.len() < vocab {
            self.counts.resize(vocab, 0);
        }
        for &t in generated {
            if (t as usize) < vocab
                && let Some(c) = self.counts.get_mut(t as usize)
            {
                *c = c.saturating_add(1);
            }
        }
    }

    /// Clears the counts `count` set.
    fn uncount(&mut self, generated: &[u32]) {
        for &t in generated {
            if let Some(c) = self.counts.get_mut(t as usize) {
                *c = 0;
            }
        }
    }
}

impl LogitsProcessor for FrequencyPresencePenalty {
    fn apply(&mut self, ctx: &Context<'_>, logits: &mut [f32]) {
        let (f, p) = (self.frequency as f32, self.presence as f32);
        let generated = ctx.generated();
        self.count(generated, logits.len());
        // Once per distinct token, with its full count: its first occurrence applies and clears it
        // (so every count is cleared by the end).
        for &t in generated {
            if let (Some(c), Some(x)) =
                (self.counts.get_mut(t as usize), logits.get_mut(t as usize))
                && *c > 0
            {
                *x -= *c as f32 * f + p;
                *c = 0;
            }
        }
    }

    fn apply_candidates(&mut self, ctx: &Context<'_>, candidates: &mut Candidates) {
        // −∞ minus a finite penalty stays −∞: only the listed ids matter.
        let (f, p) = (self.frequency as f32, self.presence as f32);
        let generated = ctx.generated();
        self.count(generated, candidates.vocab_size());
        let (ids, logits) = candidates.ids_and_logits_mut();
        for (&id, x) in ids.iter().zip(logits) {
            if let Some(&c) = self.counts.get(id as usize)
                && c > 0
            {
                *x -= c as f32 * f + p;
            }
        }
        self.uncount(generated);
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}
