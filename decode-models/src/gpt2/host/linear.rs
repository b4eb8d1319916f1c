//! The CPU path of a linear layer: weights kept on the host in their stored dtype (f32, f16 or
//! bf16, widened to f32 in registers as they stream through the kernel) and a matrix product
//! written for the shapes decoding has.
//!
//! Decoding multiplies a handful of rows (1 for a step, γ+1 for a speculative verify) by each
//! weight matrix, so it is bound by how fast the weights stream from memory. General GEMM packs
//! the weights first, which costs 2–3× for 3–9 rows. Here the weights are laid out once, at load
//! time, as column tiles that are each one contiguous stream; a tile is read from memory once per
//! 64 rows, tiles in parallel on every core. With AVX-512, up to six rows share each weight load
//! (AVX2: two). f16 and bf16 weights move half the bytes of f32.

use burn::tensor::{DType, TensorData};
use half::{bf16, f16};
use rayon::prelude::*;

/// Columns per tile.
const TILE: usize = 64;
/// Rows (tokens) per pass over the weights: a verify pass or a prompt of up to 64 tokens streams
/// them from memory once (the rows then reuse each tile from cache).
const ROWS: usize = 64;
/// How many weight rows ahead of the FMAs the kernel asks for (12 KiB of f32: measured best for
/// f32, and f16 is flat from 2 to 6 KiB).
const PREFETCH_ROWS: usize = 48;
/// Below this many multiply-adds a product runs on the calling thread: waking the pool costs more.
const PARALLEL_WORK: usize = 1 << 18;

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
}

impl Weight for f32 {
    fn widen(self) -> f32 {
        self
    }
}

impl Weight for f16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

impl Weight for bf16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// A weight matrix `[inputs, outputs]` in its stored precision, row-major.
#[derive(Debug, Clone)]
pub enum HostWeights {
    /// f32.
    F32(Vec<f32>),
    /// f16.
    F16(Vec<f16>),
    /// bf16.
    BF16(Vec<bf16>),
}

impl HostWeights {
    /// From a tensor's values: f16 and bf16 stay as they are, anything else becomes f32.
    pub fn from_data(data: TensorData) -> Self {
        match data.dtype {
            DType::F16 => data.into_vec::<f16>().map(HostWeights::F16),
            DType::BF16 => data.into_vec::<bf16>().map(HostWeights::BF16),
            _ => Ok(HostWeights::F32(super::f32_vec(data))),
        }
        .unwrap_or_else(|_| HostWeights::F32(Vec::new()))
    }

    /// Row `i` of a `[rows, out.len()]` matrix, widened to f32 into `out`.
    pub fn row_into(&self, i: usize, out: &mut [f32]) {
        fn copy<T: Weight>(w: &[T], i: usize, out: &mut [f32]) {
            let n = out.len();
            for (o, v) in out.iter_mut().zip(&w[i * n..(i + 1) * n]) {
                *o = v.widen();
            }
        }
        match self {
            HostWeights::F32(w) => copy(w, i, out),
            HostWeights::F16(w) => copy(w, i, out),
            HostWeights::BF16(w) => copy(w, i, out),
        }
    }
}

impl From<TensorData> for HostWeights {
    fn from(data: TensorData) -> Self {
        HostWeights::from_data(data)
    }
}

/// Weights re-laid as `[tiles][inputs][TILE]` (the last tile zero-padded).
#[derive(Debug, Clone)]
enum Tiled {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

fn tile_layout<T: Weight>(w: &[T], inputs: usize, outputs: usize) -> Vec<T> {
    let tiles = outputs.div_ceil(TILE);
    let mut out = vec![T::default(); tiles * inputs * TILE];
    for t in 0..tiles {
        let c0 = t * TILE;
        let width = TILE.min(outputs - c0);
        for k in 0..inputs {
            let dst = (t * inputs + k) * TILE;
            out[dst..dst + width].copy_from_slice(&w[k * outputs + c0..k * outputs + c0 + width]);
        }
    }
    out
}

/// `y = x · W + b` on the host.
#[derive(Debug, Clone)]
pub struct HostLinear {
    inputs: usize,
    outputs: usize,
    tiled: Tiled,
    bias: Option<Vec<f32>>,
}

impl HostLinear {
    /// `weight` is `[inputs, outputs]` row-major; `bias` is `[outputs]`.
    pub fn new(inputs: usize, outputs: usize, weight: HostWeights, bias: Option<Vec<f32>>) -> Self {
        let tiled = match &weight {
            HostWeights::F32(w) => Tiled::F32(tile_layout(w, inputs, outputs)),
            HostWeights::F16(w) => Tiled::F16(tile_layout(w, inputs, outputs)),
            HostWeights::BF16(w) => Tiled::BF16(tile_layout(w, inputs, outputs)),
        };
        HostLinear {
            inputs,
            outputs,
            tiled,
            bias,
        }
    }

