//! How close the host path runs to the machine's physical limits, measured beside it.
//!
//! - `ceiling/decode_step/<dtype>`: a batch-1 decode step of GPT-2 small (random weights) at
//!   f32, f16, q8_0 and q4_0. Every iteration first reads a buffer as large as the weights on the
//!   kernels' thread pool (the way a decode step reads them: every thread, from memory), then
//!   runs the step, so the machine's read bandwidth is measured interleaved with the step it
//!   bounds (these machines' bandwidth drifts by 1.5× within minutes). Prints, per dtype, the
//!   bandwidth, tokens per second and their ratio to the ceiling: weight bytes per token ÷
//!   bandwidth.
//! - `ceiling/pass/<model>/k<k>`: a pass of k tokens (a speculative verify, a short prompt) from a
//!   cache at position 32, for k = 1…16, each iteration paired with a one-token step at the same
//!   position. Prints c(k) = pass ÷ step (median of the pairs): with the weights streamed once per
//!   pass, c(k) stays near 1 while the pass is bound by memory.
//!
//! `cargo bench --bench ceiling` (`-- decode_step` or `-- pass` for one half; `DECODE_SIMD=avx2`
//! for the AVX2 kernels on an AVX-512 machine).

use std::cell::RefCell;
use std::time::{Duration, Instant};

use burn::tensor::DType;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use decode::core::{Batch, Cache, LanguageModel};
use decode::kernels::memory::Buffer;
use decode::models::backend::{Cpu, cpu_device};
use decode::models::gpt2::{ComputePath, LoadOptions, Quantization};
use decode::models::weights::Gpt2Weights;
use decode::models::{Gpt2, Gpt2Config};

const PROMPT: usize = 32;

/// GPT-2 small on the host path with its weights stored or quantized as `dtype` names.
fn gpt2_small(dtype: &str) -> Gpt2<Cpu> {
    let config = Gpt2Config::gpt2_small();
    let stored = if dtype == "f16" {
        DType::F16
    } else {
        DType::F32
    };
    let weights = Gpt2Weights::random(&config, 7).convert(stored);
    let mut options = LoadOptions::default().path(ComputePath::Host);
    options.quantize = match dtype {
        "q8_0" => Some(Quantization::Q8_0),
        "q4_0" => Some(Quantization::Q4_0),
        _ => None,
    };
    Gpt2::from_weights_with(config, weights, &cpu_device(), options).expect("GPT-2 small builds")
}

/// Reads all of `data` on the kernels' pool (as many threads as a decode step uses), one
/// contiguous share a thread, 32 independent sums so the adds are not the limit, on 256-bit
/// vectors where the CPU has them (measured on a Zen 3 EPYC: 128-bit loads, or shares of 1 MiB
/// handed out by work stealing, read 10–20% slower); returns the sum (so the read happens).
fn read_all(data: &[f32]) -> f32 {
    let threads = decode::kernels::pool::threads();
    let share = data.len().div_ceil(threads).max(1);
    let mut sums = vec![0f32; threads];
    decode::kernels::pool::for_each_chunk_mut(&mut sums, 1, |i, sum| {
        let start = (i * share).min(data.len());
        sum[0] = sum_chunk(&data[start..(start + share).min(data.len())]);
    });
    sums.iter().sum()
}

fn sum_chunk(chunk: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { sum_avx2(chunk) };
    }
    sum_lanes(chunk)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_avx2(chunk: &[f32]) -> f32 {
    sum_lanes(chunk)
}

