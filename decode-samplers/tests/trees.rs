//! Token trees: a tree that is a chain verifies bit for bit as the chain does, and every kind of
//! tree keeps the target's distribution (chi-square against the processed target, over draws
//! whose trees the test builds as a drafter would).

use std::sync::Arc;

use decode_core::{Error, LogitsProcessor};
use decode_samplers::SamplerChain;
use decode_samplers::probs::{chi_square, chi_square_critical_1e4, softmax};
use decode_samplers::processors::RepetitionPenalty;
use decode_samplers::speculative::{Draft, DraftTree, verify, verify_tree};
use proptest::prelude::*;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

const VOCAB: usize = 6;

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        ..ProptestConfig::default()
    }
}

/// A draw from `w` (normalised or not) with the test's own generator.
fn draw(rng: &mut Xoshiro256PlusPlus, w: &[f32]) -> usize {
    let total: f32 = w.iter().sum();
    let u: f32 = rng.random::<f32>() * total;
    let mut acc = 0.0;
    w.iter()
        .position(|&v| {
            acc += v;
            u < acc
        })
        .unwrap_or(w.len() - 1)
}

/// `n` distinct tokens drawn one after another from `q` without replacement.
fn without_replacement(rng: &mut Xoshiro256PlusPlus, q: &[f32], n: usize) -> Vec<u32> {
    let mut left = q.to_vec();
    (0..n)
        .map(|_| {
            let x = draw(rng, &left);
            left[x] = 0.0;
            x as u32
        })
        .collect()
}

proptest! {
    #![proptest_config(cases(64))]

    /// The same seed, draft and target logits: the chain's verdict and the tree's are the same,
    /// and so is what each leaves of the random stream.
    #[test]
    fn a_chain_tree_verifies_as_the_chain(
        target in prop::collection::vec(prop::collection::vec(-4f32..4.0, VOCAB), 1..5),
        tokens in prop::collection::vec(0u32..VOCAB as u32, 0..4),
        q in prop::collection::vec(0.01f32..1.0, VOCAB),
        with_q in any::<bool>(),
        sample in any::<bool>(),
        penalty in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let g = tokens.len().min(target.len() - 1);
        let tokens = tokens[..g].to_vec();
        let sum: f32 = q.iter().sum();
        let q: Vec<f32> = q.iter().map(|v| v / sum).collect();
        let draft = Draft { tokens, probs: with_q.then(|| vec![q; g]) };
        let make = || {
            let chain = if sample { SamplerChain::sampling(seed) } else { SamplerChain::greedy() };
            if penalty { chain.with(RepetitionPenalty::new(1.7).unwrap()) } else { chain }
        };
        let (mut a, mut b) = (make(), make());
        let context = [1u32, 2];
        let want = verify(&mut a, &context, 1, &draft, |i| target[i].as_slice()).unwrap();
        let tree = DraftTree::chain(&draft);
        let got = verify_tree(&mut b, &context, 1, &tree, |node| {
            target[node.map_or(0, |i| i + 1)].as_slice()
        })
        .unwrap();
        prop_assert_eq!(got.path.len(), want.accepted);
        prop_assert_eq!(got.path, (0..want.accepted).collect::<Vec<_>>());
        prop_assert_eq!(got.next, want.next);
        prop_assert_eq!(a.selector_mut().uniform(), b.selector_mut().uniform());
    }
}

/// One tree shape for the distribution checks: three children of the root, the first with two
/// children of its own, the second with one.
const PARENTS: [Option<usize>; 6] = [None, None, None, Some(0), Some(0), Some(1)];

/// The target: a bigram model, logits after token `t` in row `t` (so, as from a real model, a
/// node's scores depend on its tokens, not on where it sits in the tree).
fn bigram(seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..VOCAB)
        .map(|_| {
            (0..VOCAB)
                .map(|_| rng.random::<f32>() * 4.0 - 2.0)
                .collect()
        })
        .collect()
}

fn check(counts: &[u64; VOCAB], p: &[f32]) -> Result<(), TestCaseError> {
    let draws = counts.iter().sum::<u64>();
    if draws < 2_000 {
        return Ok(()); // too few to say anything
    }
    let probs: Vec<f64> = p.iter().map(|&v| v as f64).collect();
    let (stat, df) = chi_square(counts, &probs, draws);
    prop_assert!(
        stat < chi_square_critical_1e4(df),
        "chi-square {} (df {}): {:?} against {:?}",
        stat,
        df,
        counts,
        probs
    );
    Ok(())
}

