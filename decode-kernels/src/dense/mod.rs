//! Float weights (f32, f16, bf16) as column tiles, and the tile product that streams them.
//!
//! A tile is [`TILE`] outputs' weights laid out `[inputs][TILE]`: one contiguous stream, widened
//! to f32 in registers. [`tile`] multiplies a few rows (a decode step, a speculative verify, a
//! short prompt) by one tile, on the best kernel the CPU has: [`avx512`] (up to six rows share
//! each weight load over the whole tile, up to twelve over each half), [`avx2`] (pairs of rows),
//! [`avx2_many`] (from `AVX2_MANY_ROWS` rows on AVX2: a register-blocked kernel for the FMA
//! units) or [`tile_portable`], the plain-Rust reference.

use half::{bf16, f16};

use crate::cpu::{self, Simd};
use crate::memory::Buffer;

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx2_many;
#[cfg(target_arch = "x86_64")]
pub mod avx512;

/// From this many rows AVX2 runs [`avx2_many`]'s register-blocked kernel (compute-bound work:
/// long prompts), below it [`avx2::tile`]'s pairs of rows over L1 blocks (passes that stream the
/// weights from memory). Measured on a Zen 3 EPYC, GPT-2 small, a pass of k rows ÷ a step, the
/// two interleaved in one process, k = 8 / 12 / 16 / 24: f32 1.76 / 1.89 / 2.32 / 2.91 against
/// 1.87 / 1.88 / 1.98 / 2.83, f16 1.69 / 2.10 / 2.94 / 3.35 against 1.89 / 2.18 / 2.51 / 3.15.
const AVX2_MANY_ROWS: usize = 16;

/// Outputs (columns) per tile.
pub const TILE: usize = 64;

/// How far ahead of its FMAs a float kernel asks for the weights it streams, and into which
/// cache, as measured best per CPU maker (batch-1 decode of GPT-2 small):
/// - AMD (a Zen 3 EPYC): 48 rows ahead (12 KiB of f32) into L1, best for f32; f16 is flat from
///   2 to 6 KiB.
/// - Intel (a KVM Xeon with AVX-512, `generate --json`, alternating runs): into L1, f16 ran at
///   62–70 tokens/s whether 6, 12 or 24 KiB ahead, or without asking; into L2, 79–88 from 6 to
///   48 KiB ahead (best at 48); f32 44–47 into L1, 46–50 into L2 at 24–48 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prefetch {
    /// Into L2 (`prefetcht1`) rather than L1 (`prefetcht0`).
    into_l2: bool,
    /// Weight rows ahead for f32, and for f16/bf16.
    rows_f32: usize,
    rows_half: usize,
    /// Whether one row of the AVX2 tile asks too, or streams on the hardware prefetcher alone
    /// (see [`avx2::tile`]).
    pub(crate) avx2_one_row: bool,
}

impl Prefetch {
    /// This CPU's.
    pub(crate) fn here() -> Prefetch {
        match cpu::maker() {
            cpu::Maker::Intel => Prefetch {
                into_l2: true,
                rows_f32: (48 << 10) / (4 * TILE),
                rows_half: (48 << 10) / (2 * TILE),
                avx2_one_row: true,
            },
            _ => Prefetch {
                into_l2: false,
                rows_f32: 48,
                rows_half: 48,
                avx2_one_row: false,
            },
        }
    }

    /// Asks for the weights the right distance ahead of `row` (one tile row of `T`: a 64-byte
    /// line every 16 f32 / 32 f16 values), so memory requests overlap with the FMAs. Asking
    /// past the end of the weights is harmless.
    ///
    /// # Safety
    ///
    /// The CPU has SSE (every x86-64 does); `row` may point anywhere (nothing is read through
    /// it).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(crate) unsafe fn ahead<T>(self, row: *const T) {
        use std::arch::x86_64::{_MM_HINT_T0, _MM_HINT_T1};
        let rows = if std::mem::size_of::<T>() == 4 {
            self.rows_f32
        } else {
            self.rows_half
        };
        // SAFETY: prefetches read nothing.
        unsafe {
            if self.into_l2 {
                avx2::prefetch_rows::<T, _MM_HINT_T1>(row, rows);
            } else {
                avx2::prefetch_rows::<T, _MM_HINT_T0>(row, rows);
            }
        }
    }
}

