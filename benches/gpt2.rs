//! GPT-2 small (124 M parameters, random weights made here: no files).
//!
//! - `gpt2_small/prefill_32/<path>`: one forward over a 32-token prompt (LM head on the last
//!   position only, as generation needs).
//! - `gpt2_small/decode_step/<path>`: one cached decode step at batch 1, averaged over positions
//!   32..96.
//! - `gpt2_small/decode_step_batch8/<path>`: the same with 8 rows (host paths and GPUs).
//!
//! `<path>` is `host` (the default on a CPU: plain Rust over host memory, f32 weights),
//! `host-f16`, `host-q8_0` or `host-q4_0` (weights stored as f16, or quantized at load), or
//! `tensor-<backend>` (burn tensor operations on that backend, as a GPU runs them), with the dtype
//! for GPUs (`tensor-cuda-f16`). criterion reports tokens per second. `cargo bench --bench gpt2` (add
//! `--features ndarray,candle` to compare burn-ndarray's and burn-candle's tensor paths,
//! `--features wgpu` or `cuda` for GPUs; on lavapipe, wgpu figures are only a regression guard).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, TensorData};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use decode::core::{Batch, Cache, LanguageModel};
use decode::models::gpt2::{ComputePath, LoadOptions, Quantization};
use decode::models::weights::Gpt2Weights;
use decode::models::{Gpt2, Gpt2Config};

const PROMPT: usize = 32;
const LAST_POSITION: usize = 96;

/// Which benchmarks to run on one backend.
struct Target<'a, B: Backend> {
    name: &'a str,
    device: B::Device,
    path: ComputePath,
    /// The checkpoint's dtype (random weights converted to it); GPUs keep f16/bf16.
    dtype: DType,
    /// Weights quantized at load (host path).
    quantize: Option<Quantization>,
    batch8: bool,
}

fn bench_path<B: Backend>(c: &mut Criterion, target: Target<'_, B>) {
    let config = Gpt2Config::gpt2_small();
    let weights = Gpt2Weights::random(&config, 7).convert(target.dtype);
    let mut options = LoadOptions::default().path(target.path);
    options.quantize = target.quantize;
    let model = match Gpt2::<B>::from_weights_with(config, weights, &target.device, options) {
        Ok(model) => model,
        Err(e) => {
            eprintln!("skipping {}: {e}", target.name);
            return;
        }
    };
    let name = target.name;
    let prompt: Vec<u32> = (0..PROMPT as u32).map(|i| (i * 1543) % 50257).collect();
    let mut group = c.benchmark_group("gpt2_small");
    group.sample_size(20);

    group.throughput(Throughput::Elements(PROMPT as u64));
    group.bench_function(format!("prefill_{PROMPT}/{name}"), |b| {
        b.iter(|| {
            let mut cache = model.new_cache(1, model.context_length()).unwrap();
            model
                .forward_last(&Batch::single(&prompt), &mut cache)
                .unwrap()
        })
    });

    let rows = if target.batch8 { vec![1, 8] } else { vec![1] };
    for rows in rows {
        group.throughput(Throughput::Elements(rows as u64));
        let prompts = vec![prompt.clone(); rows];
        let mut cache = model.new_cache(rows, model.context_length()).unwrap();
        model
            .forward(&Batch::from_rows(&prompts).unwrap(), &mut cache)
            .unwrap();
        let mut next = vec![11u32; rows];
        let id = match rows {
            1 => format!("decode_step/{name}"),
            n => format!("decode_step_batch{n}/{name}"),
        };
        group.bench_function(id, |b| {
            b.iter(|| {
                if cache.len() == LAST_POSITION {
                    cache.truncate(PROMPT).unwrap();
                }
                let logits = model.forward(&Batch::column(&next), &mut cache).unwrap();
                for (row, id) in next.iter_mut().enumerate() {
                    *id = decode::core::argmax(logits.last(row));
                }
            })
        });
    }
    group.finish();
}

/// f32, f16 and bf16 checkpoints on a GPU, batch 1 and 8.
#[allow(dead_code)] // used only in builds with a GPU feature
fn bench_gpu<B: Backend>(c: &mut Criterion, backend: &str, device: B::Device) {
    for (dtype, label) in [
        (DType::F32, "f32"),
        (DType::F16, "f16"),
        (DType::BF16, "bf16"),
    ] {
        let name = format!("tensor-{backend}-{label}");
        bench_path::<B>(
            c,
            Target {
                name: &name,
                device: device.clone(),
                path: ComputePath::Tensor,
                dtype,
                quantize: None,
                batch8: true,
            },
        );
    }
}

fn cpu_target<'a, B: Backend>(
    name: &'a str,
    device: B::Device,
    path: ComputePath,
) -> Target<'a, B> {
    Target {
        name,
        device,
        path,
        dtype: DType::F32,
        quantize: None,
        batch8: false,
    }
}

fn benches(c: &mut Criterion) {
    use decode::models::backend::{Cpu, cpu_device};
    for (name, dtype, quantize) in [
        ("host", DType::F32, None),
        ("host-f16", DType::F16, None),
        ("host-q8_0", DType::F32, Some(Quantization::Q8_0)),
        ("host-q4_0", DType::F32, Some(Quantization::Q4_0)),
    ] {
        let target = Target {
            dtype,
            quantize,
            batch8: true,
            ..cpu_target(name, cpu_device(), ComputePath::Host)
        };
        bench_path::<Cpu>(c, target);
    }
    bench_path::<Cpu>(
        c,
        cpu_target("tensor-flex", cpu_device(), ComputePath::Tensor),
    );
    #[cfg(feature = "candle")]
    bench_path::<decode::models::backend::Candle>(
        c,
        cpu_target("tensor-candle", Default::default(), ComputePath::Tensor),
    );
    #[cfg(feature = "ndarray")]
    bench_path::<decode::models::backend::NdArray>(
        c,
        cpu_target("tensor-ndarray", Default::default(), ComputePath::Tensor),
    );
    #[cfg(feature = "wgpu")]
    match decode::models::backend::wgpu_device() {
        Ok(device) => bench_gpu::<decode::models::backend::Wgpu>(c, "wgpu", device.burn_device()),
        Err(e) => eprintln!("skipping wgpu: {e}"),
    }
    #[cfg(feature = "cuda")]
    match decode::models::backend::cuda_device(0) {
        Ok(device) => bench_gpu::<decode::models::backend::Cuda>(c, "cuda", device.burn_device()),
        Err(e) => eprintln!("skipping cuda: {e}"),
    }
}

/// The check every load runs on every tensor (NaN or ±∞ refused): one pass over GPT-2 small's
/// weights (124 M values) in f32 and f16, beside the rest of the load.
fn load_checks(c: &mut Criterion) {
    use decode::models::weights::first_non_finite;
    let config = decode::models::Gpt2Config::gpt2_small();
    let values = decode::models::weights::expected_shapes(&config)
        .iter()
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum::<usize>();
    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    for dtype in [DType::F32, DType::F16] {
        let data = TensorData::new(vec![0.01f32; values], [values]).convert_dtype(dtype);
        group.throughput(Throughput::Bytes(data.as_bytes().len() as u64));
        group.bench_function(format!("non_finite_check_gpt2_small/{dtype:?}"), |b| {
            b.iter(|| assert!(first_non_finite(&data).is_none()))
        });
    }
    group.finish();
}

criterion_group!(gpt2, benches, load_checks);
criterion_main!(gpt2);
