//! The generation loop: prefill every prompt in one left-padded batch, then one cached decode step
//! per token for all sequences together, each stopping on its own.

use std::time::Instant;

use serde::Serialize;

use crate::{Batch, Context, Error, GenerationConfig, LanguageModel, Result, Sampler};

/// One generated sequence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sequence {
    /// Generated ids only (the prompt excluded); ends with the EOS id when generation stopped on it.
    pub ids: Vec<u32>,
    /// For each generated id, its log-probability under the model's raw (unprocessed) logits.
    pub logprobs: Vec<f32>,
    /// Beam search only: the hypothesis score (sum of processed log-probabilities divided by
    /// generated length^length_penalty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

impl Sequence {
    /// The generated part of `tokens` (everything after the prompt), with its log-probabilities.
    pub fn generated(tokens: &[u32], prompt_len: usize, logprobs: Vec<f32>) -> Self {
        Sequence {
            ids: tokens[prompt_len.min(tokens.len())..].to_vec(),
            logprobs,
            score: None,
        }
    }
}

/// How a generation went.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GenerationStats {
    /// Tokens generated, all sequences together.
    pub new_tokens: usize,
    /// Time of the prompts' forward pass (which yields the first token of each sequence).
    pub prefill_seconds: f64,
    /// Time of every later step.
    pub decode_seconds: f64,
    /// Decode throughput: tokens made by decode steps / `decode_seconds` (0 when there were none).
    pub tokens_per_second: f64,
    /// Forward passes of the target model.
    pub target_forward_calls: usize,
    /// Speculative decoding only: acceptance and cost (flattened into these stats in JSON).
    #[serde(flatten)]
    pub speculative: Option<SpeculativeStats>,
}

/// What speculative decoding did: read `acceptance_rate` and `mean_accepted` first.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SpeculativeStats {
    /// Tokens proposed by the drafter.
    pub drafted: usize,
    /// Proposed tokens the target kept.
    pub accepted: usize,
    /// `accepted / drafted`.
    pub acceptance_rate: f64,
    /// Drafted tokens kept per verify step (each step also adds one token of the target's).
    pub mean_accepted: f64,
    /// Verify steps (one target forward pass each), all rows together.
    pub verify_steps: usize,
    /// Per draft position `i`: how often a token was proposed there, and how often kept.
    pub per_position: Vec<PositionStats>,
    /// Draft-model forward passes (0 for drafters without a model).
    pub draft_forward_calls: usize,
    /// Seconds in target forward passes.
    pub target_seconds: f64,
    /// Seconds in the drafter.
    pub draft_seconds: f64,
}

/// Acceptance at one draft position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PositionStats {
    /// Tokens proposed at this position.
    pub drafted: usize,
    /// Of those, kept.
    pub accepted: usize,
}

/// The result of generating from one prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerationOutput {
    /// The prompt, as ids.
    pub prompt_ids: Vec<u32>,
    /// `num_return_sequences` entries.
    pub sequences: Vec<Sequence>,
    /// Timing and counts of the whole call (shared by every prompt of a batch).
    pub stats: GenerationStats,
}

/// Whether a sequence goes on after a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep generating.
    Continue,
    /// Stop this sequence (the token just reported is kept).
    Stop,
}

/// A token as it is chosen, for streaming and user stop rules.
#[derive(Debug, Clone, Copy)]
pub struct TokenEvent<'a> {
    /// Which sequence: `prompt × num_return_sequences + k`.
    pub sequence: usize,
    /// Which prompt it continues.
    pub prompt: usize,
    /// The new id.
    pub token: u32,
    /// The sequence's generated ids so far, `token` last.
    pub generated: &'a [u32],
}

/// One sequence in flight.
struct Row {
    prompt: usize,
    tokens: Vec<u32>,
    prompt_len: usize,
    logprobs: Vec<f32>,
    budget: usize,
    done: bool,
}

