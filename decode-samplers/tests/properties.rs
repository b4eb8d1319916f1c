//! Property tests of the numerics (proptest, a bounded number of cases so CI stays fast):
//!
//! - the sampler chain, built from any settings, on logits holding NaN, ±∞, huge, subnormal and
//!   tied values (and empty rows): either a typed error (for refused settings or non-finite
//!   logits only), or a token whose processed logit is finite, inside the vocabulary, and the
//!   processed maximum when greedy; valid settings on finite logits always give such a token;
//! - `verify` on any target logits and drafts (zeros, NaN, negative, unnormalised, out of
//!   vocabulary): either a typed draft or non-finite error, or a verdict inside the draft and the
//!   vocabulary; valid drafts always give a verdict;
//! - `verify` with valid drafts keeps the target distribution (chi-square, seeded: not flaky).

use decode_core::{Context, Error, GenerationConfig};
use decode_samplers::SamplerChain;
use decode_samplers::engine::{check_chosen, check_logits};
use decode_samplers::probs::{chi_square, chi_square_critical_1e4, softmax};
use decode_samplers::speculative::{Draft, verify};
use proptest::prelude::*;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

/// A logit: ordinary, tied, huge, tiny, subnormal, or not finite.
fn logit() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -20f32..20f32,
        1 => Just(0.0f32),
        1 => Just(f32::MAX),
        1 => Just(-f32::MAX),
        1 => Just(1e-40f32),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
    ]
}

/// The settings a strategy's tuple draws: sampling, temperature, top-k, top-p, repetition
/// penalty, min-p, a bias on token 1, seed.
type Drawn = (bool, f64, usize, f64, f64, Option<f64>, f32, u64);

fn settings((sample, t, k, p, rep, min_p, bias, seed): Drawn) -> GenerationConfig {
    GenerationConfig {
        do_sample: sample,
        temperature: t,
        top_k: k,
        top_p: p,
        repetition_penalty: rep,
        min_p,
        logit_bias: [(1u32, bias)].into_iter().collect(),
        seed,
        ..GenerationConfig::default()
    }
}

/// A finite logit: ordinary, tied, huge, tiny or subnormal.
fn finite_logit() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -20f32..20f32,
        1 => Just(0.0f32),
        1 => Just(1e30f32),
        1 => Just(-1e30f32),
        1 => Just(1e-40f32),
    ]
}

/// Settings every check accepts (temperatures, penalties and biases within f32's reach).
fn valid_config() -> impl Strategy<Value = GenerationConfig> {
    (
        any::<bool>(),
        1e-2f64..10.0,
        0usize..8,
        prop_oneof![Just(1.0), 0.05f64..=1.0],
        prop_oneof![Just(1.0), 0.5f64..2.0],
        prop_oneof![Just(None), (0.0f64..=0.5).prop_map(Some)],
        -10f32..10.0,
        any::<u64>(),
    )
        .prop_map(settings)
}

/// Samples from `raw` with `chain`: a token inside the vocabulary, whose processed logit is
/// finite (unless the processors masked every token, which the engine refuses), the processed
/// maximum when greedy, and of positive probability when sampling.
fn check_sampled(
    config: &GenerationConfig,
    chain: &mut SamplerChain,
    raw: &[f32],
    context: &[u32],
) -> Result<(), TestCaseError> {
    let mut processed = raw.to_vec();
    let ctx = Context::new(context, 1);
    let id = chain.sample(&ctx, &mut processed);
    prop_assert!((id as usize) < raw.len());
    if check_chosen(&processed, id, 0, 0).is_err() {
        // Only when nothing finite is left to choose.
        prop_assert!(!processed[id as usize].is_finite());
        return Ok(());
    }
    prop_assert!(processed[id as usize].is_finite());
    if !config.do_sample {
        let max = processed
            .iter()
            .copied()
            .filter(|v| !v.is_nan())
            .fold(f32::NEG_INFINITY, f32::max);
        prop_assert_eq!(processed[id as usize], max);
    } else {
        let p = softmax(&processed);
        let total: f64 = p.iter().map(|&v| v as f64).sum();
        prop_assert!((total - 1.0).abs() < 1e-4, "sum {}", total);
        prop_assert!(p[id as usize] > 0.0);
    }
    Ok(())
}

/// Settings, from neutral to extreme (temperatures that underflow f32, huge penalties and biases).
fn config() -> impl Strategy<Value = GenerationConfig> {
    (
        any::<bool>(),
        prop_oneof![
            Just(1.0),
            1e-3f64..10.0,
            Just(1e-300),
            Just(0.0),
            Just(-1.0)
        ],
        0usize..8,
        prop_oneof![Just(1.0), 0.0f64..=1.0],
        prop_oneof![Just(1.0), 1e-3f64..100.0, Just(1e30), Just(1e-300)],
        prop_oneof![Just(None), (0.0f64..=1.0).prop_map(Some)],
        prop_oneof![Just(0.0f32), -1e38f32..1e38f32, Just(f32::INFINITY)],
        any::<u64>(),
    )
        .prop_map(settings)
}

