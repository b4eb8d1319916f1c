//! `Generator` on the embedded model: streaming equals generating, streams interleave and stop
//! when dropped, stop strings and batches, beam search, and a tokenizer that does not fit.

use std::collections::BTreeMap;
use std::path::PathBuf;

use decode::models::backend::{Cpu, cpu_device};
use decode::models::{Gpt2, Tokenizer};
use decode::{Error, GenerationConfig, Generator, StopReason, TextDelta};

fn embedded(config: GenerationConfig) -> Generator {
    let dir = decode::embedded::target_dir().unwrap();
    Generator::from_dir(dir)
        .unwrap()
        .with_config(config)
        .unwrap()
}

fn tokens(n: usize) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: Some(n),
        ignore_eos: true,
        ..GenerationConfig::default()
    }
}

fn sampling(n: usize) -> GenerationConfig {
    GenerationConfig {
        do_sample: true,
        top_p: 0.9,
        seed: 3,
        ..tokens(n)
    }
}

#[test]
fn a_stream_yields_what_generate_returns() {
    for config in [tokens(24), sampling(24)] {
        let generator = embedded(config);
        let whole = generator.generate("And God said").unwrap();
        let deltas: Vec<TextDelta> = generator
            .stream("And God said")
            .unwrap()
            .collect::<decode::Result<_>>()
            .unwrap();
        let ids: Vec<u32> = deltas.iter().map(|d| d.token).collect();
        let text: String = deltas.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(ids, whole.sequences[0].ids);
        assert_eq!(text, whole.text());
        let logprobs: Vec<f32> = deltas.iter().map(|d| d.logprob).collect();
        assert_eq!(logprobs, whole.sequences[0].logprobs);
        assert_eq!(deltas.last().unwrap().stop, Some(StopReason::Length));
        assert!(deltas[..23].iter().all(|d| d.stop.is_none()));
    }
}

#[test]
fn streams_interleave_and_stop_when_dropped() {
    let generator = embedded(sampling(12));
    let alone = |prompt: &str| generator.generate(prompt).unwrap().sequences[0].ids.clone();
    let (a, b) = (alone("And God said"), alone("In the beginning"));
    let mut first = generator.stream("And God said").unwrap();
    let mut second = generator.stream("In the beginning").unwrap();
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    for _ in 0..12 {
        got_a.push(first.next().unwrap().unwrap().token);
        got_b.push(second.next().unwrap().unwrap().token);
    }
    assert!(first.next().is_none() && second.next().is_none());
    assert_eq!((got_a, got_b), (a, b));
    // Pull three tokens, then drop: nothing more is generated.
    let mut stream = generator.stream("And God said").unwrap();
    let three: Vec<u32> = (&mut stream).take(3).map(|d| d.unwrap().token).collect();
    assert_eq!(three, alone("And God said")[..3]);
    assert_eq!(stream.stats().new_tokens, 3);
    drop(stream);
}

#[test]
fn stop_strings_end_a_sequence_and_batches_equal_single_prompts() {
    let generator = embedded(GenerationConfig {
        stop_strings: vec![",".into()],
        ..tokens(40)
    });
    let out = generator.generate("And God said").unwrap();
    assert!(out.text().ends_with(','), "{:?}", out.text());
    assert_eq!(out.sequences[0].stop, Some(StopReason::StopString));

    // Greedy: every prompt of a batch equals the prompt alone. Sampling: sequence i draws with
    // seed + i over the whole batch, so the first prompt's sequences equal it alone.
    let prompts = ["And God said", "In the beginning God created"];
    for (config, checked) in [(tokens(10), 2), (sampling(10), 1)] {
        let generator = embedded(GenerationConfig {
            num_return_sequences: 2,
            ..config
        });
        let batch = generator.generate_batch(&prompts).unwrap();
        assert_eq!(batch.len(), prompts.len());
        for (prompt, out) in prompts.iter().zip(&batch).take(checked) {
            let alone = generator.generate(prompt).unwrap();
            assert_eq!(alone.sequences, out.sequences);
        }
    }
}

