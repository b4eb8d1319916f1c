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

use std::sync::OnceLock;

use half::{bf16, f16};
use rayon::prelude::*;

use super::cpu::{self, Simd};
use super::quant::{self, BLOCK, Format, Kernel, QuantMatrix, QuantRows};
use crate::checkpoint::Stored;

/// The q8_0/q4_0 kernel, detected once.
fn quant_kernel() -> Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    *KERNEL.get_or_init(Kernel::detect)
}

/// Columns per tile.
pub(super) const TILE: usize = 64;
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

/// A weight matrix as a checkpoint stores it, before it is laid out for the kernels: little-endian
/// bytes (any alignment), read once, in order.
pub struct Source<'a> {
    /// The stored values.
    pub bytes: &'a [u8],
    /// Their type.
    pub dtype: Stored,
    /// Inputs (the width of an output's weights).
    pub inputs: usize,
    /// Outputs.
    pub outputs: usize,
    /// Whether each stored row is one output's weights (`[outputs][inputs]`: GGUF and an
    /// embedding table read as the LM head) or one input's (`[inputs][outputs]`: GPT-2's
    /// `Conv1D`). Quantized values always come as output rows.
    pub output_rows: bool,
    /// Called with each byte range of `bytes` once it has been read, so a memory-mapped file
    /// can drop those pages: the loader then never holds a second copy of the weights.
    pub done: &'a dyn Fn(std::ops::Range<usize>),
}

/// Reads `source` row by row, calling `row(i, bytes)` and reporting each finished band of about
/// 1 MiB to `source.done` (the pages a memory-mapped file holds beyond the model stay below that).
fn for_each_row(source: &Source, row_width: usize, mut row: impl FnMut(usize, &[u8])) {
    const BAND: usize = 1 << 20;
    let row_bytes = source.dtype.row_bytes(row_width);
    let mut reported = 0;
    for (i, bytes) in source.bytes.chunks_exact(row_bytes.max(1)).enumerate() {
        row(i, bytes);
        let end = (i + 1) * row_bytes;
        if end - reported >= BAND {
            (source.done)(reported..end);
            reported = end;
        }
    }
    (source.done)(reported..source.bytes.len());
}

/// The weights, laid out for a kernel.
#[derive(Debug, Clone, PartialEq)]
enum Layout {
    /// `[tiles][inputs][TILE]` (the last tile zero-padded), in the stored float type.
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    /// Blocks along the inputs, one row per output.
    Quant(QuantMatrix),
}

/// Lays out float weights as tiles, reading the source once in its own order.
fn tiled<T: Weight>(source: &Source, from: impl Fn(&[u8]) -> T) -> Vec<T> {
    let (k, n) = (source.inputs, source.outputs);
    let size = std::mem::size_of::<T>();
    let mut out = vec![T::default(); n.div_ceil(TILE) * k * TILE];
    if source.output_rows {
        for_each_row(source, k, |j, row| {
            let (t, c) = (j / TILE, j % TILE);
            for (kk, b) in row.chunks_exact(size).enumerate() {
                out[(t * k + kk) * TILE + c] = from(b);
            }
        });
    } else {
        for_each_row(source, n, |kk, row| {
            for (j, b) in row.chunks_exact(size).enumerate() {
                let (t, c) = (j / TILE, j % TILE);
                out[(t * k + kk) * TILE + c] = from(b);
            }
        });
    }
    out
}

/// Quantizes or copies the source's values into blocks.
fn quantized(source: &Source, format: Format) -> QuantMatrix {
    let (k, n) = (source.inputs, source.outputs);
    let mut m = QuantMatrix::zeroed(format, n, k);
    if source.dtype.format().is_some() {
        for_each_row(source, k, |j, row| m.set_gguf_row(j, row));
    } else if source.output_rows {
        let mut wide = vec![0f32; k];
        for_each_row(source, k, |j, row| {
            source.dtype.widen_into(row, k, &mut wide);
            m.set_row(j, &wide);
        });
    } else {
        // Rows are inputs: gather a band of 32 of them, then quantize that block of every output.
        let mut band = vec![0f32; BLOCK * n];
        let mut filled = 0;
        let flush = |band: &[f32], filled: usize, b: usize, m: &mut QuantMatrix| {
            let mut block = [0f32; BLOCK];
            for j in 0..n {
                for (i, v) in block.iter_mut().enumerate().take(filled) {
                    *v = band[i * n + j];
                }
                m.set_block(j, b, &block[..filled]);
            }
        };
        for_each_row(source, n, |kk, row| {
            source
                .dtype
                .widen_into(row, n, &mut band[filled * n..(filled + 1) * n]);
            filled += 1;
            if filled == BLOCK {
                flush(&band, filled, kk / BLOCK, &mut m);
                filled = 0;
            }
        });
        if filled > 0 {
            flush(&band, filled, k / BLOCK, &mut m);
        }
    }
    m
}

/// `y = x · W + b` on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostLinear {
    inputs: usize,
    outputs: usize,
    layout: Layout,
    bias: Option<Vec<f32>>,
}

