//! Drafters: what proposes tokens for the target to verify.

use std::time::Instant;

use decode_core::{Batch, Cache, Context, LanguageModel, LogitsProcessor, Result, Selector};

use crate::probs::softmax;
use crate::{Multinomial, SamplerChain};

/// What a drafter is asked for one row of the batch.
pub struct DraftRequest<'a> {
    /// Every token of the sequence so far (prompt included); the last one has not been scored by
    /// the target yet.
    pub tokens: &'a [u32],
    /// How many of `tokens` are the prompt.
    pub prompt_len: usize,
    /// At most this many tokens (0: propose nothing for this row).
    pub max: usize,
    /// The row's processor chain in its current state: a drafter with a distribution applies it
    /// to its own logits, so draft and target distributions are processed alike.
    pub chain: &'a SamplerChain,
}

/// A proposal for one row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft {
    /// The proposed tokens.
    pub tokens: Vec<u32>,
    /// For each proposed token, the drafter's processed distribution over the vocabulary; `None`
    /// when the drafter has none (then each proposal counts as certain: a one-hot q).
    pub probs: Option<Vec<Vec<f32>>>,
}

/// Proposes continuations for the target to verify.
pub trait Drafter {
    /// One proposal per request (rows of the batch, in order).
    fn propose(&mut self, requests: &[DraftRequest<'_>]) -> Result<Vec<Draft>>;

    /// Row `row` kept `accepted` of its proposal (then the target added one token of its own).
    fn feedback(&mut self, _row: usize, _accepted: usize) -> Result<()> {
        Ok(())
    }

    /// The vocabulary the drafter proposes from, when it has a fixed one (checked against the
    /// target's).
    fn vocab_size(&self) -> Option<usize> {
        None
    }

    /// Forward passes of a draft model so far (0 for drafters without a model).
    fn forward_calls(&self) -> usize {
        0
    }

    /// Seconds spent proposing so far.
    fn seconds(&self) -> f64 {
        0.0
    }
}

/// A borrowed drafter drafts (so a caller can read its state after a generation).
impl<D: Drafter + ?Sized> Drafter for &mut D {
    fn propose(&mut self, requests: &[DraftRequest<'_>]) -> Result<Vec<Draft>> {
        (**self).propose(requests)
    }

    fn feedback(&mut self, row: usize, accepted: usize) -> Result<()> {
        (**self).feedback(row, accepted)
    }

    fn vocab_size(&self) -> Option<usize> {
        (**self).vocab_size()
    }

    fn forward_calls(&self) -> usize {
        (**self).forward_calls()
    }

    fn seconds(&self) -> f64 {
        (**self).seconds()
    }
}

/// A smaller language model of the same vocabulary, with its own KV cache rolled back on rejection.
pub struct DraftModel<'m, M: LanguageModel> {
    model: &'m M,
    cache: Option<M::Cache>,
    /// Per row: how many of its tokens the draft cache holds.
    fed: Vec<usize>,
    /// Per row: tokens drafted in the last proposal.
    drafted: Vec<usize>,
    rngs: Vec<Multinomial>,
    seed: u64,
    forward_calls: usize,
    seconds: f64,
}

impl<'m, M: LanguageModel> DraftModel<'m, M> {
    /// Drafts with `model`; sampling draws use their own generator seeded from `seed`. A row
    /// whose sequence outgrows `model`'s context length gets shorter drafts, then none: the
    /// target may have the longer context.
    pub fn new(model: &'m M, seed: u64) -> Self {
        DraftModel {
            model,
            cache: None,
            fed: Vec::new(),
            drafted: Vec::new(),
            rngs: Vec::new(),
            seed,
            forward_calls: 0,
            seconds: 0.0,
        }
    }
}

impl<M: LanguageModel> Drafter for DraftModel<'_, M> {
    fn propose(&mut self, requests: &[DraftRequest<'_>]) -> Result<Vec<Draft>> {
        let started = Instant::now();
        let rows = requests.len();
        if self.cache.as_ref().is_none_or(|c| c.rows() != rows) {
            // Room for the longest sequence and its draft now (the cache grows past it if need be).
            let slots = requests
                .iter()
                .map(|r| r.tokens.len().saturating_add(r.max))
                .max()
                .unwrap_or(1);
            self.cache = Some(self.model.new_cache(rows, slots)?);
            self.fed = vec![0; rows];
            self.rngs = (0..rows)
                .map(|r| Multinomial::new(self.seed.wrapping_add(r as u64)))
                .collect();
        }
        if let Some(cache) = self.cache.as_mut() {
            cache.trim();
        }
        let mut drafts = vec![Draft::default(); rows];
        let mut probes: Vec<SamplerChain> = requests.iter().map(|r| r.chain.clone()).collect();
        let mut contexts: Vec<Vec<u32>> = requests.iter().map(|r| r.tokens.to_vec()).collect();
        // A draft with a shorter context than the target drafts only while it has room: drafting
        // m tokens feeds the row's tokens and the first m − 1 drafts, which must fit its
        // positions. A row out of room drafts nothing and the target goes on alone (each verify
        // step still adds the target's own token), as plain decoding would.
        let limit = self.model.context_length();
        let maxes: Vec<usize> = requests
            .iter()
            .map(|r| r.max.min((limit + 1).saturating_sub(r.tokens.len())))
            .collect();
        let rounds = maxes.iter().copied().max().unwrap_or(0);
        let pad = self.model.eos_token_ids().first().copied().unwrap_or(0);
        for round in 0..rounds {
            // Round 0 catches each row up on the tokens its cache lacks; later rounds feed the
            // previous draft token. Rows with nothing to do feed one masked pad.
            let inputs: Vec<Vec<u32>> = (0..rows)
                .map(|r| {
                    if round >= maxes[r] {
                        Vec::new()
                    } else {
                        contexts[r][self.fed[r]..].to_vec()
                    }
                })
                .collect();
            if inputs.iter().all(Vec::is_empty) {
                break;
            }
            let cache = self
                .cache
                .as_mut()
                .ok_or_else(|| decode_core::Error::Shape("draft cache missing".into()))?;
            // An empty row becomes masked padding.
            let logits = self
                .model
                .forward(&Batch::right_padded(&inputs, pad), cache)?;
            self.forward_calls += 1;
            for r in 0..rows {
                if inputs[r].is_empty() {
                    continue;
                }
                self.fed[r] += inputs[r].len();
                let mut row = logits.get(r, inputs[r].len() - 1).to_vec();
                let ctx = Context::new(&contexts[r], requests[r].prompt_len);
                probes[r].apply(&ctx, &mut row);
                let token = if probes[r].is_greedy() {
                    decode_core::argmax(&row)
                } else {
                    let q = softmax(&row);
                    let token = self.rngs[r].draw(&q);
                    drafts[r].probs.get_or_insert_with(Vec::new).push(q);
                    token
                };
                LogitsProcessor::accept(&mut probes[r], token);
                drafts[r].tokens.push(token);
                contexts[r].push(token);
            }
        }
        self.drafted = drafts.iter().map(|d| d.tokens.len()).collect();
        self.seconds += started.elapsed().as_secs_f64();
        Ok(drafts)
    }

    fn feedback(&mut self, row: usize, accepted: usize) -> Result<()> {
        let Some(cache) = self.cache.as_mut() else {
            return Ok(());
        };
        // The cache holds the row's tokens and all drafts but the last; keep those accepted.
        let drafted = self.drafted.get(row).copied().unwrap_or(0);
        let fed_drafts = drafted.saturating_sub(1);
        let keep = self.fed[row] - fed_drafts + accepted.min(fed_drafts);
        self.fed[row] = keep;
        cache.rollback(row, keep)
    }

    fn vocab_size(&self) -> Option<usize> {
        Some(self.model.vocab_size())
    }

    fn forward_calls(&self) -> usize {
        self.forward_calls
    }

    fn seconds(&self) -> f64 {
        self.seconds
    }
}

/// Prompt lookup decoding: finds the first earlier occurrence of the sequence's last n-gram (n from
/// `max_ngram` down to 1, as transformers) and proposes what followed it. A continuation that runs
/// into the end of the text goes on copying what it just proposed, so a repeating pattern is
/// proposed in full. No model, no distribution.
#[derive(Debug, Clone)]
pub struct PromptLookup {
    max_ngram: usize,
    seconds: f64,
}

impl PromptLookup {
    /// Matches n-grams of at most `max_ngram` tokens (at least 1).
    pub fn new(max_ngram: usize) -> Self {
        PromptLookup {
            max_ngram: max_ngram.max(1),
            seconds: 0.0,
        }
    }

    /// The continuation of the first earlier match of `tokens`' last n-gram, up to `max` tokens.
    pub fn lookup(&self, tokens: &[u32], max: usize) -> Vec<u32> {
        for n in (1..=self.max_ngram.min(tokens.len().saturating_sub(1))).rev() {
            let tail = &tokens[tokens.len() - n..];
            // The tail itself (ending at the last token) does not count as a match.
            if let Some(start) = (0..tokens.len() - n).find(|&s| &tokens[s..s + n] == tail) {
                let from = start + n;
                let mut out: Vec<u32> = Vec::with_capacity(max);
                for j in 0..max {
                    let i = from + j;
                    out.push(if i < tokens.len() {
                        tokens[i]
                    } else {
                        out[i - tokens.len()]
                    });
                }
                return out;
            }
        }
        Vec::new()
    }
}

impl Drafter for PromptLookup {
    fn propose(&mut self, requests: &[DraftRequest<'_>]) -> Result<Vec<Draft>> {
        let started = Instant::now();
        let drafts = requests
            .iter()
            .map(|r| Draft {
                tokens: self.lookup(r.tokens, r.max),
                probs: None,
            })
            .collect();
        self.seconds += started.elapsed().as_secs_f64();
        Ok(drafts)
    }

    fn seconds(&self) -> f64 {
        self.seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_lookup_proposes_what_followed_the_last_ngram() {
        let p = PromptLookup::new(3);
        // ... 5 6 7 8 9 ... 5 6 7 → 8 9
        assert_eq!(p.lookup(&[1, 5, 6, 7, 8, 9, 2, 5, 6, 7], 2), vec![8, 9]);
        assert_eq!(p.lookup(&[1, 2, 3], 4), Vec::<u32>::new());
        // Falls back to shorter n-grams.
        assert_eq!(p.lookup(&[4, 1, 9, 9, 3, 1], 3), vec![9, 9, 3]);
        // A repeating pattern goes on past the end of the text.
        assert_eq!(p.lookup(&[7, 1, 2, 1, 2], 5), vec![1, 2, 1, 2, 1]);
    }
}

/// A benchmarking drafter that knows the answer: it proposes a known continuation (the target's
/// own greedy output), each token replaced by a wrong one with probability `1 − alpha`. Under
/// greedy verification its acceptance rate is about `alpha` at every position, which isolates the
/// cost side of speculative decoding. A benchmark helper (hidden from the docs): the benches and
/// `examples/speculative.rs` use it.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct OracleDrafter {
    reference: Vec<u32>,
    alpha: f64,
    vocab: u32,
    rng: Multinomial,
}

impl OracleDrafter {
    /// `reference` is the whole expected sequence (prompt included).
    pub fn new(reference: Vec<u32>, alpha: f64, vocab: usize, seed: u64) -> Self {
        OracleDrafter {
            reference,
            alpha,
            vocab: vocab.max(2) as u32,
            rng: Multinomial::new(seed),
        }
    }
}

impl Drafter for OracleDrafter {
    fn propose(&mut self, requests: &[DraftRequest<'_>]) -> Result<Vec<Draft>> {
        Ok(requests
            .iter()
            .map(|r| {
                let from = r.tokens.len().min(self.reference.len());
                let to = (from + r.max).min(self.reference.len());
                let tokens = self.reference[from..to]
                    .iter()
                    .map(|&t| {
                        if self.rng.uniform() < self.alpha {
                            t
                        } else {
                            (t + 1) % self.vocab
                        }
                    })
                    .collect();
                Draft {
                    tokens,
                    probs: None,
                }
            })
            .collect())
    }
}