    /// From `[weight [inputs, outputs], bias [outputs]]` in any float dtype.
    pub fn from_data([weight, bias]: [TensorData; 2]) -> Self {
        let [inputs, outputs] = [weight.shape[0], weight.shape[1]];
        let bias = Some(super::f32_vec(bias));
        HostLinear::new(inputs, outputs, HostWeights::from_data(weight), bias)
    }

    /// `x` is `[m, inputs]` row-major; returns `[m, outputs]`.
    pub fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (k, n) = (self.inputs, self.outputs);
        let mut y = vec![0f32; m * n];
        for r0 in (0..m).step_by(ROWS) {
            let rows = ROWS.min(m - r0);
            let xs = &x[r0 * k..(r0 + rows) * k];
            // Tile-major scratch, `rows × TILE` per tile, sized to the rows actually present.
            let mut scratch = vec![0f32; n.div_ceil(TILE) * rows * TILE];
            let one = |(t, out): (usize, &mut [f32])| match &self.tiled {
                Tiled::F32(w) => tile(&w[t * k * TILE..(t + 1) * k * TILE], xs, rows, k, out),
                Tiled::F16(w) => tile(&w[t * k * TILE..(t + 1) * k * TILE], xs, rows, k, out),
                Tiled::BF16(w) => tile(&w[t * k * TILE..(t + 1) * k * TILE], xs, rows, k, out),
            };
            if rows * k * n >= PARALLEL_WORK {
                scratch
                    .par_chunks_mut(rows * TILE)
                    .enumerate()
                    .for_each(one);
            } else {
                scratch.chunks_mut(rows * TILE).enumerate().for_each(one);
            }
            for (t, acc) in scratch.chunks(rows * TILE).enumerate() {
                let c0 = t * TILE;
                let width = TILE.min(n - c0);
                for i in 0..rows {
                    let out = &mut y[(r0 + i) * n + c0..(r0 + i) * n + c0 + width];
                    out.copy_from_slice(&acc[i * TILE..i * TILE + width]);
                    if let Some(b) = &self.bias {
                        out.iter_mut()
                            .zip(&b[c0..c0 + width])
                            .for_each(|(y, b)| *y += b);
                    }
                }
            }
        }
        y
    }
}

/// One tile: `out[i][j] = Σ_k xs[i][k] · w[k][j]` for `rows` rows, `w` being `[k][TILE]` and
/// `out` `[rows][TILE]`.
fn tile<T: Weight>(w: &[T], xs: &[f32], rows: usize, k: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::available() {
            // SAFETY: the CPU has AVX-512F (checked just above).
            unsafe { avx512::tile(w, xs, rows, k, out) };
            return;
        }
        if simd::available() {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
            unsafe { simd::tile(w, xs, rows, k, out) };
            return;
        }
    }
    tile_portable(w, xs, rows, k, out);
}