impl HostLinear {
    /// Lays out `source` for the kernels: float weights as tiles in their stored type, or as
    /// `quantize`'s blocks; quantized weights as they are (`quantize` must then be `None` or
    /// their own format: the caller checks).
    pub fn new(source: &Source, bias: Option<Vec<f32>>, quantize: Option<Format>) -> Self {
        let layout = match (source.dtype.format().or(quantize), source.dtype) {
            (Some(format), _) => Layout::Quant(quantized(source, format)),
            (None, Stored::F16) => Layout::F16(tiled(source, |b| f16::from_le_bytes([b[0], b[1]]))),
            (None, Stored::BF16) => {
                Layout::BF16(tiled(source, |b| bf16::from_le_bytes([b[0], b[1]])))
            }
            (None, _) => Layout::F32(tiled(source, |b| {
                f32::from_le_bytes([b[0], b[1], b[2], b[3]])
            })),
        };
        HostLinear {
            inputs: source.inputs,
            outputs: source.outputs,
            layout,
            bias,
        }
    }

    /// The format of quantized weights whose f16 block scale is not finite (weights too large
    /// for it: above 65504 × 127 in q8_0, 65504 × 8 in q4_0), or `None`.
    pub fn overflowed_format(&self) -> Option<Format> {
        match &self.layout {
            Layout::Quant(m) if !m.scales_finite() => Some(m.format()),
            _ => None,
        }
    }

    /// Bytes the weights take.
    pub fn weight_bytes(&self) -> usize {
        match &self.layout {
            Layout::F32(w) => 4 * w.len(),
            Layout::F16(w) => 2 * w.len(),
            Layout::BF16(w) => 2 * w.len(),
            Layout::Quant(m) => m.bytes(),
        }
    }

    /// Output `j`'s weights, widened to f32 into `out` (`inputs` long): an embedding row, when
    /// this layer is the LM head tied to the token embedding.
    pub fn column_into(&self, j: usize, out: &mut [f32]) {
        fn gather<T: Weight>(w: &[T], k: usize, j: usize, out: &mut [f32]) {
            let (t, c) = (j / TILE, j % TILE);
            for (kk, o) in out.iter_mut().enumerate().take(k) {
                *o = w[(t * k + kk) * TILE + c].widen();
            }
        }
        let k = self.inputs;
        match &self.layout {
            Layout::F32(w) => gather(w, k, j, out),
            Layout::F16(w) => gather(w, k, j, out),
            Layout::BF16(w) => gather(w, k, j, out),
            Layout::Quant(m) => m.row_into(j, &mut out[..k]),
        }
    }

    /// `x` is `[m, inputs]` row-major; returns `[m, outputs]`.
    pub fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (k, n) = (self.inputs, self.outputs);
        let mut y = vec![0f32; m * n];
        let kernel = quant_kernel();
        for r0 in (0..m).step_by(ROWS) {
            let rows = ROWS.min(m - r0);
            let xs = &x[r0 * k..(r0 + rows) * k];
            let xq = match &self.layout {
                Layout::Quant(w) => Some(QuantRows::new(xs, rows, k, w.padded_inputs())),
                _ => None,
            };
            // Tile-major scratch, `rows × TILE` per tile, sized to the rows actually present
            // (every kernel writes the columns that are later read).
            super::with_scratch(n.div_ceil(TILE) * rows * TILE, |scratch| {
                let one = |(t, out): (usize, &mut [f32])| match (&self.layout, &xq) {
                    (Layout::F32(w), _) => {
                        tile(&w[t * k * TILE..(t + 1) * k * TILE], xs, rows, k, out)
                    }
                    (Layout::F16(w), _) => {
                        tile(&w[t * k * TILE..(t + 1) * k * TILE], xs, rows, k, out)
                    }
                    (Layout::BF16(w), _) => {
                        tile(&w[t * k * TILE..(t + 1) * k * TILE], xs, rows, k, out)
                    }
                    (Layout::Quant(w), Some(xq)) => {
                        let width = TILE.min(n - t * TILE);
                        quant::product(kernel, w, t * TILE, width, xq, rows, out, TILE)
                    }
                    (Layout::Quant(_), None) => {}
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
            });
        }
        y
    }
}

/// One tile: `out[i][j] = Σ_k xs[i][k] · w[k][j]` for `rows` rows, `w` being `[k][TILE]` and
/// `out` `[rows][TILE]`.
pub(super) fn tile<T: Weight>(w: &[T], xs: &[f32], rows: usize, k: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        let level = cpu::level();
        if level >= Simd::Avx512 {
            // SAFETY: the CPU has AVX-512F (`cpu::level` checked).
            unsafe { avx512::tile(w, xs, rows, k, out) };
            return;
        }
        // From 4 rows, AVX2's register-blocked kernel (the 2-row one here spills registers).
        if rows >= 4 && level >= Simd::Avx2 {
            super::gemm::tile_many(w, xs, rows, k, out);
            return;
        }
        if level >= Simd::Avx2 {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
            unsafe { simd::tile(w, xs, rows, k, out) };
            return;
        }
    }
    tile_portable(w, xs, rows, k, out);
}