/// Generates from several prompts at once (`num_return_sequences` sequences each), one forward
/// pass per step for all of them. Sequence `i` gets the sampler `make_sampler(i)`; `on_token` sees
/// every token as it is chosen and may stop its sequence ([`Flow::Stop`]).
///
/// Stops a sequence on an EOS id (unless `ignore_eos`), after its token budget
/// (`max_new_tokens`, or `max_length` minus its prompt), or when `on_token` says so. Checks every
/// prompt before running anything. Beam search is `decode_samplers::beam_search`.
pub fn generate<M, S>(
    model: &M,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    mut make_sampler: impl FnMut(usize) -> S,
    mut on_token: impl FnMut(&TokenEvent<'_>) -> Flow,
) -> Result<Vec<GenerationOutput>>
where
    M: LanguageModel,
    S: Sampler,
{
    if config.num_beams > 1 {
        return Err(Error::Unsupported(
            "num_beams > 1 in generate(); call decode_samplers::beam_search".into(),
        ));
    }
    let eos = check_request(model, prompts, config)?;
    let pad = eos.first().copied().unwrap_or(0);
    let copies = config.num_return_sequences;
    let mut rows: Vec<Row> = prompts
        .iter()
        .enumerate()
        .flat_map(|(p, prompt)| {
            (0..copies).map(move |_| Row {
                prompt: p,
                tokens: prompt.clone(),
                prompt_len: prompt.len(),
                logprobs: Vec::new(),
                budget: config.new_tokens_for(prompt.len()),
                done: config.new_tokens_for(prompt.len()) == 0,
            })
        })
        .collect();
    let mut samplers: Vec<S> = (0..rows.len()).map(&mut make_sampler).collect();
    let mut stats = GenerationStats::default();

    if rows.iter().any(|r| !r.done) {
        let mut cache = model.new_cache(rows.len());
        let prompt_rows: Vec<Vec<u32>> = rows.iter().map(|r| r.tokens.clone()).collect();
        let started = Instant::now();
        let mut logits = model.forward_last(&Batch::left_padded(&prompt_rows, pad), &mut cache)?;
        stats.prefill_seconds = started.elapsed().as_secs_f64();
        stats.target_forward_calls = 1;
        let decode_started = Instant::now();
        let mut scratch = Vec::with_capacity(model.vocab_size());
        loop {
            let mut next = vec![pad; rows.len()];
            let mut active = vec![false; rows.len()];
            for (i, row) in rows.iter_mut().enumerate() {
                if row.done {
                    continue;
                }
                let raw = logits.last(i);
                let step = row.tokens.len() - row.prompt_len;
                check_logits(raw, step, i)?;
                scratch.clear();
                scratch.extend_from_slice(raw);
                let ctx = Context::new(&row.tokens, row.prompt_len);
                let id = samplers[i].sample(&ctx, &mut scratch);
                check_chosen(&scratch, id, step, i)?;
                samplers[i].accept(id);
                row.tokens.push(id);
                row.logprobs.push(log_softmax_at(raw, id));
                let generated = &row.tokens[row.prompt_len..];
                let event = TokenEvent {
                    sequence: i,
                    prompt: row.prompt,
                    token: id,
                    generated,
                };
                let stop = on_token(&event) == Flow::Stop;
                row.done = stop
                    || (!config.ignore_eos && eos.contains(&id))
                    || generated.len() >= row.budget;
                next[i] = id;
                active[i] = !row.done;
            }
            if rows.iter().all(|r| r.done) {
                break;
            }
            logits = model.forward(&Batch::column_masked(&next, &active), &mut cache)?;
            stats.target_forward_calls += 1;
        }
        stats.decode_seconds = decode_started.elapsed().as_secs_f64();
    }
    stats.new_tokens = rows.iter().map(|r| r.tokens.len() - r.prompt_len).sum();
    let decoded = stats.new_tokens.saturating_sub(rows.len());
    if decoded > 0 && stats.decode_seconds > 0.0 {
        stats.tokens_per_second = decoded as f64 / stats.decode_seconds;
    }
    let sequences = rows.into_iter().map(|row| {
        (
            row.prompt,
            Sequence::generated(&row.tokens, row.prompt_len, row.logprobs),
        )
    });
    Ok(collect_outputs(prompts, sequences, &stats))
}

/// The most memory one request may need (KV caches of every row at full length, plus a step's
/// logits), estimated before anything is allocated: above it the request is refused with what it
/// would need, where an allocation would abort the process.
pub const MAX_REQUEST_BYTES: u64 = 16 << 30;

/// Checks a generation request before anything runs (the merged config, then every prompt against
/// the model and its token budget, the token ids the settings name against the vocabulary, and
/// the memory it needs) and returns the EOS ids it stops on: the config's, else the model's.
pub fn check_request<M: LanguageModel>(
    model: &M,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
) -> Result<Vec<u32>> {
    config.validate()?;
    if prompts.is_empty() {
        return Err(Error::invalid("prompt", "no prompts given"));
    }
    let vocab = model.vocab_size();
    if let Some((name, id)) = config.token_ids().find(|&(_, id)| id as usize >= vocab) {
        return Err(Error::invalid(
            name,
            format!("token id {id} is outside the vocabulary (size {vocab})"),
        ));
    }
    for prompt in prompts {
        if config.max_new_tokens.is_none() && prompt.len() >= config.max_length {
            // transformers raises here too: nothing would be generated.
            return Err(Error::invalid(
                "max-length",
                format!(
                    "{} leaves no room after the {}-token prompt: raise it or give max-new-tokens",
                    config.max_length,
                    prompt.len()
                ),
            ));
        }
        check_prompt(model, prompt, config.new_tokens_for(prompt.len()))?;
    }
    check_memory(model, prompts, config)?;
    Ok(match &config.eos_token_ids {
        Some(ids) => ids.clone(),
        None => model.eos_token_ids().to_vec(),
    })
}

/// Refuses a request whose rows (prompts × sequences or beams) at full length would need more
/// than [`MAX_REQUEST_BYTES`], with checked arithmetic throughout.
fn check_memory<M: LanguageModel>(
    model: &M,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
) -> Result<()> {
    let per_prompt = config.num_return_sequences.max(config.num_beams);
    let longest = prompts
        .iter()
        .map(|p| p.len().saturating_add(config.new_tokens_for(p.len())))
        .max()
        .unwrap_or(0);
    let rows = (prompts.len() as u64).checked_mul(per_prompt as u64);
    let cache = rows
        .and_then(|r| r.checked_mul(longest as u64))
        .and_then(|n| n.checked_mul(model.cache_bytes_per_position() as u64));
    let logits = rows.and_then(|r| r.checked_mul(model.vocab_size() as u64 * 4));
    let needed = cache.zip(logits).and_then(|(c, l)| c.checked_add(l));
    match needed {
        Some(bytes) if bytes <= MAX_REQUEST_BYTES => Ok(()),
        _ => Err(Error::invalid(
            "num-return-sequences",
            format!(
                "{} prompts × {per_prompt} sequences or beams × {longest} positions need {} of \
                 cache and logits, over the {} GiB limit",
                prompts.len(),
                needed.map_or("more than 2^64 bytes".into(), |b| format!(
                    "{:.1} GiB",
                    b as f64 / (1u64 << 30) as f64
                )),
                MAX_REQUEST_BYTES >> 30
            ),
        )),
    }
}

/// One output per prompt, from `(prompt index, sequence)` pairs in order; every output carries
/// the call's `stats`.
pub fn collect_outputs(
    prompts: &[Vec<u32>],
    sequences: impl IntoIterator<Item = (usize, Sequence)>,
    stats: &GenerationStats,
) -> Vec<GenerationOutput> {
    let mut outputs: Vec<GenerationOutput> = prompts
        .iter()
        .map(|p| GenerationOutput {
            prompt_ids: p.clone(),
            sequences: Vec::new(),
            stats: stats.clone(),
        })
        .collect();
    for (prompt, sequence) in sequences {
        outputs[prompt].sequences.push(sequence);
    }
    outputs
}

/// Greedy decoding of one prompt: at each step the highest logit wins (the first on ties, as
/// `torch.argmax`). Stops after `max_new_tokens` or, unless `ignore_eos`, on an EOS id (kept in the
/// output). `on_token` sees each id as it is chosen, for streaming.
pub fn greedy<M: LanguageModel>(
    model: &M,
    prompt: &[u32],
    max_new_tokens: usize,
    ignore_eos: bool,
    mut on_token: impl FnMut(u32),
) -> Result<GenerationOutput> {
    let config = GenerationConfig {
        max_new_tokens: Some(max_new_tokens),
        ignore_eos,
        ..GenerationConfig::default()
    };
    let mut outputs = generate(
        model,
        &[prompt.to_vec()],
        &config,
        |_| Argmax,
        |event| {
            on_token(event.token);
            Flow::Continue
        },
    )?;
    outputs
        .pop()
        .ok_or_else(|| Error::Shape("generation returned no output".into()))
}

/// The plain greedy sampler: no processors, argmax.
#[derive(Debug, Clone, Copy, Default)]
pub struct Argmax;

impl Sampler for Argmax {
    fn process(&mut self, _ctx: &Context<'_>, _logits: &mut [f32]) {}

    fn sample(&mut self, _ctx: &Context<'_>, logits: &mut [f32]) -> u32 {
        argmax(logits)
    }

    fn accept(&mut self, _token: u32) {}

    fn reset(&mut self) {}
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
    let needed = prompt.len().saturating_add(max_new_tokens);
    if needed > model.context_length() {
        return Err(Error::ContextOverflow {
            needed,
            limit: model.context_length(),
        });
    }
    Ok(())
}

/// Index of the largest value; the first one on ties. NaN never wins: the result is the largest
/// non-NaN value's index (0 for an empty or all-NaN slice, which [`check_logits`] refuses first).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map_or(0, |(i, _)| i as u32)
}

/// Refuses a row of raw logits holding NaN or ±∞ (the model's weights or inputs are not finite):
/// [`Error::NonFinite`] naming the step and the sequence. One pass that vectorises: multiplying
/// by zero turns only NaN and ±∞ into NaN, and a NaN survives any sum.
pub fn check_logits(raw: &[f32], step: usize, sequence: usize) -> Result<()> {
    let mut lanes = [0f32; 16];
    let chunks = raw.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|v| v * 0.0).sum();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v * 0.0;
        }
    }
    if raw.is_empty() || (lanes.iter().sum::<f32>() + tail).is_nan() {
        let what = match raw.iter().find(|v| !v.is_finite()) {
            Some(v) if v.is_nan() => "NaN",
            Some(_) => "an infinite value",
            None => "no values",
        };
        return Err(Error::NonFinite(format!(
            "the model's logits hold {what} at step {step} of sequence {sequence}: its weights \
             or inputs are not finite"
        )));
    }
    Ok(())
}

