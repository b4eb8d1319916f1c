//! q8_0 and q4_0 weights: llama.cpp's block formats, and the integer dot products that read them.
//!
//! A block is 32 consecutive weights of one output (along the inputs) with one f16 scale `d`:
//! q8_0 keeps 32 `i8` (`w = d·q`, 8.5 bits a weight), q4_0 16 bytes of nibbles (`w = d·(q − 8)`;
//! byte `i` holds weight `i` in its low nibble and weight `i + 16` in its high one: 4.5 bits a
//! weight). Quantizing follows ggml's reference code (`quantize_row_q8_0_ref`,
//! `quantize_row_q4_0_ref`) operation for operation, so a checkpoint quantized here holds the same
//! bits as llama.cpp's converter and `llama-quantize` write.
//!
//! Products quantize each activation row to q8_0 as well (per block, an f32 scale) and sum
//! `i8 × i8` products in integers, block by block: AVX2 `maddubs`/`madd`, AVX-512 VNNI `dpbusd`
//! where the CPU has it, and a portable loop that is the reference for both.

use half::f16;
use half::slice::HalfFloatSliceExt;

/// Weights per block.
pub const BLOCK: usize = 32;

/// The block formats ([`crate::gpt2::Quantization`]).
pub use crate::gpt2::Quantization as Format;

impl Format {
    /// Bytes of quantized values per block (the scale is kept apart).
    pub(crate) fn block_bytes(self) -> usize {
        match self {
            Format::Q8_0 => BLOCK,
            Format::Q4_0 => BLOCK / 2,
        }
    }

    /// Quantizes one block of 32 values into `q` (`block_bytes` long); returns the scale.
    pub(crate) fn quantize_block(self, x: &[f32], q: &mut [u8]) -> f16 {
        match self {
            Format::Q8_0 => quantize_q8_0(x, q),
            Format::Q4_0 => quantize_q4_0(x, q),
        }
    }

    /// The 32 values of a block, as stored (`q` is `block_bytes` long).
    pub(crate) fn unpack(self, q: &[u8]) -> [i8; BLOCK] {
        let mut out = [0i8; BLOCK];
        match self {
            Format::Q8_0 => {
                for (o, &b) in out.iter_mut().zip(q) {
                    *o = b as i8;
                }
            }
            Format::Q4_0 => {
                for (i, &b) in q.iter().enumerate().take(BLOCK / 2) {
                    out[i] = (b & 0x0f) as i8 - 8;
                    out[i + BLOCK / 2] = (b >> 4) as i8 - 8;
                }
            }
        }
        out
    }
}

/// ggml's `quantize_row_q8_0_ref` for one block: `d = max|x| / 127`, `q = round(x / d)`.
fn quantize_q8_0(x: &[f32], q: &mut [u8]) -> f16 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        // `round` is C's `roundf` (half away from zero); the product is within ±127.
        *q = (v * id).round() as i8 as u8;
    }
    f16::from_f32(d)
}

/// ggml's `quantize_row_q4_0_ref` for one block: the value of largest magnitude maps to −8.
fn quantize_q4_0(x: &[f32], q: &mut [u8]) -> f16 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let half = BLOCK / 2;
    for (j, q) in q.iter_mut().enumerate().take(half) {
        // C's `(int8_t)(x + 8.5f)` truncates toward zero, as `as` does.
        let lo = ((x[j] * id + 8.5) as i8).min(15) as u8;
        let hi = ((x[half + j] * id + 8.5) as i8).min(15) as u8;
        *q = lo | (hi << 4);
    }
    f16::from_f32(d)
}

/// A quantized matrix, one row per output, blocks along the inputs (GGUF's layout for a linear
/// layer's weight).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantMatrix {
    format: Format,
    /// Inputs rounded up to a whole block (the padding weights are zero).
    padded: usize,
    /// `[outputs][padded / 32][block_bytes]`.
    quants: Vec<u8>,
    /// `[outputs][padded / 32]`.
    scales: Vec<f16>,
}

