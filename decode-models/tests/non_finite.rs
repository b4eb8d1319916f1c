//! Non-finite numbers never flow into an output: NaN or infinite weights (and block scales, and
//! weights too large to quantize) are typed errors when the model loads, on every path; settings
//! whose effect overflows f32 and degenerate drafts are typed errors before any token is reported,
//! never a quiet id 0.

use std::path::PathBuf;

use burn::tensor::TensorData;
use decode_core::{Error, GenerationConfig, LanguageModel, Result};
use decode_models::backend::{Cpu, cpu_device};
use decode_models::gguf::{ElementType, GgufFile};
use decode_models::gpt2::{ComputePath, LoadOptions, Quantization};
use decode_models::weights::Gpt2Weights;
use decode_models::{Gpt2, Gpt2Config};
use decode_samplers::engine::Engine;
use decode_samplers::speculative::{Draft, DraftRequest, DraftSchedule, Drafter};
use decode_samplers::{Flow, SamplerChain};

fn tiny() -> (Gpt2Config, Gpt2Weights) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tiny-tied");
    let config = Gpt2Config::from_file(dir.join("config.json")).unwrap();
    let weights = Gpt2Weights::read(dir.join("model.safetensors"), &config).unwrap();
    (config, weights)
}

/// The tiny fixture's model, weights as they are.
fn tiny_model() -> Gpt2<Cpu> {
    let (config, weights) = tiny();
    Gpt2::from_weights(config, weights, &cpu_device()).unwrap()
}

/// `t` with the values at `indices` set to `value`.
fn poison(t: &TensorData, indices: impl IntoIterator<Item = usize>, value: f32) -> TensorData {
    let mut values: Vec<f32> = t.to_vec().unwrap();
    for i in indices {
        values[i] = value;
    }
    TensorData::new(values, t.shape.clone())
}

/// Sets some weights of a model to a value.
type Edit = fn(&mut Gpt2Weights, f32);

/// Every way of building the fixture on the CPU: the host path as stored, quantized at load to
/// either format, and the tensor path.
fn every_path() -> [(&'static str, LoadOptions); 4] {
    [
        ("host", LoadOptions::default()),
        ("q8_0", LoadOptions::default().quantize(Quantization::Q8_0)),
        ("q4_0", LoadOptions::default().quantize(Quantization::Q4_0)),
        ("tensor", LoadOptions::default().path(ComputePath::Tensor)),
    ]
}

/// Builds the fixture with `edit` applied, on `options`' path: the error it must give.
fn load_error(edit: impl Fn(&mut Gpt2Weights), options: LoadOptions) -> Error {
    let (config, mut weights) = tiny();
    edit(&mut weights);
    match Gpt2::<Cpu>::from_weights_with(config, weights, &cpu_device(), options) {
        Ok(_) => panic!("a model with non-finite weights was built ({options:?})"),
        Err(e) => e,
    }
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
fn nan_or_infinite_weights_are_an_error_at_load_on_every_path() {
    for value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for (path, options) in every_path() {
            // One value of a layer norm, one of a linear layer (the one quantized), a whole row
            // of a weight, and the position embedding's first row (once absorbed by attention).
            let edits: [(&str, Edit); 4] = [
                ("ln_f.bias", |w, v| w.ln_f[1] = poison(&w.ln_f[1], [3], v)),
                ("h.0.mlp.c_fc.weight", |w, v| {
                    w.blocks[0].c_fc[0] = poison(&w.blocks[0].c_fc[0], [5], v)
                }),
                ("h.1.attn.c_attn.weight", |w, v| {
                    let width = w.blocks[1].c_attn[0].shape[1];
                    w.blocks[1].c_attn[0] = poison(&w.blocks[1].c_attn[0], width..2 * width, v)
                }),
                ("wpe.weight", |w, v| {
                    let width = w.wpe.shape[1];
                    w.wpe = poison(&w.wpe, 0..width, v)
                }),
            ];
            for (tensor, edit) in edits {
                let err = load_error(|w| edit(w, value), options);
                assert!(matches!(err, Error::NonFinite(_)), "{path}: {err}");
                let message = err.to_string();
                assert!(message.contains(tensor), "{path}: {message}");
                assert!(!message.contains('\n'), "{path}: {message}");
            }
        }
    }
}

#[test]
fn weights_too_large_for_a_block_scale_are_refused_when_quantizing() {
    // q8_0's scale is max|w| / 127 and q4_0's max|w| / 8, both in f16 (at most 65504).
    for (format, large) in [(Quantization::Q8_0, 1.0e7f32), (Quantization::Q4_0, 6.0e5)] {
        let options = LoadOptions::default().quantize(format);
        let err = load_error(
            |w| w.blocks[0].c_fc[0] = poison(&w.blocks[0].c_fc[0], [7], large),
            options,
        );
        assert!(matches!(err, Error::NonFinite(_)), "{err}");
        assert!(
            err.to_string().contains("h.0.mlp.c_fc.weight") && err.to_string().contains("scale"),
            "{err}"
        );
        // Unquantized, the same weights load: they are finite.
        let (config, mut weights) = tiny();
        weights.blocks[0].c_fc[0] = poison(&weights.blocks[0].c_fc[0], [7], large);
        Gpt2::<Cpu>::from_weights(config, weights, &cpu_device()).unwrap();
    }
}

/// The committed q8_0 / q4_0 GGUF files with the f16 scale of one block of `tensor` set to
/// `bits`: NaN or ±∞ scales are refused when the file loads.
#[test]
fn gguf_block_scales_that_are_not_finite_are_refused() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/gguf");
    for file in ["kjv-target-q8_0.gguf", "kjv-target-q4_0.gguf"] {
        let original = std::fs::read(root.join(file)).unwrap();
        let gguf = GgufFile::open(root.join(file)).unwrap();
        let tensor = gguf
            .tensors()
            .iter()
            .find(|t| matches!(t.element_type, ElementType::Q8_0 | ElementType::Q4_0))
            .expect("the file holds quantized tensors");
        // The scale of the tensor's third block.
        let at = tensor.offset as usize + 2 * tensor.element_type.block_bytes();
        for bits in [0x7e00u16, 0x7c00, 0xfc00] {
            let mut bytes = original.clone();
            bytes[at..at + 2].copy_from_slice(&bits.to_le_bytes());
            let path = std::env::temp_dir().join(format!(
                "decode-non-finite-{}-{bits:x}-{file}",
                std::process::id()
            ));
            std::fs::write(&path, &bytes).unwrap();
            let result = Gpt2::<Cpu>::load(&path, &cpu_device());
            std::fs::remove_file(&path).ok();
            let err = result.expect_err("a NaN or infinite block scale loaded");
            assert!(matches!(err, Error::NonFinite(_)), "{file}: {err}");
            assert!(err.to_string().contains("block scale"), "{file}: {err}");
        }
        // Unpatched, the file loads.
        Gpt2::<Cpu>::load(root.join(file), &cpu_device()).unwrap();
    }
}

#[test]
fn a_bias_whose_effect_overflows_is_an_error_not_a_silent_token() {
    let model = tiny_model();
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
    let model = tiny_model();
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
    let target = tiny_model();
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
}
