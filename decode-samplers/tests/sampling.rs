//! Sampling draws from exactly the processed distribution transformers computes: chi-square over
//! 20,000 seeded draws per case (deterministic, so never flaky) against tests/fixtures/sampling.json.

use std::path::PathBuf;

use decode_core::{Context, LogitsProcessor};
use decode_samplers::SamplerChain;
use decode_samplers::probs::{chi_square, chi_square_critical_1e4};
use decode_samplers::processors::{MinP, RepetitionPenalty, Temperature, TopK, TopP};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Case {
    name: String,
    params: Value,
    input_ids: Vec<u32>,
    prompt_len: usize,
    logits: Vec<Option<f32>>,
    probs: Vec<f32>,
}

fn processor(kind: &str, p: &Value) -> Box<dyn LogitsProcessor> {
    let f = |k: &str| p[k].as_f64().unwrap();
    let keep = p["min_tokens_to_keep"].as_u64().unwrap_or(1) as usize;
    match kind {
        "top_k" => Box::new(TopK::new(p["top_k"].as_u64().unwrap() as usize, keep).unwrap()),
        "top_p" => Box::new(TopP::new(f("top_p"), keep).unwrap()),
        "min_p" => Box::new(MinP::new(f("min_p"), keep).unwrap()),
        "temperature" => Box::new(Temperature::new(f("temperature")).unwrap()),
        "repetition_penalty" => Box::new(RepetitionPenalty::new(f("penalty")).unwrap()),
        other => panic!("no {other} in sampling cases"),
    }
}

#[test]
fn sampled_frequencies_follow_the_processed_distribution() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sampling.json");
    let cases: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(cases.len(), 3);
    const DRAWS: u64 = 20_000;
    for (c, case) in cases.iter().enumerate() {
        let mut chain = SamplerChain::sampling(1000 + c as u64);
        for step in case.params["steps"].as_array().unwrap() {
            chain.push(processor(
                step["processor"].as_str().unwrap(),
                &step["params"],
            ));
        }
        let logits: Vec<f32> = case
            .logits
            .iter()
            .map(|v| v.unwrap_or(f32::NEG_INFINITY))
            .collect();
        let ctx = Context::new(&case.input_ids, case.prompt_len);
        let mut counts = vec![0u64; logits.len()];
        let mut scratch = logits.clone();
        for _ in 0..DRAWS {
            scratch.copy_from_slice(&logits);
            counts[chain.sample(&ctx, &mut scratch) as usize] += 1;
        }
        for (id, (&n, &p)) in counts.iter().zip(&case.probs).enumerate() {
            assert!(
                p > 0.0 || n == 0,
                "{}: token {id} has probability 0 but was drawn",
                case.name
            );
        }
        let probs: Vec<f64> = case.probs.iter().map(|&p| p as f64).collect();
        let (stat, df) = chi_square(&counts, &probs, DRAWS);
        assert!(df >= 3, "{}: too few bins", case.name);
        assert!(
            stat < chi_square_critical_1e4(df),
            "{}: chi-square {stat:.1} with {df} df",
            case.name
        );
    }
}

#[test]
fn a_wrong_distribution_is_caught() {
    // The same test rejects draws from a distribution that differs a little.
    let probs = [0.3, 0.3, 0.2, 0.2];
    let counts = [6400, 5600, 4000, 4000]; // 0.32 / 0.28 instead of 0.3 / 0.3
    let (stat, df) = chi_square(&counts, &probs, 20_000);
    assert!(stat > chi_square_critical_1e4(df), "chi-square {stat}");
}
