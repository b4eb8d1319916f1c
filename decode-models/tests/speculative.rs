//! Speculative decoding on real (tiny) GPT-2s: greedy output equals plain greedy, sampling output
//! follows the target's processed distribution (chi-square), self-drafts accept everything,
//! prompt lookup shines on repetitive text, and bad pairings are refused.

use std::path::PathBuf;

use burn::tensor::TensorData;
use burn::tensor::backend::Backend;
use decode_core::{Error, GenerationConfig, LanguageModel, Result};
use decode_models::backend::{Cpu, cpu_device};
use decode_models::weights::Gpt2Weights;
use decode_models::{Gpt2, Gpt2Config};
use decode_samplers::SamplerChain;
use decode_samplers::engine::{Engine, GenerationOutput, SpeculativeStats};
use decode_samplers::probs::{chi_square, chi_square_critical_1e4, softmax};
use decode_samplers::speculative::{
    Draft, DraftModel, DraftRequest, DraftSchedule, Drafter, PromptLookup,
};

mod gpu;

fn fixture(name: &str) -> Gpt2<Cpu> {
    fixture_on(name, &cpu_device())
}

fn fixture_on<B: Backend>(name: &str, device: &B::Device) -> Gpt2<B> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    Gpt2::load(dir, device).unwrap()
}

/// A draft that agrees with the target only partly: its weights with the final layer norm's bias
/// perturbed.
fn perturbed_draft() -> Gpt2<Cpu> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tiny-tied");
    let config = Gpt2Config::from_file(dir.join("config.json")).unwrap();
    let mut weights = Gpt2Weights::read(dir.join("model.safetensors"), &config).unwrap();
    let bias: Vec<f32> = weights.ln_f[1].to_vec().unwrap();
    let noisy: Vec<f32> = bias
        .iter()
        .enumerate()
        .map(|(i, b)| b + if i % 3 == 0 { 0.6 } else { -0.4 })
        .collect();
    weights.ln_f[1] = TensorData::new(noisy, [bias.len()]);
    Gpt2::from_weights(config, weights, &cpu_device()).unwrap()
}

/// A draft of the target's vocabulary that disagrees with it often: random weights.
fn random_draft<B: Backend>(target: &Gpt2<B>) -> Gpt2<B> {
    let t = target.config();
    let config = Gpt2Config {
        n_layer: 1,
        n_embd: 32,
        n_head: 2,
        n_inner: 64,
        ..t.clone()
    };
    Gpt2::random(config, 99, target.device()).unwrap()
}

fn run<B: Backend>(
    target: &Gpt2<B>,
    drafter: &mut dyn Drafter,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    schedule: DraftSchedule,
) -> Result<(Vec<Vec<Vec<u32>>>, Stats)> {
    let outputs = Engine::new(target, config)
        .speculative(drafter, schedule)
        .run(prompts)?;
    let stats = Stats {
        spec: outputs[0].stats.speculative.clone().unwrap_or_default(),
        target_forward_calls: outputs[0].stats.target_forward_calls,
    };
    let ids = outputs
        .into_iter()
        .map(|o| o.sequences.into_iter().map(|s| s.ids).collect())
        .collect();
    Ok((ids, stats))
}

/// The speculative stats and the target's forward passes.
#[derive(Debug)]
struct Stats {
    spec: SpeculativeStats,
    target_forward_calls: usize,
}

impl std::ops::Deref for Stats {
    type Target = SpeculativeStats;
    fn deref(&self) -> &SpeculativeStats {
        &self.spec
    }
}

/// Plain greedy decoding of `max_new_tokens` tokens after `prompt`.
fn greedy<B: Backend>(
    model: &Gpt2<B>,
    prompt: &[u32],
    max_new_tokens: usize,
    ignore_eos: bool,
) -> Result<GenerationOutput> {
    let config = GenerationConfig {
        max_new_tokens: Some(max_new_tokens),
        ignore_eos,
        ..GenerationConfig::default()
    };
    Ok(Engine::new(model, &config)
        .run(&[prompt.to_vec()])?
        .pop()
        .expect("one output per prompt"))
}

