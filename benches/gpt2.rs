//! GPT-2 small (124 M parameters, random weights made here: no files) on the CPU, batch 1.
//!
//! - `gpt2_small/prefill_32/<path>`: one forward over a 32-token prompt (LM head on the last
//!   position only, as generation needs).
//! - `gpt2_small/decode_step/<path>`: one cached decode step, averaged over positions 32..96.
//!
//! `<path>` is `host` (the default on a CPU: plain Rust over host memory) or `tensor-<backend>`
//! (burn tensor operations on that backend, as a GPU runs them). criterion reports both as
//! elements (tokens) per second. `cargo bench --bench gpt2` (add `--features ndarray,candle` to
//! compare burn-ndarray's and burn-candle's tensor paths).

use burn::tensor::backend::Backend;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use decode::core::{Batch, Cache, LanguageModel};
use decode::models::gpt2::ComputePath;
use decode::models::{Gpt2, Gpt2Config};

const PROMPT: usize = 32;
const LAST_POSITION: usize = 96;

fn bench_path<B: Backend>(c: &mut Criterion, name: &str, device: B::Device, path: ComputePath) {
    let model = Gpt2::<B>::random_on(Gpt2Config::gpt2_small(), 7, &device, path);
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
    use decode::models::backend::{Cpu, cpu_device};
    bench_path::<Cpu>(c, "host", cpu_device(), ComputePath::Host);
    bench_path::<Cpu>(c, "tensor-flex", cpu_device(), ComputePath::Tensor);
    #[cfg(feature = "candle")]
    bench_path::<decode::models::backend::Candle>(
        c,
        "tensor-candle",
        Default::default(),
        ComputePath::Tensor,
    );
    #[cfg(feature = "ndarray")]
    bench_path::<decode::models::backend::NdArray>(
        c,
        "tensor-ndarray",
        Default::default(),
        ComputePath::Tensor,
    );
}

criterion_group!(gpt2, benches);
criterion_main!(gpt2);