/// Runs `draws` verifications of trees from `tree(rng)` and checks the first token out (a kept
/// child or the target's own) against the root's processed distribution, and the second, after
/// each first token that was a kept child, against the processed distribution after it.
fn keeps_the_distribution(
    seed: u64,
    penalty: bool,
    mut tree: impl FnMut(&mut Xoshiro256PlusPlus) -> DraftTree,
) -> Result<(), TestCaseError> {
    let target = bigram(seed);
    let context = [3u32];
    let processed = |path: &[u32]| {
        let mut tokens = context.to_vec();
        tokens.extend_from_slice(path);
        let mut logits = target[*tokens.last().unwrap() as usize].clone();
        if penalty {
            RepetitionPenalty::new(1.7)
                .unwrap()
                .apply(&decode_core::Context::new(&tokens, 1), &mut logits);
        }
        softmax(&logits)
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0xdecade);
    let mut chain = SamplerChain::sampling(seed ^ 0x5eed);
    if penalty {
        chain = chain.with(RepetitionPenalty::new(1.7).unwrap());
    }
    let mut first = [0u64; VOCAB];
    let mut second = [[0u64; VOCAB]; VOCAB];
    for _ in 0..40_000 {
        let tree = tree(&mut rng);
        let verdict = verify_tree(&mut chain, &context, 1, &tree, |node| {
            let last = node.map_or(context[0], |i| tree.tokens()[i]);
            target[last as usize].as_slice()
        })
        .unwrap();
        let out: Vec<u32> = verdict
            .path
            .iter()
            .map(|&i| tree.tokens()[i])
            .chain([verdict.next])
            .collect();
        first[out[0] as usize] += 1;
        if !verdict.path.is_empty() {
            second[out[0] as usize][out[1] as usize] += 1;
        }
    }
    check(&first, &processed(&[]))?;
    for (x, counts) in second.iter().enumerate() {
        check(counts, &processed(&[x as u32]))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(4))]

    /// A fixed tree without distributions (a lookup or Token Recycling tree): exactly the
    /// target's distribution at the root and after each kept child.
    #[test]
    fn a_deterministic_tree_keeps_the_target_distribution(seed in any::<u64>(), penalty in any::<bool>()) {
        let tree = DraftTree::new(vec![2, 0, 5, 1, 3, 4], PARENTS.to_vec()).unwrap();
        keeps_the_distribution(seed, penalty, |_| tree.clone())?;
    }

    /// Children drawn without replacement from a draft distribution at each node: recursive
    /// rejection sampling keeps the target's distribution.
    #[test]
    fn a_sampled_tree_keeps_the_target_distribution(seed in any::<u64>(), penalty in any::<bool>()) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut q = || -> Arc<[f32]> {
            let w: Vec<f32> = (0..VOCAB).map(|_| rng.random::<f32>() + 0.05).collect();
            let total: f32 = w.iter().sum();
            w.iter().map(|v| v / total).collect::<Vec<_>>().into()
        };
        let (q_root, q_first, q_second) = (q(), q(), q());
        keeps_the_distribution(seed, penalty, |rng| {
            let root = without_replacement(rng, &q_root, 3);
            let under_first = without_replacement(rng, &q_first, 2);
            let under_second = without_replacement(rng, &q_second, 1);
            let mut tokens = root.clone();
            tokens.extend(&under_first);
            tokens.extend(&under_second);
            let probs = vec![
                q_root.clone(), q_root.clone(), q_root.clone(),
                q_first.clone(), q_first.clone(), q_second.clone(),
            ];
            DraftTree::new(tokens, PARENTS.to_vec()).unwrap().with_probs(probs).unwrap()
        })?;
    }
}

#[test]
fn greedy_descends_while_a_child_is_the_argmax() {
    // Root argmax 5 (node 2), then after node 2 the argmax is 1: not a child (node 2 has
    // none), so the target's 1 follows.
    let tree = DraftTree::new(vec![2, 0, 5, 1], vec![None, None, None, Some(0)]).unwrap();
    let mut logits = vec![vec![0f32; VOCAB]; 5];
    logits[0][5] = 3.0;
    logits[3][1] = 3.0;
    let verdict = verify_tree(&mut SamplerChain::greedy(), &[0], 1, &tree, |n| {
        logits[n.map_or(0, |i| i + 1)].as_slice()
    })
    .unwrap();
    assert_eq!((verdict.path, verdict.next), (vec![2], 1));
}

#[test]
fn malformed_trees_are_typed_errors() {
    let draft = |e: Error| matches!(e, Error::Draft(_));
    assert!(draft(DraftTree::new(vec![1, 2], vec![None]).unwrap_err()));
    assert!(draft(
        DraftTree::new(vec![1, 2], vec![Some(1), None]).unwrap_err()
    ));
    assert!(draft(
        DraftTree::new(vec![1, 1], vec![None, None]).unwrap_err()
    ));
    // The same token under different parents is fine.
    let tree = DraftTree::new(vec![1, 1, 1], vec![None, Some(0), Some(1)]).unwrap();
    assert_eq!(
        (tree.depth(2), tree.sees(2, 0), tree.sees(1, 2)),
        (2, true, false)
    );
    let logits = vec![0f32; VOCAB];
    let out = DraftTree::new(vec![9], vec![None]).unwrap();
    let err = verify_tree(&mut SamplerChain::greedy(), &[0], 1, &out, |_| &logits).unwrap_err();
    assert!(draft(err));
    // Siblings drawn from different distributions cannot be verified losslessly.
    let a: Arc<[f32]> = vec![0.5, 0.5, 0.0, 0.0, 0.0, 0.0].into();
    let b: Arc<[f32]> = vec![0.25, 0.75, 0.0, 0.0, 0.0, 0.0].into();
    let tree = DraftTree::new(vec![0, 1], vec![None, None])
        .unwrap()
        .with_probs(vec![a, b])
        .unwrap();
    let err = verify_tree(&mut SamplerChain::sampling(1), &[0], 1, &tree, |_| &logits).unwrap_err();
    assert!(err.to_string().contains("different distributions"), "{err}");
}
