//! Speculative decoding against plain greedy decoding of the same GPT-2-small-shaped target
//! (random weights, CPU, batch 1, 24 new tokens after 32): an oracle drafter that proposes the
//! target's own continuation, each token wrong with probability 1 − α, for α ∈ {0.5, 0.7, 0.9}
//! and γ ∈ {2, 4, 8}. Compare `speculative/oracle_*` with `speculative/plain_greedy`;
//! `cargo run --release --example speculative` prints the same sweep as speed-ups beside the
//! formula's prediction.
//!
//! `cargo bench --bench speculative`

use criterion::{Criterion, criterion_group, criterion_main};
use decode::core::{Flow, GenerationConfig, generate, greedy};
use decode::models::backend::{Cpu, cpu_device};
use decode::models::{Gpt2, Gpt2Config};
use decode::samplers::SamplerChain;
use decode::samplers::speculative::{DraftSchedule, OracleDrafter, speculative_generate};

const NEW: usize = 24;

fn benches(c: &mut Criterion) {
    let model = Gpt2::<Cpu>::random(Gpt2Config::gpt2_small(), 7, &cpu_device());
    let prompt: Vec<u32> = (0..32u32).map(|i| (i * 1543) % 50257).collect();
    let config = GenerationConfig {
        max_new_tokens: Some(NEW),
        ignore_eos: true,
        ..GenerationConfig::default()
    };
    let mut reference = prompt.clone();
    reference.extend(
        greedy(&model, &prompt, NEW, true, |_| {})
            .unwrap()
            .sequences[0]
            .ids
            .clone(),
    );
    let prompts = [prompt];

    let mut group = c.benchmark_group("speculative");
    group.sample_size(10);
    group.bench_function("plain_greedy", |b| {
        b.iter(|| {
            generate(
                &model,
                &prompts,
                &config,
                |_| SamplerChain::greedy(),
                |_| Flow::Continue,
            )
            .unwrap()
        })
    });
    for alpha in [0.5, 0.7, 0.9] {
        for gamma in [2usize, 4, 8] {
            group.bench_function(format!("oracle_alpha{alpha}_gamma{gamma}"), |b| {
                b.iter(|| {
                    let mut drafter = OracleDrafter::new(reference.clone(), alpha, 50257, 11);
                    speculative_generate(
                        &model,
                        &mut drafter,
                        &prompts,
                        &config,
                        DraftSchedule::Constant(gamma),
                        |_| SamplerChain::greedy(),
                        |_| Flow::Continue,
                    )
                    .unwrap()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(speculative, benches);
criterion_main!(speculative);
