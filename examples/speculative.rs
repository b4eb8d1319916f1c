//! Speculative decoding, measured.
//!
//! 1. The embedded KJV pair: the draft proposes, the target verifies; the same text as plain
//!    greedy decoding, in less time.
//! 2. `--oracle`: an oracle drafter (the target's own greedy continuation, each token wrong with
//!    probability 1 − α) on a GPT-2-small-shaped target with random weights, against plain greedy
//!    decoding of the same target, beside the formula's prediction with c = 0.
//!
//! ```text
//! cargo run --release --example speculative                      # the embedded pair
//! cargo run --release --example speculative -- --oracle          # the oracle table
//! cargo run --release --example speculative -- --oracle --json   # the same as one JSON object
//! cargo run --release --example speculative -- --oracle q8_0      # the target quantized (or q4_0)
//! ```

use std::time::Instant;

use decode::core::{Batch, Cache, GenerationConfig, LanguageModel};
use decode::models::backend::{Cpu, cpu_device};
use decode::models::{Gpt2, Gpt2Config, Tokenizer};
use decode::samplers::Engine;
use decode::samplers::speculative::{DraftModel, DraftSchedule, OracleDrafter, expected_speedup};
use decode::{LoadOptions, Quantization};

const PROMPT: usize = 32;
const NEW: usize = 64;

fn main() -> decode::Result<()> {
    if std::env::args().any(|a| a == "--oracle") {
        let quantize = match std::env::args().find(|a| a.starts_with('q')) {
            Some(name) => Some(name.parse::<Quantization>()?),
            None => None,
        };
        oracle(std::env::args().any(|a| a == "--json"), quantize)
    } else {
        embedded_pair()
    }
}

/// The embedded target and draft, greedy: same tokens, fewer target passes.
fn embedded_pair() -> decode::Result<()> {
    let target_dir = decode::embedded::target_dir()?;
    let target = Gpt2::<Cpu>::load(&target_dir, &cpu_device())?;
    let draft = Gpt2::<Cpu>::load(decode::embedded::draft_dir()?, &cpu_device())?;
    let tokenizer = Tokenizer::from_dir(&target_dir)?;
    // The loops below take ids: the tokenizer's fit with the model is checked here.
    tokenizer.check_against(target.vocab_size())?;
    let prompt = tokenizer.encode("And God said unto Moses,")?;
    let config = GenerationConfig {
        max_new_tokens: Some(64),
        ignore_eos: true,
        ..GenerationConfig::default()
    };
    let prompts = [prompt];
    let plain = Engine::new(&target, &config).run(&prompts)?;
    let fast = Engine::new(&target, &config)
        .speculative(DraftModel::new(&draft, 0), DraftSchedule::Constant(1))
        .run(&prompts)?;
    assert_eq!(
        plain[0].sequences[0].ids, fast[0].sequences[0].ids,
        "lossless"
    );
    let spec = fast[0].stats.speculative.clone().unwrap_or_default();
    println!(
        "And God said unto Moses,{}",
        tokenizer.decode(&fast[0].sequences[0].ids)?
    );
    println!(
        "\nplain {:.0} tok/s ({} target passes); speculative γ=1 {:.0} tok/s ({} target passes, {} draft passes), acceptance {:.0}%, {:.2} drafts kept per pass",
        plain[0].stats.new_tokens as f64
            / (plain[0].stats.prefill_seconds + plain[0].stats.decode_seconds),
        plain[0].stats.target_forward_calls,
        fast[0].stats.new_tokens as f64
            / (fast[0].stats.prefill_seconds + fast[0].stats.decode_seconds),
        fast[0].stats.target_forward_calls,
        spec.draft_forward_calls,
        spec.acceptance_rate * 100.0,
        spec.mean_accepted
    );
    Ok(())
}

