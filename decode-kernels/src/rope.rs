//! Rotary position embeddings (RoPE), as transformers' Llama family applies them: each head's
//! first and second halves are the two coordinates of `head_dim / 2` rotations, pair `i` turned
//! by `position · inv_freq[i]` (`rotate_half`, not interleaved pairs).
//!
//! The frequencies follow transformers' `ROPE_INIT_FUNCTIONS`: `default` (`1 / θ^(2i/d)`),
//! `linear` (divided by the factor) and `llama3` (long wavelengths divided by the factor, short
//! ones kept, a smooth blend between).

/// How the rotation frequencies are scaled (a checkpoint's `rope_scaling` / `rope_parameters`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// No scaling.
    Default,
    /// Every frequency divided by `factor` (positions interpolated).
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's scheme.
    Llama3 {
        /// The divisor for long wavelengths.
        factor: f64,
        /// Wavelengths above `original / low_freq_factor` are divided by `factor`.
        low_freq_factor: f64,
        /// Wavelengths below `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context the model was trained with (`original_max_position_embeddings`).
        original_max_position_embeddings: f64,
    },
}

/// The rotation frequencies of one head size, and the rotation itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    /// `head_dim / 2` frequencies, in f32 as transformers holds them.
    inv_freq: Vec<f32>,
}

impl Rope {
    /// Frequencies for heads of `head_dim` (even) values with base `theta`, scaled by `scaling`.
    ///
    /// # Panics
    ///
    /// If `head_dim` is odd or zero (a configuration reader refuses those first).
    pub fn new(head_dim: usize, theta: f64, scaling: RopeScaling) -> Self {
        assert!(
            head_dim > 0 && head_dim.is_multiple_of(2),
            "head_dim {head_dim} is not even"
        );
        let base = (0..head_dim / 2).map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64));
        let inv_freq = match scaling {
            RopeScaling::Default => base.collect::<Vec<f64>>(),
            RopeScaling::Linear { factor } => base.map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: original,
            } => {
                let (low_wavelen, high_wavelen) =
                    (original / low_freq_factor, original / high_freq_factor);
                base.map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (original / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
            }
        };
        Rope {
            inv_freq: inv_freq.into_iter().map(|f| f as f32).collect(),
        }
    }

    /// The frequencies (`head_dim / 2` of them).
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// The head size these frequencies are for.
    pub fn head_dim(&self) -> usize {
        2 * self.inv_freq.len()
    }

    /// Rotates one token's heads in place: `x` is `[heads, head_dim]` at `position`.
    ///
    /// The angle is `position · inv_freq[i]` rounded to f32, as transformers' f32 product gives
    /// it; its cosine and sine are then taken in f64 and rounded.
    pub fn apply(&self, x: &mut [f32], position: usize) {
        let half = self.inv_freq.len();
        for (i, &f) in self.inv_freq.iter().enumerate() {
            let angle = (position as f32 * f) as f64;
            let (sin, cos) = (angle.sin() as f32, angle.cos() as f32);
            for head in x.chunks_exact_mut(2 * half) {
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * cos - b * sin;
                head[i + half] = b * cos + a * sin;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_frequencies_and_rotation() {
        let rope = Rope::new(4, 10_000.0, RopeScaling::Default);
        assert_eq!(rope.inv_freq(), [1.0, 0.01]);
        assert_eq!(rope.head_dim(), 4);
        // Position 0 is the identity.
        let mut x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        rope.apply(&mut x, 0);
        assert_eq!(x, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        // Pair 0 (values 0 and 2) turns by 3 radians, pair 1 (values 1 and 3) by 0.03, per head.
        let mut x = [1.0f32, 0.0, 0.0, 1.0, 0.0, 2.0, 1.0, 0.0];
        rope.apply(&mut x, 3);
        let (c3, s3, c, s) = (3f32.cos(), 3f32.sin(), 0.03f32.cos(), 0.03f32.sin());
        let want = [c3, -s, s3, c, -s3, 2.0 * c, c3, 2.0 * s];
        for (g, w) in x.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{x:?} vs {want:?}");
        }
        // A rotation keeps each pair's length.
        let mut x = [0.3f32, -1.2, 0.7, 2.5];
        rope.apply(&mut x, 1234);
        assert!(((x[0] * x[0] + x[2] * x[2]) - (0.09 + 0.49)).abs() < 1e-5);
        assert!(((x[1] * x[1] + x[3] * x[3]) - (1.44 + 6.25)).abs() < 1e-5);
    }

    #[test]
    fn scaled_frequencies_follow_transformers() {
        let base = Rope::new(128, 500_000.0, RopeScaling::Default);
        let linear = Rope::new(128, 500_000.0, RopeScaling::Linear { factor: 4.0 });
        for (l, b) in linear.inv_freq().iter().zip(base.inv_freq()) {
            assert_eq!(*l, (*b as f64 / 4.0) as f32);
        }
        // Llama 3.1's parameters: short wavelengths kept, long ones divided by 8, blended between.
        let llama3 = Rope::new(
            128,
            500_000.0,
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            },
        );
        let mut kinds = [0; 3];
        for (s, b) in llama3.inv_freq().iter().zip(base.inv_freq()) {
            let wavelen = 2.0 * std::f64::consts::PI / *b as f64;
            if wavelen < 2048.0 {
                assert!((s - b).abs() <= f32::EPSILON * b, "kept");
                kinds[0] += 1;
            } else if wavelen > 8192.0 {
                assert!((s - b / 8.0).abs() <= f32::EPSILON * b, "divided");
                kinds[1] += 1;
            } else {
                assert!(*s < *b && *s > b / 8.0, "blended");
                kinds[2] += 1;
            }
        }
        assert!(kinds.iter().all(|&k| k > 0), "{kinds:?}");
    }
}
