use std::collections::BTreeMap;

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
        if let Some((t, b)) = bias.iter().find(|(_, b)| !b.is_finite()) {
            return Err(Error::invalid(
                "logit-bias",
                format!("the bias of token {t} must be a finite number, not {b}"),
            ));
        }
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

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}