fn greedy_config(n: usize) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: Some(n),
        ..GenerationConfig::default()
    }
}

#[test]
fn speculative_greedy_equals_plain_greedy() {
    speculative_greedy_identity::<Cpu>(&cpu_device(), 1);
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_speculative_greedy_equals_plain_greedy() {
    if let Some(device) = gpu::wgpu("wgpu_speculative_greedy_equals_plain_greedy") {
        speculative_greedy_identity::<decode_models::backend::Wgpu>(&device, gpu::WGPU_SAMPLE);
    }
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_speculative_greedy_equals_plain_greedy() {
    let device = decode_models::backend::cuda_device(0)
        .expect("an NVIDIA GPU")
        .burn_device();
    speculative_greedy_identity::<decode_models::backend::Cuda>(&device, 1);
}

/// Under greedy decoding, every drafter and schedule gives plain greedy's ids, one prompt at a time
/// and batched (rows accepting different counts); every `every`-th schedule (all with 1: the
/// list is ordered so that a sample of every third keeps a constant one and the adaptive one).
fn speculative_greedy_identity<B: Backend>(device: &B::Device, every: usize) {
    let target = fixture_on::<B>("gpt2-tiny-tied", device);
    let draft = random_draft(&target);
    let prompts = vec![
        vec![7],
        vec![111, 134, 113, 120, 115],
        vec![3, 1, 4, 1, 5, 9, 2, 6, 5],
    ];
    let config = greedy_config(20);
    let plain: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            greedy(&target, p, 20, false).unwrap().sequences[0]
                .ids
                .clone()
        })
        .collect();
    let schedules = [
        DraftSchedule::Constant(2),
        DraftSchedule::Constant(1),
        DraftSchedule::Constant(4),
        DraftSchedule::Auto(6),
        DraftSchedule::Heuristic(3),
        DraftSchedule::Constant(7),
    ];
    for &schedule in schedules.iter().step_by(every) {
        // One prompt at a time, then all three as a batch (each row accepts its own count).
        for (p, prompt) in prompts.iter().enumerate() {
            let mut drafter = DraftModel::new(&draft, 1);
            let (ids, stats) = run(
                &target,
                &mut drafter,
                std::slice::from_ref(prompt),
                &config,
                schedule,
            )
            .unwrap();
            assert_eq!(ids[0][0], plain[p], "{schedule:?} prompt {p}");
            assert!(stats.drafted > 0 && stats.draft_forward_calls > 0);
        }
        let mut drafter = DraftModel::new(&draft, 1);
        let (ids, _) = run(&target, &mut drafter, &prompts, &config, schedule).unwrap();
        for (p, want) in plain.iter().enumerate() {
            assert_eq!(&ids[p][0], want, "{schedule:?} batched prompt {p}");
        }
        let mut lookup = PromptLookup::new(3);
        let (ids, _) = run(&target, &mut lookup, &prompts, &config, schedule).unwrap();
        for (p, want) in plain.iter().enumerate() {
            assert_eq!(&ids[p][0], want, "{schedule:?} prompt lookup, prompt {p}");
        }
    }
}

/// `target`'s own weights with a context of `positions` (its first position embeddings): a draft
/// that agrees with the target on every token it has room for.
fn short_self_draft(positions: usize) -> Gpt2<Cpu> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tiny-tied");
    let config = Gpt2Config::from_file(dir.join("config.json")).unwrap();
    let mut weights = Gpt2Weights::read(dir.join("model.safetensors"), &config).unwrap();
    let wpe: Vec<f32> = weights.wpe.to_vec().unwrap();
    let kept = wpe[..positions * config.n_embd].to_vec();
    weights.wpe = TensorData::new(kept, [positions, config.n_embd]);
    let config = Gpt2Config {
        n_positions: positions,
        ..config
    };
    Gpt2::from_weights(config, weights, &cpu_device()).unwrap()
}

/// Records how far any non-empty proposal reached: the sequence's length plus its draft's.
struct Furthest<D> {
    inner: D,
    furthest: usize,
}

impl<D: Drafter> Furthest<D> {
    fn new(inner: D) -> Self {
        Furthest { inner, furthest: 0 }
    }
}

