//! Drafts that branch: a [`DraftTree`] of proposed tokens, and [`verify_tree`], which keeps the
//! path the target's own distribution allows — losslessly, as [`verify()`](super::verify) does
//! for a chain.
//!
//! Node `i` proposes `tokens[i]` after its parent's token (after the verified context when it
//! has none). The target scores every node in one pass (a node sees the context, its ancestors
//! and itself); then the walk starts at the root, and at each node either descends into one of
//! its children or stops with a token of the target's own:
//!
//! - greedy: descend while a child equals the target's argmax (token for token plain greedy);
//! - a drafter without distributions (lookup, suffix trie, Token Recycling, a draft's top-k): one
//!   uniform `u` per node and the inverse CDF of the target's `p` with the children listed first —
//!   child `j` when `u` falls in its share, otherwise a draw from `p` without the children: exactly
//!   `p`;
//! - children drawn *without replacement* from a draft distribution `q` (the same `q` for all
//!   siblings): recursive rejection sampling (SpecInfer; Sequoia's update): keep child `x` with
//!   probability `min(1, p(x)/q(x))`; else `p ← norm(max(0, p − q))`, remove `x` from `q` and
//!   renormalise, and try the next sibling; after the last, draw from `p`.
//!
//! A tree that is a chain gives [`verify()`](super::verify)'s verdict bit for bit: the same
//! random numbers, drawn in the same order, decide the same way.

use std::sync::Arc;

use decode_core::{Context, Error, LogitsProcessor, Result};

use super::Draft;
use super::verify::{check_distribution, check_tokens};
use crate::SamplerChain;
use crate::engine::{check_chosen, check_logits};
use crate::probs::softmax;

/// A tree of drafted tokens (see the [module](self) documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct DraftTree {
    tokens: Vec<u32>,
    /// Each node's parent: an earlier node, or `None` for a child of the root (the context).
    parents: Vec<Option<usize>>,
    /// Per node, the draft distribution it was drawn from (siblings share one); `None` for a
    /// drafter without distributions.
    probs: Option<Vec<Arc<[f32]>>>,
}

impl DraftTree {
    /// A tree from each node's token and parent. A parent must come before its children (so the
    /// nodes are in an order the target can score), and siblings must propose different tokens.
    pub fn new(tokens: Vec<u32>, parents: Vec<Option<usize>>) -> Result<Self> {
        let bad = |message: String| Err(Error::Draft(message));
        if tokens.len() != parents.len() {
            return bad(format!(
                "{} tokens but {} parents",
                tokens.len(),
                parents.len()
            ));
        }
        for (i, &parent) in parents.iter().enumerate() {
            if let Some(p) = parent
                && p >= i
            {
                return bad(format!("node {i}'s parent {p} does not come before it"));
            }
            if let Some(j) = (0..i).find(|&j| parents[j] == parent && tokens[j] == tokens[i]) {
                return bad(format!(
                    "nodes {j} and {i} are siblings proposing the same token {}",
                    tokens[i]
                ));
            }
        }
        Ok(DraftTree {
            tokens,
            parents,
            probs: None,
        })
    }

    /// Gives each node the draft distribution it was drawn from (children of one node drawn
    /// without replacement from one distribution: siblings hold the same one). Checked by
    /// [`DraftTree::check`] against the vocabulary.
    pub fn with_probs(mut self, probs: Vec<Arc<[f32]>>) -> Result<Self> {
        if probs.len() != self.tokens.len() {
            return Err(Error::Draft(format!(
                "{} nodes but {} distributions",
                self.tokens.len(),
                probs.len()
            )));
        }
        self.probs = Some(probs);
        Ok(self)
    }

    /// The chain `draft` proposes, as a tree (each token the child of the one before).
    pub fn chain(draft: &Draft) -> Self {
        let n = draft.tokens.len();
        DraftTree {
            tokens: draft.tokens.clone(),
            parents: (0..n).map(|i| i.checked_sub(1)).collect(),
            probs: draft
                .probs
                .as_ref()
                .map(|probs| probs.iter().map(|q| Arc::from(q.as_slice())).collect()),
        }
    }

    /// Nodes.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the tree proposes nothing.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The proposed tokens, by node.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Each node's parent (`None`: a child of the root).
    pub fn parents(&self) -> &[Option<usize>] {
        &self.parents
    }

    /// The draft distributions, by node, when the drafter has them.
    pub fn probs(&self) -> Option<&[Arc<[f32]>]> {
        self.probs.as_deref()
    }

    /// Node `i`'s depth: 0 for a child of the root. Its position is the context's length plus
    /// its depth.
    pub fn depth(&self, i: usize) -> usize {
        let mut depth = 0;
        let mut at = self.parents[i];
        while let Some(p) = at {
            depth += 1;
            at = self.parents[p];
        }
        depth
    }

    /// The children of `node` (`None`: the root's), in node order.
    pub fn children(&self, node: Option<usize>) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).filter(move |&j| self.parents[j] == node)
    }

    /// Whether node `i` attends to node `j`: `j` is `i` or one of its ancestors (the attention
    /// mask of a tree pass, beyond the context every node sees).
    pub fn sees(&self, i: usize, j: usize) -> bool {
        let mut at = Some(i);
        while let Some(n) = at {
            if n == j {
                return true;
            }
            if n < j {
                return false; // ancestors come before their descendants
            }
            at = self.parents[n];
        }
        false
    }

    /// Checks the tree against a vocabulary of `vocab` tokens: every token inside it, and each
    /// distribution finite, non-negative, summing to 1 (within 1e-3), as long as the vocabulary,
    /// giving its own node a positive probability, and the same for all siblings.
    pub fn check(&self, vocab: usize) -> Result<()> {
        check_tokens(&self.tokens, vocab)?;
        let Some(probs) = &self.probs else {
            return Ok(());
        };
        for (i, (q, &x)) in probs.iter().zip(&self.tokens).enumerate() {
            check_distribution(&format!("node {i}"), q, x, vocab)?;
            if let Some(j) = (0..i).find(|&j| self.parents[j] == self.parents[i])
                && !Arc::ptr_eq(&probs[j], q)
                && probs[j][..] != q[..]
            {
                return Err(Error::Draft(format!(
                    "siblings {j} and {i} were drawn from different distributions"
                )));
            }
        }
        Ok(())
    }
}

