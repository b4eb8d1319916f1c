//! Lossless speculative decoding: a drafter proposes γ tokens, the target scores them all in one
//! forward pass from its KV cache and keeps what its own distribution allows. The output
//! distribution is exactly the target's (token for token plain greedy decoding under a greedy
//! chain); the speed-up comes from fewer target passes.
//!
//! - [`Drafter`]: [`DraftModel`] (a small model of the same vocabulary, with its own cache),
//!   [`PromptLookup`] (n-gram matches in the context, no model), or your own.
//! - [`verify()`]: the verify step, greedy or modified rejection sampling.
//! - [`DraftTree`] and [`verify_tree`]: drafts that branch, verified losslessly (greedy, the
//!   target's inverse CDF with the children first, or recursive rejection sampling without
//!   replacement); a chain verifies as [`verify()`] does, bit for bit.
//! - [`DraftSchedule`]: γ fixed, transformers' heuristic, or the expected-speed-up optimum.
//! - The loop is the engine's: [`Engine::speculative`](crate::engine::Engine::speculative) runs it
//!   for a batch of prompts (each row accepts its own number of tokens), reporting
//!   [`SpeculativeStats`] in the stats.

mod drafter;
mod schedule;
mod tree;
mod verify;

use std::time::Instant;

use decode_core::{Batch, Cache, Error, LanguageModel, Result};
pub use drafter::{Draft, DraftModel, DraftRequest, Drafter, OracleDrafter, PromptLookup};
pub use schedule::{DraftSchedule, GammaState, MAX_DRAFT_TOKENS, expected_speedup};
pub use tree::{DraftTree, TreeVerdict, verify_tree};
pub use verify::{Verdict, check_draft, verify};

use crate::engine::sequence::{Row, StopRules, slots_needed};
use crate::engine::{PositionStats, Report, SpeculativeStats, TextDelta, log_softmax_at};

/// The state of speculative decoding between steps.
pub(crate) struct Speculation<'d, C> {
    drafter: Box<dyn Drafter + 'd>,
    /// Per row: how many tokens to draft next.
    gammas: Vec<GammaState>,
    /// `None` until the prefill.
    cache: Option<C>,
    stats: SpeculativeStats,
    vocab: usize,
    pad: u32,
}

impl<'d, C: Cache> Speculation<'d, C> {
    /// Checks the schedule and the drafter's vocabulary against `model`'s.
    pub(crate) fn new<M: LanguageModel<Cache = C>>(
        model: &M,
        drafter: Box<dyn Drafter + 'd>,
        schedule: DraftSchedule,
        rows: usize,
        pad: u32,
    ) -> Result<Self> {
        schedule.validate()?;
        if let Some(vocab) = drafter.vocab_size()
            && vocab != model.vocab_size()
        {
            return Err(Error::VocabMismatch(format!(
                "the draft has {vocab} tokens but the target has {}",
                model.vocab_size()
            )));
        }
        Ok(Speculation {
            drafter,
            gammas: vec![GammaState::new(schedule); rows],
            cache: None,
            stats: SpeculativeStats::default(),
            vocab: model.vocab_size(),
            pad,
        })
    }

    /// The acceptance and cost so far.
    pub(crate) fn stats(&self) -> SpeculativeStats {
        let mut spec = self.stats.clone();
        spec.draft_forward_calls = self.drafter.forward_calls();
        spec.draft_seconds = self.drafter.seconds().max(spec.draft_seconds);
        if spec.drafted > 0 {
            spec.acceptance_rate = spec.accepted as f64 / spec.drafted as f64;
        }
        if spec.verify_steps > 0 {
            spec.mean_accepted = spec.accepted as f64 / spec.verify_steps as f64;
        }
        spec
    }