impl QuantMatrix {
    /// A zero matrix of `outputs × inputs`, to be filled with [`QuantMatrix::set_row`],
    /// [`QuantMatrix::set_block`] or [`QuantMatrix::set_gguf_row`].
    pub fn zeroed(format: Format, outputs: usize, inputs: usize) -> Self {
        let padded = inputs.div_ceil(BLOCK) * BLOCK;
        let blocks = outputs * (padded / BLOCK);
        QuantMatrix {
            format,
            padded,
            quants: vec![0; blocks * format.block_bytes()],
            scales: vec![f16::ZERO; blocks],
        }
    }

    /// Inputs rounded up to a whole block.
    pub fn padded_inputs(&self) -> usize {
        self.padded
    }

    /// Quantizes block `b` of output `j` from up to 32 values (zero-padded).
    pub fn set_block(&mut self, j: usize, b: usize, values: &[f32]) {
        let mut block = [0f32; BLOCK];
        block[..values.len()].copy_from_slice(values);
        let at = j * (self.padded / BLOCK) + b;
        let bytes = self.format.block_bytes();
        self.scales[at] = self
            .format
            .quantize_block(&block, &mut self.quants[at * bytes..(at + 1) * bytes]);
    }

    /// Quantizes output `j`'s weights (`inputs` values).
    pub fn set_row(&mut self, j: usize, row: &[f32]) {
        for (b, chunk) in row.chunks(BLOCK).enumerate() {
            self.set_block(j, b, chunk);
        }
    }

    /// Output `j`'s blocks as GGUF stores them (`[f16 scale][values]`, `2 + block_bytes` each).
    pub fn set_gguf_row(&mut self, j: usize, raw: &[u8]) {
        let per_row = self.padded / BLOCK;
        let bytes = self.format.block_bytes();
        for (b, block) in raw.chunks_exact(2 + bytes).take(per_row).enumerate() {
            let at = j * per_row + b;
            self.scales[at] = f16::from_le_bytes([block[0], block[1]]);
            self.quants[at * bytes..(at + 1) * bytes].copy_from_slice(&block[2..]);
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.quants.len() + 2 * self.scales.len()
    }

    /// Output `j`'s weights dequantized into `out` (the first `out.len()` inputs).
    pub fn row_into(&self, j: usize, out: &mut [f32]) {
        let per_row = self.padded / BLOCK;
        let bytes = self.format.block_bytes();
        for (b, chunk) in out.chunks_mut(BLOCK).enumerate() {
            let at = j * per_row + b;
            let d = self.scales[at].to_f32();
            let q = self.format.unpack(&self.quants[at * bytes..(at + 1) * bytes]);
            for (o, &v) in chunk.iter_mut().zip(&q) {
                *o = d * v as f32;
            }
        }
    }

    /// The quantized bytes of output `j` and its scales.
    fn row(&self, j: usize) -> (&[u8], &[f16]) {
        let per_row = self.padded / BLOCK;
        let bytes = per_row * self.format.block_bytes();
        (
            &self.quants[j * bytes..(j + 1) * bytes],
            &self.scales[j * per_row..(j + 1) * per_row],
        )
    }

    /// The blocks of output `j` as `(scale, values)` (for tests comparing with other quantizers).
    #[cfg(test)]
    pub fn blocks(&self, j: usize) -> impl Iterator<Item = (f16, [i8; BLOCK])> + '_ {
        let (quants, scales) = self.row(j);
        scales
            .iter()
            .zip(quants.chunks_exact(self.format.block_bytes()))
            .map(|(&d, q)| (d, self.format.unpack(q)))
    }

    /// Whether a q8_0 matrix holds −128, which llama.cpp's quantizers never write and which the
    /// SIMD kernels' sign trick cannot negate.
    pub fn has_q8_min(&self) -> bool {
        self.format == Format::Q8_0 && self.quants.iter().any(|&b| b == 0x80)
    }
}

