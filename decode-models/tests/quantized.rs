//! q8_0 and q4_0 weights at model level, measured as llama.cpp measures them
//! (`llama-perplexity --kl-divergence`): on the embedded KJV target's held-out books
//! (models/kjv-heldout.txt: Ruth, Jonah, Philemon, 3 John, Jude; never seen in training), the
//! perplexity against the unquantized model's, the mean KL divergence from its next-token
//! distribution, and how often both pick the same top token. Also: a GGUF file and decode's own
//! quantization of the same checkpoint give the same logits.
//!
//! `cargo test --release -p decode-models --test quantized -- --nocapture` prints the table.

use std::path::PathBuf;

use decode_core::{Batch, LanguageModel};
use decode_models::backend::{Cpu, cpu_device};
use decode_models::gpt2::{LoadOptions, Quantization};
use decode_models::{Gpt2, Tokenizer};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// Log-probabilities of one position's logits (f64).
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    let log_sum = max + sum.ln();
    logits.iter().map(|&v| v as f64 - log_sum).collect()
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Per model: log-probabilities at every position of every window of the held-out text.
fn held_out_log_probs(model: &Gpt2<Cpu>, windows: &[Vec<u32>]) -> Vec<Vec<f64>> {
    let mut out = Vec::new();
    for window in windows {
        let mut cache = model.new_cache(1, model.context_length()).unwrap();
        let logits = model.forward(&Batch::single(window), &mut cache).unwrap();
        for step in 0..window.len() {
            out.push(log_softmax(logits.get(0, step)));
        }
    }
    out
}

struct Quality {
    perplexity: f64,
    kl: f64,
    same_top: f64,
}

fn compare(reference: &[Vec<f64>], model: &[Vec<f64>], targets: &[u32]) -> Quality {
    let (mut nll, mut kl, mut same) = (0.0, 0.0, 0usize);
    for ((p, q), &t) in reference.iter().zip(model).zip(targets) {
        nll -= q[t as usize];
        kl += p
            .iter()
            .zip(q)
            .map(|(lp, lq)| lp.exp() * (lp - lq))
            .sum::<f64>();
        same += usize::from(argmax(p) == argmax(q));
    }
    let n = targets.len() as f64;
    Quality {
        perplexity: (nll / n).exp(),
        kl: kl / n,
        same_top: same as f64 / n,
    }
}

#[test]
fn quantized_quality_on_held_out_text() {
    let dir = repo("models/kjv-target");
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let text = std::fs::read_to_string(repo("models/kjv-heldout.txt")).unwrap();
    let ids = tokenizer.encode(&text).unwrap();
    // Windows of the model's context; each position predicts the next token of its window.
    let windows: Vec<Vec<u32>> = ids
        .chunks(256)
        .filter(|w| w.len() > 1)
        .map(<[u32]>::to_vec)
        .collect();
    let targets: Vec<u32> = windows
        .iter()
        .flat_map(|w| w[1..].iter().copied().chain([u32::MAX]))
        .collect();
    let device = cpu_device();
    let load = |options| Gpt2::<Cpu>::load_with(&dir, &device, options).unwrap();
    // The last position of a window has no next token: drop it from every measure.
    let keep = |v: Vec<Vec<f64>>| -> Vec<Vec<f64>> {
        v.into_iter()
            .zip(&targets)
            .filter(|(_, t)| **t != u32::MAX)
            .map(|(p, _)| p)
            .collect()
    };
    let targets_kept: Vec<u32> = targets.iter().copied().filter(|&t| t != u32::MAX).collect();
    let reference = keep(held_out_log_probs(&load(LoadOptions::default()), &windows));
    let base = compare(&reference, &reference, &targets_kept);
    eprintln!(
        "held-out: {} tokens in {} windows; f16 checkpoint computed in f32: perplexity {:.3}",
        targets_kept.len(),
        windows.len(),
        base.perplexity
    );
    eprintln!("| weights | perplexity | ratio to f32 | mean KL | same top-1 |");
    eprintln!("|---|---|---|---|---|");
    for (format, max_ratio, max_kl, min_same) in [
        (Quantization::Q8_0, 1.002, 0.001, 0.98),
        (Quantization::Q4_0, 1.10, 0.05, 0.85),
    ] {
        let model = load(LoadOptions::default().quantize(format));
        let got = keep(held_out_log_probs(&model, &windows));
        let q = compare(&reference, &got, &targets_kept);
        let ratio = q.perplexity / base.perplexity;
        eprintln!(
            "| {format} | {:.3} | {ratio:.4} | {:.5} | {:.2}% |",
            q.perplexity,
            q.kl,
            100.0 * q.same_top
        );
        assert!(ratio < max_ratio, "{format}: perplexity ratio {ratio}");
        assert!(q.kl < max_kl, "{format}: mean KL {}", q.kl);
        assert!(q.same_top > min_same, "{format}: same top-1 {}", q.same_top);
    }
}

/// llama.cpp's q8_0 file and decode's load-time q8_0 of the same checkpoint compute the same
/// logits, bit for bit (the weights are equal: the crate's unit test compares every block).
#[test]
fn gguf_and_load_time_quantization_give_identical_logits() {
    let device = cpu_device();
    let prompt: Vec<u32> = (0..40u32).map(|i| (i * 97) % 4096).collect();
    for format in [Quantization::Q8_0, Quantization::Q4_0] {
        let gguf = repo(&format!("models/gguf/kjv-target-{format}.gguf"));
        let theirs = Gpt2::<Cpu>::load(&gguf, &device).unwrap();
        let ours = Gpt2::<Cpu>::load_with(
            repo("models/kjv-target"),
            &device,
            LoadOptions::default().quantize(format),
        )
        .unwrap();
        let run = |m: &Gpt2<Cpu>| {
            let mut cache = m.new_cache(1, m.context_length()).unwrap();
            m.forward(&Batch::single(&prompt), &mut cache)
                .unwrap()
                .as_slice()
                .to_vec()
        };
        assert_eq!(run(&theirs), run(&ours), "{format}");
        // Asking a quantized file for another format is refused, not silently ignored.
        let other = match format {
            Quantization::Q8_0 => Quantization::Q4_0,
            Quantization::Q4_0 => Quantization::Q8_0,
        };
        let err = Gpt2::<Cpu>::load_with(&gguf, &device, LoadOptions::default().quantize(other))
            .unwrap_err()
            .to_string();
        assert!(err.contains("already quantized"), "{err}");
    }
}

/// Quantized weights on the tensor path are refused with a one-line error, never ignored.
#[test]
fn quantizing_for_the_tensor_path_is_refused() {
    use decode_models::gpt2::ComputePath;
    let options = LoadOptions::default()
        .path(ComputePath::Tensor)
        .quantize(Quantization::Q8_0);
    let err = Gpt2::<Cpu>::load_with(repo("models/kjv-target"), &cpu_device(), options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("host path"), "{err}");
}
