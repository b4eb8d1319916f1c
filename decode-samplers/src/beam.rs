//! Beam search, as transformers' `generate(num_beams=…)` does it.
//!
//! Each step scores every beam's continuations as `running score + processed log-softmax`, keeps the
//! best `max(2, 1 + #eos) · num_beams` candidates, moves finished (EOS) ones among the top
//! `num_beams` into the hypothesis pool (score = sum of log-probabilities / generated
//! length^length_penalty, the EOS counted), and continues with the best `num_beams` others. The KV
//! cache follows the beams with one `reorder` per step (a `select` per layer, no per-beam copies).
//!
//! The engine runs it ([`crate::engine::Engine`] with `num_beams > 1`), one prompt after another,
//! and reports each prompt's best `num_return_sequences` hypotheses when its search ends.

use decode_core::{
    Batch, Cache, Context, EarlyStopping, GenerationConfig, LanguageModel, Logits, LogitsProcessor,
    Result,
};

use crate::SamplerChain;
use crate::engine::sequence::{Row, StopRules};
use crate::engine::{Report, TextDelta, check_chosen, check_logits, log_softmax_at};
use crate::probs::log_softmax_into;

/// A finished hypothesis.
struct Hypothesis {
    score: f32,
    ids: Vec<u32>,
    logprobs: Vec<f32>,
}

/// The pool of the `num_beams` best finished hypotheses (transformers' `BeamHypotheses`).
struct Pool {
    size: usize,
    length_penalty: f64,
    early_stopping: EarlyStopping,
    max_new_tokens: usize,
    hyps: Vec<Hypothesis>,
    worst: f32,
}

impl Pool {
    fn add(&mut self, ids: Vec<u32>, logprobs: Vec<f32>, sum_logprobs: f32, generated_len: usize) {
        let score = sum_logprobs / (generated_len as f64).powf(self.length_penalty) as f32;
        if self.hyps.len() < self.size || score > self.worst {
            self.hyps.push(Hypothesis {
                score,
                ids,
                logprobs,
            });
            if self.hyps.len() > self.size {
                // Drop the worst (the earliest on ties); the new worst is the next lowest.
                let worst = (0..self.hyps.len())
                    .min_by(|&a, &b| self.hyps[a].score.total_cmp(&self.hyps[b].score))
                    .unwrap_or(0);
                self.hyps.remove(worst);
                self.worst = self
                    .hyps
                    .iter()
                    .map(|h| h.score)
                    .fold(f32::INFINITY, f32::min);
            } else {
                self.worst = self.worst.min(score);
            }
        }
    }

    /// Whether no running beam can still enter the pool. `generated_len` counts the token being
    /// added this step.
    fn is_done(&self, best_running: f32, generated_len: usize) -> bool {
        if self.hyps.len() < self.size {
            return false;
        }
        let attainable = |len: usize| best_running / (len as f64).powf(self.length_penalty) as f32;
        match self.early_stopping {
            EarlyStopping::Flag(true) => true,
            EarlyStopping::Flag(false) => self.worst >= attainable(generated_len),
            EarlyStopping::Never if self.length_penalty > 0.0 => {
                self.worst >= attainable(self.max_new_tokens)
            }
            EarlyStopping::Never => self.worst >= attainable(generated_len),
        }
    }
}

/// A running beam.
#[derive(Clone)]
struct Beam {
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    score: f32,
}

/// The search of one prompt.
struct Search<C> {
    prompt: usize,
    prompt_len: usize,
    max_new: usize,
    chain: SamplerChain,
    cache: C,
    logits: Logits,
    beams: Vec<Beam>,
    pool: Pool,
    generated: usize,
}

/// Beam search between steps: the prompt being searched, and those left.
pub(crate) struct BeamSearch<C> {
    beams: usize,
    length_penalty: f64,
    early_stopping: EarlyStopping,
    /// The prompt to search next.
    next_prompt: usize,
    search: Option<Search<C>>,
    done: bool,
    scores: Vec<f32>,
    row: Vec<f32>,
    candidates: Vec<u32>,
}

