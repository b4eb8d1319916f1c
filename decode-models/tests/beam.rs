//! Beam search against transformers' `generate(num_beams=…)` on the tiny GPT-2
//! (decode-samplers/tests/fixtures/beam.json, made by tools/make_sampler_fixtures.py).

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use decode_core::{EarlyStopping, GenerationConfig};
use decode_models::Gpt2;
use decode_models::backend::{Cpu, cpu_device};
use decode_samplers::engine::Engine;
use serde::Deserialize;
use serde_json::Value;

mod gpu;

#[derive(Deserialize)]
struct Case {
    name: String,
    prompt: Vec<u32>,
    num_beams: usize,
    max_new_tokens: usize,
    length_penalty: f64,
    early_stopping: Value,
    num_return_sequences: usize,
    eos_token_id: u32,
    sequences: Vec<Vec<u32>>,
    sequences_scores: Vec<f32>,
}

#[test]
fn beam_search_matches_transformers() {
    beam_search_on::<Cpu>(&cpu_device(), 1);
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_beam_search_matches_transformers() {
    if let Some(device) = gpu::wgpu("wgpu_beam_search_matches_transformers") {
        beam_search_on::<decode_models::backend::Wgpu>(&device, gpu::WGPU_SAMPLE);
    }
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_beam_search_matches_transformers() {
    let device = decode_models::backend::cuda_device(0)
        .expect("an NVIDIA GPU")
        .burn_device();
    beam_search_on::<decode_models::backend::Cuda>(&device, 1);
}

/// Every `every`-th case (all with 1): the fixture's cases alternate beams, penalties, stopping
/// rules and EOS hits, so a sample keeps each kind.
fn beam_search_on<B: Backend>(device: &B::Device, every: usize) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = Gpt2::<B>::load(root.join("tests/fixtures/gpt2-tiny-tied"), device).unwrap();
    let text =
        std::fs::read_to_string(root.join("../decode-samplers/tests/fixtures/beam.json")).unwrap();
    let cases: Vec<Case> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 10);
    let (mut eos_cases, mut run) = (0, 0);
    for case in cases.iter().step_by(every) {
        run += 1;
        let config = GenerationConfig {
            max_new_tokens: Some(case.max_new_tokens),
            num_beams: case.num_beams,
            length_penalty: case.length_penalty,
            early_stopping: match &case.early_stopping {
                Value::Bool(b) => EarlyStopping::Flag(*b),
                _ => EarlyStopping::Never,
            },
            num_return_sequences: case.num_return_sequences,
            eos_token_ids: Some(vec![case.eos_token_id]),
            ..GenerationConfig::default()
        };
        // num_beams > 1 selects beam search; each sequence's chain is the config's (EOS from it).
        let out = Engine::new(&model, &config)
            .run(std::slice::from_ref(&case.prompt))
            .unwrap()
            .pop()
            .unwrap();
        let ids: Vec<Vec<u32>> = out.sequences.iter().map(|s| s.ids.clone()).collect();
        assert_eq!(ids, case.sequences, "{}", case.name);
        for (seq, &want) in out.sequences.iter().zip(&case.sequences_scores) {
            let got = seq.score.unwrap();
            assert!(
                (got - want).abs() < 1e-4,
                "{}: score {got} vs {want}",
                case.name
            );
        }
        eos_cases += usize::from(ids.iter().any(|s| s.last() == Some(&case.eos_token_id)));
    }
    assert!(
        eos_cases >= 3 && run > eos_cases,
        "{run} cases, {eos_cases} with EOS hits"
    );
}
