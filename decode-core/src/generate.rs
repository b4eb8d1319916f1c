//! The plain generation loop: prefill the prompt, then one cached decode step per new token.

use std::time::Instant;

use serde::Serialize;

use crate::{Batch, Error, LanguageModel, Result};

/// One generated sequence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sequence {
    /// Generated ids only (the prompt excluded); ends with the EOS id when generation stopped on it.
    pub ids: Vec<u32>,
    /// For each generated id, its log-probability under the model's raw (unprocessed) logits.
    pub logprobs: Vec<f32>,
}

/// How a generation went.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GenerationStats {
    /// Tokens generated.
    pub new_tokens: usize,
    /// Time of the prompt's forward pass (which yields the first new token).
    pub prefill_seconds: f64,
    /// Time of every later step.
    pub decode_seconds: f64,
    /// Decode throughput: tokens made by decode steps / `decode_seconds` (0 when there were none).
    pub tokens_per_second: f64,
    /// Forward passes of the target model.
    pub target_forward_calls: usize,
}

/// The result of a generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerationOutput {
    /// The prompt, as ids.
    pub prompt_ids: Vec<u32>,
    /// One entry per returned sequence.
    pub sequences: Vec<Sequence>,
    /// Timing and counts.
    pub stats: GenerationStats,
}

/// Greedy decoding of one prompt: at each step the highest logit wins (the first on ties, as
/// `torch.argmax`). Stops after `max_new_tokens` or, unless `ignore_eos`, on an EOS id (kept in the
/// output). `on_token` sees each id as it is chosen, for streaming.
///
/// Refuses an empty prompt, out-of-vocabulary ids, and a prompt plus `max_new_tokens` longer than
/// the model's context, before running anything.
pub fn greedy<M: LanguageModel>(
    model: &M,
    prompt: &[u32],
    max_new_tokens: usize,
    ignore_eos: bool,
    mut on_token: impl FnMut(u32),
) -> Result<GenerationOutput> {
    check_prompt(model, prompt, max_new_tokens)?;
    let mut stats = GenerationStats::default();
    let mut sequence = Sequence {
        ids: Vec::with_capacity(max_new_tokens),
        logprobs: Vec::with_capacity(max_new_tokens),
    };
    if max_new_tokens > 0 {
        let mut cache = model.new_cache(1);
        let started = Instant::now();
        let mut logits = model.forward_last(&Batch::single(prompt), &mut cache)?;
        stats.prefill_seconds = started.elapsed().as_secs_f64();
        stats.target_forward_calls = 1;
        let decode_started = Instant::now();
        loop {
            let row = logits.last(0);
            let id = argmax(row);
            sequence.ids.push(id);
            sequence.logprobs.push(log_softmax_at(row, id));
            on_token(id);
            let stop = !ignore_eos && model.eos_token_ids().contains(&id);
            if stop || sequence.ids.len() == max_new_tokens {
                break;
            }
            logits = model.forward(&Batch::single(&[id]), &mut cache)?;
            stats.target_forward_calls += 1;
        }
        stats.decode_seconds = decode_started.elapsed().as_secs_f64();
        let decoded = sequence.ids.len() - 1;
        if decoded > 0 && stats.decode_seconds > 0.0 {
            stats.tokens_per_second = decoded as f64 / stats.decode_seconds;
        }
    }
    stats.new_tokens = sequence.ids.len();
    Ok(GenerationOutput {
        prompt_ids: prompt.to_vec(),
        sequences: vec![sequence],
        stats,
    })
}

/// Checks a prompt before generating: not empty, ids in the vocabulary, prompt plus
/// `max_new_tokens` within the context.
pub fn check_prompt<M: LanguageModel>(
    model: &M,
    prompt: &[u32],
    max_new_tokens: usize,
) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::invalid(
            "prompt",
            "is empty (give at least one token)",
        ));
    }
    Batch::single(prompt).check_vocab(model.vocab_size())?;
    let needed = prompt.len() + max_new_tokens;
    if needed > model.context_length() {
        return Err(Error::ContextOverflow {
            needed,
            limit: model.context_length(),
        });
    }
    Ok(())
}

/// Index of the largest value; the first one on ties (NaN never wins).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// `log_softmax(values)[index]`, computed stably in f64.
pub fn log_softmax_at(values: &[f32], index: u32) -> f32 {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = values.iter().map(|&v| (v as f64 - max).exp()).sum();
    (values[index as usize] as f64 - max - sum.ln()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_first_tie() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }

    #[test]
    fn log_softmax_of_uniform() {
        let lp = log_softmax_at(&[0.5; 4], 2);
        assert!((lp - (0.25f32).ln()).abs() < 1e-6);
    }
}