/// The oracle sweep.
fn oracle(json: bool, quantize: Option<Quantization>) -> decode::Result<()> {
    let options = LoadOptions {
        quantize,
        ..LoadOptions::default()
    };
    let model = Gpt2::<Cpu>::random_with(Gpt2Config::gpt2_small(), 7, &cpu_device(), options)?;
    let prompt: Vec<u32> = (0..PROMPT as u32).map(|i| (i * 1543) % 50257).collect();
    let config = GenerationConfig {
        max_new_tokens: Some(NEW),
        ignore_eos: true,
        ..GenerationConfig::default()
    };
    // Warm up, and learn the greedy continuation the oracle will propose.
    let prompts = [prompt.clone()];
    let plain = Engine::new(&model, &config).run(&prompts)?.remove(0);
    let mut reference = prompt.clone();
    reference.extend(&plain.sequences[0].ids);

    let time_plain = || -> decode::Result<f64> {
        let started = Instant::now();
        Engine::new(&model, &config).run(&prompts)?;
        Ok(started.elapsed().as_secs_f64())
    };
    let plain_seconds = time_plain()?.min(time_plain()?);

    // What a verify pass of γ+1 tokens costs against a one-token step, from a 64-token cache.
    let mut pass_cost = Vec::new();
    for tokens in [1usize, 3, 5, 9] {
        let mut cache = model.new_cache(1, model.context_length())?;
        model.forward_last(&Batch::single(&reference[..64]), &mut cache)?;
        let started = Instant::now();
        for _ in 0..5 {
            model.forward(&Batch::single(&reference[64..64 + tokens]), &mut cache)?;
            cache.truncate(64)?;
        }
        pass_cost.push((tokens, started.elapsed().as_secs_f64() / 5.0));
    }

    let mut rows = Vec::new();
    for alpha in [0.5, 0.7, 0.9] {
        for gamma in [2usize, 4, 8] {
            let drafter = OracleDrafter::new(reference.clone(), alpha, 50257, 11);
            let started = Instant::now();
            let out = Engine::new(&model, &config)
                .speculative(drafter, DraftSchedule::Constant(gamma))
                .run(&prompts)?;
            let seconds = started.elapsed().as_secs_f64();
            assert_eq!(out[0].sequences[0].ids, plain.sequences[0].ids, "lossless");
            let spec = out[0].stats.speculative.clone().unwrap_or_default();
            let measured = plain_seconds / seconds;
            let predicted = expected_speedup(alpha, gamma, 0.0);
            rows.push((
                alpha,
                gamma,
                spec.acceptance_rate,
                out[0].stats.target_forward_calls,
                measured,
                predicted,
            ));
        }
    }

    if json {
        let rows: Vec<String> = rows
            .iter()
            .map(|(a, g, acc, calls, m, p)| {
                format!(
                    "{{\"alpha\":{a},\"gamma\":{g},\"acceptance_rate\":{acc:.3},\"target_forward_calls\":{calls},\"speedup\":{m:.3},\"predicted\":{p:.3}}}"
                )
            })
            .collect();
        let costs: Vec<String> = pass_cost
            .iter()
            .map(|(t, s)| format!("{{\"tokens\":{t},\"ms\":{:.2}}}", s * 1e3))
            .collect();
        println!(
            "{{\"plain_tokens_per_second\":{:.2},\"pass_cost\":[{}],\"oracle\":[{}]}}",
            NEW as f64 / plain_seconds,
            costs.join(","),
            rows.join(",")
        );
        return Ok(());
    }
    println!(
        "GPT-2 small (random weights, {}), CPU, {NEW} tokens after {PROMPT}; plain greedy {:.1} tok/s",
        quantize.map_or("f32".to_string(), |q| q.to_string()),
        NEW as f64 / plain_seconds
    );
    println!("verify pass cost from a 64-token cache:");
    let one = pass_cost[0].1;
    for (tokens, s) in &pass_cost {
        println!(
            "  {tokens} tokens: {:.1} ms ({:.2}× a 1-token step)",
            s * 1e3,
            s / one
        );
    }
    println!("\n  α    γ   accepted  target calls  speed-up  predicted (c=0)  ratio");
    for (alpha, gamma, acc, calls, measured, predicted) in rows {
        println!(
            "  {alpha:.1}  {gamma}   {:>5.1}%   {calls:>10}   {measured:>6.2}×   {predicted:>10.2}×   {:>5.0}%",
            acc * 100.0,
            100.0 * measured / predicted
        );
    }
    Ok(())
}
