//! Selectors: how a token is picked from processed logits.

use decode_core::Selector;
use decode_core::sampling::Candidates;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use crate::probs::softmax_into;

/// The highest logit (the first on ties, as `torch.argmax`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Greedy;

impl Selector for Greedy {
    fn select(&mut self, logits: &[f32]) -> u32 {
        decode_core::argmax(logits)
    }

    fn select_candidates(&mut self, candidates: &Candidates) -> u32 {
        // `argmax` of the dense row: the listed ids hold every value above −∞, in id order.
        let mut best: Option<(u32, f32)> = None;
        for (&id, &v) in candidates.ids().iter().zip(candidates.logits()) {
            if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
                best = Some((id, v));
            }
        }
        match best {
            Some((id, v)) if v > f32::NEG_INFINITY => id,
            // Every non-NaN entry is −∞: the dense argmax is the first id that is not NaN, an
            // unlisted one or a listed −∞.
            _ => first_not_nan(candidates),
        }
    }

    fn is_greedy(&self) -> bool {
        true
    }

    fn boxed_clone(&self) -> Box<dyn Selector> {
        Box::new(*self)
    }
}

/// The first id of the dense row `candidates` stands for whose value is not NaN (0 when all are).
fn first_not_nan(candidates: &Candidates) -> u32 {
    let mut next = 0u32;
    for (&id, &v) in candidates.ids().iter().zip(candidates.logits()) {
        if id != next || !v.is_nan() {
            return next; // `next` is unlisted (−∞), or listed and not NaN
        }
        next = next.saturating_add(1);
    }
    if (next as usize) < candidates.vocab_size() {
        next
    } else {
        0
    }
}

/// A draw from `softmax(logits)` with a seeded generator (xoshiro256++): the same seed gives the
/// same tokens on every platform.
#[derive(Debug, Clone)]
pub struct Multinomial {
    rng: Xoshiro256PlusPlus,
    probs: Vec<f32>,
}

impl Multinomial {
    /// Seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Multinomial {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            probs: Vec::new(),
        }
    }

    /// Draws from `probs` (which need not sum to exactly 1) the id `id(i)` of entry `i`. One
    /// random number per draw, and a cumulative walk in entry order: on candidates (ascending ids)
    /// it meets the same positive terms in the same order as on the dense row, so it draws the same
    /// id (the entries it skips there are 0, which change no sum). Nothing positive: id 0, as the
    /// dense walk gives.
    fn draw_from(&mut self, probs: &[f32], id: impl Fn(usize) -> u32) -> u32 {
        let total: f64 = probs.iter().map(|&p| p as f64).sum();
        let target = self.rng.random::<f64>() * total;
        let mut cumulative = 0f64;
        let mut last = 0;
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                cumulative += p as f64;
                last = id(i);
                if target < cumulative {
                    return last;
                }
            }
        }
        last
    }
}

impl Selector for Multinomial {
    fn select(&mut self, logits: &[f32]) -> u32 {
        let mut probs = std::mem::take(&mut self.probs);
        softmax_into(logits, &mut probs);
        let id = self.draw_from(&probs, |i| i as u32);
        self.probs = probs;
        id
    }

    fn select_candidates(&mut self, candidates: &Candidates) -> u32 {
        // The softmax of the listed logits is the dense softmax at those ids (unlisted −∞ give
        // exactly 0 and leave the max and the sum unchanged).
        let mut probs = std::mem::take(&mut self.probs);
        softmax_into(candidates.logits(), &mut probs);
        let ids = candidates.ids();
        let id = self.draw_from(&probs, |i| ids.get(i).copied().unwrap_or(0));
        self.probs = probs;
        id
    }

    fn draw(&mut self, probs: &[f32]) -> u32 {
        self.draw_from(probs, |i| i as u32)
    }

    fn uniform(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    fn boxed_clone(&self) -> Box<dyn Selector> {
        Box::new(self.clone())
    }
}
