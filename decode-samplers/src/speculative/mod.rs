//! Lossless speculative decoding: a drafter proposes γ tokens, the target scores them all in one
//! forward pass from its KV cache and keeps what its own distribution allows. The output
//! distribution is exactly the target's (token for token plain greedy decoding under a greedy
//! chain); the speed-up comes from fewer target passes.
//!
//! - [`Drafter`]: [`DraftModel`] (a small model of the same vocabulary, with its own cache),
//!   [`PromptLookup`] (n-gram matches in the context, no model), or your own.
//! - [`verify()`]: the verify step, greedy or modified rejection sampling.
//! - [`DraftSchedule`]: γ fixed, transformers' heuristic, or the expected-speed-up optimum.
//! - [`speculative_generate`]: the loop, for a batch of prompts (each row accepts its own number of
//!   tokens), reporting [`SpeculativeStats`] in each output's `stats.speculative`.

mod drafter;
mod schedule;
mod verify;

use std::time::Instant;

use decode_core::generate::{Flow, TokenEvent, check_request, collect_outputs, log_softmax_at};
use decode_core::{
    Batch, Cache, Error, GenerationConfig, GenerationOutput, GenerationStats, LanguageModel,
    LogitsProcessor, PositionStats, Result, Sequence, SpeculativeStats,
};
pub use drafter::{Draft, DraftModel, DraftRequest, Drafter, OracleDrafter, PromptLookup};
pub use schedule::{DraftSchedule, GammaState, MAX_DRAFT_TOKENS, expected_speedup};
pub use verify::{Verdict, verify};

use crate::SamplerChain;

/// One sequence in flight.
struct Row {
    prompt: usize,
    tokens: Vec<u32>,
    prompt_len: usize,
    logprobs: Vec<f32>,
    budget: usize,
    done: bool,
    chain: SamplerChain,
    gamma: GammaState,
}

