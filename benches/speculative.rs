//! Speculative decoding against plain greedy decoding of the same GPT-2-small-shaped target
//! (random weights, CPU, batch 1, 24 new tokens after 32): an oracle drafter that proposes the
//! target's own continuation, each token wrong with probability 1 − α, for α ∈ {0.5, 0.7, 0.9}
//! and γ ∈ {2, 4, 8}. Compare `speculative/oracle_*` with `speculative/plain_greedy`;
//! `cargo run --release --example speculative` prints the same sweep as speed-ups beside the
//! formula's prediction.
//!
//! Also the embedded KJV pair (real acceptance): `speculative/kjv_plain_greedy` against
//! `speculative/kjv_draft_gamma1` (greedy, 64 new tokens), when `models/` is present.
//!
//! `cargo bench --bench speculative`

use criterion::{Criterion, criterion_group, criterion_main};
use decode::core::GenerationConfig;
use decode::models::backend::{Cpu, cpu_device};
use decode::models::{Gpt2, Gpt2Config};
use decode::samplers::Engine;
use decode::samplers::speculative::{DraftModel, DraftSchedule, OracleDrafter};

const NEW: usize = 24;

fn benches(c: &mut Criterion) {
    let Ok(model) = Gpt2::<Cpu>::random(Gpt2Config::gpt2_small(), 7, &cpu_device()) else {
        return;
    };
    let prompt: Vec<u32> = (0..32u32).map(|i| (i * 1543) % 50257).collect();
    let config = GenerationConfig {
        max_new_tokens: Some(NEW),
        ignore_eos: true,
        ..GenerationConfig::default()
    };
    let prompts = [prompt.clone()];
    let mut reference = prompt;
    reference.extend(&Engine::new(&model, &config).run(&prompts).unwrap()[0].sequences[0].ids);

    let mut group = c.benchmark_group("speculative");
    group.sample_size(10);
    group.bench_function("plain_greedy", |b| {
        b.iter(|| Engine::new(&model, &config).run(&prompts).unwrap())
    });
    for alpha in [0.5, 0.7, 0.9] {
        for gamma in [2usize, 4, 8] {
            group.bench_function(format!("oracle_alpha{alpha}_gamma{gamma}"), |b| {
                b.iter(|| {
                    let drafter = OracleDrafter::new(reference.clone(), alpha, 50257, 11);
                    Engine::new(&model, &config)
                        .speculative(drafter, DraftSchedule::Constant(gamma))
                        .run(&prompts)
                        .unwrap()
                })
            });
        }
    }
    embedded_pair(&mut group);
    group.finish();
}

fn embedded_pair(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let (Ok(target_dir), Ok(draft_dir)) = (
        decode::embedded::target_dir(),
        decode::embedded::draft_dir(),
    ) else {
        eprintln!("models/ is missing: skipping the embedded pair");
        return;
    };
    let target = Gpt2::<Cpu>::load(&target_dir, &cpu_device()).unwrap();
    let draft = Gpt2::<Cpu>::load(&draft_dir, &cpu_device()).unwrap();
    let tokenizer = decode::models::Tokenizer::from_dir(&target_dir).unwrap();
    let prompts = [tokenizer.encode("And God said unto Moses,").unwrap()];
    let config = GenerationConfig {
        max_new_tokens: Some(64),
        ignore_eos: true,
        ..GenerationConfig::default()
    };
    group.bench_function("kjv_plain_greedy", |b| {
        b.iter(|| Engine::new(&target, &config).run(&prompts).unwrap())
    });
    group.bench_function("kjv_draft_gamma1", |b| {
        b.iter(|| {
            Engine::new(&target, &config)
                .speculative(DraftModel::new(&draft, 0), DraftSchedule::Constant(1))
                .run(&prompts)
                .unwrap()
        })
    });
}

criterion_group!(speculative, benches);
criterion_main!(speculative);