#[test]
fn beam_search_streams_its_sequences_when_it_ends() {
    let generator = embedded(GenerationConfig {
        num_beams: 3,
        num_return_sequences: 2,
        ..tokens(8)
    });
    let out = generator.generate("And God said").unwrap();
    assert_eq!(out.sequences.len(), 2);
    assert!(out.sequences[0].score >= out.sequences[1].score);
    let deltas: Vec<TextDelta> = generator
        .stream("And God said")
        .unwrap()
        .collect::<decode::Result<_>>()
        .unwrap();
    for (k, seq) in out.sequences.iter().enumerate() {
        let ids: Vec<u32> = deltas
            .iter()
            .filter(|d| d.sequence == k)
            .map(|d| d.token)
            .collect();
        assert_eq!(ids, seq.ids);
    }
    // Stop strings cannot be honoured by beam search: refused, not ignored.
    let refused = embedded(GenerationConfig {
        num_beams: 3,
        stop_strings: vec![",".into()],
        ..tokens(8)
    });
    assert!(matches!(
        refused.generate("And God said"),
        Err(Error::Unsupported(_))
    ));
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The tiny test model: 211 ids, 40 positions.
fn tiny() -> Gpt2<Cpu> {
    Gpt2::load(
        root().join("decode-models/tests/fixtures/gpt2-tiny-tied"),
        &cpu_device(),
    )
    .unwrap()
}

/// The embedded tokenizer cut to its first `n` ids (single bytes and `<|endoftext|>`: no merge
/// survives), loaded from a scratch file.
fn kjv_tokenizer_cut_to(n: u64) -> Tokenizer {
    let path = root().join("models/kjv-target/tokenizer.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let vocab = json["model"]["vocab"].as_object_mut().unwrap();
    vocab.retain(|_, id| id.as_u64().is_some_and(|id| id < n));
    json["model"]["merges"] = serde_json::json!([]);
    let scratch =
        std::env::temp_dir().join(format!("decode-gen-tok-{n}-{}.json", std::process::id()));
    std::fs::write(&scratch, json.to_string()).unwrap();
    let tokenizer = Tokenizer::from_file(&scratch);
    std::fs::remove_file(&scratch).ok();
    tokenizer.unwrap()
}

#[test]
fn a_tokenizer_with_more_ids_than_the_model_is_refused_before_generating() {
    let tokenizer =
        Tokenizer::from_file(root().join("assets/gpt2-tokenizer/tokenizer.json")).unwrap();
    let err = Generator::new(tiny(), Some(tokenizer)).err().unwrap();
    assert!(matches!(err, Error::VocabMismatch(_)), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("50257") && message.contains("211"),
        "{message}"
    );
}

#[test]
fn an_id_past_a_smaller_tokenizer_is_a_typed_error() {
    // A padded model vocabulary: 211 model ids, 150 tokenizer ids. The pair is accepted, and an
    // id past the tokenizer's (made certain by a logit bias) ends the run with a typed error
    // naming it, not a panic or lost text.
    let tokenizer = kjv_tokenizer_cut_to(150);
    let generator = Generator::new(tiny(), Some(tokenizer))
        .unwrap()
        .with_config(GenerationConfig {
            logit_bias: BTreeMap::from([(180, 1e4)]),
            ..tokens(3)
        })
        .unwrap();
    let err = generator.generate_ids(&[40, 41]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TokenOutOfRange {
                id: 180,
                vocab_size: 150
            }
        ),
        "{err}"
    );
}

#[test]
fn stop_strings_need_text_and_an_empty_one_is_refused() {
    for tokenizer in [None, Some(kjv_tokenizer_cut_to(150))] {
        let with_tokenizer = tokenizer.is_some();
        let generator = Generator::new(tiny(), tokenizer).unwrap();
        let empty = GenerationConfig {
            stop_strings: vec!["\n".into(), String::new()],
            ..tokens(4)
        };
        let err = generator.engine().start(&[vec![40, 41]]).map(|_| ()).and(
            Generator::new(tiny(), None)
                .unwrap()
                .with_config(empty)
                .map(|_| ()),
        );
        assert!(
            matches!(err, Err(Error::InvalidParameter { name: "stop_strings", ref message })
                if message.contains("empty stop string")),
            "{err:?}"
        );
        if !with_tokenizer {
            let needs_text = Generator::new(tiny(), None)
                .unwrap()
                .with_config(GenerationConfig {
                    stop_strings: vec!["\n".into()],
                    ..tokens(4)
                })
                .unwrap()
                .generate_ids(&[40, 41])
                .unwrap_err();
            assert!(
                matches!(
                    needs_text,
                    Error::InvalidParameter {
                        name: "stop_strings",
                        ..
                    }
                ),
                "{needs_text}"
            );
        }
    }
}