#[inline(always)]
fn sum_lanes(chunk: &[f32]) -> f32 {
    let mut lanes = [0f32; 32];
    for c in chunk.chunks_exact(32) {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>()
}

/// A probe buffer of `bytes`, laid out as the weights are (zeroed memory, huge pages where the
/// system grants them), then written.
fn probe_buffer(bytes: usize) -> Buffer<f32> {
    // SAFETY: zero bits are a valid f32.
    let mut buffer = unsafe { Buffer::<f32>::zeroed(bytes / 4, "the probe") }.expect("memory");
    buffer.fill(0.5);
    buffer
}

/// Megabytes of this process's anonymous memory on transparent huge pages (Linux; 0 elsewhere).
fn huge_page_mb() -> f64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("AnonHugePages:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A prompt of `PROMPT` tokens in a fresh cache with room for `extra` more.
fn prefilled(model: &Gpt2<Cpu>, extra: usize) -> decode::models::KvCache<Cpu> {
    let vocab = model.config().vocab_size as u32;
    let prompt: Vec<u32> = (0..PROMPT as u32).map(|i| (i * 1543) % vocab).collect();
    let mut cache = model.new_cache(1, PROMPT + extra).unwrap();
    model.forward(&Batch::single(&prompt), &mut cache).unwrap();
    cache
}

/// The time of one forward of `tokens` from the cache's position, which is then restored.
fn timed_pass(
    model: &Gpt2<Cpu>,
    cache: &mut decode::models::KvCache<Cpu>,
    tokens: &[u32],
) -> Duration {
    let at = cache.len();
    let t0 = Instant::now();
    let logits = model.forward(&Batch::single(tokens), cache).unwrap();
    let took = t0.elapsed();
    std::hint::black_box(logits);
    cache.truncate(at).unwrap();
    took
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn decode_steps(c: &mut Criterion) {
    let mut group = c.benchmark_group("ceiling");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    let mut report = Vec::new();
    for dtype in ["f32", "f16", "q8_0", "q4_0"] {
        let model = gpt2_small(dtype);
        let bytes = model.host_weight_bytes().expect("the host path");
        let on_huge_pages = huge_page_mb();
        let buffer = probe_buffer(bytes);
        let mut cache = prefilled(&model, 1);
        // Per iteration: (bandwidth in bytes/s, step in s).
        let seen = RefCell::new(Vec::new());
        group.bench_function(format!("decode_step/{dtype}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let t0 = Instant::now();
                    std::hint::black_box(read_all(&buffer));
                    let read = t0.elapsed().as_secs_f64();
                    let step = timed_pass(&model, &mut cache, &[(i % 50257) as u32]);
                    seen.borrow_mut()
                        .push((bytes as f64 / read, step.as_secs_f64()));
                    total += step;
                }
                total
            })
        });
        let seen = seen.into_inner();
        if seen.is_empty() {
            continue; // left out by the filter
        }
        let bandwidth = median(seen.iter().map(|s| s.0).collect());
        let tokens = 1.0 / median(seen.iter().map(|s| s.1).collect());
        let share = median(
            seen.iter()
                .map(|(bw, step)| bytes as f64 / bw / step)
                .collect(),
        );
        report.push(format!(
            "{dtype:5} {:6.1} MB/token ({:4.0} MB on huge pages)  read {:5.1} GB/s  ceiling {:6.1} tok/s  decode {:6.1} tok/s  {:4.0}% of the ceiling",
            bytes as f64 / 1e6,
            on_huge_pages,
            bandwidth / 1e9,
            bandwidth / bytes as f64,
            tokens,
            100.0 * share
        ));
    }
    group.finish();
    println!("\nbatch-1 decode against the bandwidth ceiling (medians of interleaved pairs):");
    for line in report {
        println!("  {line}");
    }
}

fn passes(c: &mut Criterion) {
    let mut group = c.benchmark_group("ceiling");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    let mut models: Vec<(String, Gpt2<Cpu>)> = ["f32", "f16", "q8_0", "q4_0"]
        .into_iter()
        .map(|d| (format!("gpt2_small-{d}"), gpt2_small(d)))
        .collect();
    match decode::embedded::target_dir()
        .and_then(|dir| Gpt2::<Cpu>::load_with(dir, &cpu_device(), LoadOptions::default()))
    {
        Ok(model) => models.push(("kjv-target".into(), model)),
        Err(e) => eprintln!("skipping the embedded target: {e}"),
    }
    let mut report = Vec::new();
    for (name, model) in &models {
        let vocab = model.config().vocab_size as u32;
        let mut cache = prefilled(model, 16);
        let mut line = format!("{name:16}");
        let mut measured = false;
        for k in 1..=16usize {
            let tokens: Vec<u32> = (0..k as u32).map(|i| (i * 7919 + 11) % vocab).collect();
            let ratios = RefCell::new(Vec::new());
            group.throughput(Throughput::Elements(k as u64));
            group.bench_function(format!("pass/{name}/k{k}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let step = timed_pass(model, &mut cache, &tokens[..1]);
                        let pass = timed_pass(model, &mut cache, &tokens);
                        ratios
                            .borrow_mut()
                            .push(pass.as_secs_f64() / step.as_secs_f64());
                        total += pass;
                    }
                    total
                })
            });
            let ratio = median(ratios.into_inner());
            measured |= ratio.is_finite();
            line += &if ratio.is_finite() {
                format!(" {ratio:5.2}")
            } else {
                format!(" {:>5}", "-")
            };
        }
        // Models whose passes the filter left out measured nothing.
        if measured {
            report.push(line);
        }
    }
    group.finish();
    println!("\nc(k) = a pass of k tokens ÷ a one-token step (medians of interleaved pairs):");
    println!(
        "  {:16}{}",
        "k",
        (1..=16).map(|k| format!(" {k:5}")).collect::<String>()
    );
    for line in report {
        println!("  {line}");
    }
}

criterion_group!(ceiling, decode_steps, passes);
criterion_main!(ceiling);
