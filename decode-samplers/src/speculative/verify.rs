//! The verify step: which drafted tokens the target keeps, and the token it adds.

use decode_core::{Context, LogitsProcessor};

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
pub fn verify<'l>(
    chain: &mut SamplerChain,
    tokens: &[u32],
    prompt_len: usize,
    draft: &Draft,
    target: impl Fn(usize) -> &'l [f32],
) -> Verdict {
    let mut probe = chain.clone();
    let mut context = tokens.to_vec();
    let g = draft.tokens.len();
    let mut logits = Vec::new();
    for i in 0..=g {
        logits.clear();
        logits.extend_from_slice(target(i));
        probe.apply(&Context::new(&context, prompt_len), &mut logits);
        if chain.is_greedy() {
            let best = decode_core::generate::argmax(&logits);
            if i < g && draft.tokens[i] == best {
                context.push(best);
                probe.accept(best);
                continue;
            }
            return Verdict {
                accepted: i,
                next: best,
            };
        }
        let p = softmax(&logits);
        if i == g {
            return Verdict {
                accepted: g,
                next: chain.selector_mut().draw(&p),
            };
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
        return Verdict {
            accepted: i,
            next: chain.selector_mut().draw(&residual),
        };
    }
    // Unreachable: the loop returns at i == g.
    Verdict {
        accepted: g,
        next: 0,
    }
}
