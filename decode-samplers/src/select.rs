//! Selectors: how a token is picked from processed logits.

use decode_core::Selector;
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

    fn is_greedy(&self) -> bool {
        true
    }

    fn boxed_clone(&self) -> Box<dyn Selector> {
        Box::new(*self)
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

    /// Draws an index from `probs` (which need not sum to exactly 1).
    fn draw_from(&mut self, probs: &[f32]) -> u32 {
        let total: f64 = probs.iter().map(|&p| p as f64).sum();
        let target = self.rng.random::<f64>() * total;
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

impl Selector for Multinomial {
    fn select(&mut self, logits: &[f32]) -> u32 {
        let mut probs = std::mem::take(&mut self.probs);
        softmax_into(logits, &mut probs);
        let id = self.draw_from(&probs);
        self.probs = probs;
        id
    }

    fn draw(&mut self, probs: &[f32]) -> u32 {
        self.draw_from(probs)
    }

    fn uniform(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    fn boxed_clone(&self) -> Box<dyn Selector> {
        Box::new(self.clone())
    }
}