/// The tile in plain Rust, for CPUs without AVX2.
fn tile_portable<T: Weight>(w: &[T], xs: &[f32], rows: usize, k: usize, out: &mut [f32]) {
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

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::any::TypeId;
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    use super::{PREFETCH_ROWS, TILE, Weight};

    /// Whether the AVX2 + FMA + F16C kernel can run here.
    pub fn available() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    /// Eight weights widened to f32.
    #[inline(always)]
    unsafe fn load8<T: Weight>(p: *const T) -> __m256 {
        unsafe {
            if TypeId::of::<T>() == TypeId::of::<f32>() {
                _mm256_loadu_ps(p as *const f32)
            } else if TypeId::of::<T>() == TypeId::of::<f16>() {
                _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
            } else {
                debug_assert_eq!(TypeId::of::<T>(), TypeId::of::<bf16>());
                let halves = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
                _mm256_castsi256_ps(_mm256_slli_epi32(halves, 16))
            }
        }
    }

    /// Asks for the weights `PREFETCH_ROWS` rows ahead (a 64-byte line every 16 f32 / 32 f16
    /// values), so memory requests overlap with the FMAs. Prefetching past the end of the slice is
    /// harmless.
    #[inline(always)]
    pub unsafe fn prefetch_ahead<T>(row: *const T) {
        let ahead = row.wrapping_add(PREFETCH_ROWS * TILE) as *const i8;
        let bytes = TILE * std::mem::size_of::<T>();
        let mut off = 0;
        while off < bytes {
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(off)) };
            off += 64;
        }
    }

    /// The tile with 8-wide FMAs; the TILE = 64 accumulators of a row stay in 8 registers.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn tile<T: Weight>(w: &[T], xs: &[f32], rows: usize, k: usize, out: &mut [f32]) {
        assert!(w.len() >= k * TILE && xs.len() >= rows * k && out.len() >= rows * TILE);
        unsafe {
            // Two rows at a time: 16 accumulators, and each weight load feeds two FMAs.
            let mut i = 0;
            while i + 2 <= rows {
                let mut a0 = [_mm256_setzero_ps(); TILE / 8];
                let mut a1 = [_mm256_setzero_ps(); TILE / 8];
                let x0 = xs.as_ptr().add(i * k);
                let x1 = xs.as_ptr().add((i + 1) * k);
                for kk in 0..k {
                    let s0 = _mm256_set1_ps(*x0.add(kk));
                    let s1 = _mm256_set1_ps(*x1.add(kk));
                    let row = w.as_ptr().add(kk * TILE);
                    prefetch_ahead(row);
                    for (j, (a, b)) in a0.iter_mut().zip(a1.iter_mut()).enumerate() {
                        let v = load8(row.add(j * 8));
                        *a = _mm256_fmadd_ps(s0, v, *a);
                        *b = _mm256_fmadd_ps(s1, v, *b);
                    }
                }
                for j in 0..TILE / 8 {
                    _mm256_storeu_ps(out.as_mut_ptr().add(i * TILE + j * 8), a0[j]);
                    _mm256_storeu_ps(out.as_mut_ptr().add((i + 1) * TILE + j * 8), a1[j]);
                }
                i += 2;
            }
            // The odd row (a single decode step is one).
            if i < rows {
                let mut a0 = [_mm256_setzero_ps(); TILE / 8];
                let x0 = xs.as_ptr().add(i * k);
                for kk in 0..k {
                    let s0 = _mm256_set1_ps(*x0.add(kk));
                    let row = w.as_ptr().add(kk * TILE);
                    prefetch_ahead(row);
                    for (j, a) in a0.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(s0, load8(row.add(j * 8)), *a);
                    }
                }
                for (j, a) in a0.iter().enumerate() {
                    _mm256_storeu_ps(out.as_mut_ptr().add(i * TILE + j * 8), *a);
                }
            }
        }
    }
}