/// Refuses processed logits that are not usable: NaN or +∞ anywhere (a setting's effect
/// overflowed f32: a tiny temperature, a huge penalty or bias; the softmax would be NaN), or a
/// chosen token at −∞ (the processors masked every token). [`Error::NonFinite`], naming the step
/// and the sequence. One pass without early exit, so it vectorises (−∞ is a masked token, fine).
pub fn check_chosen(processed: &[f32], id: u32, step: usize, sequence: usize) -> Result<()> {
    let broken = processed
        .iter()
        .fold(false, |acc, &v| acc | v.is_nan() | (v == f32::INFINITY));
    if broken {
        let v = processed
            .iter()
            .find(|v| v.is_nan() || **v == f32::INFINITY)
            .copied()
            .unwrap_or(f32::NAN);
        return Err(Error::NonFinite(format!(
            "the processed logits hold {v} at step {step} of sequence {sequence}: a setting's \
             effect overflows f32 (temperature, penalty or logit bias)"
        )));
    }
    match processed.get(id as usize) {
        Some(v) if v.is_finite() => Ok(()),
        Some(_) => Err(Error::NonFinite(format!(
            "every token was masked at step {step} of sequence {sequence} (banned tokens, \
             penalties or filters left none)"
        ))),
        None => Err(Error::Shape(format!(
            "token {id} chosen from {} logits",
            processed.len()
        ))),
    }
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
    fn nan_never_wins_argmax() {
        assert_eq!(argmax(&[f32::NAN, 1.0, 2.0]), 2);
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY]), 1);
        assert_eq!(argmax(&[1.0, f32::NAN, 0.5]), 0);
    }

    #[test]
    fn non_finite_logits_are_errors() {
        let mut row = vec![0.5f32; 103];
        assert!(check_logits(&row, 0, 0).is_ok());
        for (i, bad) in [(0, f32::NAN), (50, f32::INFINITY), (102, f32::NEG_INFINITY)] {
            let keep = row[i];
            row[i] = bad;
            let err = check_logits(&row, 4, 1).unwrap_err().to_string();
            assert!(err.contains("step 4 of sequence 1"), "{err}");
            row[i] = keep;
        }
        assert!(check_logits(&[], 0, 0).is_err());
        assert!(check_chosen(&[0.0, f32::NEG_INFINITY], 1, 0, 0).is_err());
        assert!(check_chosen(&[f32::NAN, 1.0], 0, 0, 0).is_err());
        assert!(check_chosen(&[f32::INFINITY], 0, 0, 0).is_err());
        assert!(check_chosen(&[1.0], 0, 0, 0).is_ok());
    }

    #[test]
    fn log_softmax_of_uniform() {
        let lp = log_softmax_at(&[0.5; 4], 2);
        assert!((lp - (0.25f32).ln()).abs() < 1e-6);
    }
}
