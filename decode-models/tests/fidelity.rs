//! GPT-2 against transformers: the references in tests/fixtures were produced by
//! tools/make_fixtures.py with transformers' GPT2LMHeadModel (pinned in tools/requirements.txt).

use std::path::PathBuf;

use decode_core::{Batch, Cache, LanguageModel};
use decode_models::Gpt2;
use decode_models::backend::{Cpu, cpu_device};
use decode_models::gpt2::ComputePath;
use serde::Deserialize;

const TOLERANCE: f32 = 1e-4;
const MODELS: [&str; 3] = ["gpt2-tiny-tied", "gpt2-tiny-f16-untied", "gpt2-tiny-bf16"];

#[derive(Deserialize)]
struct Reference {
    prompts: Vec<Vec<u32>>,
    full_logits: Vec<Vec<Vec<f32>>>,
    cached: Vec<Cached>,
    batch_left_padded: Padded,
    greedy: Vec<Greedy>,
}

#[derive(Deserialize)]
struct Cached {
    prompt_index: usize,
    prefix_len: usize,
    logits: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct Padded {
    prompts: Vec<Vec<u32>>,
    pad_id: u32,
    last_logits: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct Greedy {
    prompt_index: Option<usize>,
    prompt: Option<Vec<u32>>,
    max_new_tokens: usize,
    new_ids: Vec<u32>,
    logprobs: Vec<f32>,
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The fixture on both compute paths (host and burn tensors), with transformers' reference.
fn load(name: &str) -> Vec<(Gpt2<Cpu>, Reference)> {
    let dir = fixture(name);
    [ComputePath::Host, ComputePath::Tensor]
        .into_iter()
        .map(|path| {
            let model = Gpt2::<Cpu>::load_on(&dir, &cpu_device(), path).expect("fixture loads");
            assert_eq!(model.compute_path(), path);
            let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference");
            (
                model,
                serde_json::from_str(&text).expect("reference parses"),
            )
        })
        .collect()
}

/// Every fixture model on every path, named for messages.
fn models() -> Vec<(String, Gpt2<Cpu>, Reference)> {
    MODELS
        .iter()
        .flat_map(|name| {
            load(name).into_iter().map(move |(model, reference)| {
                let label = format!("{name} ({:?} path)", model.compute_path());
                (label, model, reference)
            })
        })
        .collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= TOLERANCE,
        "{what}: max |Δ| = {worst:e} > {TOLERANCE:e}"
    );
}

#[test]
fn whole_prompt_logits_match_transformers() {
    for (name, model, reference) in models() {
        for (p, prompt) in reference.prompts.iter().enumerate() {
            let mut cache = model.new_cache(1);
            let logits = model.forward(&Batch::single(prompt), &mut cache).unwrap();
            for (t, want) in reference.full_logits[p].iter().enumerate() {
                assert_close(
                    &format!("{name} prompt {p} position {t}"),
                    logits.get(0, t),
                    want,
                );
            }
        }
    }
}

#[test]
fn cached_step_by_step_logits_match_transformers_and_full_recompute() {
    for (name, model, reference) in models() {
        for case in &reference.cached {
            let prompt = &reference.prompts[case.prompt_index];
            let k = case.prefix_len;
            let mut cache = model.new_cache(1);
            let mut rows = vec![
                model
                    .forward(&Batch::single(&prompt[..k]), &mut cache)
                    .unwrap()
                    .last(0)
                    .to_vec(),
            ];
            for &id in &prompt[k..] {
                let step = model.forward(&Batch::single(&[id]), &mut cache).unwrap();
                rows.push(step.last(0).to_vec());
            }
            let full = &reference.full_logits[case.prompt_index];
            for (i, row) in rows.iter().enumerate() {
                let what = format!("{name} prompt {} step {i}", case.prompt_index);
                assert_close(&what, row, &case.logits[i]);
                assert_close(&format!("{what} vs full"), row, &full[k - 1 + i]);
            }
            // The rest of the prompt in one pass from the cache (a speculative verify).
            cache.truncate(k).unwrap();
            let rest = model
                .forward(&Batch::single(&prompt[k..]), &mut cache)
                .unwrap();
            for t in 0..prompt.len() - k {
                let what = format!(
                    "{name} prompt {} multi-token from cache {t}",
                    case.prompt_index
                );
                assert_close(&what, rest.get(0, t), &full[k + t]);
            }
        }
    }
}

#[test]
fn left_padded_batch_matches_transformers() {
    for (name, model, reference) in models() {
        let padded = &reference.batch_left_padded;
        let batch = Batch::left_padded(&padded.prompts, padded.pad_id);
        let mut cache = model.new_cache(batch.rows());
        let logits = model.forward_last(&batch, &mut cache).unwrap();
        for (row, want) in padded.last_logits.iter().enumerate() {
            assert_close(&format!("{name} padded row {row}"), logits.last(row), want);
        }
    }
}

#[test]
fn greedy_ids_and_logprobs_match_transformers() {
    for (name, model, reference) in models() {
        for case in &reference.greedy {
            let prompt = match (&case.prompt, case.prompt_index) {
                (Some(p), _) => p.clone(),
                (None, Some(i)) => reference.prompts[i].clone(),
                (None, None) => panic!("greedy case without prompt"),
            };
            let out =
                decode_core::greedy(&model, &prompt, case.max_new_tokens, false, |_| {}).unwrap();
            let seq = &out.sequences[0];
            assert_eq!(seq.ids, case.new_ids, "{name} greedy ids for {prompt:?}");
            assert_close(
                &format!("{name} greedy logprobs"),
                &seq.logprobs,
                &case.logprobs,
            );
            assert_eq!(out.stats.new_tokens, case.new_ids.len());
        }
    }
}