/// Speculative generation from several prompts (`num_return_sequences` sequences each) with
/// `drafter` and the target `model`. Sequence `i` uses the chain `make_chain(i)` (its processors
/// shape both distributions, its selector decides and draws). `on_token` sees every kept token
/// in order and may stop its sequence.
///
/// Refuses a drafter of another vocabulary, beam search (`num_beams > 1`) and a schedule whose γ is
/// 0 or above [`MAX_DRAFT_TOKENS`].
pub fn speculative_generate<M: LanguageModel>(
    model: &M,
    drafter: &mut dyn Drafter,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    schedule: DraftSchedule,
    mut make_chain: impl FnMut(usize) -> SamplerChain,
    mut on_token: impl FnMut(&TokenEvent<'_>) -> Flow,
) -> Result<Vec<GenerationOutput>> {
    if config.num_beams > 1 {
        return Err(Error::Unsupported(
            "beam search with a draft model or prompt lookup".into(),
        ));
    }
    schedule.validate()?;
    if let Some(vocab) = drafter.vocab_size()
        && vocab != model.vocab_size()
    {
        return Err(Error::VocabMismatch(format!(
            "the draft has {vocab} tokens but the target has {}",
            model.vocab_size()
        )));
    }
    let eos = check_request(model, prompts, config)?;
    let pad = eos.first().copied().unwrap_or(0);
    let mut rows: Vec<Row> = Vec::new();
    for (p, prompt) in prompts.iter().enumerate() {
        for _ in 0..config.num_return_sequences {
            let budget = config.new_tokens_for(prompt.len());
            rows.push(Row {
                prompt: p,
                tokens: prompt.clone(),
                prompt_len: prompt.len(),
                logprobs: Vec::new(),
                budget,
                done: budget == 0,
                chain: make_chain(rows.len()),
                gamma: GammaState::new(schedule),
            });
        }
    }
    let mut stats = GenerationStats::default();
    let mut spec = SpeculativeStats::default();
    let started = Instant::now();
    let mut cache = model.new_cache(rows.len());
    // The target's cache holds every token but the last ("pending") one, which the next verify
    // pass feeds ahead of the drafts.
    let heads: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| r.tokens[..r.tokens.len() - 1].to_vec())
        .collect();
    if heads.iter().any(|h| !h.is_empty()) && rows.iter().any(|r| !r.done) {
        model.forward_last(&Batch::left_padded(&heads, pad), &mut cache)?;
        stats.target_forward_calls += 1;
    }
    stats.prefill_seconds = started.elapsed().as_secs_f64();
    spec.target_seconds = stats.prefill_seconds;
    let decode_started = Instant::now();
    while rows.iter().any(|r| !r.done) {
        let cost_ratio = if spec.drafted > 0 && stats.target_forward_calls > 0 {
            (spec.draft_seconds / spec.drafted as f64)
                / (spec.target_seconds / stats.target_forward_calls as f64)
        } else {
            0.0
        };
        let maxes: Vec<usize> = rows
            .iter_mut()
            .map(|r| {
                if r.done {
                    return 0;
                }
                let left = r.budget - (r.tokens.len() - r.prompt_len);
                r.gamma.gamma(cost_ratio).min(left - 1)
            })
            .collect();
        let draft_started = Instant::now();
        let requests: Vec<DraftRequest<'_>> = rows
            .iter()
            .zip(&maxes)
            .map(|(r, &max)| DraftRequest {
                tokens: &r.tokens,
                prompt_len: r.prompt_len,
                max,
                chain: &r.chain,
            })
            .collect();
        let mut drafts = drafter.propose(&requests)?;
        drop(requests);
        spec.draft_seconds += draft_started.elapsed().as_secs_f64();
        if drafts.len() != rows.len() {
            return Err(Error::Shape(format!(
                "the drafter returned {} drafts for {} rows",
                drafts.len(),
                rows.len()
            )));
        }
        let vocab = model.vocab_size();
        for (draft, &max) in drafts.iter_mut().zip(&maxes) {
            draft.tokens.truncate(max);
            check_draft(draft, vocab)?;
        }
        let inputs: Vec<Vec<u32>> = rows
            .iter()
            .zip(&drafts)
            .map(|(r, d)| {
                if r.done {
                    return Vec::new();
                }
                let mut input = vec![r.tokens[r.tokens.len() - 1]];
                input.extend_from_slice(&d.tokens);
                input
            })
            .collect();
        let target_started = Instant::now();
        let logits = model.forward(&Batch::right_padded(&inputs, pad), &mut cache)?;
        spec.target_seconds += target_started.elapsed().as_secs_f64();
        stats.target_forward_calls += 1;
        spec.verify_steps += 1;

        for (i, (row, draft)) in rows.iter_mut().zip(&drafts).enumerate() {
            if row.done {
                continue;
            }
            let held = row.tokens.len() - 1; // real tokens in the target cache before this pass
            let verdict = verify(&mut row.chain, &row.tokens, row.prompt_len, draft, |j| {
                logits.get(i, j)
            })?;
            let g = draft.tokens.len();
            spec.drafted += g;
            spec.accepted += verdict.accepted;
            if spec.per_position.len() < g {
                spec.per_position.resize(g, PositionStats::default());
            }
            for (j, pos) in spec.per_position.iter_mut().take(g).enumerate() {
                pos.drafted += 1;
                pos.accepted += usize::from(j < verdict.accepted);
            }
            row.gamma.update(g, verdict.accepted);
            let new = draft.tokens[..verdict.accepted]
                .iter()
                .copied()
                .chain(std::iter::once(verdict.next));
            let mut kept = 0;
            for (j, token) in new.enumerate() {
                row.tokens.push(token);
                row.logprobs.push(log_softmax_at(logits.get(i, j), token));
                LogitsProcessor::accept(&mut row.chain, token);
                kept += 1;
                let generated = &row.tokens[row.prompt_len..];
                let event = TokenEvent {
                    sequence: i,
                    prompt: row.prompt,
                    token,
                    generated,
                };
                let stop = on_token(&event) == Flow::Stop;
                if stop
                    || (!config.ignore_eos && eos.contains(&token))
                    || generated.len() >= row.budget
                {
                    row.done = true;
                    break;
                }
            }
            // Keep the pending token and the kept drafts; the last kept token is the new pending.
            let kept_drafts = verdict.accepted.min(kept);
            cache.rollback(i, held + 1 + kept_drafts)?;
            drafter.feedback(i, kept_drafts)?;
        }
        cache.trim();
    }
    stats.decode_seconds = decode_started.elapsed().as_secs_f64();
    spec.draft_forward_calls = drafter.forward_calls();
    spec.draft_seconds = drafter.seconds().max(spec.draft_seconds);
    if spec.drafted > 0 {
        spec.acceptance_rate = spec.accepted as f64 / spec.drafted as f64;
    }
    if spec.verify_steps > 0 {
        spec.mean_accepted = spec.accepted as f64 / spec.verify_steps as f64;
    }
    stats.new_tokens = rows.iter().map(|r| r.tokens.len() - r.prompt_len).sum();
    if stats.decode_seconds > 0.0 {
        stats.tokens_per_second = stats.new_tokens as f64 / stats.decode_seconds;
    }
    stats.speculative = Some(spec);
    let sequences = rows.into_iter().map(|row| {
        (
            row.prompt,
            Sequence::generated(&row.tokens, row.prompt_len, row.logprobs),
        )
    });
    Ok(collect_outputs(prompts, sequences, &stats))
}

/// A drafter's proposal must name tokens of the vocabulary and, when it has distributions, one
/// full distribution per token.
fn check_draft(draft: &Draft, vocab: usize) -> Result<()> {
    if let Some(&id) = draft.tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::TokenOutOfRange {
            id,
            vocab_size: vocab,
        });
    }
    if let Some(probs) = &draft.probs
        && (probs.len() < draft.tokens.len() || probs.iter().any(|q| q.len() != vocab))
    {
        return Err(Error::Shape(format!(
            "a draft of {} tokens came with {} distributions (each must have {vocab} entries)",
            draft.tokens.len(),
            probs.len()
        )));
    }
    Ok(())
}
