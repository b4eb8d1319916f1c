//! The small element-wise parts of a block on the host: layer norm and the MLP activation.

use burn::tensor::TensorData;

use crate::Activation;

/// Layer norm over rows of `weight.len()` values, as `torch.nn.LayerNorm` (biased variance).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    epsilon: f64,
}

impl LayerNorm {
    /// From `[weight, bias]` in any float dtype.
    pub fn new([weight, bias]: [TensorData; 2], epsilon: f64) -> Self {
        LayerNorm {
            weight: super::f32_vec(weight),
            bias: super::f32_vec(bias),
            epsilon,
        }
    }

    /// Normalises each row of `x` (`[rows, width]`, row-major).
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let width = self.weight.len();
        let mut out = vec![0f32; x.len()];
        for (row, y) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
            // f64 sums: the row is short, and this keeps the mean and variance as exact as torch's.
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / width as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / width as f64;
            let inv = (1.0 / (var + self.epsilon).sqrt()) as f32;
            let mean = mean as f32;
            for (((y, &v), &w), &b) in y.iter_mut().zip(row).zip(&self.weight).zip(&self.bias) {
                *y = (v - mean) * inv * w + b;
            }
        }
        out
    }
}

/// Applies the MLP activation in place.
pub fn activate(activation: Activation, x: &mut [f32]) {
    match activation {
        // transformers' NewGELUActivation.
        Activation::GeluTanh => {
            const SQRT_2_OVER_PI: f32 = 0.797_884_6;
            for v in x {
                let u = *v;
                *v = 0.5 * u * (1.0 + (SQRT_2_OVER_PI * (u + 0.044_715 * u * u * u)).tanh());
            }
        }
        Activation::Gelu => {
            for v in x {
                let u = *v;
                *v = 0.5 * u * (1.0 + libm::erff(u * std::f32::consts::FRAC_1_SQRT_2));
            }
        }
        Activation::Relu => {
            for v in x {
                *v = v.max(0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_centres_and_scales() {
        let ln = LayerNorm::new(
            [
                TensorData::new(vec![1f32, 2.0], [2]),
                TensorData::new(vec![0f32, 1.0], [2]),
            ],
            0.0,
        );
        // Each row: mean 2, std 1 → [-1, 1] → scaled and shifted [-1, 3].
        assert_eq!(ln.forward(&[1.0, 3.0, 3.0, 1.0]), [-1.0, 3.0, 1.0, -1.0]);
    }

    #[test]
    fn activations_match_their_formulas() {
        let mut x = [-2.0f32, -0.5, 0.0, 0.5, 2.0];
        activate(Activation::GeluTanh, &mut x);
        let want = [-0.045_402_3, -0.154_285_7, 0.0, 0.345_714_3, 1.954_597_7];
        for (g, w) in x.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
        let mut x = [-1.0f32, 1.0];
        activate(Activation::Gelu, &mut x);
        assert!((x[0] + 0.158_655_3).abs() < 1e-6 && (x[1] - 0.841_344_7).abs() < 1e-6);
        let mut x = [-1.0f32, 1.0];
        activate(Activation::Relu, &mut x);
        assert_eq!(x, [0.0, 1.0]);
    }
}
