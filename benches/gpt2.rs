//! GPT-2 small (124 M parameters, random weights made here: no files) on the CPU, batch 1.
//!
//! - `gpt2_small/prefill_32/<backend>`: one forward over a 32-token prompt (LM head on the last
//!   position only, as generation needs).
//! - `gpt2_small/decode_step/<backend>`: one cached decode step, averaged over positions 32..96.
//!
//! criterion reports both as elements (tokens) per second.
//! `cargo bench --bench gpt2` (add `--features ndarray` to compare burn-ndarray).

use burn::tensor::backend::Backend;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use decode::core::{Batch, Cache, LanguageModel};
use decode::models::{Gpt2, Gpt2Config};

const PROMPT: usize = 32;
const LAST_POSITION: usize = 96;

fn bench_backend<B: Backend>(c: &mut Criterion, name: &str, device: B::Device) {
    let model = Gpt2::<B>::random(Gpt2Config::gpt2_small(), 7, &device);
    let prompt: Vec<u32> = (0..PROMPT as u32).map(|i| (i * 1543) % 50257).collect();
    let mut group = c.benchmark_group("gpt2_small");
    group.sample_size(20);

    group.throughput(Throughput::Elements(PROMPT as u64));
    group.bench_function(format!("prefill_{PROMPT}/{name}"), |b| {
        b.iter(|| {
            let mut cache = model.new_cache(1);
            model
                .forward_last(&Batch::single(&prompt), &mut cache)
                .unwrap()
        })
    });

    group.throughput(Throughput::Elements(1));
    let mut cache = model.new_cache(1);
    model.forward(&Batch::single(&prompt), &mut cache).unwrap();
    let mut next = 11u32;
    group.bench_function(format!("decode_step/{name}"), |b| {
        b.iter(|| {
            if cache.len() == LAST_POSITION {
                cache.truncate(PROMPT).unwrap();
            }
            let logits = model.forward(&Batch::single(&[next]), &mut cache).unwrap();
            next = decode::core::generate::argmax(logits.last(0));
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_backend::<decode::models::backend::Cpu>(c, "flex", decode::models::backend::cpu_device());
    #[cfg(feature = "ndarray")]
    bench_backend::<decode::models::backend::NdArray>(c, "ndarray", Default::default());
}

criterion_group!(gpt2, benches);
criterion_main!(gpt2);
