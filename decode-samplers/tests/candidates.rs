//! The chain on candidates equals the old dense computation (proptest, bounded and seeded).
//!
//! `reference` holds the processors and selectors as they were before the chain learnt to work on
//! candidates: every processor on the whole row, the selector on the whole row. For random logits
//! (ties, `−∞`, and in one property NaN and `±∞`), random chains (every built-in processor, a
//! closure, k larger than the vocabulary, large `min_tokens_to_keep`) and random contexts, the
//! chain must leave the same processed row, bit for bit, and draw the same tokens from the same
//! seed, step after step.

use std::collections::BTreeMap;

use decode_core::sampling::Candidates;
use decode_core::{Context, LogitsProcessor};
use decode_samplers::SamplerChain;
use decode_samplers::processors::{
    BanTokens, FrequencyPresencePenalty, LogitBias, MinNewTokens, MinP, NoBadWords, NoRepeatNGram,
    RepetitionPenalty, Temperature, TopK, TopP, TypicalP,
};
use proptest::prelude::*;

/// The processors and selectors before candidates, copied from the dense implementations.
mod reference {
    use rand::rngs::Xoshiro256PlusPlus;
    use rand::{RngExt, SeedableRng};

    pub fn softmax_into(logits: &[f32], out: &mut Vec<f32>) {
        out.clear();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            out.resize(logits.len(), 0.0);
            return;
        }
        out.extend(logits.iter().map(|&x| {
            if x == f32::NEG_INFINITY {
                0.0
            } else {
                (x - max).exp()
            }
        }));
        let sum: f64 = out.iter().map(|&p| p as f64).sum();
        let sum = sum as f32;
        out.iter_mut().for_each(|p| *p /= sum);
    }

    fn log_softmax_into(logits: &[f32], out: &mut Vec<f32>) {
        out.clear();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            out.resize(logits.len(), f32::NEG_INFINITY);
            return;
        }
        let sum: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
        let log_sum = sum.ln() as f32;
        out.extend(logits.iter().map(|&x| x - max - log_sum));
    }

    fn finite_ascending(logits: &[f32], out: &mut Vec<u32>) {
        out.clear();
        out.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, x)| x.is_finite())
                .map(|(i, _)| i as u32),
        );
        out.sort_by(|&a, &b| {
            logits[a as usize]
                .total_cmp(&logits[b as usize])
                .then(a.cmp(&b))
        });
    }

    /// One processor of a chain, with its parameters.
    #[derive(Debug, Clone)]
    pub enum Step {
        Temperature(f64),
        TopK(usize, usize),
        TopP(f64, usize),
        MinP(f64, usize),
        Typical(f64, usize),
        Repetition(f64),
        FrequencyPresence(f64, f64),
        NoRepeatNGram(usize),
        Bias(Vec<(u32, f32)>),
        Ban(Vec<u32>),
        BadWords(Vec<Vec<u32>>),
        MinNewTokens(usize, Vec<u32>),
        /// A closure: gives token 0 the logit 1 (revives a removed token).
        Revive0,
    }

    pub fn apply(step: &Step, tokens: &[u32], prompt_len: usize, logits: &mut [f32]) {
        let generated = &tokens[prompt_len.min(tokens.len())..];
        match step {
            Step::Temperature(t) => {
                let t = *t as f32;
                logits.iter_mut().for_each(|x| *x /= t);
            }
            Step::TopK(k, keep) => {
                let k = (*k).max(*keep).min(logits.len());
                if k == 0 || k == logits.len() {
                    return;
                }
                let mut scratch = logits.to_vec();
                let (_, kth, _) = scratch.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
                let kth = *kth;
                logits
                    .iter_mut()
                    .filter(|x| **x < kth)
                    .for_each(|x| *x = f32::NEG_INFINITY);
            }
            Step::TopP(p, keep) => {
                let mut probs = Vec::new();
                let mut order = Vec::new();
                softmax_into(logits, &mut probs);
                finite_ascending(logits, &mut order);
                let threshold = (1.0 - p) as f32;
                let removable = order.len().saturating_sub((*keep).max(1));
                let mut cumulative = 0f64;
                for &id in &order[..removable] {
                    cumulative += probs[id as usize] as f64;
                    if cumulative as f32 > threshold {
                        break;
                    }
                    logits[id as usize] = f32::NEG_INFINITY;
                }
            }
            Step::MinP(min_p, keep) => {
                let keep_n = (*keep).max(1);
                if logits.is_empty() {
                    return;
                }
                let mut probs = Vec::new();
                softmax_into(logits, &mut probs);
                let top = probs.iter().copied().fold(0f32, f32::max);
                let threshold = (*min_p as f32) * top;
                let kept = probs.iter().filter(|&&p| p >= threshold).count();
                if kept >= keep_n {
                    for (x, &p) in logits.iter_mut().zip(&probs) {
                        if p < threshold {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                    return;
                }
                let mut order: Vec<u32> = (0..logits.len() as u32).collect();
                let keep = keep_n.min(logits.len());
                let logits_ref = &*logits;
                order.select_nth_unstable_by(keep - 1, |&a, &b| {
                    logits_ref[b as usize]
                        .total_cmp(&logits_ref[a as usize])
                        .then(a.cmp(&b))
                });
                let mut keep_mask = vec![false; logits.len()];
                for &id in &order[..keep] {
                    keep_mask[id as usize] = true;
                }
                for (i, x) in logits.iter_mut().enumerate() {
                    if !keep_mask[i] && probs[i] < threshold {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
            Step::Typical(mass, keep) => {
                let keep = (*keep).max(1);
                if logits.is_empty() {
                    return;
                }
                let (mut logp, mut probs) = (Vec::new(), Vec::new());
                log_softmax_into(logits, &mut logp);
                softmax_into(logits, &mut probs);
                let entropy: f64 = logp
                    .iter()
                    .zip(&probs)
                    .filter(|(l, _)| l.is_finite())
                    .map(|(&l, &p)| -(l as f64) * p as f64)
                    .sum();
                let entropy = entropy as f32;
                let shifted: Vec<f32> = logp.iter().map(|&l| (-l - entropy).abs()).collect();
                let mut order: Vec<u32> = (0..logits.len() as u32).collect();
                order.sort_by(|&a, &b| {
                    shifted[a as usize]
                        .total_cmp(&shifted[b as usize])
                        .then(a.cmp(&b))
                });
                let mass = *mass as f32;
                let mut cumulative = 0f64;
                let mut below = 0;
                for &id in &order {
                    cumulative += probs[id as usize] as f64;
                    if (cumulative as f32) < mass {
                        below += 1;
                    } else {
                        break;
                    }
                }
                let last = below.min(order.len() - 1);
                let cutoff = shifted[order[last] as usize];
                for (rank, &id) in order.iter().enumerate() {
                    if rank >= keep && shifted[id as usize] > cutoff {
                        logits[id as usize] = f32::NEG_INFINITY;
                    }
                }
            }
            Step::Repetition(penalty) => {
                let penalty = *penalty as f32;
                let mut seen = vec![false; logits.len()];
                for &t in tokens {
                    let t = t as usize;
                    if t < logits.len() && !seen[t] {
                        seen[t] = true;
                        let x = logits[t];
                        logits[t] = if x < 0.0 { x * penalty } else { x / penalty };
                    }
                }
            }
            Step::FrequencyPresence(f, p) => {
                let (f, p) = (*f as f32, *p as f32);
                let mut counts = vec![0u32; logits.len()];
                for &t in generated {
                    if let Some(c) = counts.get_mut(t as usize) {
                        *c += 1;
                    }
                }
                for (x, &c) in logits.iter_mut().zip(&counts) {
                    if c > 0 {
                        *x -= c as f32 * f + p;
                    }
                }
            }
            Step::NoRepeatNGram(n) => {
                let n = *n;
                if tokens.len() + 1 < n {
                    return;
                }
                let prefix = &tokens[tokens.len() + 1 - n..];
                for window in tokens.windows(n) {
                    if &window[..n - 1] == prefix
                        && let Some(x) = logits.get_mut(window[n - 1] as usize)
                    {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
            Step::Bias(bias) => {
                let bias: std::collections::BTreeMap<u32, f32> = bias.iter().copied().collect();
                for (&t, &b) in &bias {
                    if let Some(x) = logits.get_mut(t as usize) {
                        *x += b;
                    }
                }
            }
            Step::Ban(ids) => {
                for &t in ids {
                    if let Some(x) = logits.get_mut(t as usize) {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
            Step::BadWords(sequences) => {
                for sequence in sequences {
                    if let Some((&last, prefix)) = sequence.split_last()
                        && tokens.ends_with(prefix)
                        && let Some(x) = logits.get_mut(last as usize)
                    {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
            Step::MinNewTokens(min, eos) => {
                if generated.len() < *min {
                    for &t in eos {
                        if let Some(x) = logits.get_mut(t as usize) {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                }
            }
            Step::Revive0 => {
                if let Some(x) = logits.first_mut() {
                    *x = 1.0;
                }
            }
        }
    }

    pub fn argmax(values: &[f32]) -> u32 {
        let mut best: Option<(usize, f32)> = None;
        for (i, &v) in values.iter().enumerate() {
            if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
                best = Some((i, v));
            }
        }
        best.map_or(0, |(i, _)| i as u32)
    }

    /// The seeded multinomial selector as it was.
    pub struct Multinomial(Xoshiro256PlusPlus);

    impl Multinomial {
        pub fn new(seed: u64) -> Self {
            Multinomial(Xoshiro256PlusPlus::seed_from_u64(seed))
        }

        pub fn select(&mut self, logits: &[f32]) -> u32 {
            let mut probs = Vec::new();
            softmax_into(logits, &mut probs);
            let total: f64 = probs.iter().map(|&p| p as f64).sum();
            let target = self.0.random::<f64>() * total;
            let mut cumulative = 0f64;
            let mut last = 0;
            for (i, &p) in probs.iter().enumerate() {
                if p > 0.0 {
                    cumulative += p as f64;
                    last = i;
                    if target < cumulative {
                        return i as u32;
                    }
                }
            }
            last as u32
        }
    }
}

use reference::Step;

/// The processor a step describes, as the crate builds it.
fn build(step: &Step) -> Box<dyn LogitsProcessor> {
    match step {
        Step::Temperature(t) => Box::new(Temperature::new(*t).unwrap()),
        Step::TopK(k, keep) => Box::new(TopK::new(*k, *keep).unwrap()),
        Step::TopP(p, keep) => Box::new(TopP::new(*p, *keep).unwrap()),
        Step::MinP(p, keep) => Box::new(MinP::new(*p, *keep).unwrap()),
        Step::Typical(m, keep) => Box::new(TypicalP::new(*m, *keep).unwrap()),
        Step::Repetition(p) => Box::new(RepetitionPenalty::new(*p).unwrap()),
        Step::FrequencyPresence(f, p) => Box::new(FrequencyPresencePenalty::new(*f, *p).unwrap()),
        Step::NoRepeatNGram(n) => Box::new(NoRepeatNGram::new(*n).unwrap()),
        Step::Bias(bias) => {
            let bias: BTreeMap<u32, f32> = bias.iter().copied().collect();
            Box::new(LogitBias::new(&bias).unwrap())
        }
        Step::Ban(ids) => Box::new(BanTokens::new(ids)),
        Step::BadWords(sequences) => Box::new(NoBadWords::new(sequences, &[]).unwrap()),
        Step::MinNewTokens(min, eos) => Box::new(MinNewTokens::new(*min, eos)),
        Step::Revive0 => Box::new(decode_samplers::processors::FnProcessor(
            |_: &Context<'_>, logits: &mut [f32]| {
                if let Some(x) = logits.first_mut() {
                    *x = 1.0;
                }
            },
        )),
    }
}

/// A step of a chain over a vocabulary of `vocab` ids: cutting ones often, k and
/// `min_tokens_to_keep` sometimes beyond the vocabulary.
fn step(vocab: usize) -> impl Strategy<Value = Step> {
    let v = vocab as u32 + 3; // ids beyond the vocabulary too
    let keep = prop_oneof![4 => Just(1usize), 1 => 0usize..4, 1 => 0..vocab + 5];
    prop_oneof![
        2 => prop_oneof![0.05f64..3.0, Just(0.7), Just(1e-3)].prop_map(Step::Temperature),
        4 => (prop_oneof![1usize..8, 1..vocab + 5, Just(50)], keep.clone())
            .prop_map(|(k, keep)| Step::TopK(k, keep)),
        3 => (prop_oneof![0.01f64..1.0, Just(1.0), Just(0.9)], keep.clone())
            .prop_map(|(p, keep)| Step::TopP(p, keep)),
        2 => (prop_oneof![0.0f64..=1.0, Just(0.0), Just(1.0), Just(0.05)], keep.clone())
            .prop_map(|(p, keep)| Step::MinP(p, keep)),
        2 => (prop_oneof![0.01f64..=1.0, Just(1.0)], keep)
            .prop_map(|(m, keep)| Step::Typical(m, keep)),
        2 => prop_oneof![0.5f64..3.0, Just(1.3)].prop_map(Step::Repetition),
        1 => (-2.0f64..=2.0, -2.0f64..=2.0).prop_map(|(f, p)| Step::FrequencyPresence(f, p)),
        1 => (1usize..4).prop_map(Step::NoRepeatNGram),
        1 => prop::collection::vec((0..v, -5f32..5.0), 0..4).prop_map(Step::Bias),
        1 => prop::collection::vec(0..v, 0..4).prop_map(Step::Ban),
        1 => prop::collection::vec(prop::collection::vec(0u32..v.min(12), 1..3), 1..3)
            .prop_map(Step::BadWords),
        1 => (0usize..4, prop::collection::vec(0..v, 0..3))
            .prop_map(|(m, eos)| Step::MinNewTokens(m, eos)),
        1 => Just(Step::Revive0),
    ]
}

/// A finite logit: from a few levels (ties) or continuous, sometimes `−∞`.
fn logit() -> impl Strategy<Value = f32> {
    prop_oneof![
        5 => -8f32..8.0,
        3 => (-3i32..=3).prop_map(|v| v as f32),
        1 => Just(0.0f32),
        1 => Just(-0.0f32),
        1 => Just(f32::NEG_INFINITY),
    ]
}

/// Any logit, NaN and `±∞` included.
fn wild_logit() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => logit(),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::MAX),
        1 => Just(-f32::MAX),
    ]
}

/// A vocabulary, a chain over it, logits from `value`, a context and a seed.
fn case(
    value: fn() -> BoxedStrategy<f32>,
) -> impl Strategy<Value = (Vec<Step>, Vec<f32>, Vec<u32>, usize, u64)> {
    prop_oneof![3 => 1usize..40, 1 => 40usize..3000].prop_flat_map(move |vocab| {
        (
            prop::collection::vec(step(vocab), 0..6),
            prop::collection::vec(value(), vocab),
            prop::collection::vec(0..vocab as u32 + 2, 1..12),
            0usize..4,
            any::<u64>(),
        )
    })
}

/// Equal bit for bit, any NaN equal to any NaN.
fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

/// Runs `steps` as the old dense code did and as the chain does, for three steps of a sequence
/// (the same raw logits each time, the drawn token appended), comparing rows and tokens.
fn check(
    steps: &[Step],
    raw: &[f32],
    context: &[u32],
    prompt_len: usize,
    seed: u64,
    sample: bool,
) -> Result<(), TestCaseError> {
    let mut chain = if sample {
        SamplerChain::sampling(seed)
    } else {
        SamplerChain::greedy()
    };
    for s in steps {
        chain.push(build(s));
    }
    let mut applied = chain.clone();
    let mut old = reference::Multinomial::new(seed);
    let mut tokens = context.to_vec();
    let prompt_len = prompt_len.min(tokens.len());
    for _ in 0..3 {
        let mut want = raw.to_vec();
        for s in steps {
            reference::apply(s, &tokens, prompt_len, &mut want);
        }
        let want_id = if sample {
            old.select(&want)
        } else {
            reference::argmax(&want)
        };
        let ctx = Context::new(&tokens, prompt_len);
        let mut got = raw.to_vec();
        let id = chain.sample(&ctx, &mut got);
        prop_assert!(same(&got, &want), "sample's row\n{:?}\nvs\n{:?}", got, want);
        prop_assert_eq!(id, want_id);
        let mut got = raw.to_vec();
        applied.apply(&ctx, &mut got);
        prop_assert!(same(&got, &want), "apply's row\n{:?}\nvs\n{:?}", got, want);
        // A nested chain on candidates (its processors' sparse forms) agrees too.
        let mut candidates = Candidates::new();
        candidates.gather(raw);
        let mut nested = applied.clone();
        nested.apply_candidates(&ctx, &mut candidates);
        let mut row = Vec::new();
        candidates.scatter_into(&mut row);
        prop_assert!(same(&row, &want), "apply_candidates' row");
        chain.accept(id);
        applied.accept(id);
        tokens.push(id);
    }
    Ok(())
}

/// A bounded number of cases from a fixed seed: the same cases on every run, so CI is never flaky.
fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0xca4d1d),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn the_chain_on_candidates_equals_the_dense_computation(
        (steps, raw, context, prompt_len, seed) in case(|| logit().boxed()),
        sample in prop_oneof![3 => Just(true), 1 => Just(false)],
    ) {
        check(&steps, &raw, &context, prompt_len, seed, sample)?;
    }

    #[test]
    fn the_chain_on_candidates_equals_the_dense_computation_on_broken_rows(
        (steps, raw, context, prompt_len, seed) in case(|| wild_logit().boxed()),
        sample in any::<bool>(),
    ) {
        check(&steps, &raw, &context, prompt_len, seed, sample)?;
    }
}

proptest! {
    #![proptest_config(cases(48))]

    /// Top-k on a GPT-2-sized row: the block bound path against a selection over the whole row.
    #[test]
    fn top_k_on_a_full_vocabulary_equals_the_dense_computation(
        seed in any::<u64>(),
        k in prop_oneof![1usize..100, Just(50), 700usize..900],
        levels in prop_oneof![Just(0u32), 1u32..64],
        masked in 0usize..3000,
        steps in prop::collection::vec(step(50257), 0..3),
    ) {
        use rand::rngs::Xoshiro256PlusPlus;
        use rand::{RngExt, SeedableRng};
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut raw: Vec<f32> = (0..50257)
            .map(|_| {
                let u = rng.random::<f32>() + rng.random::<f32>() + rng.random::<f32>();
                let x = (u - 1.5) * 4.0;
                if levels > 0 { (x * levels as f32).round() / levels as f32 } else { x }
            })
            .collect();
        for _ in 0..masked {
            let i = rng.random_range(0..raw.len());
            raw[i] = f32::NEG_INFINITY;
        }
        let mut all = vec![Step::Repetition(1.3), Step::Temperature(0.7), Step::TopK(k, 1)];
        all.extend(steps);
        check(&all, &raw, &[5, 17, 5, 50000], 2, seed, true)?;
    }
}

#[test]
fn typical_p_on_candidates_ranks_an_underflowing_token_as_the_dense_row_does() {
    // Ids 3 and 4 share the mass; id 8's log-probability underflows to −∞, so on the dense row it
    // ranks among the unlisted by id (rank 8 ≥ min_tokens_to_keep 3: removed), not right after 4.
    let mut raw = vec![f32::NEG_INFINITY; 10];
    raw[3] = f32::MAX;
    raw[4] = f32::MAX;
    raw[8] = -f32::MAX;
    let steps = [Step::MinP(0.0, 1), Step::Typical(0.5, 3)];
    check(&steps, &raw, &[1], 1, 7, true).unwrap();
    check(&steps, &raw, &[1], 1, 7, false).unwrap();
}

#[test]
fn candidates_keep_their_ids_ascending_and_inside_the_vocabulary() {
    let mut c = Candidates::new();
    c.clear(5);
    assert!(c.push(1, 0.5));
    assert!(!c.push(1, 0.7)); // not above the last
    assert!(!c.push(0, 0.7));
    assert!(!c.push(5, 0.7)); // outside the vocabulary
    assert!(c.push(4, f32::NEG_INFINITY));
    assert_eq!(c.ids(), &[1, 4]);
    let mut row = Vec::new();
    c.scatter_into(&mut row);
    assert_eq!(row[1], 0.5);
    assert!(
        row.iter()
            .enumerate()
            .all(|(i, &x)| i == 1 || x == f32::NEG_INFINITY)
    );
    c.retain(|_, x| x > f32::NEG_INFINITY);
    assert_eq!(c.ids(), &[1]);
    c.gather(&[f32::NEG_INFINITY, 2.0, f32::NAN]);
    assert_eq!(c.ids(), &[1, 2]);
    assert_eq!(c.vocab_size(), 3);
}