/// The same tile with AVX-512: a row's 64 accumulators are 4 registers, so up to 6 rows share each
/// weight load (of the 32 registers, 24 hold the accumulators, 4 the weights and the rest the
/// broadcasts); a remainder of 1 to 5 rows runs as one narrower pass.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::any::TypeId;
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    use super::simd::prefetch_ahead;
    use super::{TILE, Weight};

    /// Whether the AVX-512 kernel can run here.
    pub fn available() -> bool {
        is_x86_feature_detected!("avx512f")
    }

    /// Sixteen weights widened to f32.
    #[inline(always)]
    unsafe fn load16<T: Weight>(p: *const T) -> __m512 {
        unsafe {
            if TypeId::of::<T>() == TypeId::of::<f32>() {
                _mm512_loadu_ps(p as *const f32)
            } else if TypeId::of::<T>() == TypeId::of::<f16>() {
                _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
            } else {
                debug_assert_eq!(TypeId::of::<T>(), TypeId::of::<bf16>());
                let halves = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
                _mm512_castsi512_ps(_mm512_slli_epi32(halves, 16))
            }
        }
    }

    /// `R` rows of the tile: `out[r][..TILE] = Σ_k x[r][k] · w[k][..TILE]`, `x` rows `k` apart.
    #[inline(always)]
    unsafe fn rows<T: Weight, const R: usize>(w: *const T, x: *const f32, k: usize, out: *mut f32) {
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); TILE / 16]; R];
            for kk in 0..k {
                let row = w.add(kk * TILE);
                prefetch_ahead(row);
                let v = [
                    load16(row),
                    load16(row.add(16)),
                    load16(row.add(32)),
                    load16(row.add(48)),
                ];
                for (r, acc) in acc.iter_mut().enumerate() {
                    let s = _mm512_set1_ps(*x.add(r * k + kk));
                    for (a, &v) in acc.iter_mut().zip(&v) {
                        *a = _mm512_fmadd_ps(s, v, *a);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (j, a) in acc.iter().enumerate() {
                    _mm512_storeu_ps(out.add(r * TILE + j * 16), *a);
                }
            }
        }
    }

    /// The tile, six rows at a time, then the remaining 1 to 5 rows in one pass.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile<T: Weight>(w: &[T], xs: &[f32], rows: usize, k: usize, out: &mut [f32]) {
        assert!(w.len() >= k * TILE && xs.len() >= rows * k && out.len() >= rows * TILE);
        unsafe {
            let (w, x, o) = (w.as_ptr(), xs.as_ptr(), out.as_mut_ptr());
            let mut i = 0;
            while i + 6 <= rows {
                self::rows::<T, 6>(w, x.add(i * k), k, o.add(i * TILE));
                i += 6;
            }
            match rows - i {
                5 => self::rows::<T, 5>(w, x.add(i * k), k, o.add(i * TILE)),
                4 => self::rows::<T, 4>(w, x.add(i * k), k, o.add(i * TILE)),
                3 => self::rows::<T, 3>(w, x.add(i * k), k, o.add(i * TILE)),
                2 => self::rows::<T, 2>(w, x.add(i * k), k, o.add(i * TILE)),
                1 => self::rows::<T, 1>(w, x.add(i * k), k, o.add(i * TILE)),
                _ => {}
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

    /// Each kernel this CPU can run gives the portable kernel's result, for every dtype and for
    /// row counts that exercise every row path: AVX2's 2- and 1-row, AVX-512's 6-row and its 1- to
    /// 5-row remainders (16 = 6 + 6 + 4).
    #[test]
    fn every_kernel_matches_the_portable_one() {
        fn check<T: Weight>(w: &[T]) {
            let k = w.len() / TILE;
            for rows in [1, 2, 3, 5, 7, 16] {
                let xs: Vec<f32> = (0..rows * k)
                    .map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0)
                    .collect();
                let mut want = vec![0f32; rows * TILE];
                tile_portable(w, &xs, rows, k, &mut want);
                let mut kernels: Vec<(&str, Vec<f32>)> = Vec::new();
                #[cfg(target_arch = "x86_64")]
                {
                    if simd::available() {
                        let mut got = vec![0f32; rows * TILE];
                        // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
                        unsafe { simd::tile(w, &xs, rows, k, &mut got) };
                        kernels.push(("avx2", got));
                    }
                    if avx512::available() {
                        let mut got = vec![0f32; rows * TILE];
                        // SAFETY: the CPU has AVX-512F (checked just above).
                        unsafe { avx512::tile(w, &xs, rows, k, &mut got) };
                        kernels.push(("avx512", got));
                    }
                }
                for (name, got) in kernels {
                    let worst = got
                        .iter()
                        .zip(&want)
                        .map(|(g, w)| (g - w).abs())
                        .fold(0f32, f32::max);
                    assert!(worst < 1e-4, "{name}, {rows} rows: {worst}");
                }
            }
        }
        let k = 41;
        let w: Vec<f32> = (0..k * TILE)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 997.0)
            .collect();
        check(&w);
        check(&w.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>());
        check(&w.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>());
    }

    #[test]
    fn matches_a_plain_product_for_all_dtypes_and_row_counts() {
        let (k, n) = (37, 300); // odd sizes: a partial tile
        let w: Vec<f32> = (0..k * n)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 997.0)
            .collect();
        let b: Vec<f32> = (0..n).map(|j| j as f32 / 100.0).collect();
        let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let wb16: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let cases = [
            (HostWeights::F32(w.clone()), w.clone()),
            (
                HostWeights::F16(w16.clone()),
                w16.iter().map(|v| v.to_f32()).collect(),
            ),
            (
                HostWeights::BF16(wb16.clone()),
                wb16.iter().map(|v| v.to_f32()).collect(),
            ),
        ];
        for (weights, exact) in cases {
            let lin = HostLinear::new(k, n, weights, Some(b.clone()));
            for m in [1, 2, 3, 8, 9, 17] {
                let x: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 31 % 17) as f32 - 8.0) / 7.0)
                    .collect();
                let got = lin.forward(&x, m);
                let want = reference(&x, m, &exact, k, n, &b);
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (g - w).abs())
                    .fold(0f32, f32::max);
                assert!(worst < 1e-4, "m={m}: {worst}");
            }
        }
    }
}