    /// The first step reads the prompts into the target's cache (all but each row's last token,
    /// which the first verify pass feeds ahead of the drafts); every later step drafts, verifies
    /// in one target pass, and keeps what the verify step allows.
    pub(crate) fn step<M: LanguageModel<Cache = C>>(
        &mut self,
        model: &M,
        rows: &mut [Row<'_>],
        rules: &StopRules,
        on_token: &mut dyn FnMut(TextDelta) -> bool,
    ) -> Result<Report> {
        let Some(cache) = self.cache.as_mut() else {
            return self.prefill(model, rows);
        };
        let spec = &mut self.stats;
        let target_calls = spec.verify_steps + 1;
        let cost_ratio = if spec.drafted > 0 {
            (spec.draft_seconds / spec.drafted as f64) / (spec.target_seconds / target_calls as f64)
        } else {
            0.0
        };
        let maxes: Vec<usize> = rows
            .iter()
            .zip(&mut self.gammas)
            .map(|(r, gamma)| {
                if r.is_done() {
                    return 0;
                }
                let left = r.budget - r.step();
                gamma.gamma(cost_ratio).min(left - 1)
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
        let mut drafts = self.drafter.propose(&requests)?;
        drop(requests);
        spec.draft_seconds += draft_started.elapsed().as_secs_f64();
        if drafts.len() != rows.len() {
            return Err(Error::Draft(format!(
                "the drafter returned {} drafts for {} rows",
                drafts.len(),
                rows.len()
            )));
        }
        for (draft, &max) in drafts.iter_mut().zip(&maxes) {
            draft.tokens.truncate(max);
            if let Some(probs) = &mut draft.probs {
                probs.truncate(max);
            }
            check_draft(draft, self.vocab)?;
        }
        let inputs: Vec<Vec<u32>> = rows
            .iter()
            .zip(&drafts)
            .map(|(r, d)| {
                if r.is_done() {
                    return Vec::new();
                }
                let mut input = vec![r.last()];
                input.extend_from_slice(&d.tokens);
                input
            })
            .collect();
        let target_started = Instant::now();
        let logits = model.forward(&Batch::right_padded(&inputs, self.pad), cache)?;
        spec.target_seconds += target_started.elapsed().as_secs_f64();
        spec.verify_steps += 1;

        let mut tokens = 0;
        for (i, (row, draft)) in rows.iter_mut().zip(&drafts).enumerate() {
            if row.is_done() {
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
            self.gammas[i].update(g, verdict.accepted);
            let new = draft.tokens[..verdict.accepted]
                .iter()
                .copied()
                .chain(std::iter::once(verdict.next));
            let mut kept = 0;
            for (j, token) in new.enumerate() {
                kept += 1;
                let logprob = log_softmax_at(logits.get(i, j), token);
                if !row.push(i, token, logprob, rules, on_token)? {
                    break;
                }
            }
            tokens += kept;
            // Keep the pending token and the kept drafts; the last kept token is the new pending.
            let kept_drafts = verdict.accepted.min(kept);
            cache.rollback(i, held + 1 + kept_drafts)?;
            self.drafter.feedback(i, kept_drafts)?;
        }
        cache.trim();
        Ok(Report {
            prefill: false,
            forward_calls: 1,
            tokens,
        })
    }

    /// Feeds every row's tokens but its last to the target.
    fn prefill<M: LanguageModel<Cache = C>>(
        &mut self,
        model: &M,
        rows: &[Row<'_>],
    ) -> Result<Report> {
        let started = Instant::now();
        // Room for every row's tokens and one pass's drafts beyond them.
        let slots = slots_needed(rows).saturating_add(MAX_DRAFT_TOKENS + 1);
        let mut cache = model.new_cache(rows.len(), slots)?;
        let heads: Vec<Vec<u32>> = rows
            .iter()
            .map(|r| r.tokens[..r.tokens.len() - 1].to_vec())
            .collect();
        let mut forward_calls = 0;
        if heads.iter().any(|h| !h.is_empty()) {
            model.forward_last(&Batch::left_padded(&heads, self.pad), &mut cache)?;
            forward_calls = 1;
        }
        self.cache = Some(cache);
        self.stats.target_seconds += started.elapsed().as_secs_f64();
        Ok(Report {
            prefill: true,
            forward_calls,
            tokens: 0,
        })
    }
}
