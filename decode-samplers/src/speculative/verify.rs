//! The verify step: which drafted tokens the target keeps, and the token it adds.

use crate::engine::{check_chosen, check_logits};
use decode_core::{Context, Error, LogitsProcessor, Result};

use super::Draft;
use crate::SamplerChain;
use crate::probs::softmax;

/// The outcome of verifying one row's draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Drafted tokens kept (a prefix of the draft).
    pub accepted: usize,
    /// The target's own token after them: the correction at the first rejection, or the bonus
    /// token when every draft was kept.
    pub next: u32,
}

/// Verifies `draft` against the target's raw logits at its γ+1 positions (`target(i)` scores the
/// token after `tokens` + the first `i` drafts).
///
/// Both distributions are the *processed* ones: `chain`'s processors run on each target row with
/// the context that row continues (on a clone, so stateful processors only ever `accept` kept
/// tokens; the caller does that). With a greedy chain, drafts are kept while they equal the
/// target's argmax, so the output is token for token plain greedy decoding. Otherwise this is the
/// modified rejection sampling of Leviathan et al.: keep `x` with probability min(1, p(x)/q(x)),
/// else draw from norm(max(0, p − q)); after a fully kept draft draw a bonus token from p. A draft
/// without distributions counts as one-hot q. Random numbers come from `chain`'s selector.
///
/// A draft that breaks the contract is an [`Error::Draft`] before anything is kept: a token
/// outside the vocabulary, distributions missing for some tokens, or one that is not finite,
/// has a negative entry, does not sum to 1 (within 1e-3), or gives its own drafted token
/// probability 0 (keeping that token would change the output distribution). Non-finite target
/// logits are an [`Error::NonFinite`].
pub fn verify<'l>(
    chain: &mut SamplerChain,
    tokens: &[u32],
    prompt_len: usize,
    draft: &Draft,
    target: impl Fn(usize) -> &'l [f32],
) -> Result<Verdict> {
    let mut probe = chain.clone();
    let mut context = tokens.to_vec();
    let g = draft.tokens.len();
    let step = tokens.len().saturating_sub(prompt_len);
    check_draft(draft, target(0).len())?;
    let mut logits = Vec::new();
    for i in 0..=g {
        let raw = target(i);
        check_logits(raw, step + i, 0)?;
        logits.clear();
        logits.extend_from_slice(raw);
        probe.apply(&Context::new(&context, prompt_len), &mut logits);
        // Processed logits that overflowed, or that mask every token, stop here as in plain
        // decoding.
        let best = decode_core::argmax(&logits);
        check_chosen(&logits, best, step + i, 0)?;
        if chain.is_greedy() {
            if i < g && draft.tokens[i] == best {
                context.push(best);
                probe.accept(best);
                continue;
            }
            return Ok(Verdict {
                accepted: i,
                next: best,
            });
        }
        let p = softmax(&logits);
        if i == g {
            return Ok(Verdict {
                accepted: g,
                next: chain.selector_mut().draw(&p),
            });
        }
        let x = draft.tokens[i];
        let q = draft.probs.as_ref().map(|q| q[i].as_slice());
        let q_x = q.map_or(1.0, |q| q[x as usize]) as f64;
        let r = chain.selector_mut().uniform();
        if r * q_x < p[x as usize] as f64 {
            context.push(x);
            probe.accept(x);
            continue;
        }
        let mut residual: Vec<f32> = match q {
            Some(q) => p.iter().zip(q).map(|(&p, &q)| (p - q).max(0.0)).collect(),
            None => p.clone(),
        };
        if q.is_none() {
            residual[x as usize] = 0.0;
        }
        if residual.iter().all(|&v| v <= 0.0) {
            residual = p;
        }
        return Ok(Verdict {
            accepted: i,
            next: chain.selector_mut().draw(&residual),
        });
    }
    // Unreachable: the loop returns at i == g.
    Ok(Verdict {
        accepted: g,
        next: 0,
    })
}

/// How far a draft distribution's sum may be from 1 (f32 softmax over 50k entries is within 1e-5).
const DRAFT_SUM_TOLERANCE: f64 = 1e-3;

/// Checks a draft against the contract [`verify`] relies on (see there).
pub fn check_draft(draft: &Draft, vocab: usize) -> Result<()> {
    let bad = |message: String| Err(Error::Draft(message));
    check_tokens(&draft.tokens, vocab)?;
    let Some(probs) = &draft.probs else {
        return Ok(());
    };
    if probs.len() != draft.tokens.len() {
        return bad(format!(
            "{} tokens but {} distributions",
            draft.tokens.len(),
            probs.len()
        ));
    }
    for (i, (q, &x)) in probs.iter().zip(&draft.tokens).enumerate() {
        check_distribution(&format!("token {i}"), q, x, vocab)?;
    }
    Ok(())
}

/// Checks that every drafted token lies inside a vocabulary of `vocab` tokens.
pub(super) fn check_tokens(tokens: &[u32], vocab: usize) -> Result<()> {
    match tokens.iter().find(|&&x| x as usize >= vocab) {
        Some(&x) => Err(Error::Draft(format!(
            "token {x} is outside the vocabulary (size {vocab})"
        ))),
        None => Ok(()),
    }
}

/// Checks the draft distribution `q` that token `x` (`what`, in messages) was drawn from: as long
/// as the vocabulary, finite, non-negative, summing to 1 (within 1e-3), and giving `x` a
/// positive probability (keeping a token of probability 0 would change the output
/// distribution).
pub(super) fn check_distribution(what: &str, q: &[f32], x: u32, vocab: usize) -> Result<()> {
    let bad = |message: String| Err(Error::Draft(message));
    if q.len() != vocab {
        return bad(format!(
            "{what}'s distribution has {} entries, the vocabulary {vocab}",
            q.len()
        ));
    }
    if let Some(v) = q.iter().find(|v| !v.is_finite() || **v < 0.0) {
        return bad(format!("{what}'s distribution holds {v}"));
    }
    let sum: f64 = q.iter().map(|&v| v as f64).sum();
    if (sum - 1.0).abs() > DRAFT_SUM_TOLERANCE {
        return bad(format!("{what}'s distribution sums to {sum}, not 1"));
    }
    if q[x as usize] <= 0.0 {
        return bad(format!(
            "{what} ({x}) has probability 0 under its own distribution"
        ));
    }
    Ok(())
}
