//! Processors and a typical chain on GPT-2's 50,257 logits (criterion; µs per call).
//!
//! `cargo bench --bench samplers`. Copying the logits for each call is setup, not timed.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use decode::core::{Context, LogitsProcessor};
use decode::samplers::SamplerChain;
use decode::samplers::processors::{
    FrequencyPresencePenalty, MinP, NoRepeatNGram, RepetitionPenalty, Temperature, TopK, TopP,
    TypicalP,
};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

const VOCAB: usize = 50257;

fn logits() -> Vec<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    // Roughly GPT-2-like: a spread of a few units.
    (0..VOCAB)
        .map(|_| (rng.random::<f32>() + rng.random::<f32>() + rng.random::<f32>() - 1.5) * 4.0)
        .collect()
}

fn history() -> Vec<u32> {
    (0..96u32).map(|i| (i * 7919) % VOCAB as u32).collect()
}

fn bench_one(c: &mut Criterion, name: &str, mut p: impl LogitsProcessor) {
    let (logits, tokens) = (logits(), history());
    let ctx = Context::new(&tokens, 32);
    c.bench_function(&format!("processor/{name}"), |b| {
        b.iter_batched_ref(
            || logits.clone(),
            |l| p.apply(&ctx, l),
            BatchSize::SmallInput,
        )
    });
}

fn benches(c: &mut Criterion) {
    bench_one(c, "temperature", Temperature::new(0.7).unwrap());
    bench_one(c, "top_k_50", TopK::new(50, 1).unwrap());
    bench_one(c, "top_p_0.9_full_vocab", TopP::new(0.9, 1).unwrap());
    bench_one(c, "min_p_0.05", MinP::new(0.05, 1).unwrap());
    bench_one(c, "typical_p_0.9", TypicalP::new(0.9, 1).unwrap());
    bench_one(
        c,
        "repetition_penalty_96_tokens",
        RepetitionPenalty::new(1.3).unwrap(),
    );
    bench_one(
        c,
        "frequency_presence_64_generated",
        FrequencyPresencePenalty::new(0.5, 0.5).unwrap(),
    );
    bench_one(c, "no_repeat_ngram_3", NoRepeatNGram::new(3).unwrap());

    let (logits, tokens) = (logits(), history());
    let ctx = Context::new(&tokens, 32);
    let mut chain = SamplerChain::sampling(3)
        .with(RepetitionPenalty::new(1.3).unwrap())
        .with(Temperature::new(0.7).unwrap())
        .with(TopK::new(50, 1).unwrap())
        .with(TopP::new(0.9, 1).unwrap());
    c.bench_function("chain/rep1.3_temp0.7_topk50_topp0.9_sample", |b| {
        b.iter_batched_ref(
            || logits.clone(),
            |l| chain.sample(&ctx, l),
            BatchSize::SmallInput,
        )
    });
    // The same processors without the draw, as beam search and the verify step call them.
    c.bench_function("chain/rep1.3_temp0.7_topk50_topp0.9_apply", |b| {
        b.iter_batched_ref(
            || logits.clone(),
            |l| chain.apply(&ctx, l),
            BatchSize::SmallInput,
        )
    });
    // Min-p as the first cut: its softmax over the whole vocabulary, then candidates.
    let mut chain = SamplerChain::sampling(3)
        .with(Temperature::new(0.7).unwrap())
        .with(MinP::new(0.05, 1).unwrap())
        .with(TopP::new(0.9, 1).unwrap());
    c.bench_function("chain/temp0.7_minp0.05_topp0.9_sample", |b| {
        b.iter_batched_ref(
            || logits.clone(),
            |l| chain.sample(&ctx, l),
            BatchSize::SmallInput,
        )
    });
}

/// The engine's per-row checks: raw logits finite, processed logits usable (issue: non-finite
/// values must be errors, at a cost small beside a decode step).
fn checks(c: &mut Criterion) {
    let logits = logits();
    c.bench_function("checks/finite_raw_and_processed_50257", |b| {
        b.iter(|| {
            decode::samplers::engine::check_logits(&logits, 0, 0).unwrap();
            decode::samplers::engine::check_chosen(&logits, 7, 0, 0).unwrap();
        })
    });
}

criterion_group!(samplers, benches, checks);
criterion_main!(samplers);