/// A bounded number of cases from a fixed seed: the same cases on every run, so CI is never flaky.
fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0xdec0de),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn chain_gives_a_typed_error_or_a_valid_token(
        config in config(),
        raw in prop::collection::vec(logit(), 0..40),
        context in prop::collection::vec(0u32..40, 1..6),
    ) {
        let mut chain = match SamplerChain::from_config(&config, &[0], 0) {
            Ok(chain) => chain,
            // Refused settings: a typed error that names the setting, before generating.
            Err(e) => {
                prop_assert!(matches!(e, Error::InvalidParameter { .. }), "{e}");
                return Ok(());
            }
        };
        if check_logits(&raw, 0, 0).is_err() {
            // The engine stops here with a typed error, and only on such logits.
            prop_assert!(raw.is_empty() || raw.iter().any(|v| !v.is_finite()));
            return Ok(());
        }
        check_sampled(&config, &mut chain, &raw, &context)?;
    }

    /// Valid settings on finite logits (huge, tiny, tied and subnormal ones included) always
    /// reach the checks of the chosen token.
    #[test]
    fn valid_chains_on_finite_logits_give_a_valid_token(
        config in valid_config(),
        raw in prop::collection::vec(finite_logit(), 1..40),
        context in prop::collection::vec(0u32..40, 1..6),
    ) {
        let mut chain = SamplerChain::from_config(&config, &[0], 0).map_err(|e| {
            TestCaseError::fail(format!("valid settings refused: {e}"))
        })?;
        prop_assert!(check_logits(&raw, 0, 0).is_ok());
        check_sampled(&config, &mut chain, &raw, &context)?;
    }

    #[test]
    fn verify_gives_a_typed_error_or_a_verdict_inside_the_draft(
        target in prop::collection::vec(prop::collection::vec(logit(), 6), 1..4),
        tokens in prop::collection::vec(0u32..8, 0..3),
        q in prop::collection::vec(prop_oneof![4 => 0.0f32..1.0, 1 => Just(0.0), 1 => Just(f32::NAN), 1 => Just(-0.5)], 6),
        normalise in any::<bool>(),
        sample in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let g = tokens.len().min(target.len() - 1);
        let tokens = tokens[..g].to_vec();
        let sum: f32 = q.iter().sum();
        let q: Vec<f32> = if normalise && sum > 0.0 { q.iter().map(|v| v / sum).collect() } else { q };
        let draft = Draft { tokens: tokens.clone(), probs: Some(vec![q; g]) };
        let mut chain = if sample { SamplerChain::sampling(seed) } else { SamplerChain::greedy() };
        match verify(&mut chain, &[0], 1, &draft, |i| target[i].as_slice()) {
            Ok(verdict) => {
                prop_assert!(verdict.accepted <= g);
                prop_assert!((verdict.next as usize) < 6);
            }
            Err(e) => prop_assert!(matches!(e, Error::Draft(_) | Error::NonFinite(_)), "{e}"),
        }
    }

    /// Valid drafts (in the vocabulary, normalised, giving their own tokens probability > 0) on
    /// finite targets always give a verdict inside the draft.
    #[test]
    fn verify_of_valid_drafts_gives_a_verdict_inside_the_draft(
        target in prop::collection::vec(prop::collection::vec(-20f32..20.0, 6), 2..5),
        tokens in prop::collection::vec(0u32..6, 1..4),
        q in prop::collection::vec(0.01f32..1.0, 6),
        sample in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let g = tokens.len().min(target.len() - 1);
        let tokens = tokens[..g].to_vec();
        let sum: f32 = q.iter().sum();
        let q: Vec<f32> = q.iter().map(|v| v / sum).collect();
        let draft = Draft { tokens, probs: Some(vec![q; g]) };
        let mut chain = if sample { SamplerChain::sampling(seed) } else { SamplerChain::greedy() };
        let verdict = verify(&mut chain, &[0], 1, &draft, |i| target[i].as_slice())
            .map_err(|e| TestCaseError::fail(format!("a valid draft refused: {e}")))?;
        prop_assert!(verdict.accepted <= g);
        prop_assert!((verdict.next as usize) < 6);
    }

}

proptest! {
    #![proptest_config(cases(12))]

    #[test]
    fn verify_keeps_the_target_distribution(
        p_logits in prop::collection::vec(-3f32..3.0, 5),
        q_weights in prop::collection::vec(0.05f32..1.0, 5),
        seed in any::<u64>(),
    ) {
        let p = softmax(&p_logits);
        let total: f32 = q_weights.iter().sum();
        let q: Vec<f32> = q_weights.iter().map(|w| w / total).collect();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let draws = 20_000u64;
        let mut counts = [0u64; 5];
        let target = [p_logits.clone(), p_logits.clone()];
        let mut chain = SamplerChain::sampling(seed ^ 0x5eed);
        for _ in 0..draws {
            // The drafted token is a draw from q, as a draft model would make it.
            let u: f32 = rng.random();
            let mut acc = 0.0;
            let x = q.iter().position(|&w| { acc += w; u < acc }).unwrap_or(4) as u32;
            let draft = Draft { tokens: vec![x], probs: Some(vec![q.clone()]) };
            let verdict = verify(&mut chain, &[0], 1, &draft, |i| target[i].as_slice()).unwrap();
            let first = if verdict.accepted >= 1 { x } else { verdict.next };
            counts[first as usize] += 1;
        }
        let probs: Vec<f64> = p.iter().map(|&v| v as f64).collect();
        let (stat, df) = chi_square(&counts, &probs, draws);
        prop_assert!(stat < chi_square_critical_1e4(df), "chi-square {} (df {}) for {:?} vs {:?}", stat, df, counts, probs);
    }
}
