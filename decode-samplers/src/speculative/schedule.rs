//! How many tokens to draft per verify step (γ).

use decode_core::{Error, Result};

/// The largest γ accepted. Acceptance decays geometrically with the draft's
/// length, so past a few dozen tokens a longer draft only costs draft passes; and `auto` scans every
/// γ up to its maximum before each verify step, so an absurd maximum (10⁸) would hang generation.
pub const MAX_DRAFT_TOKENS: usize = 64;

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

impl Default for DraftSchedule {
    /// Four tokens per verify step.
    fn default() -> Self {
        DraftSchedule::Constant(4)
    }
}

impl DraftSchedule {
    /// Parses `constant`, `heuristic` or `auto` with γ (the maximum, for `auto`), then
    /// [validates](DraftSchedule::validate) it.
    pub fn parse(name: &str, gamma: usize) -> Result<Self> {
        let schedule = match name {
            "constant" => DraftSchedule::Constant(gamma),
            "heuristic" => DraftSchedule::Heuristic(gamma),
            "auto" => DraftSchedule::Auto(gamma),
            other => {
                return Err(Error::invalid(
                    "schedule",
                    format!("must be constant, heuristic or auto, not {other:?}"),
                ));
            }
        };
        schedule.validate()?;
        Ok(schedule)
    }

    /// The γ given: the constant, the heuristic's start or `auto`'s maximum.
    pub fn gamma(&self) -> usize {
        match *self {
            DraftSchedule::Constant(g) | DraftSchedule::Heuristic(g) | DraftSchedule::Auto(g) => g,
        }
    }

    /// Checks that γ is from 1 to [`MAX_DRAFT_TOKENS`]; the error names `gamma`.
    pub fn validate(&self) -> Result<()> {
        match self.gamma() {
            0 => Err(Error::invalid("gamma", "must be at least 1")),
            g if g > MAX_DRAFT_TOKENS => Err(Error::invalid(
                "gamma",
                format!("must be at most {MAX_DRAFT_TOKENS}, not {g}"),
            )),
            _ => Ok(()),
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
                (self.gamma + 2).min(MAX_DRAFT_TOKENS)
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
    fn gamma_is_bounded() {
        for name in ["constant", "heuristic", "auto"] {
            assert_eq!(
                DraftSchedule::parse(name, MAX_DRAFT_TOKENS)
                    .unwrap()
                    .gamma(),
                MAX_DRAFT_TOKENS
            );
            for gamma in [0, MAX_DRAFT_TOKENS + 1, 100_000_000] {
                let err = DraftSchedule::parse(name, gamma).unwrap_err();
                assert!(
                    matches!(err, Error::InvalidParameter { name: "gamma", .. }),
                    "{err}"
                );
            }
        }
        assert!(DraftSchedule::Auto(100_000_000).validate().is_err());
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