impl<C: Cache> BeamSearch<C> {
    /// Beam search as `config` describes it, or `None` when `num_beams` is 1.
    pub(crate) fn from_config(config: &GenerationConfig) -> Option<Self> {
        (config.num_beams > 1).then(|| BeamSearch {
            beams: config.num_beams,
            length_penalty: config.length_penalty,
            early_stopping: config.early_stopping,
            next_prompt: 0,
            search: None,
            done: false,
            scores: Vec::new(),
            row: Vec::new(),
            candidates: Vec::new(),
        })
    }

    /// Whether every prompt's search has ended.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Starts the next prompt's search (its prefill), or advances the current one by a token per
    /// beam; a search that ends fills its prompt's rows (`rows` holds `num_return_sequences`
    /// placeholders per prompt) and reports their tokens.
    pub(crate) fn step<M: LanguageModel<Cache = C>>(
        &mut self,
        model: &M,
        rows: &mut Vec<Row<'_>>,
        rules: &StopRules,
        on_token: &mut dyn FnMut(TextDelta) -> bool,
    ) -> Result<Report> {
        let Some(search) = self.search.as_mut() else {
            return self.begin(model, rows);
        };
        let k = self.beams;
        let vocab = model.vocab_size();
        let eos = &rules.eos;
        let keep = 2.max(1 + eos.len()) * k;
        let logits = &search.logits;
        self.scores.clear();
        for (b, beam) in search.beams.iter().enumerate() {
            let raw = logits.get(b.min(logits.rows() - 1), logits.steps() - 1);
            check_logits(raw, search.generated, b)?;
            log_softmax_into(raw, &mut self.row);
            search.chain.apply(
                &Context::new(&beam.tokens, search.prompt_len),
                &mut self.row,
            );
            self.scores.extend(self.row.iter().map(|&s| s + beam.score));
        }
        // The best `keep` candidates, by score then by flat index (as torch.topk).
        let scores = &self.scores;
        let candidates = &mut self.candidates;
        candidates.clear();
        candidates.extend(0..scores.len() as u32);
        let by_score = |a: &u32, b: &u32| {
            scores[*b as usize]
                .total_cmp(&scores[*a as usize])
                .then(a.cmp(b))
        };
        let keep = keep.min(candidates.len());
        candidates.select_nth_unstable_by(keep - 1, by_score);
        candidates.truncate(keep);
        candidates.sort_by(by_score);
        // The best candidate's processed score must be finite: NaN or +∞ when a setting's effect
        // overflowed, −∞ when every token of every beam was masked.
        let best = candidates[0] as usize;
        check_chosen(scores, best as u32, search.generated, best / vocab)?;

        let mut next: Vec<Beam> = Vec::with_capacity(k);
        let mut parents: Vec<usize> = Vec::with_capacity(k);
        for (rank, &flat) in candidates.iter().enumerate() {
            let (b, token) = (flat as usize / vocab, flat % vocab as u32);
            let score = scores[flat as usize];
            let parent = &search.beams[b];
            let raw = logits.get(b.min(logits.rows() - 1), logits.steps() - 1);
            let mut logprobs = parent.logprobs.clone();
            logprobs.push(log_softmax_at(raw, token));
            if eos.contains(&token) {
                if rank < k {
                    let mut ids = parent.tokens[search.prompt_len..].to_vec();
                    ids.push(token);
                    search.pool.add(ids, logprobs, score, search.generated + 1);
                }
            } else {
                let mut tokens = parent.tokens.clone();
                tokens.push(token);
                next.push(Beam {
                    tokens,
                    logprobs,
                    score,
                });
                parents.push(b);
                if next.len() == k {
                    break;
                }
            }
        }
        search.generated += 1;
        let done = search
            .pool
            .is_done(scores[candidates[0] as usize], search.generated);
        search.beams = next;
        if done || search.generated >= search.max_new || search.beams.len() < k {
            self.end(rows, rules, on_token, done)?;
            return Ok(Report {
                prefill: false,
                forward_calls: 0,
                tokens: k,
            });
        }
        search.cache.reorder(&parents)?;
        let last: Vec<u32> = search
            .beams
            .iter()
            .map(|b| b.tokens.last().copied().unwrap_or(0))
            .collect();
        search.logits = model.forward(&Batch::column(&last), &mut search.cache)?;
        Ok(Report {
            prefill: false,
            forward_calls: 1,
            tokens: k,
        })
    }