/// The tile in plain Rust, for CPUs without AVX2.
pub(super) fn tile_portable<T: Weight>(
    w: &[T],
    xs: &[f32],
    rows: usize,
    k: usize,
    out: &mut [f32],
) {
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
pub(super) mod simd {
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
    pub unsafe fn load8<T: Weight>(p: *const T) -> __m256 {
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
pub(super) mod avx512 {
    use std::any::TypeId;
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    use super::simd::prefetch_ahead;
    use super::{TILE, Weight};

    /// Whether the AVX-512 kernel can run here (the tests ask; the dispatch goes by `cpu::level`).
    #[cfg(test)]
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

    /// The portable kernel gives an f64 product's result, and each kernel this CPU can run the
    /// portable kernel's, for every dtype and for
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
                // The portable kernel itself against an f64 product (a tile is `[k][TILE]`, the
                // reference's `[k][n]` with n = TILE): on every CPU, this assertion runs.
                let wide: Vec<f32> = w.iter().map(|v| v.widen()).collect();
                let exact = reference(&xs, rows, &wide, k, TILE, &[0.0; TILE]);
                let mut kernels: Vec<(&str, Vec<f32>, &[f32])> = Vec::new();
                kernels.push(("portable", want.clone(), &exact));
                #[cfg(target_arch = "x86_64")]
                {
                    if simd::available() {
                        let mut got = vec![0f32; rows * TILE];
                        // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
                        unsafe { simd::tile(w, &xs, rows, k, &mut got) };
                        kernels.push(("avx2", got, &want));
                    }
                    if avx512::available() {
                        let mut got = vec![0f32; rows * TILE];
                        // SAFETY: the CPU has AVX-512F (checked just above).
                        unsafe { avx512::tile(w, &xs, rows, k, &mut got) };
                        kernels.push(("avx512", got, &want));
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
        let k = 41;
        let w: Vec<f32> = (0..k * TILE)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 997.0)
            .collect();
        check(&w);
        check(&w.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>());
        check(&w.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>());
    }

    #[test]
    fn matches_a_plain_product_for_all_dtypes_layouts_and_row_counts() {
        let (k, n) = (37, 300); // odd sizes: a partial tile, a partial q8_0/q4_0 block
        let w: Vec<f32> = (0..k * n)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 997.0)
            .collect();
        let b: Vec<f32> = (0..n).map(|j| j as f32 / 100.0).collect();
        let f16s: Vec<u8> = w
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        let bf16s: Vec<u8> = w
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect();
        let f32s: Vec<u8> = w.iter().flat_map(|&v| v.to_le_bytes()).collect();
        let cases = [
            (Stored::F32, &f32s, None, 1e-4),
            (Stored::F16, &f16s, None, 1e-4),
            (Stored::BF16, &bf16s, None, 1e-4),
            // Quantized: against the dequantized weights, within the activations' q8_0 rounding.
            (Stored::F32, &f32s, Some(Format::Q8_0), 0.05),
            (Stored::F16, &f16s, Some(Format::Q4_0), 0.05),
        ];
        for (dtype, bytes, quantize, tolerance) in cases {
            let source = Source {
                bytes,
                dtype,
                inputs: k,
                outputs: n,
                output_rows: false,
                done: &|_| {},
            };
            let lin = HostLinear::new(&source, Some(b.clone()), quantize);
            // The weights the layer holds, read back column by column (the embedding gather).
            let mut exact = vec![0f32; k * n];
            let mut column = vec![0f32; k];
            for j in 0..n {
                lin.column_into(j, &mut column);
                for kk in 0..k {
                    exact[kk * n + j] = column[kk];
                }
            }
            if quantize.is_none() {
                let mut stored = vec![0f32; k * n];
                dtype.widen_into(bytes, n, &mut stored);
                assert_eq!(exact, stored, "{dtype:?}: the layout loses nothing");
            }
            // The same matrix stored the other way round (`[outputs][inputs]`) lays out the same.
            let mut transposed = vec![0u8; bytes.len()];
            let size = bytes.len() / (k * n);
            for kk in 0..k {
                for j in 0..n {
                    let (from, to) = ((kk * n + j) * size, (j * k + kk) * size);
                    transposed[to..to + size].copy_from_slice(&bytes[from..from + size]);
                }
            }
            let flipped = HostLinear::new(
                &Source {
                    bytes: &transposed,
                    output_rows: true,
                    ..source
                },
                Some(b.clone()),
                quantize,
            );
            for m in [1, 2, 3, 8, 9, 17] {
                let x: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 31 % 17) as f32 - 8.0) / 7.0)
                    .collect();
                let got = lin.forward(&x, m);
                assert_eq!(got, flipped.forward(&x, m), "{dtype:?} {quantize:?}");
                let want = reference(&x, m, &exact, k, n, &b);
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (g - w).abs())
                    .fold(0f32, f32::max);
                assert!(worst < tolerance, "{dtype:?} {quantize:?} m={m}: {worst}");
            }
        }
    }
}
