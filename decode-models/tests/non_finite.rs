//! Non-finite numbers never flow into an output: NaN weights, settings whose effect overflows f32
//! and degenerate drafts are typed errors before any token is reported, never a quiet id 0.

use std::path::PathBuf;

use burn::tensor::TensorData;
use decode_core::{Error, GenerationConfig, LanguageModel, Result};
use decode_models::backend::{Cpu, cpu_device};
use decode_models::weights::Gpt2Weights;
use decode_models::{Gpt2, Gpt2Config};
use decode_samplers::engine::Engine;
use decode_samplers::speculative::{Draft, DraftModel, DraftRequest, DraftSchedule, Drafter};
use decode_samplers::{Flow, SamplerChain};

fn tiny() -> (Gpt2Config, Gpt2Weights) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tiny-tied");
    let config = Gpt2Config::from_file(dir.join("config.json")).unwrap();
    let weights = Gpt2Weights::read(dir.join("model.safetensors"), &config).unwrap();
    (config, weights)
}

/// The tiny fixture with one final layer-norm bias set to `value`.
fn poisoned(value: f32) -> Gpt2<Cpu> {
    let (config, mut weights) = tiny();
    let mut bias: Vec<f32> = weights.ln_f[1].to_vec().unwrap();
    bias[3] = value;
    let n = bias.len();
    weights.ln_f[1] = TensorData::new(bias, [n]);
    Gpt2::from_weights(config, weights, &cpu_device()).unwrap()
}

/// Generates with `config`; returns the error and how many tokens were reported before it.
fn run(model: &Gpt2<Cpu>, config: &GenerationConfig) -> (Result<()>, usize) {
    let mut reported = 0;
    let result = Engine::new(model, config)
        .start(&[vec![3, 1, 4]])
        .and_then(|generation| {
            generation.run(|_| {
                reported += 1;
                Flow::Continue
            })
        })
        .map(|_| ());
    (result, reported)
}

fn config(sample: bool) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: Some(5),
        do_sample: sample,
        ..GenerationConfig::default()
    }
}

#[test]
fn nan_or_infinite_weights_are_an_error_before_any_token() {
    for value in [f32::NAN, f32::INFINITY] {
        for sample in [false, true] {
            let (result, reported) = run(&poisoned(value), &config(sample));
            let err = result.unwrap_err();
            assert!(matches!(err, Error::NonFinite(_)), "{err}");
            assert!(err.to_string().contains("step 0 of sequence 0"), "{err}");
            assert_eq!(reported, 0);
        }
    }
}

#[test]
fn a_bias_whose_effect_overflows_is_an_error_not_a_silent_token() {
    let model = poisoned(0.0);
    let mut c = config(true);
    // Finite, but temperature 0.5 doubles it past f32::MAX: +∞ after the processors.
    c.logit_bias = [(5u32, 3.0e38f32), (6, 3.0e38)].into_iter().collect();
    c.temperature = 0.5;
    let (result, reported) = run(&model, &c);
    let err = result.unwrap_err();
    assert!(matches!(err, Error::NonFinite(_)), "{err}");
    assert!(err.to_string().contains("overflows"), "{err}");
    assert_eq!(reported, 0);
}

#[test]
fn banning_every_token_is_an_error() {
    let model = poisoned(0.0);
    let mut c = config(true);
    c.banned_tokens = (0..model.vocab_size() as u32).collect();
    let (result, _) = run(&model, &c);
    assert!(matches!(result.unwrap_err(), Error::NonFinite(_)));
}

#[test]
fn temperatures_and_penalties_that_vanish_in_f32_are_refused() {
    for (edit, name) in [
        (
            (|c: &mut GenerationConfig| c.temperature = 1e-300) as fn(&mut GenerationConfig),
            "temperature",
        ),
        (
            |c: &mut GenerationConfig| c.temperature = 1e-45,
            "temperature",
        ),
        (
            |c: &mut GenerationConfig| c.repetition_penalty = 1e-300,
            "repetition_penalty",
        ),
        (
            |c: &mut GenerationConfig| c.repetition_penalty = 1e39,
            "repetition_penalty",
        ),
    ] {
        let mut c = config(true);
        edit(&mut c);
        let err = SamplerChain::from_config(&c, &[0], 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains(name), "{err}");
    }
}

/// Proposes token 1 while claiming a distribution that gives it probability 0.
struct Contradicting;

impl Drafter for Contradicting {
    fn propose(&mut self, requests: &[DraftRequest<'_>]) -> Result<Vec<Draft>> {
        Ok(requests
            .iter()
            .map(|_| {
                let mut q = vec![0.0f32; 211];
                q[2] = 1.0;
                Draft {
                    tokens: vec![1],
                    probs: Some(vec![q]),
                }
            })
            .collect())
    }
}

#[test]
fn degenerate_drafts_are_errors() {
    let target = poisoned(0.0);
    let c = config(true);
    // A drafted token with probability 0 under its own distribution.
    assert_eq!(
        target.vocab_size(),
        211,
        "the contradicting drafter assumes the fixture's vocabulary"
    );
    let err = Engine::new(&target, &c)
        .speculative(&mut Contradicting, DraftSchedule::Constant(1))
        .run(&[vec![3, 1, 4]])
        .unwrap_err();
    assert!(matches!(err, Error::Draft(_)), "{err}");
    // A draft model with NaN weights: its distributions are not finite.
    let nan_draft = poisoned(f32::NAN);
    let mut drafter = DraftModel::new(&nan_draft, 1);
    let err = Engine::new(&target, &c)
        .speculative(&mut drafter, DraftSchedule::Constant(2))
        .run(&[vec![3, 1, 4]])
        .unwrap_err();
    assert!(
        matches!(err, Error::Draft(_) | Error::NonFinite(_)),
        "{err}"
    );
}
