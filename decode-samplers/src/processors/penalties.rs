use decode_core::{Context, Error, LogitsProcessor, Result};

/// transformers' repetition penalty (Keskar et al.): every token already in the sequence (prompt
/// included) has its logit divided by `penalty` when positive and multiplied when negative, once
/// however often it occurs.
#[derive(Debug, Clone)]
pub struct RepetitionPenalty {
    penalty: f64,
    seen: Vec<bool>,
}

impl RepetitionPenalty {
    /// `penalty > 0`; 1 changes nothing, above 1 discourages repeats.
    pub fn new(penalty: f64) -> Result<Self> {
        decode_core::config::positive_f32("repetition-penalty", penalty)?;
        Ok(RepetitionPenalty {
            penalty,
            seen: Vec::new(),
        })
    }
}

impl LogitsProcessor for RepetitionPenalty {
    fn apply(&mut self, ctx: &Context<'_>, logits: &mut [f32]) {
        let penalty = self.penalty as f32;
        self.seen.clear();
        self.seen.resize(logits.len(), false);
        for &t in ctx.tokens {
            let t = t as usize;
            if t < logits.len() && !self.seen[t] {
                self.seen[t] = true;
                let x = logits[t];
                logits[t] = if x < 0.0 { x * penalty } else { x / penalty };
            }
        }
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
    counts: Vec<u32>,
}

impl FrequencyPresencePenalty {
    /// Each penalty in [-2, 2], as OpenAI allows.
    pub fn new(frequency: f64, presence: f64) -> Result<Self> {
        for (name, v) in [
            ("frequency-penalty", frequency),
            ("presence-penalty", presence),
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

impl LogitsProcessor for FrequencyPresencePenalty {
    fn apply(&mut self, ctx: &Context<'_>, logits: &mut [f32]) {
        let (f, p) = (self.frequency as f32, self.presence as f32);
        self.counts.clear();
        self.counts.resize(logits.len(), 0);
        for &t in ctx.generated() {
            if let Some(c) = self.counts.get_mut(t as usize) {
                *c += 1;
            }
        }
        for (x, &c) in logits.iter_mut().zip(&self.counts) {
            if c > 0 {
                *x -= c as f32 * f + p;
            }
        }
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}
