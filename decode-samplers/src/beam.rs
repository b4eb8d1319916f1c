//! Beam search, as transformers' `generate(num_beams=…)` does it.
//!
//! Each step scores every beam's continuations as `running score + processed log-softmax`, keeps the
//! best `max(2, 1 + #eos) · num_beams` candidates, moves finished (EOS) ones among the top
//! `num_beams` into the hypothesis pool (score = sum of log-probabilities / generated
//! length^length_penalty, the EOS counted), and continues with the best `num_beams` others. The KV
//! cache follows the beams with one `reorder` per step (a `select` per layer, no per-beam copies).

use std::time::Instant;

use decode_core::generate::{check_request, log_softmax_at};
use decode_core::{
    Batch, Cache, Context, EarlyStopping, GenerationConfig, GenerationOutput, GenerationStats,
    LanguageModel, LogitsProcessor, Result, Sequence,
};

use crate::SamplerChain;
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

/// Beam search from one prompt with `config.num_beams` beams. `chain`'s processors (penalties,
/// n-gram bans, min-new-tokens…) transform each beam's log-probabilities, as in transformers; its
/// selector is not used. Returns the `num_return_sequences` best hypotheses, best first, each with
/// its [`Sequence::score`].
pub fn beam_search<M: LanguageModel>(
    model: &M,
    prompt: &[u32],
    config: &GenerationConfig,
    chain: &SamplerChain,
) -> Result<GenerationOutput> {
    config.validate()?;
    let k = config.num_beams;
    let max_new = config.new_tokens_for(prompt.len());
    check_request(model, &[prompt.to_vec()], config)?;
    let eos: Vec<u32> = match (&config.eos_token_ids, config.ignore_eos) {
        (_, true) => Vec::new(),
        (Some(ids), false) => ids.clone(),
        (None, false) => model.eos_token_ids().to_vec(),
    };
    let mut chain = chain.clone();
    let mut pool = Pool {
        size: k,
        length_penalty: config.length_penalty,
        early_stopping: config.early_stopping,
        max_new_tokens: max_new,
        hyps: Vec::new(),
        worst: 1e9,
    };
    let mut stats = GenerationStats::default();
    let prompt_len = prompt.len();
    let mut beams: Vec<Beam> = (0..k)
        .map(|b| Beam {
            tokens: prompt.to_vec(),
            logprobs: Vec::new(),
            // Only the first beam is live at the start: the others are its copies.
            score: if b == 0 { 0.0 } else { -1e9 },
        })
        .collect();
    let mut done = max_new == 0;
    if !done {
        let mut cache = model.new_cache(1);
        let started = Instant::now();
        let mut logits = model.forward_last(&Batch::single(prompt), &mut cache)?;
        cache.reorder(&vec![0; k])?;
        stats.prefill_seconds = started.elapsed().as_secs_f64();
        stats.target_forward_calls = 1;
        let decode_started = Instant::now();
        let vocab = model.vocab_size();
        let keep = 2.max(1 + eos.len()) * k;
        let mut scores = Vec::with_capacity(k * vocab);
        let mut row = Vec::with_capacity(vocab);
        let mut candidates: Vec<u32> = Vec::with_capacity(k * vocab);
        let mut generated = 0;
        loop {
            scores.clear();
            for (b, beam) in beams.iter().enumerate() {
                let raw = logits.get(b.min(logits.rows() - 1), logits.steps() - 1);
                decode_core::generate::check_logits(raw, generated, b)?;
                log_softmax_into(raw, &mut row);
                chain.apply(&Context::new(&beam.tokens, prompt_len), &mut row);
                scores.extend(row.iter().map(|&s| s + beam.score));
            }
            // The best `keep` candidates, by score then by flat index (as torch.topk).
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
            // The best candidate's processed score must be finite: NaN or +∞ when a setting's
            // effect overflowed, −∞ when every token of every beam was masked.
            let best = candidates[0] as usize;
            decode_core::generate::check_chosen(&scores, best as u32, generated, best / vocab)?;

            let mut next: Vec<Beam> = Vec::with_capacity(k);
            let mut parents: Vec<usize> = Vec::with_capacity(k);
            for (rank, &flat) in candidates.iter().enumerate() {
                let (b, token) = (flat as usize / vocab, flat % vocab as u32);
                let score = scores[flat as usize];
                let parent = &beams[b];
                let raw = logits.get(b.min(logits.rows() - 1), logits.steps() - 1);
                let mut logprobs = parent.logprobs.clone();
                logprobs.push(log_softmax_at(raw, token));
                let mut ids = parent.tokens[prompt_len..].to_vec();
                ids.push(token);
                if eos.contains(&token) {
                    if rank < k {
                        pool.add(ids, logprobs, score, generated + 1);
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
            generated += 1;
            done = done || pool.is_done(scores[candidates[0] as usize], generated);
            beams = next;
            if done || generated >= max_new || beams.len() < k {
                break;
            }
            cache.reorder(&parents)?;
            let last: Vec<u32> = beams.iter().map(|b| b.tokens[b.tokens.len() - 1]).collect();
            logits = model.forward(&Batch::column(&last), &mut cache)?;
            stats.target_forward_calls += 1;
        }
        stats.decode_seconds = decode_started.elapsed().as_secs_f64();
    }
    if !done {
        for beam in &beams {
            let ids = beam.tokens[prompt_len..].to_vec();
            let len = ids.len();
            pool.add(ids, beam.logprobs.clone(), beam.score, len);
        }
    }
    // Best first; among equal scores the later one first, as transformers' sort-then-pop.
    let mut hyps = pool.hyps;
    hyps.sort_by(|a, b| a.score.total_cmp(&b.score));
    let sequences: Vec<Sequence> = hyps
        .into_iter()
        .rev()
        .take(config.num_return_sequences)
        .map(|h| Sequence {
            ids: h.ids,
            logprobs: h.logprobs,
            score: Some(h.score),
        })
        .collect();
    stats.new_tokens = sequences.iter().map(|s| s.ids.len()).sum();
    let steps = stats.target_forward_calls.saturating_sub(1);
    if steps > 0 && stats.decode_seconds > 0.0 {
        stats.tokens_per_second = steps as f64 / stats.decode_seconds;
    }
    Ok(GenerationOutput {
        prompt_ids: prompt.to_vec(),
        sequences,
        stats,
    })
}