/// Activation rows quantized to q8_0 (scales kept in f32), in the forms the kernels read.
pub struct QuantRows {
    padded: usize,
    /// `[rows][padded]`.
    values: Vec<i8>,
    /// `|values|` (the unsigned operand of the `u8 × i8` products).
    magnitudes: Vec<u8>,
    /// `[rows][padded / 32]`.
    scales: Vec<f32>,
}

impl QuantRows {
    /// `x` is `[rows][inputs]`; each row is padded with zeros to `padded`.
    pub fn new(x: &[f32], rows: usize, inputs: usize, padded: usize) -> Self {
        let blocks = padded / BLOCK;
        let mut values = vec![0i8; rows * padded];
        let mut scales = vec![0f32; rows * blocks];
        for r in 0..rows {
            let row = &x[r * inputs..(r + 1) * inputs];
            for (b, chunk) in row.chunks(BLOCK).enumerate() {
                let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let out = &mut values[r * padded + b * BLOCK..];
                for (q, &v) in out.iter_mut().zip(chunk) {
                    *q = (v * id).round() as i8;
                }
                scales[r * blocks + b] = d;
            }
        }
        let magnitudes = values.iter().map(|v| v.unsigned_abs()).collect();
        QuantRows {
            padded,
            values,
            magnitudes,
            scales,
        }
    }

    fn row(&self, r: usize) -> Row<'_> {
        let blocks = self.padded / BLOCK;
        Row {
            values: &self.values[r * self.padded..(r + 1) * self.padded],
            magnitudes: &self.magnitudes[r * self.padded..(r + 1) * self.padded],
            scales: &self.scales[r * blocks..(r + 1) * blocks],
        }
    }
}

/// One activation row.
#[derive(Clone, Copy)]
struct Row<'a> {
    values: &'a [i8],
    magnitudes: &'a [u8],
    scales: &'a [f32],
}

/// The dot-product kernels, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512 VNNI's `dpbusd` on 256-bit vectors.
    Vnni,
    /// AVX2's `maddubs` + `madd`.
    Avx2,
    /// Plain Rust: the reference.
    Portable,
}

