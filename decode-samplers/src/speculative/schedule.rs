//! How many tokens to draft per verify step (γ).

use decode_core::{Error, Result};

/// The rule that picks γ before each verify step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DraftSchedule {
    /// Always γ.
    Constant(usize),
    /// transformers' heuristic: start at γ; +2 after a fully accepted draft, −1 otherwise, at least 1.
    Heuristic(usize),
    /// Picks γ ≤ max to maximise the expected speed-up (1 − α^{γ+1}) / ((1 − α)(γc + 1)) from
    /// running estimates of the acceptance rate α and the cost ratio c (draft time per token over
    /// target time per verify pass).
    Auto(usize),
}

impl DraftSchedule {
    /// Parses `constant`, `heuristic` or `auto` with γ (the maximum, for `auto`).
    pub fn parse(name: &str, gamma: usize) -> Result<Self> {
        if gamma == 0 {
            return Err(Error::invalid("draft-tokens", "must be at least 1"));
        }
        match name {
            "constant" => Ok(DraftSchedule::Constant(gamma)),
            "heuristic" => Ok(DraftSchedule::Heuristic(gamma)),
            "auto" => Ok(DraftSchedule::Auto(gamma)),
            other => Err(Error::invalid(
                "draft-schedule",
                format!("must be constant, heuristic or auto, not {other:?}"),
            )),
        }
    }
}

/// The expected speed-up of speculative decoding over plain decoding (Leviathan et al.): tokens
/// per verify pass `(1 − α^{γ+1}) / (1 − α)` over the relative cost of a step `γc + 1`.
pub fn expected_speedup(alpha: f64, gamma: usize, c: f64) -> f64 {
    let tokens = if alpha >= 1.0 {
        (gamma + 1) as f64
    } else {
        (1.0 - alpha.powi(gamma as i32 + 1)) / (1.0 - alpha)
    };
    tokens / (gamma as f64 * c + 1.0)
}

/// γ's running state for one sequence.
#[derive(Debug, Clone)]
pub struct GammaState {
    schedule: DraftSchedule,
    gamma: usize,
    /// Accepted and drafted tokens so far (the α estimate, with a weak prior of 1/2).
    accepted: f64,
    drafted: f64,
}

impl GammaState {
    /// The starting state.
    pub fn new(schedule: DraftSchedule) -> Self {
        let gamma = match schedule {
            DraftSchedule::Constant(g) | DraftSchedule::Heuristic(g) => g,
            DraftSchedule::Auto(max) => max.min(4),
        };
        GammaState {
            schedule,
            gamma: gamma.max(1),
            accepted: 1.0,
            drafted: 2.0,
        }
    }

    /// γ for the next verify step, given the cost ratio c measured so far.
    pub fn gamma(&mut self, cost_ratio: f64) -> usize {
        if let DraftSchedule::Auto(max) = self.schedule {
            let alpha = (self.accepted / self.drafted).clamp(0.0, 0.99);
            self.gamma = (1..=max.max(1))
                .max_by(|&a, &b| {
                    expected_speedup(alpha, a, cost_ratio)
                        .total_cmp(&expected_speedup(alpha, b, cost_ratio))
                })
                .unwrap_or(1);
        }
        self.gamma
    }

    /// A verify step accepted `accepted` of `drafted`.
    pub fn update(&mut self, drafted: usize, accepted: usize) {
        self.accepted += accepted as f64;
        self.drafted += drafted as f64;
        if let DraftSchedule::Heuristic(_) = self.schedule
            && drafted > 0
        {
            self.gamma = if accepted == drafted {
                self.gamma + 2
            } else {
                self.gamma.saturating_sub(1).max(1)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speedup_formula() {
        assert!((expected_speedup(0.0, 4, 0.0) - 1.0).abs() < 1e-12);
        assert!((expected_speedup(1.0, 4, 0.0) - 5.0).abs() < 1e-12);
        // α = 0.8, γ = 4: (1 − 0.8⁵)/0.2 = 3.3616
        assert!((expected_speedup(0.8, 4, 0.0) - 3.3616).abs() < 1e-9);
    }

    #[test]
    fn heuristic_grows_and_shrinks() {
        let mut g = GammaState::new(DraftSchedule::Heuristic(3));
        assert_eq!(g.gamma(0.0), 3);
        g.update(3, 3);
        assert_eq!(g.gamma(0.0), 5);
        g.update(5, 1);
        assert_eq!(g.gamma(0.0), 4);
    }

    #[test]
    fn auto_drafts_more_when_drafts_are_free_and_good() {
        let mut g = GammaState::new(DraftSchedule::Auto(8));
        g.update(100, 95);
        assert_eq!(g.gamma(0.0), 8);
        let mut g = GammaState::new(DraftSchedule::Auto(8));
        g.update(100, 20);
        assert!(g.gamma(0.5) <= 2);
    }
}
