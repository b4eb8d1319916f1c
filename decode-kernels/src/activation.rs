//! Element-wise functions: the MLP activations (GELU in its tanh and erf forms, ReLU, SiLU) and
//! an `exp` that vectorises (for them and for attention's softmax).

use crate::cpu::{self, Simd};

/// The exact GELU, `0.5·x·(1 + erf(x/√2))` (torch's default `gelu`), in place.
pub fn gelu(x: &mut [f32]) {
    for v in x {
        let u = *v;
        *v = 0.5 * u * (1.0 + libm::erff(u * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `max(x, 0)`, in place.
pub fn relu(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// SiLU (swish), `x · sigmoid(x) = x / (1 + e^(−x))`, in place: the gate of SwiGLU.
pub fn silu(x: &mut [f32]) {
    for v in x {
        *v /= 1.0 + exp(-*v);
    }
}

/// transformers' NewGELUActivation, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, written as
/// `x / (1 + e^(−2u))` (the same function: 1 + tanh(u) = 2·sigmoid(2u)) with an exp that
/// vectorises. libm's scalar tanh took 10 ns a value: 12 ms of a 32-token GPT-2-small prefill.
/// Long inputs (a prompt's MLP) are shared out over the thread pool.
pub fn gelu_tanh(x: &mut [f32]) {
    if x.len() >= PARALLEL_FROM {
        crate::pool::for_each_chunk_mut(x, PARALLEL_FROM / 2, |_, piece| gelu_tanh_here(piece));
    } else {
        gelu_tanh_here(x);
    }
}

/// Values from which an activation runs on the thread pool (at about a nanosecond a value, a
/// hand-off's few microseconds are then a small part).
const PARALLEL_FROM: usize = 1 << 15;

/// [`gelu_tanh`] on this thread.
fn gelu_tanh_here(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match cpu::level() {
        // SAFETY: the CPU has AVX-512F (`cpu::level` checked).
        Simd::Avx512 => return unsafe { gelu_tanh_avx512(x) },
        // SAFETY: the CPU has AVX2 and FMA (`cpu::level` checked).
        Simd::Avx2 => return unsafe { gelu_tanh_avx2(x) },
        Simd::Portable => {}
    }
    gelu_tanh_lanes(x);
}

/// The same loop compiled for AVX2 (8 lanes).
///
/// # Safety
///
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_tanh_avx2(x: &mut [f32]) {
    gelu_tanh_lanes(x);
}

/// The same loop compiled for AVX-512 (16 lanes).
///
/// # Safety
///
/// The CPU has AVX-512F.
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
/// (truncation below 1e-8), and `2^n` built from its exponent bits. `n` is read from the low
/// bits of the rounding sum, not converted (`n as i32` saturates, which compilers leave scalar:
/// one conversion a value took most of GELU's time).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so `n·LN2_HI` is exact for the n that occur.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer without a rounding instruction.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let rounded = x * LOG2_E + ROUND;
    let n = rounded - ROUND;
    // `rounded` lies in [2²³, 2²⁴), one unit a step: its bits are ROUND's plus n.
    let n_bits = rounded.to_bits().wrapping_sub(ROUND.to_bits());
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    p * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        gelu_tanh(&mut got);
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
        gelu(&mut x);
        assert!((x[0] + 0.158_655_3).abs() < 1e-6 && (x[1] - 0.841_344_7).abs() < 1e-6);
        let mut x = [-1.0f32, 1.0];
        relu(&mut x);
        assert_eq!(x, [0.0, 1.0]);
        let mut x = [-2.0f32, 0.0, 3.0];
        silu(&mut x);
        let want = [-2.0 / (1.0 + 2f64.exp()), 0.0, 3.0 / (1.0 + (-3f64).exp())];
        assert!(
            x.iter()
                .zip(want)
                .all(|(&g, w)| (g as f64 - w).abs() < 1e-6),
            "{x:?}"
        );
    }
}