    /// Prefills the next prompt (or ends at once when it may generate nothing).
    fn begin<M: LanguageModel<Cache = C>>(
        &mut self,
        model: &M,
        rows: &[Row<'_>],
    ) -> Result<Report> {
        let prompt = self.next_prompt;
        let Some(first) = rows.iter().position(|r| r.prompt == prompt) else {
            self.done = true;
            return Ok(Report {
                prefill: false,
                forward_calls: 0,
                tokens: 0,
            });
        };
        self.next_prompt += 1;
        let row = &rows[first];
        let (tokens, max_new) = (row.tokens.clone(), row.budget);
        if max_new == 0 {
            // Every placeholder row already stopped on its (empty) budget.
            self.done = !rows.iter().any(|r| r.prompt == self.next_prompt);
            return Ok(Report {
                prefill: false,
                forward_calls: 0,
                tokens: 0,
            });
        }
        let mut cache = model.new_cache(1, tokens.len().saturating_add(max_new))?;
        let logits = model.forward_last(&Batch::single(&tokens), &mut cache)?;
        cache.reorder(&vec![0; self.beams])?;
        self.search = Some(Search {
            prompt,
            prompt_len: tokens.len(),
            max_new,
            chain: row.chain.clone(),
            cache,
            logits,
            beams: (0..self.beams)
                .map(|b| Beam {
                    tokens: tokens.clone(),
                    logprobs: Vec::new(),
                    // Only the first beam is live at the start: the others are its copies.
                    score: if b == 0 { 0.0 } else { -1e9 },
                })
                .collect(),
            pool: Pool {
                size: self.beams,
                length_penalty: self.length_penalty,
                early_stopping: self.early_stopping,
                max_new_tokens: max_new,
                hyps: Vec::new(),
                worst: 1e9,
            },
            generated: 0,
        });
        Ok(Report {
            prefill: true,
            forward_calls: 1,
            tokens: 0,
        })
    }

    /// Ends the current search: its best hypotheses fill the prompt's rows (best first; rows
    /// beyond the hypotheses found are dropped) and their tokens are reported.
    fn end(
        &mut self,
        rows: &mut Vec<Row<'_>>,
        rules: &StopRules,
        on_token: &mut dyn FnMut(TextDelta) -> bool,
        pool_done: bool,
    ) -> Result<()> {
        let Some(search) = self.search.take() else {
            return Ok(());
        };
        let mut pool = search.pool;
        if !pool_done {
            for beam in &search.beams {
                let ids = beam.tokens[search.prompt_len..].to_vec();
                let len = ids.len();
                pool.add(ids, beam.logprobs.clone(), beam.score, len);
            }
        }
        // Best first; among equal scores the later one first, as transformers' sort-then-pop.
        let mut hyps = pool.hyps;
        hyps.sort_by(|a, b| a.score.total_cmp(&b.score));
        let mut best = hyps.into_iter().rev();
        let first = rows
            .iter()
            .position(|r| r.prompt == search.prompt)
            .unwrap_or(rows.len());
        let count = rows[first..]
            .iter()
            .take_while(|r| r.prompt == search.prompt)
            .count();
        let mut filled = 0;
        for (i, row) in rows.iter_mut().enumerate().skip(first).take(count) {
            let Some(h) = best.next() else { break };
            row.score = Some(h.score);
            for (&token, &logprob) in h.ids.iter().zip(&h.logprobs) {
                if !row.push(i, token, logprob, rules, on_token)? {
                    break;
                }
            }
            // A search can end short of the budget with no EOS (every beam finished).
            row.stop.get_or_insert(crate::engine::StopReason::Length);
            filled += 1;
        }
        rows.drain(first + filled..first + count);
        self.done = !rows.iter().any(|r| r.prompt == self.next_prompt);
        Ok(())
    }
}
