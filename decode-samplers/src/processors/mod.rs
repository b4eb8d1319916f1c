//! The built-in logits processors.
//!
//! Each follows the transformers `LogitsProcessor` of the same name exactly (the tests compare them
//! on the same logits), except the frequency and presence penalties, which follow OpenAI's
//! definition. Parameters are `f64`, as in Python, so thresholds round the same way.

mod bias;
mod min_new_tokens;
mod min_p;
mod ngram;
mod penalties;
mod temperature;
mod top_k;
mod top_p;
mod typical;

pub use bias::{BanTokens, LogitBias, NoBadWords};
pub use min_new_tokens::MinNewTokens;
pub use min_p::MinP;
pub use ngram::NoRepeatNGram;
pub use penalties::{FrequencyPresencePenalty, RepetitionPenalty};
pub use temperature::Temperature;
pub use top_k::TopK;
pub use top_p::TopP;
pub use typical::TypicalP;

use decode_core::{Context, LogitsProcessor};

/// A processor written as a closure: `FnMut(&Context, &mut [f32])`, cloneable.
#[derive(Clone)]
pub struct FnProcessor<F>(pub F);

impl<F> LogitsProcessor for FnProcessor<F>
where
    F: FnMut(&Context<'_>, &mut [f32]) + Clone + Send + 'static,
{
    fn apply(&mut self, ctx: &Context<'_>, logits: &mut [f32]) {
        (self.0)(ctx, logits)
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}
