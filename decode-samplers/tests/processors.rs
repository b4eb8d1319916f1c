//! Every processor against the transformers LogitsProcessor of the same name, on the same logits
//! and history (tests/fixtures/processors.json, made by tools/make_sampler_fixtures.py). The
//! frequency/presence cases follow OpenAI's definition, computed in numpy by the same script.

use std::collections::BTreeMap;
use std::path::PathBuf;

use decode_core::{Context, LogitsProcessor};
use decode_samplers::SamplerChain;
use decode_samplers::processors::{
    BanTokens, FrequencyPresencePenalty, LogitBias, MinNewTokens, MinP, NoRepeatNGram,
    RepetitionPenalty, Temperature, TopK, TopP, TypicalP,
};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Case {
    name: String,
    processor: String,
    params: Value,
    input_ids: Vec<u32>,
    prompt_len: usize,
    logits: Vec<Option<f32>>,
    expected: Vec<Option<f32>>,
    /// The cut falls inside a group of equal logits, where torch's unstable sort decides which
    /// members survive: only the count is comparable.
    #[serde(default)]
    tie_order_dependent: bool,
}

#[derive(Deserialize)]
struct Large {
    logits: Vec<f32>,
    cases: Vec<LargeCase>,
}

#[derive(Deserialize)]
struct LargeCase {
    name: String,
    processor: String,
    params: Value,
    input_ids: Vec<u32>,
    prompt_len: usize,
    expected_finite: Vec<(u32, f32)>,
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn num(params: &Value, key: &str) -> f64 {
    params[key]
        .as_f64()
        .unwrap_or_else(|| panic!("param {key} in {params}"))
}

fn int(params: &Value, key: &str) -> usize {
    params[key].as_u64().unwrap_or(1) as usize
}

fn ids(params: &Value, key: &str) -> Vec<u32> {
    params[key]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_u64().unwrap() as u32).collect())
        .unwrap_or_default()
}

/// The processor a fixture case names.
fn build(kind: &str, p: &Value) -> Box<dyn LogitsProcessor> {
    let keep = int(p, "min_tokens_to_keep");
    match kind {
        "temperature" => Box::new(Temperature::new(num(p, "temperature")).unwrap()),
        "top_k" => Box::new(TopK::new(int(p, "top_k"), keep).unwrap()),
        "top_p" => Box::new(TopP::new(num(p, "top_p"), keep).unwrap()),
        "min_p" => Box::new(MinP::new(num(p, "min_p"), keep).unwrap()),
        "typical_p" => Box::new(TypicalP::new(num(p, "typical_p"), keep).unwrap()),
        "repetition_penalty" => Box::new(RepetitionPenalty::new(num(p, "penalty")).unwrap()),
        "no_repeat_ngram" => Box::new(NoRepeatNGram::new(int(p, "n")).unwrap()),
        "min_new_tokens" => Box::new(MinNewTokens::new(
            int(p, "min_new_tokens"),
            &ids(p, "eos_token_ids"),
        )),
        "banned" => Box::new(BanTokens::new(&ids(p, "token_ids"))),
        "logit_bias" => {
            let bias: BTreeMap<u32, f32> = p["bias"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.parse().unwrap(), v.as_f64().unwrap() as f32))
                .collect();
            Box::new(LogitBias::new(&bias).unwrap())
        }
        "frequency_presence" => Box::new(
            FrequencyPresencePenalty::new(num(p, "frequency_penalty"), num(p, "presence_penalty"))
                .unwrap(),
        ),
        "chain" => {
            let mut chain = SamplerChain::greedy();
            for step in p["steps"].as_array().unwrap() {
                chain.push(build(step["processor"].as_str().unwrap(), &step["params"]));
            }
            Box::new(chain)
        }
        other => panic!("unknown processor kind {other}"),
    }
}

fn unpack(values: &[Option<f32>]) -> Vec<f32> {
    values
        .iter()
        .map(|v| v.unwrap_or(f32::NEG_INFINITY))
        .collect()
}

/// `None` when `got` equals `want` (same tokens removed, kept values within 1e-6 relative).
fn compare(got: &[f32], want: &[f32], by_count: bool) -> Option<String> {
    let kept = |v: &[f32]| v.iter().filter(|x| x.is_finite()).count();
    let removed_differ = if by_count {
        kept(got).abs_diff(kept(want))
    } else {
        got.iter()
            .zip(want)
            .filter(|(g, w)| g.is_finite() != w.is_finite())
            .count()
    };
    let worst = got
        .iter()
        .zip(want)
        .filter(|(g, w)| g.is_finite() && w.is_finite())
        .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
        .fold(0f32, f32::max);
    (removed_differ > 0 || worst > 1e-6)
        .then(|| format!("{removed_differ} tokens kept/removed differently, max rel |Δ| {worst:e}"))
}

#[test]
fn every_processor_matches_transformers() {
    let text = std::fs::read_to_string(fixture("processors.json")).unwrap();
    let cases: Vec<Case> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let mut processor = build(&case.processor, &case.params);
        let mut logits = unpack(&case.logits);
        processor.apply(&Context::new(&case.input_ids, case.prompt_len), &mut logits);
        if let Some(diff) = compare(&logits, &unpack(&case.expected), case.tie_order_dependent) {
            failures.push(format!("{}: {diff}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn processors_on_the_full_gpt2_vocabulary_match_transformers() {
    let text = std::fs::read_to_string(fixture("processors_large.json")).unwrap();
    let large: Large = serde_json::from_str(&text).unwrap();
    assert_eq!(large.logits.len(), 50257);
    for case in &large.cases {
        let mut logits = large.logits.clone();
        build(&case.processor, &case.params)
            .apply(&Context::new(&case.input_ids, case.prompt_len), &mut logits);
        let mut want = vec![f32::NEG_INFINITY; logits.len()];
        for &(id, v) in &case.expected_finite {
            want[id as usize] = v;
        }
        assert_eq!(compare(&logits, &want, false), None, "{}", case.name);
    }
}