impl Kernel {
    /// The best kernel this CPU runs.
    pub fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
            {
                return Kernel::Vnni;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    /// Every kernel this CPU runs (for tests).
    #[cfg(test)]
    pub fn available() -> Vec<Kernel> {
        let best = Kernel::detect();
        [Kernel::Vnni, Kernel::Avx2, Kernel::Portable]
            .into_iter()
            .filter(|&k| k >= best)
            .collect()
    }
}

impl PartialOrd for Kernel {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Kernel {
    /// Best first: `Vnni < Avx2 < Portable`.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (*self as u8).cmp(&(*other as u8))
    }
}

/// Rows that share each weight load.
const GROUP: usize = 4;

/// `out[r][c] = Σ_k x[r][k] · w[first + c][k]` for `c < width` (out rows `stride` apart).
pub fn product(
    kernel: Kernel,
    w: &QuantMatrix,
    first: usize,
    width: usize,
    x: &QuantRows,
    rows: usize,
    out: &mut [f32],
    stride: usize,
) {
    let blocks = w.padded / BLOCK;
    let mut scales = vec![0f32; blocks];
    for c in 0..width {
        let (quants, wd) = w.row(first + c);
        wd.convert_to_f32_slice(&mut scales);
        let mut r = 0;
        while r < rows {
            let n = GROUP.min(rows - r);
            let mut xs = [x.row(r); GROUP];
            for (i, slot) in xs.iter_mut().enumerate().take(n) {
                *slot = x.row(r + i);
            }
            let sums = dot(kernel, w.format, quants, &scales, &xs[..n]);
            for (i, s) in sums.iter().enumerate().take(n) {
                out[(r + i) * stride + c] = *s;
            }
            r += n;
        }
    }
}

/// Up to [`GROUP`] rows' dot products with one weight row.
#[inline]
fn dot(kernel: Kernel, format: Format, w: &[u8], wd: &[f32], xs: &[Row]) -> [f32; GROUP] {
    #[cfg(target_arch = "x86_64")]
    {
        match kernel {
            // SAFETY: `Kernel::detect` found these features.
            Kernel::Vnni => return unsafe { x86::dot_vnni(format, w, wd, xs) },
            // SAFETY: as above.
            Kernel::Avx2 => return unsafe { x86::dot_avx2(format, w, wd, xs) },
            Kernel::Portable => {}
        }
    }
    let _ = kernel;
    dot_portable(format, w, wd, xs)
}

/// The reference: exact integer sums per block, then `acc += (d_w · d_x) · sum`.
fn dot_portable(format: Format, w: &[u8], wd: &[f32], xs: &[Row]) -> [f32; GROUP] {
    let bytes = format.block_bytes();
    let mut acc = [0f32; GROUP];
    for (b, &d) in wd.iter().enumerate() {
        let q = format.unpack(&w[b * bytes..(b + 1) * bytes]);
        for (a, x) in acc.iter_mut().zip(xs) {
            let xv = &x.values[b * BLOCK..(b + 1) * BLOCK];
            let sum: i32 = q.iter().zip(xv).map(|(&w, &x)| w as i32 * x as i32).sum();
            *a += d * x.scales[b] * sum as f32;
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{BLOCK, Format, GROUP, Row};

    /// The 32 weights of block `b` as `i8` lanes.
    #[inline(always)]
    unsafe fn load_block(format: Format, w: *const u8, b: usize) -> __m256i {
        unsafe {
            match format {
                Format::Q8_0 => _mm256_loadu_si256(w.add(b * BLOCK) as *const __m256i),
                Format::Q4_0 => {
                    let raw = _mm_loadu_si128(w.add(b * BLOCK / 2) as *const __m128i);
                    let low = _mm256_set1_epi8(0x0f);
                    let nibbles = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
                    _mm256_sub_epi8(_mm256_and_si256(nibbles, low), _mm256_set1_epi8(8))
                }
            }
        }
    }

    /// Sum of the eight lanes.
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }
    }

    /// The shared loop: `products(|x|, w·sign(x))` gives eight `i32` partial sums of a block.
    #[inline(always)]
    unsafe fn dot_with(
        format: Format,
        w: &[u8],
        wd: &[f32],
        xs: &[Row],
        products: impl Fn(__m256i, __m256i) -> __m256i,
    ) -> [f32; GROUP] {
        unsafe {
            let mut acc = [_mm256_setzero_ps(); GROUP];
            let n = xs.len().min(GROUP);
            for (b, &d) in wd.iter().enumerate() {
                let q = load_block(format, w.as_ptr(), b);
                for r in 0..n {
                    let x = &xs[r];
                    let xv = _mm256_loadu_si256(x.values.as_ptr().add(b * BLOCK) as *const __m256i);
                    let xm =
                        _mm256_loadu_si256(x.magnitudes.as_ptr().add(b * BLOCK) as *const __m256i);
                    let sums = products(xm, _mm256_sign_epi8(q, xv));
                    let scale = _mm256_set1_ps(d * *x.scales.get_unchecked(b));
                    acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc[r]);
                }
            }
            let mut out = [0f32; GROUP];
            for r in 0..n {
                out[r] = hsum(acc[r]);
            }
            out
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_avx2(format: Format, w: &[u8], wd: &[f32], xs: &[Row]) -> [f32; GROUP] {
        assert!(w.len() >= wd.len() * format.block_bytes());
        assert!(xs.iter().all(|x| x.values.len() >= wd.len() * BLOCK
            && x.magnitudes.len() >= wd.len() * BLOCK
            && x.scales.len() >= wd.len()));
        let ones = _mm256_set1_epi16(1);
        unsafe {
            dot_with(format, w, wd, xs, |xm, qs| {
                _mm256_madd_epi16(_mm256_maddubs_epi16(xm, qs), ones)
            })
        }
    }

    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    pub unsafe fn dot_vnni(format: Format, w: &[u8], wd: &[f32], xs: &[Row]) -> [f32; GROUP] {
        assert!(w.len() >= wd.len() * format.block_bytes());
        assert!(xs.iter().all(|x| x.values.len() >= wd.len() * BLOCK
            && x.magnitudes.len() >= wd.len() * BLOCK
            && x.scales.len() >= wd.len()));
        unsafe {
            dot_with(format, w, wd, xs, |xm, qs| {
                _mm256_dpbusd_epi32(_mm256_setzero_si256(), xm, qs)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// test-quantize-fns' synthetic data: `0.1 + 2·cos(i + offset)`.
    fn synthetic(n: usize, offset: f32) -> Vec<f32> {
        (0..n).map(|i| 0.1 + 2.0 * (i as f32 + offset).cos()).collect()
    }

    /// test-quantize-fns' `array_rmse`: √(Σ diff²) / n.
    fn array_rmse(a: &[f32], b: &[f32]) -> f32 {
        let s: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        s.sqrt() as f32 / a.len() as f32
    }

    /// Round trip and dot product within llama.cpp's own bounds, measured as test-quantize-fns
    /// measures them (its data, its size, its error formulas): total quantization error < 0.002,
    /// dot-product error < 0.02.
    #[test]
    fn errors_within_test_quantize_fns_bounds() {
        let n = 32 * 128;
        let x = synthetic(n, 0.0);
        let y = synthetic(n, 1.0);
        for format in [Format::Q8_0, Format::Q4_0] {
            let mut m = QuantMatrix::zeroed(format, 1, n);
            m.set_row(0, &x);
            let mut back = vec![0f32; n];
            m.row_into(0, &mut back);
            let e = array_rmse(&x, &back);
            assert!(e < 0.002, "{format:?}: total quantization error {e}");
            let exact: f64 = x.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
            let yq = QuantRows::new(&y, 1, n, n);
            for kernel in Kernel::available() {
                let mut got = [0f32];
                product(kernel, &m, 0, 1, &yq, 1, &mut got, 1);
                let e = (got[0] as f64 - exact).abs() / n as f64;
                assert!(e < 0.02, "{format:?} {kernel:?}: dot product error {e}");
            }
            // Per value: within half a step (q8_0) or one step (q4_0's asymmetric grid), plus the
            // scale's own f16 rounding (2^-11 relative) times the largest value, 127 or 8.
            for (b, (d, _)) in m.blocks(0).enumerate() {
                let step = d.to_f32().abs();
                for i in 0..BLOCK {
                    let err = (x[b * BLOCK + i] - back[b * BLOCK + i]).abs();
                    let tol = match format {
                        Format::Q8_0 => 0.5 + 127.0 / 2048.0,
                        Format::Q4_0 => 1.0 + 8.0 / 2048.0,
                    };
                    assert!(err <= step * tol + 1e-7, "{format:?} {b}/{i}: {err}");
                }
            }
        }
    }

    /// ggml's reference formulas, written out on known values.
    #[test]
    fn quantizers_match_ggml_reference_on_known_blocks() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 12.0).collect(); // -12..19
        let mut q = [0u8; 32];
        let d = quantize_q8_0(&x, &mut q);
        assert_eq!(d, f16::from_f32(19.0 / 127.0));
        let id = 1.0 / (19.0f32 / 127.0);
        for i in 0..32 {
            assert_eq!(q[i] as i8, (x[i] * id).round() as i8);
        }
        assert_eq!(q[31] as i8, 127);
        let d = quantize_q4_0(&x, &mut q[..16]);
        // The largest magnitude is 19 (positive): d = 19 / −8, and 19 maps to nibble 0.
        assert_eq!(d, f16::from_f32(19.0 / -8.0));
        let vals = Format::Q4_0.unpack(&q[..16]);
        assert_eq!(vals[31], -8);
        assert_eq!(vals[12], 0); // x = 0
        // An all-zero block: scale 0, values 0 (q8_0) or the offset (q4_0, nibble 8).
        let z = [0f32; 32];
        assert_eq!(quantize_q8_0(&z, &mut q), f16::ZERO);
        assert!(q.iter().all(|&b| b == 0));
        assert_eq!(quantize_q4_0(&z, &mut q[..16]), f16::from_f32(-0.0));
        assert!(q[..16].iter().all(|&b| b == 0x88));
    }

    fn matrix(format: Format, outputs: usize, inputs: usize) -> (QuantMatrix, Vec<f32>) {
        let mut m = QuantMatrix::zeroed(format, outputs, inputs);
        let mut dense = Vec::with_capacity(outputs * inputs);
        for j in 0..outputs {
            let row = synthetic(inputs, j as f32 * 0.37);
            m.set_row(j, &row);
            let mut back = vec![0f32; inputs];
            m.row_into(j, &mut back);
            dense.extend(back);
        }
        (m, dense)
    }

    /// Every kernel this CPU has gives the portable kernel's products, for both formats, every
    /// row-group remainder and a width that is not a whole block (padded).
    #[test]
    fn every_kernel_matches_the_portable_one() {
        let kernels = Kernel::available();
        eprintln!("q8_0/q4_0 kernels tested here: {kernels:?}");
        for format in [Format::Q8_0, Format::Q4_0] {
            for inputs in [32, 100, 768] {
                let outputs = 13;
                let (m, _) = matrix(format, outputs, inputs);
                for rows in [1, 2, 3, 4, 5, 7, 9] {
                    let x: Vec<f32> = (0..rows * inputs)
                        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                        .collect();
                    let xq = QuantRows::new(&x, rows, inputs, m.padded_inputs());
                    let mut want = vec![0f32; rows * outputs];
                    product(Kernel::Portable, &m, 0, outputs, &xq, rows, &mut want, outputs);
                    for &k in &kernels {
                        let mut got = vec![0f32; rows * outputs];
                        product(k, &m, 0, outputs, &xq, rows, &mut got, outputs);
                        for (g, w) in got.iter().zip(&want) {
                            // Sums of the same block products in another order: f32 rounding
                            // grows with the number of blocks.
                            assert!(
                                (g - w).abs() <= 1e-6 * inputs as f32 * w.abs().max(1.0),
                                "{k:?} {format:?} {inputs}×{rows}: {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The quantized product is close to the f32 product of the dequantized weights (the error
    /// is the activations' q8_0 rounding): llama.cpp's dot-product bound, 0.02 per value.
    #[test]
    fn products_close_to_the_dequantized_f32_product() {
        let (inputs, outputs, rows) = (256, 8, 3);
        for format in [Format::Q8_0, Format::Q4_0] {
            let (m, dense) = matrix(format, outputs, inputs);
            let x = synthetic(rows * inputs, 1.5);
            let xq = QuantRows::new(&x, rows, inputs, m.padded_inputs());
            let mut got = vec![0f32; rows * outputs];
            product(Kernel::detect(), &m, 0, outputs, &xq, rows, &mut got, outputs);
            for r in 0..rows {
                for j in 0..outputs {
                    let want: f32 = (0..inputs)
                        .map(|k| x[r * inputs + k] * dense[j * inputs + k])
                        .sum();
                    let err = (got[r * outputs + j] - want).abs() / inputs as f32;
                    assert!(err < 0.02, "{format:?} [{r}][{j}]: {err}");
                }
            }
        }
    }

    #[test]
    fn gguf_blocks_read_back_as_pushed() {
        let (m, _) = matrix(Format::Q4_0, 2, 64);
        let mut back = QuantMatrix::zeroed(Format::Q4_0, 2, 64);
        for j in 0..2 {
            let mut raw = Vec::new();
            let (quants, scales) = m.row(j);
            for (b, d) in scales.iter().enumerate() {
                raw.extend_from_slice(&d.to_le_bytes());
                raw.extend_from_slice(&quants[b * 16..(b + 1) * 16]);
            }
            back.set_gguf_row(j, &raw);
        }
        assert_eq!(back.quants, m.quants);
        assert_eq!(back.scales, m.scales);
    }
}