/// `rows` split into `rows.div_ceil(max)` groups of near-equal size (each `max` or fewer
/// rows): `(first row, rows in the group)`.
pub(crate) fn groups(rows: usize, max: usize) -> impl Iterator<Item = (usize, usize)> {
    let n = rows.div_ceil(max);
    let (base, extra) = (
        rows.checked_div(n).unwrap_or(0),
        rows.checked_rem(n).unwrap_or(0),
    );
    (0..n).map(move |g| (g * base + g.min(extra), base + usize::from(g < extra)))
}

/// Keeps [`Weight`] to the three types the SIMD kernels know how to load (they dispatch on the
/// type's `TypeId`, and would misread any other).
mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// An element type the kernel can widen to f32: f32, f16 or bf16 (sealed: the SIMD kernels
/// handle exactly these three).
pub trait Weight: sealed::Sealed + Copy + Send + Sync + Default + 'static {
    /// The value as f32.
    fn widen(self) -> f32;

    /// `n` zeros in a [`Buffer`] (pages mapped as they are first written, huge where granted);
    /// `what` names them if the system refuses the memory.
    fn zeroed(n: usize, what: &str) -> decode_core::Result<Buffer<Self>>;
}

impl Weight for f32 {
    fn widen(self) -> f32 {
        self
    }

    fn zeroed(n: usize, what: &str) -> decode_core::Result<Buffer<Self>> {
        // SAFETY: zero bits are f32's +0.
        unsafe { Buffer::zeroed(n, what) }
    }
}

impl Weight for f16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }

    fn zeroed(n: usize, what: &str) -> decode_core::Result<Buffer<Self>> {
        // SAFETY: zero bits are f16's +0.
        unsafe { Buffer::zeroed(n, what) }
    }
}

impl Weight for bf16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }

    fn zeroed(n: usize, what: &str) -> decode_core::Result<Buffer<Self>> {
        // SAFETY: zero bits are bf16's +0.
        unsafe { Buffer::zeroed(n, what) }
    }
}

/// One tile: `out[i][j] = Σ_k xs[i][k] · w[k][j]` for `rows` rows, `w` being `[k][TILE]` and
/// `out` `[rows][TILE]`.
pub fn tile<T: Weight>(w: &[T], xs: &[f32], rows: usize, k: usize, out: &mut [f32]) {
    tile_with(cpu::level(), w, xs, rows, k, out);
}

/// [`tile`] on the kernels of `level` (no higher than [`cpu::level`]: the tests run each path).
pub(crate) fn tile_with<T: Weight>(
    level: Simd,
    w: &[T],
    xs: &[f32],
    rows: usize,
    k: usize,
    out: &mut [f32],
) {
    assert!(level <= cpu::level(), "{level:?} is above this CPU's level");
    #[cfg(target_arch = "x86_64")]
    {
        if level >= Simd::Avx512 {
            // SAFETY: the CPU has AVX-512F (`level` is at most the CPU's).
            unsafe { avx512::tile(w, xs, rows, k, out) };
            return;
        }
        if rows >= AVX2_MANY_ROWS && level >= Simd::Avx2 {
            // SAFETY: the CPU has AVX2, FMA and F16C (`level` is at most the CPU's).
            unsafe { avx2_many::tile_many(w, xs, rows, k, out) };
            return;
        }
        if level >= Simd::Avx2 {
            // SAFETY: the CPU has AVX2, FMA and F16C (`level` is at most the CPU's).
            unsafe { avx2::tile(w, xs, rows, k, out) };
            return;
        }
    }
    tile_portable(w, xs, rows, k, out);
}