impl From<&Draft> for DraftTree {
    fn from(draft: &Draft) -> Self {
        DraftTree::chain(draft)
    }
}

/// The outcome of verifying one row's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeVerdict {
    /// The kept nodes, root to leaf: a path of the tree (their K/V rows are the ones to keep).
    pub path: Vec<usize>,
    /// The target's own token after them.
    pub next: u32,
}

/// Verifies `tree` against the target's raw logits: `target(None)` scores the token after
/// `tokens`, `target(Some(i))` the token after node `i` (and its ancestors). Processors,
/// random numbers and errors as [`verify()`](super::verify)'s: `chain`'s processors run on each
/// visited node with the context of that node's own path (on a clone: a repetition penalty at
/// a node counts its ancestors, never its siblings), only the nodes on the kept path and the
/// node it ends at are scored, and a tree that breaks [`DraftTree::check`] is an
/// [`Error::Draft`] before anything is kept.
pub fn verify_tree<'l>(
    chain: &mut SamplerChain,
    tokens: &[u32],
    prompt_len: usize,
    tree: &DraftTree,
    target: impl Fn(Option<usize>) -> &'l [f32],
) -> Result<TreeVerdict> {
    tree.check(target(None).len())?;
    let mut probe = chain.clone();
    let mut context = tokens.to_vec();
    let step = tokens.len().saturating_sub(prompt_len);
    let mut path = Vec::new();
    let mut logits = Vec::new();
    let mut node = None;
    loop {
        let raw = target(node);
        let at = step + path.len();
        check_logits(raw, at, 0)?;
        logits.clear();
        logits.extend_from_slice(raw);
        probe.apply(&Context::new(&context, prompt_len), &mut logits);
        let best = decode_core::argmax(&logits);
        check_chosen(&logits, best, at, 0)?;
        let children: Vec<usize> = tree.children(node).collect();
        let kept = if chain.is_greedy() {
            children
                .iter()
                .copied()
                .find(|&c| tree.tokens[c] == best)
                .ok_or(best)
        } else {
            let p = softmax(&logits);
            match tree.probs() {
                _ if children.is_empty() => Err(chain.selector_mut().draw(&p)),
                None => inverse_cdf(chain, tree, &children, p),
                Some(probs) => rejection(chain, tree, &children, p, &probs[children[0]]),
            }
        };
        match kept {
            Ok(child) => {
                let x = tree.tokens[child];
                context.push(x);
                probe.accept(x);
                path.push(child);
                node = Some(child);
            }
            Err(next) => return Ok(TreeVerdict { path, next }),
        }
    }
}

/// Children without draft distributions: one uniform, the children's shares of `p` first.
/// `Ok(child)` to descend, `Err(token)` for the target's own.
fn inverse_cdf(
    chain: &mut SamplerChain,
    tree: &DraftTree,
    children: &[usize],
    p: Vec<f32>,
) -> std::result::Result<usize, u32> {
    let u = chain.selector_mut().uniform();
    let mut cumulative = 0f64;
    for &c in children {
        cumulative += p[tree.tokens[c] as usize] as f64;
        if u < cumulative {
            return Ok(c);
        }
    }
    let mut rest = p.clone();
    for &c in children {
        rest[tree.tokens[c] as usize] = 0.0;
    }
    // Nothing left outside the children (only by rounding): draw from p itself.
    let rest = if rest.iter().all(|&v| v <= 0.0) {
        p
    } else {
        rest
    };
    Err(chain.selector_mut().draw(&rest))
}

/// Children drawn without replacement from `q`: recursive rejection sampling.
fn rejection(
    chain: &mut SamplerChain,
    tree: &DraftTree,
    children: &[usize],
    mut p: Vec<f32>,
    q: &[f32],
) -> std::result::Result<usize, u32> {
    let mut q = q.to_vec();
    for (n, &c) in children.iter().enumerate() {
        let x = tree.tokens[c] as usize;
        let r = chain.selector_mut().uniform();
        if r * (q[x] as f64) < p[x] as f64 {
            return Ok(c);
        }
        let residual: Vec<f32> = p.iter().zip(&q).map(|(&p, &q)| (p - q).max(0.0)).collect();
        // p ≤ q everywhere means p = q, where a rejection happens only by rounding: keep p.
        if residual.iter().any(|&v| v > 0.0) {
            p = residual;
        }
        if n + 1 == children.len() {
            break;
        }
        normalise(&mut p);
        q[x] = 0.0;
        normalise(&mut q);
    }
    Err(chain.selector_mut().draw(&p))
}

/// Scales `v` to sum to 1 (left alone when it sums to 0).
fn normalise(v: &mut [f32]) {
    let sum: f64 = v.iter().map(|&x| x as f64).sum();
    if sum > 0.0 {
        v.iter_mut().for_each(|x| *x = (*x as f64 / sum) as f32);
    }
}
