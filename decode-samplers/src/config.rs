//! Building the standard chain from a [`GenerationConfig`].

use decode_core::{GenerationConfig, Result};

use crate::SamplerChain;
use crate::processors::{
    BanTokens, FrequencyPresencePenalty, LogitBias, MinNewTokens, MinP, NoBadWords, NoRepeatNGram,
    RepetitionPenalty, Temperature, TopK, TopP, TypicalP,
};

impl SamplerChain {
    /// The chain a [`GenerationConfig`] describes, for sequence `sequence` of a call (its sampling
    /// seed is `config.seed + sequence`), with `eos_token_ids` for min-new-tokens.
    ///
    /// The order is transformers' where it has the processor, and the default order of this crate:
    ///
    /// 1. logit bias, 2. repetition penalty, 3. frequency and presence penalties, 4. no-repeat
    ///    n-gram, 5. banned tokens and bad words, 6. min-new-tokens;
    /// 7. then, when sampling only: temperature, top-k, top-p, min-p, typical-p;
    /// 8. then the selector: greedy, or a seeded multinomial draw when `do_sample`.
    ///
    /// Processors at their neutral value (penalty 1, top-p 1, …) are left out.
    pub fn from_config(
        config: &GenerationConfig,
        eos_token_ids: &[u32],
        sequence: usize,
    ) -> Result<Self> {
        config.validate()?;
        let mut chain = if config.do_sample {
            SamplerChain::sampling(config.seed.wrapping_add(sequence as u64))
        } else {
            SamplerChain::greedy()
        };
        if !config.logit_bias.is_empty() {
            chain = chain.with(LogitBias::new(&config.logit_bias)?);
        }
        if config.repetition_penalty != 1.0 {
            chain = chain.with(RepetitionPenalty::new(config.repetition_penalty)?);
        }
        if config.frequency_penalty != 0.0 || config.presence_penalty != 0.0 {
            chain = chain.with(FrequencyPresencePenalty::new(
                config.frequency_penalty,
                config.presence_penalty,
            )?);
        }
        if config.no_repeat_ngram_size > 0 {
            chain = chain.with(NoRepeatNGram::new(config.no_repeat_ngram_size)?);
        }
        if !config.banned_tokens.is_empty() {
            chain = chain.with(BanTokens::new(&config.banned_tokens));
        }
        if !config.bad_words_ids.is_empty() {
            chain = chain.with(NoBadWords::new(&config.bad_words_ids, eos_token_ids)?);
        }
        if config.min_new_tokens > 0 && !eos_token_ids.is_empty() {
            chain = chain.with(MinNewTokens::new(config.min_new_tokens, eos_token_ids));
        }
        if config.do_sample {
            let keep = config.min_tokens_to_keep;
            if config.temperature != 1.0 {
                chain = chain.with(Temperature::new(config.temperature)?);
            }
            if config.top_k > 0 {
                chain = chain.with(TopK::new(config.top_k, keep)?);
            }
            if config.top_p < 1.0 {
                chain = chain.with(TopP::new(config.top_p, keep)?);
            }
            if let Some(min_p) = config.min_p {
                chain = chain.with(MinP::new(min_p, keep)?);
            }
            if config.typical_p < 1.0 {
                chain = chain.with(TypicalP::new(config.typical_p, keep)?);
            }
        }
        Ok(chain)
    }
}
