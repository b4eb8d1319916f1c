//! The generation loop on a real (tiny) GPT-2: batching, several sequences, stopping.

use std::path::PathBuf;

use decode_core::GenerationConfig;
use decode_models::Gpt2;
use decode_models::backend::{Cpu, cpu_device};
use decode_samplers::Flow;
use decode_samplers::engine::Engine;

fn model() -> Gpt2<Cpu> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tiny-tied");
    Gpt2::load(dir, &cpu_device()).unwrap()
}

fn run(model: &Gpt2<Cpu>, prompts: &[Vec<u32>], config: &GenerationConfig) -> Vec<Vec<Vec<u32>>> {
    let outputs = Engine::new(model, config).run(prompts).unwrap();
    outputs
        .into_iter()
        .map(|o| o.sequences.into_iter().map(|s| s.ids).collect())
        .collect()
}

#[test]
fn batched_prompts_of_different_lengths_equal_one_by_one() {
    let model = model();
    // Lengths 1, 5 and 9; the second stops on EOS early (see reference.json of this fixture).
    let prompts = vec![
        vec![7],
        vec![111, 134, 113, 120, 115],
        vec![3, 1, 4, 1, 5, 9, 2, 6, 5],
    ];
    for config in [
        GenerationConfig {
            max_new_tokens: Some(12),
            ..GenerationConfig::default()
        },
        GenerationConfig {
            max_new_tokens: Some(12),
            do_sample: true,
            top_k: 20,
            top_p: 0.9,
            temperature: 0.8,
            repetition_penalty: 1.3,
            seed: 11,
            ..GenerationConfig::default()
        },
    ] {
        let together = run(&model, &prompts, &config);
        for (p, prompt) in prompts.iter().enumerate() {
            // Sequence i of a call samples with seed + i: run the single prompt with the same seed.
            let alone = run(
                &model,
                std::slice::from_ref(prompt),
                &GenerationConfig {
                    seed: config.seed + p as u64,
                    ..config.clone()
                },
            );
            assert_eq!(
                together[p], alone[0],
                "prompt {p}, sampling {}",
                config.do_sample
            );
        }
        assert!(together[1][0].len() < 12, "the EOS prompt stops on its own");
        assert_eq!(together[1][0].last(), Some(&210));
        assert_eq!(together[0][0].len(), 12);
    }
}

#[test]
fn several_sequences_per_prompt_differ_and_are_reproducible() {
    let model = model();
    let config = GenerationConfig {
        max_new_tokens: Some(8),
        do_sample: true,
        num_return_sequences: 3,
        seed: 5,
        ignore_eos: true,
        ..GenerationConfig::default()
    };
    let a = run(&model, &[vec![1, 2, 3]], &config);
    let b = run(&model, &[vec![1, 2, 3]], &config);
    assert_eq!(a, b, "same seed, same tokens");
    assert_eq!(a[0].len(), 3);
    assert!(
        a[0][0] != a[0][1] || a[0][1] != a[0][2],
        "sequences use different seeds"
    );
    let greedy = GenerationConfig {
        max_new_tokens: Some(8),
        ..GenerationConfig::default()
    };
    assert_ne!(a[0][0], run(&model, &[vec![1, 2, 3]], &greedy)[0][0]);
}

#[test]
fn a_stop_rule_and_min_new_tokens_end_sequences() {
    let model = model();
    let config = GenerationConfig {
        max_new_tokens: Some(10),
        ..GenerationConfig::default()
    };
    // Each sequence's generated length so far (the old event's `generated.len()`).
    let mut generated = Vec::<usize>::new();
    let out = Engine::new(&model, &config)
        .start(&[vec![4, 5]])
        .unwrap()
        .run(|delta| {
            if generated.len() <= delta.sequence {
                generated.resize(delta.sequence + 1, 0);
            }
            generated[delta.sequence] += 1;
            if generated[delta.sequence] == 3 {
                Flow::Stop
            } else {
                Flow::Continue
            }
        })
        .unwrap();
    assert_eq!(out[0].sequences[0].ids.len(), 3);
    // The EOS prompt stops at once without min-new-tokens, not before 5 with it.
    let eos_prompt = vec![111, 134, 113, 120, 115];
    let plain = run(&model, std::slice::from_ref(&eos_prompt), &config);
    let min5 = GenerationConfig {
        min_new_tokens: 9,
        ..config.clone()
    };
    let longer = run(&model, &[eos_prompt], &min5);
    assert!(plain[0][0].len() < 9);
    assert!(longer[0][0].len() >= 9 && !longer[0][0][..8].contains(&210));
}
