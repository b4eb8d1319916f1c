//! The small element-wise parts of a block on the host: layer norm and the MLP activation.

use crate::Activation;

/// Layer norm over rows of `weight.len()` values, as `torch.nn.LayerNorm` (biased variance).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    epsilon: f64,
}

impl LayerNorm {
    /// From the weight and bias.
    pub fn new(weight: Vec<f32>, bias: Vec<f32>, epsilon: f64) -> Self {
        LayerNorm {
            weight,
            bias,
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
        Activation::GeluTanh => gelu_tanh(x),
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

/// transformers' NewGELUActivation, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, written as
/// `x / (1 + e^(−2u))` (the same function: 1 + tanh(u) = 2·sigmoid(2u)) with an exp that
/// vectorises. libm's scalar tanh took 10 ns a value: 12 ms of a 32-token GPT-2-small prefill.
fn gelu_tanh(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match super::cpu::level() {
        // SAFETY: the CPU has AVX-512F (`cpu::level` checked).
        super::cpu::Simd::Avx512 => return unsafe { gelu_tanh_avx512(x) },
        // SAFETY: the CPU has AVX2 and FMA (`cpu::level` checked).
        super::cpu::Simd::Avx2 => return unsafe { gelu_tanh_avx2(x) },
        super::cpu::Simd::Portable => {}
    }
    gelu_tanh_lanes(x);
}

/// The same loop compiled for AVX2 (8 lanes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_tanh_avx2(x: &mut [f32]) {
    gelu_tanh_lanes(x);
}

/// The same loop compiled for AVX-512 (16 lanes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_tanh_avx512(x: &mut [f32]) {
    gelu_tanh_lanes(x);
}

#[inline(always)]
fn gelu_tanh_lanes(x: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for v in x {
        let u = SQRT_2_OVER_PI * (*v + 0.044_715 * *v * *v * *v);
        *v /= 1.0 + exp(-2.0 * u);
    }
}

/// `e^x` to a relative 2.5e-7 for finite `x` (saturating below `e^−87` and above `e^88`), in operations
/// that vectorise: `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-7 Taylor polynomial for `e^r`
/// (truncation below 1e-8), and `2^n` built from its exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so `n·LN2_HI` is exact for the n that occur.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer without a rounding instruction.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_centres_and_scales() {
        let ln = LayerNorm::new(vec![1f32, 2.0], vec![0f32, 1.0], 0.0);
        // Each row: mean 2, std 1 → [-1, 1] → scaled and shifted [-1, 3].
        assert_eq!(ln.forward(&[1.0, 3.0, 3.0, 1.0]), [-1.0, 3.0, 1.0, -1.0]);
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            assert!(
                ((got - want) / want).abs() < 2.5e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn activations_match_their_formulas() {
        // Against the tanh formula in f64, over a range wider than activations reach.
        let xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 / 100.0).collect();
        let mut got = xs.clone();
        activate(Activation::GeluTanh, &mut got);
        // The portable build of the loop agrees with the one dispatched here (AVX-512 or not).
        let mut portable = xs.clone();
        gelu_tanh_lanes(&mut portable);
        assert!(
            got.iter()
                .zip(&portable)
                .all(|(a, b)| (a - b).abs() <= 1e-6 * a.abs().max(1.0))
        );
        for (&x, &g) in xs.iter().zip(&got) {
            let x = x as f64;
            let want = 0.5
                * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
            assert!(
                (g as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                "gelu({x}) = {g}, want {want}"
            );
        }
        let mut x = [-1.0f32, 1.0];
        activate(Activation::Gelu, &mut x);
        assert!((x[0] + 0.158_655_3).abs() < 1e-6 && (x[1] - 0.841_344_7).abs() < 1e-6);
        let mut x = [-1.0f32, 1.0];
        activate(Activation::Relu, &mut x);
        assert_eq!(x, [0.0, 1.0]);
    }
}