/// The tile in plain Rust, for CPUs without AVX2.
pub fn tile_portable<T: Weight>(w: &[T], xs: &[f32], rows: usize, k: usize, out: &mut [f32]) {
    let acc = &mut out[..rows * TILE];
    acc.fill(0.0);
    let mut wide = [0f32; TILE];
    for kk in 0..k {
        for (d, s) in wide.iter_mut().zip(&w[kk * TILE..(kk + 1) * TILE]) {
            *d = s.widen();
        }
        for i in 0..rows {
            let a = xs[i * k + kk];
            for (y, &v) in acc[i * TILE..(i + 1) * TILE].iter_mut().zip(&wide) {
                *y += a * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], m: usize, w: &[f32], k: usize, n: usize, b: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = b[j] as f64;
                for kk in 0..k {
                    s += x[i * k + kk] as f64 * w[kk * n + j] as f64;
                }
                y[i * n + j] = s as f32;
            }
        }
        y
    }

    /// The portable kernel gives an f64 product's result, and each kernel this CPU can run the
    /// portable kernel's, for every dtype and for
    /// row counts that exercise every row path: AVX2's 2- and 1-row and its many-row kernel
    /// (16 and more), AVX-512's groups of 1 to 6 rows (13 = 5 + 4 + 4, 16 = 6 + 5 + 5), its half tiles of 7
    /// to 12 rows and its blocks widened once (19, 25), over one block of inputs and several.
    #[test]
    fn every_kernel_matches_the_portable_one() {
        fn check<T: Weight>(w: &[T]) {
            let k = w.len() / TILE;
            for rows in [1, 2, 3, 5, 7, 8, 12, 13, 16, 19, 25] {
                let xs: Vec<f32> = (0..rows * k)
                    .map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0)
                    .collect();
                let mut want = vec![0f32; rows * TILE];
                tile_portable(w, &xs, rows, k, &mut want);
                // The portable kernel itself against an f64 product (a tile is `[k][TILE]`, the
                // reference's `[k][n]` with n = TILE): on every CPU, this assertion runs.
                let wide: Vec<f32> = w.iter().map(|v| v.widen()).collect();
                let exact = reference(&xs, rows, &wide, k, TILE, &[0.0; TILE]);
                let mut kernels: Vec<(&str, Vec<f32>, &[f32])> = Vec::new();
                kernels.push(("portable", want.clone(), &exact));
                #[cfg(target_arch = "x86_64")]
                {
                    if avx2::available() {
                        let mut got = vec![0f32; rows * TILE];
                        // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
                        unsafe { avx2::tile(w, &xs, rows, k, &mut got) };
                        kernels.push(("avx2", got, &want));
                    }
                    if avx512::available() {
                        let mut got = vec![0f32; rows * TILE];
                        // SAFETY: the CPU has AVX-512F (checked just above).
                        unsafe { avx512::tile(w, &xs, rows, k, &mut got) };
                        kernels.push(("avx512", got, &want));
                    }
                }
                // The dispatch at every level this CPU has.
                for level in [Simd::Portable, Simd::Avx2, Simd::Avx512] {
                    if level <= cpu::level() {
                        let mut got = vec![0f32; rows * TILE];
                        tile_with(level, w, &xs, rows, k, &mut got);
                        kernels.push(("dispatch", got, &want));
                    }
                }
                for (name, got, want) in kernels {
                    let worst = got
                        .iter()
                        .zip(want)
                        .map(|(g, w)| (g - w).abs())
                        .fold(0f32, f32::max);
                    assert!(worst < 1e-4, "{name}, {rows} rows: {worst}");
                }
            }
        }
        // 41 inputs: one block; 200: AVX-512's blocks of 64 inputs, the last one partial.
        for k in [41, 200] {
            let w: Vec<f32> = (0..k * TILE)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 997.0)
                .collect();
            check(&w);
            check(&w.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>());
            check(&w.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>());
        }
    }
}
