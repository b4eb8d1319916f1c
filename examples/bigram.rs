//! A language model that is not burn — a bigram table over the GPT-2 vocabulary, counted from a
//! few lines of text in plain Rust — decoded by the same engine as GPT-2: sampling, beam search,
//! and speculative decoding with a smoother bigram as the draft.
//!
//! ```text
//! cargo run --release --example bigram
//! ```
//!
//! Everything a model must provide is [`LanguageModel`] (logits for every new position) and a
//! [`Cache`] that can roll back and follow beams; a bigram looks at one token, so its cache only
//! counts positions.

use std::collections::HashMap;

use decode::core::{Batch, Cache, GenerationConfig, LanguageModel, Logits, Result};
use decode::models::Tokenizer;
use decode::samplers::Engine;
use decode::samplers::speculative::{DraftModel, DraftSchedule};

const TEXT: &str = "In the beginning God created the heaven and the earth. And the earth was \
    without form, and void; and darkness was upon the face of the deep. And the Spirit of God \
    moved upon the face of the waters. And God said, Let there be light: and there was light. \
    And God saw the light, that it was good: and God divided the light from the darkness.";

/// log P(next | last) from bigram counts with add-`smoothing`, over the whole vocabulary.
struct Bigram {
    counts: HashMap<u32, HashMap<u32, f32>>,
    vocab: usize,
    smoothing: f32,
}

impl Bigram {
    fn new(ids: &[u32], vocab: usize, smoothing: f32) -> Self {
        let mut counts: HashMap<u32, HashMap<u32, f32>> = HashMap::new();
        for pair in ids.windows(2) {
            *counts
                .entry(pair[0])
                .or_default()
                .entry(pair[1])
                .or_default() += 1.0;
        }
        Bigram {
            counts,
            vocab,
            smoothing,
        }
    }

    fn logits_after(&self, last: u32, out: &mut Vec<f32>) {
        let row = self.counts.get(&last);
        let total = row.map_or(0.0, |r| r.values().sum()) + self.smoothing * self.vocab as f32;
        let unseen = (self.smoothing / total).ln();
        let start = out.len();
        out.resize(start + self.vocab, unseen);
        for (&next, &count) in row.into_iter().flatten() {
            out[start + next as usize] = ((count + self.smoothing) / total).ln();
        }
    }
}

/// A cache with nothing to store: per row, the number of tokens seen.
#[derive(Debug, Clone)]
struct Positions {
    len: usize,
    rows: Vec<usize>,
}

impl Cache for Positions {
    fn rows(&self) -> usize {
        self.rows.len()
    }
    fn len(&self) -> usize {
        self.len
    }
    fn positions(&self) -> &[usize] {
        &self.rows
    }
    fn truncate(&mut self, len: usize) -> Result<()> {
        self.len = len.min(self.len);
        self.rows.iter_mut().for_each(|p| *p = (*p).min(len));
        Ok(())
    }
    fn reorder(&mut self, rows: &[usize]) -> Result<()> {
        self.rows = rows.iter().map(|&r| self.rows[r]).collect();
        Ok(())
    }
    fn rollback(&mut self, row: usize, keep: usize) -> Result<()> {
        self.rows[row] = keep;
        Ok(())
    }
    fn trim(&mut self) {
        self.len = self.rows.iter().copied().max().unwrap_or(0);
    }
}

impl LanguageModel for Bigram {
    type Cache = Positions;

    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn context_length(&self) -> usize {
        1 << 20
    }
    fn eos_token_ids(&self) -> &[u32] {
        &[50256]
    }
    fn new_cache(&self, rows: usize, _positions: usize) -> Result<Positions> {
        // A bigram needs no keys or values: the cache only counts positions.
        Ok(Positions {
            len: 0,
            rows: vec![0; rows],
        })
    }
    fn forward(&self, batch: &Batch, cache: &mut Positions) -> Result<Logits> {
        batch.check_vocab(self.vocab)?;
        let mut data = Vec::with_capacity(batch.rows() * batch.steps() * self.vocab);
        for row in 0..batch.rows() {
            for (step, &token) in batch.row(row).iter().enumerate() {
                self.logits_after(token, &mut data);
                cache.rows[row] += usize::from(batch.is_real(row, step));
            }
        }
        cache.len += batch.steps();
        Logits::new(batch.rows(), batch.steps(), self.vocab, data)
    }
}

pub fn main() -> Result<()> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/gpt2-tokenizer");
    let tokenizer = Tokenizer::from_dir(dir)?;
    let ids = tokenizer.encode(TEXT)?;
    let target = Bigram::new(&ids, 50257, 1e-6);
    let draft = Bigram::new(&ids, 50257, 1e-4);
    let prompt = vec![tokenizer.encode("And God")?];
    let show = |ids: &[u32]| tokenizer.decode(ids);

    let sampling = GenerationConfig {
        max_new_tokens: Some(16),
        do_sample: true,
        temperature: 0.7,
        seed: 1,
        ..GenerationConfig::default()
    };
    let out = Engine::new(&target, &sampling).run(&prompt)?;
    println!("sampling:    And God{}", show(&out[0].sequences[0].ids)?);

    let beams = GenerationConfig {
        max_new_tokens: Some(16),
        num_beams: 4,
        ..GenerationConfig::default()
    };
    let out = Engine::new(&target, &beams).run(&prompt)?;
    println!("beam search: And God{}", show(&out[0].sequences[0].ids)?);

    // Speculative sampling keeps the target's distribution; under greedy decoding it must give
    // exactly the plain greedy tokens.
    let greedy = GenerationConfig {
        max_new_tokens: Some(16),
        ..GenerationConfig::default()
    };
    let plain = Engine::new(&target, &greedy).run(&prompt)?;
    let fast = Engine::new(&target, &greedy)
        .speculative(DraftModel::new(&draft, 0), DraftSchedule::Constant(3))
        .run(&prompt)?;
    assert_eq!(
        plain[0].sequences[0].ids, fast[0].sequences[0].ids,
        "lossless"
    );
    let spec = fast[0].stats.speculative.clone().unwrap_or_default();
    println!(
        "speculative: And God{} ({:.0}% of drafts accepted, {} target passes for {} tokens)",
        show(&fast[0].sequences[0].ids)?,
        spec.acceptance_rate * 100.0,
        fast[0].stats.target_forward_calls,
        fast[0].stats.new_tokens
    );
    let out = Engine::new(&target, &sampling)
        .speculative(DraftModel::new(&draft, 0), DraftSchedule::Constant(3))
        .run(&prompt)?;
    println!(
        "speculative sampling: And God{}",
        show(&out[0].sequences[0].ids)?
    );
    Ok(())
}