impl<D: Drafter> Drafter for Furthest<D> {
    fn propose(&mut self, requests: &[DraftRequest<'_>]) -> Result<Vec<Draft>> {
        let drafts = self.inner.propose(requests)?;
        for (r, d) in requests.iter().zip(&drafts) {
            if !d.tokens.is_empty() {
                self.furthest = self.furthest.max(r.tokens.len() + d.tokens.len());
            }
        }
        Ok(drafts)
    }
    fn feedback(&mut self, row: usize, accepted: usize) -> Result<()> {
        self.inner.feedback(row, accepted)
    }
    fn vocab_size(&self) -> Option<usize> {
        self.inner.vocab_size()
    }
    fn forward_calls(&self) -> usize {
        self.inner.forward_calls()
    }
    fn seconds(&self) -> f64 {
        self.inner.seconds()
    }
}

/// A draft whose context (16) is shorter than the target's (40) drafts while it has room, then
/// lets the target go on alone: greedy output is plain greedy's for requests longer than the
/// draft's context, one prompt at a time and batched, where plain decoding used to be possible
/// but speculative decoding failed with a context overflow.
#[test]
fn a_draft_with_a_shorter_context_drafts_while_it_has_room() {
    const DRAFT_CONTEXT: usize = 16;
    let target = fixture("gpt2-tiny-tied");
    assert!(target.context_length() > DRAFT_CONTEXT);
    let random = Gpt2::random(
        Gpt2Config {
            n_positions: DRAFT_CONTEXT,
            ..random_draft(&target).config().clone()
        },
        7,
        &cpu_device(),
    )
    .unwrap();
    let own = short_self_draft(DRAFT_CONTEXT);
    assert_eq!(random.context_length(), DRAFT_CONTEXT);
    assert_eq!(own.context_length(), DRAFT_CONTEXT);
    // 5 + 30 and 18 + 20 tokens: past the draft's context, within the target's; the second prompt
    // is past it from the start, so that row never drafts.
    let prompts = vec![
        vec![3, 1, 4, 1, 5],
        (0..18).map(|i| (i * 7 + 2) % 200).collect(),
    ];
    let news = [30, 20];
    let plain: Vec<Vec<u32>> = prompts
        .iter()
        .zip(news)
        .map(|(p, n)| {
            greedy(&target, p, n, true).unwrap().sequences[0]
                .ids
                .clone()
        })
        .collect();
    for schedule in [
        DraftSchedule::Constant(1),
        DraftSchedule::Constant(4),
        DraftSchedule::Heuristic(3),
        DraftSchedule::Auto(6),
    ] {
        for (name, draft) in [("random", &random), ("self", &own)] {
            for (p, prompt) in prompts.iter().enumerate() {
                let config = GenerationConfig {
                    ignore_eos: true,
                    ..greedy_config(news[p])
                };
                let mut drafter = Furthest::new(DraftModel::new(draft, 1));
                let (ids, stats) = run(
                    &target,
                    &mut drafter,
                    std::slice::from_ref(prompt),
                    &config,
                    schedule,
                )
                .unwrap_or_else(|e| panic!("{schedule:?} {name} draft, prompt {p}: {e}"));
                assert_eq!(ids[0][0], plain[p], "{schedule:?} {name} draft, prompt {p}");
                // Drafting m tokens feeds the first m − 1: the sequence and its draft end at
                // most one past the draft's context.
                assert!(
                    drafter.furthest <= DRAFT_CONTEXT + 1,
                    "{schedule:?} {name} prompt {p}: a draft reached {}",
                    drafter.furthest
                );
                if prompt.len() <= DRAFT_CONTEXT {
                    assert!(
                        stats.drafted > 0,
                        "{schedule:?} {name} prompt {p}: {stats:?}"
                    );
                } else {
                    assert_eq!(stats.draft_forward_calls, 0, "{stats:?}");
                }
                if name == "self" {
                    assert_eq!(stats.accepted, stats.drafted, "{schedule:?}: {stats:?}");
                }
            }
            // Batched: one row drafts while the other, out of room, waits for the target.
            let config = GenerationConfig {
                ignore_eos: true,
                ..greedy_config(20)
            };
            let mut drafter = DraftModel::new(draft, 1);
            let (ids, _) = run(&target, &mut drafter, &prompts, &config, schedule)
                .unwrap_or_else(|e| panic!("{schedule:?} {name} draft, batched: {e}"));
            for (p, want) in plain.iter().enumerate() {
                assert_eq!(
                    ids[p][0],
                    want[..20],
                    "{schedule:?} {name} draft, batched prompt {p}"
                );
            }
        }
    }
    // Sampling goes past the draft's context too (its output is the target's distribution, tested
    // below; here it must simply not fail).
    let config = GenerationConfig {
        do_sample: true,
        ignore_eos: true,
        seed: 3,
        ..greedy_config(30)
    };
    let mut drafter = DraftModel::new(&random, 1);
    let (ids, stats) = run(
        &target,
        &mut drafter,
        &prompts[..1],
        &config,
        DraftSchedule::Constant(4),
    )
    .unwrap();
    assert_eq!(ids[0][0].len(), 30);
    assert!(stats.drafted > 0, "{stats:?}");
}

#[test]
fn self_draft_accepts_everything_in_few_target_passes() {
    let target = fixture("gpt2-tiny-tied");
    let prompt = vec![3, 1, 4, 1, 5];
    let config = GenerationConfig {
        ignore_eos: true,
        ..greedy_config(30)
    };
    for gamma in [2usize, 4] {
        let mut drafter = DraftModel::new(&target, 1);
        let (ids, stats) = run(
            &target,
            &mut drafter,
            std::slice::from_ref(&prompt),
            &config,
            DraftSchedule::Constant(gamma),
        )
        .unwrap();
        assert_eq!(ids[0][0].len(), 30);
        assert_eq!(stats.acceptance_rate, 1.0, "{stats:?}");
        // A prefill, then one pass per γ+1 tokens.
        assert_eq!(
            stats.target_forward_calls,
            1 + 30usize.div_ceil(gamma + 1),
            "{stats:?}"
        );
        assert!((stats.mean_accepted - gamma as f64).abs() < 1.0);
    }
}

#[test]
fn prompt_lookup_accepts_repeated_text() {
    // After [90] the bf16 fixture's greedy text is 104 then 45 45 45 … (reference.json): once the
    // text repeats, looking up the last n-gram predicts it.
    let target = fixture("gpt2-tiny-bf16");
    let config = GenerationConfig {
        ignore_eos: true,
        ..greedy_config(12)
    };
    let mut lookup = PromptLookup::new(2);
    let (ids, stats) = run(
        &target,
        &mut lookup,
        &[vec![90, 104, 45, 45]],
        &config,
        DraftSchedule::Constant(4),
    )
    .unwrap();
    assert_eq!(ids[0][0], vec![45; 12]);
    assert!(stats.acceptance_rate > 0.9, "{stats:?}");
    assert!(stats.target_forward_calls <= 1 + 12 / 5 + 1, "{stats:?}");
    assert_eq!(stats.draft_forward_calls, 0);
}

#[test]
fn mismatched_vocabulary_and_beam_search_are_refused() {
    let target = fixture("gpt2-tiny-tied");
    let other = fixture("gpt2-tiny-bf16");
    let mut drafter = DraftModel::new(&other, 1);
    let err = run(
        &target,
        &mut drafter,
        &[vec![1]],
        &greedy_config(4),
        DraftSchedule::Constant(2),
    )
    .unwrap_err();
    assert!(matches!(err, Error::VocabMismatch(_)), "{err}");
    assert!(
        err.to_string().contains("150") && err.to_string().contains("211"),
        "{err}"
    );
    let beam = GenerationConfig {
        num_beams: 2,
        ..greedy_config(4)
    };
    let mut lookup = PromptLookup::new(2);
    let err = run(
        &target,
        &mut lookup,
        &[vec![1]],
        &beam,
        DraftSchedule::Constant(2),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
}

/// Proposes uniformly random tokens and no distribution: a one-hot drafter.
struct RandomTokens(u64, u32);

impl Drafter for RandomTokens {
    fn propose(&mut self, requests: &[DraftRequest<'_>]) -> Result<Vec<Draft>> {
        Ok(requests
            .iter()
            .map(|r| Draft {
                tokens: (0..r.max)
                    .map(|_| {
                        self.0 = self
                            .0
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((self.0 >> 33) % self.1 as u64) as u32
                    })
                    .collect(),
                probs: None,
            })
            .collect())
    }
}

/// The target's processed distribution of the first two tokens after `prompt`.
fn joint_distribution(target: &Gpt2<Cpu>, prompt: &[u32], config: &GenerationConfig) -> Vec<f64> {
    let eos = target.eos_token_ids().to_vec();
    let vocab = target.vocab_size();
    let processed = |tokens: &[u32]| -> Vec<f32> {
        let mut chain = SamplerChain::from_config(config, &eos, 0).unwrap();
        let mut cache = target.new_cache(1, target.context_length()).unwrap();
        let logits = target
            .forward_last(&decode_core::Batch::single(tokens), &mut cache)
            .unwrap();
        let mut row = logits.last(0).to_vec();
        decode_core::LogitsProcessor::apply(
            &mut chain,
            &decode_core::Context::new(tokens, prompt.len()),
            &mut row,
        );
        softmax(&row)
    };
    let first = processed(prompt);
    let mut joint = vec![0f64; vocab * vocab];
    for (x1, &p1) in first.iter().enumerate() {
        if p1 > 0.0 {
            let mut ctx = prompt.to_vec();
            ctx.push(x1 as u32);
            for (x2, &p2) in processed(&ctx).iter().enumerate() {
                joint[x1 * vocab + x2] = p1 as f64 * p2 as f64;
            }
        }
    }
    joint
}

#[test]
fn speculative_sampling_follows_the_target_distribution() {
    let target = fixture("gpt2-tiny-tied");
    let draft = perturbed_draft();
    let prompt = vec![3, 1, 4, 1, 5];
    let vocab = target.vocab_size();
    const RUNS: usize = 3000;
    let sampling = |edit: fn(&mut GenerationConfig)| {
        let mut c = GenerationConfig {
            max_new_tokens: Some(2),
            ignore_eos: true,
            do_sample: true,
            num_return_sequences: RUNS,
            seed: 1234,
            top_k: 0,
            ..GenerationConfig::default()
        };
        edit(&mut c);
        c
    };
    let cases: [(&str, GenerationConfig, bool); 3] = [
        ("top-k 8, draft model", sampling(|c| c.top_k = 8), false),
        (
            "temperature 0.7 + top-p 0.8, draft model",
            sampling(|c| {
                c.temperature = 0.7;
                c.top_p = 0.8
            }),
            false,
        ),
        (
            "top-k 6, one-hot random drafter",
            sampling(|c| c.top_k = 6),
            true,
        ),
    ];
    for (name, config, one_hot) in cases {
        let want = joint_distribution(&target, &prompt, &config);
        let mut model_drafter = DraftModel::new(&draft, 77);
        let mut random = RandomTokens(5, vocab as u32);
        let drafter: &mut dyn Drafter = if one_hot {
            &mut random
        } else {
            &mut model_drafter
        };
        let (ids, stats) = run(
            &target,
            drafter,
            std::slice::from_ref(&prompt),
            &config,
            DraftSchedule::Constant(3),
        )
        .unwrap();
        assert!(
            stats.accepted > 0 && stats.accepted < stats.drafted,
            "{name}: {stats:?}"
        );
        let mut counts = vec![0u64; vocab * vocab];
        for seq in &ids[0] {
            counts[seq[0] as usize * vocab + seq[1] as usize] += 1;
        }
        for (bin, (&n, &p)) in counts.iter().zip(&want).enumerate() {
            assert!(
                p > 0.0 || n == 0,
                "{name}: ({}, {}) has probability 0",
                bin / vocab,
                bin % vocab
            );
        }
        let (stat, df) = chi_square(&counts, &want, RUNS as u64);
        let limit = chi_square_critical_1e4(df);
        assert!(
            stat < limit,
            "{name}: chi-square {stat:.1} ≥ {limit:.1} with {df} df"
        );
    }
}
