//! q8_0 and q4_0 weights: llama.cpp's block formats, and the integer dot products that read them.
//!
//! A block is 32 consecutive weights of one output (along the inputs) with one f16 scale `d`:
//! q8_0 keeps 32 `i8` (`w = d·q`, 8.5 bits a weight), q4_0 16 bytes of nibbles (`w = d·(q − 8)`;
//! byte `i` holds weight `i` in its low nibble and weight `i + 16` in its high one: 4.5 bits a
//! weight). Quantizing follows ggml's reference code (`quantize_row_q8_0_ref`,
//! `quantize_row_q4_0_ref`) operation for operation, so a checkpoint quantized here holds the same
//! bits as llama.cpp's converter and `llama-quantize` write.
//!
//! Products quantize each activation row to q8_0 as well (per block, an f32 scale, and the block's
//! sum) and add `u8 × i8` products in integers, block by block, sixteen outputs at a time
//! ([`QuantMatrix`]'s panels): the weights are the unsigned operand (q8_0 offset by 128, q4_0's
//! nibbles as stored) and the offset comes back out through the activation block's sum. Kernels:
//! AVX-512 VNNI `vpdpbusd` on 512-bit vectors, AVX-VNNI on 256, AVX2 `maddubs`/`madd`, and a
//! portable loop that is the reference for all of them.

use half::f16;

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

/// Outputs per panel: the SIMD kernels compute sixteen outputs at once, one per 32-bit lane of a
/// 512-bit vector (two 256-bit halves of eight with AVX2).
pub const PANEL: usize = 16;

/// 64 bytes on a cache line of their own (the panels' storage unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A quantized matrix, one row per output and blocks along the inputs (GGUF's layout for a linear
/// layer's weight), held as panels of [`PANEL`] outputs with their blocks interleaved.
///
/// Panel `p` holds outputs `16p..16p + 16` (the last one is padded with zero outputs). Its block
/// `b` is 16 scales and `16 · block_bytes` bytes of values: 64-byte line `l` holds, at byte
/// `4c + i`, output `16p + c`'s weight `4l + i` of the block (q8_0), or its weights `8l + i`
/// (low nibble) and `8l + 4 + i` (high nibble) (q4_0). A 512-bit load is then four consecutive
/// weights of sixteen outputs, the `u8` operand of `dpbusd` against four activations broadcast to
/// every lane: the lanes sum whole blocks without any shuffle. The bytes per weight are GGUF's.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantMatrix {
    format: Format,
    outputs: usize,
    /// Inputs rounded up to a whole block (the padding weights are zero).
    padded: usize,
    /// `[panels][padded / 32][PANEL · block_bytes / 64]`.
    quants: Vec<Line>,
    /// `[panels][padded / 32][PANEL]`.
    scales: Vec<f16>,
}

impl QuantMatrix {
    /// A zero matrix of `outputs × inputs`, to be filled with [`QuantMatrix::set_row`],
    /// [`QuantMatrix::set_block`] or [`QuantMatrix::set_gguf_row`].
    pub fn zeroed(format: Format, outputs: usize, inputs: usize) -> Self {
        let padded = inputs.div_ceil(BLOCK) * BLOCK;
        let blocks = outputs.div_ceil(PANEL) * (padded / BLOCK);
        QuantMatrix {
            format,
            outputs,
            padded,
            quants: vec![Line([0; 64]); blocks * format.block_bytes() * PANEL / 64],
            scales: vec![f16::ZERO; blocks * PANEL],
        }
    }

    /// Inputs rounded up to a whole block.
    pub fn padded_inputs(&self) -> usize {
        self.padded
    }

    fn block_count(&self) -> usize {
        self.padded / BLOCK
    }

    /// Bytes of values in one panel's block.
    fn panel_block_bytes(&self) -> usize {
        PANEL * self.format.block_bytes()
    }

    fn quant_bytes(&self) -> &[u8] {
        // SAFETY: `Line` is 64 plain bytes (`repr(C)`, no padding).
        unsafe { std::slice::from_raw_parts(self.quants.as_ptr().cast(), self.quants.len() * 64) }
    }

    fn quant_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `quant_bytes`.
        unsafe {
            std::slice::from_raw_parts_mut(self.quants.as_mut_ptr().cast(), self.quants.len() * 64)
        }
    }

    /// Where block `b` of output `j` lives: its panel block's first byte and scale, and the lane.
    fn place(&self, j: usize, b: usize) -> (usize, usize, usize) {
        let at = (j / PANEL) * self.block_count() + b;
        (
            at * self.panel_block_bytes(),
            at * PANEL + j % PANEL,
            j % PANEL,
        )
    }

    /// Stores block `b` of output `j`, given in GGUF's layout (`block_bytes` of `q`).
    fn store_block(&mut self, j: usize, b: usize, d: f16, q: &[u8]) {
        let (base, s, c) = self.place(j, b);
        self.scales[s] = d;
        let format = self.format;
        let bytes = &mut self.quant_bytes_mut()[base..base + PANEL * format.block_bytes()];
        match format {
            Format::Q8_0 => {
                for (k, &v) in q.iter().enumerate().take(BLOCK) {
                    bytes[(k / 4) * 64 + 4 * c + k % 4] = v;
                }
            }
            Format::Q4_0 => {
                let nibble = |k: usize| {
                    if k < BLOCK / 2 {
                        q[k] & 0x0f
                    } else {
                        q[k - BLOCK / 2] >> 4
                    }
                };
                for l in 0..4 {
                    for i in 0..4 {
                        bytes[l * 64 + 4 * c + i] =
                            nibble(8 * l + i) | (nibble(8 * l + 4 + i) << 4);
                    }
                }
            }
        }
    }

    /// Block `b` of output `j` in GGUF's layout (the first `block_bytes` of the array).
    fn load_block(&self, j: usize, b: usize) -> (f16, [u8; BLOCK]) {
        let (base, s, c) = self.place(j, b);
        let bytes = &self.quant_bytes()[base..base + self.panel_block_bytes()];
        let mut q = [0u8; BLOCK];
        match self.format {
            Format::Q8_0 => {
                for (k, v) in q.iter_mut().enumerate() {
                    *v = bytes[(k / 4) * 64 + 4 * c + k % 4];
                }
            }
            Format::Q4_0 => {
                for l in 0..4 {
                    for i in 0..4 {
                        let v = bytes[l * 64 + 4 * c + i];
                        for (k, n) in [(8 * l + i, v & 0x0f), (8 * l + 4 + i, v >> 4)] {
                            if k < BLOCK / 2 {
                                q[k] |= n;
                            } else {
                                q[k - BLOCK / 2] |= n << 4;
                            }
                        }
                    }
                }
            }
        }
        (self.scales[s], q)
    }

    /// Quantizes block `b` of output `j` from up to 32 values (zero-padded).
    pub fn set_block(&mut self, j: usize, b: usize, values: &[f32]) {
        let mut block = [0f32; BLOCK];
        block[..values.len()].copy_from_slice(values);
        let mut q = [0u8; BLOCK];
        let bytes = self.format.block_bytes();
        let d = self.format.quantize_block(&block, &mut q[..bytes]);
        self.store_block(j, b, d, &q[..bytes]);
    }

    /// Quantizes output `j`'s weights (`inputs` values).
    pub fn set_row(&mut self, j: usize, row: &[f32]) {
        for (b, chunk) in row.chunks(BLOCK).enumerate() {
            self.set_block(j, b, chunk);
        }
    }

    /// Output `j`'s blocks as GGUF stores them (`[f16 scale][values]`, `2 + block_bytes` each).
    pub fn set_gguf_row(&mut self, j: usize, raw: &[u8]) {
        let bytes = self.format.block_bytes();
        for (b, block) in raw
            .chunks_exact(2 + bytes)
            .take(self.block_count())
            .enumerate()
        {
            self.store_block(j, b, f16::from_le_bytes([block[0], block[1]]), &block[2..]);
        }
    }

    /// Whether every block scale is finite (quantizing a weight beyond f16's range gives +∞).
    pub fn scales_finite(&self) -> bool {
        self.scales.iter().all(|d| d.is_finite())
    }

    /// The block format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Bytes held (the last panel's padding outputs included).
    pub fn bytes(&self) -> usize {
        self.quants.len() * 64 + 2 * self.scales.len()
    }

    /// Output `j`'s weights dequantized into `out` (the first `out.len()` inputs).
    pub fn row_into(&self, j: usize, out: &mut [f32]) {
        for (b, chunk) in out.chunks_mut(BLOCK).enumerate() {
            let (d, q) = self.load_block(j, b);
            let d = d.to_f32();
            let q = self.format.unpack(&q[..self.format.block_bytes()]);
            for (o, &v) in chunk.iter_mut().zip(&q) {
                *o = d * v as f32;
            }
        }
    }

    /// The blocks of output `j` as `(scale, values)` (for tests comparing with other quantizers).
    #[cfg(test)]
    pub fn blocks(&self, j: usize) -> impl Iterator<Item = (f16, [i8; BLOCK])> + '_ {
        (0..self.block_count()).map(move |b| {
            let (d, q) = self.load_block(j, b);
            (d, self.format.unpack(&q[..self.format.block_bytes()]))
        })
    }
}

/// Activation rows quantized to q8_0 (scales kept in f32), in the forms the kernels read.
pub struct QuantRows {
    rows: usize,
    padded: usize,
    /// `[rows][padded]`.
    values: Vec<i8>,
    /// `[rows][padded / 32]`.
    scales: Vec<f32>,
    /// `[rows][padded / 32]`: each block's `Σ values` (the kernels take the weights as unsigned,
    /// `w + 128` or q4_0's nibble `w + 8`, and subtract `128 · Σx` or `8 · Σx` per block).
    sums: Vec<i32>,
}

impl QuantRows {
    /// `x` is `[rows][inputs]`; each row is padded with zeros to `padded`.
    pub fn new(x: &[f32], rows: usize, inputs: usize, padded: usize) -> Self {
        let blocks = padded / BLOCK;
        let mut values = vec![0i8; rows * padded];
        let mut scales = vec![0f32; rows * blocks];
        let mut sums = vec![0i32; rows * blocks];
        #[cfg(target_arch = "x86_64")]
        let simd = super::cpu::level() >= super::cpu::Simd::Avx2;
        for r in 0..rows {
            let row = &x[r * inputs..(r + 1) * inputs];
            for (b, chunk) in row.chunks(BLOCK).enumerate() {
                #[cfg(target_arch = "x86_64")]
                if simd && chunk.len() == BLOCK {
                    let at = r * blocks + b;
                    let out = &mut values[r * padded + b * BLOCK..][..BLOCK];
                    // SAFETY: the CPU has AVX2; `chunk` and `out` are whole blocks.
                    (scales[at], sums[at]) = unsafe { x86::quantize_block(chunk, out) };
                    continue;
                }
                let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let out = &mut values[r * padded + b * BLOCK..];
                let mut sum = 0i32;
                for (q, &v) in out.iter_mut().zip(chunk) {
                    *q = round_half_away(v * id) as i8;
                    sum += *q as i32;
                }
                scales[r * blocks + b] = d;
                sums[r * blocks + b] = sum;
            }
        }
        QuantRows {
            rows,
            padded,
            values,
            scales,
            sums,
        }
    }
}

/// C's `roundf` (half away from zero) without a libm call: `v − trunc(v)` is exact.
#[inline(always)]
fn round_half_away(v: f32) -> f32 {
    let t = v.trunc();
    if (v - t).abs() >= 0.5 {
        t + 1f32.copysign(v)
    } else {
        t
    }
}

/// The dot-product kernels, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512 VNNI's `dpbusd` on 512-bit vectors: a panel of sixteen outputs per vector.
    Avx512Vnni,
    /// AVX-VNNI's `dpbusd` on 256-bit vectors.
    AvxVnni,
    /// AVX2's `maddubs` + `madd`.
    Avx2,
    /// Plain Rust: the reference.
    Portable,
}

impl Kernel {
    const ALL: [Kernel; 4] = [
        Kernel::Avx512Vnni,
        Kernel::AvxVnni,
        Kernel::Avx2,
        Kernel::Portable,
    ];

    /// Whether this CPU runs the kernel.
    fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            match self {
                Kernel::Avx512Vnni => {
                    is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("avx512vnni")
                }
                Kernel::AvxVnni => avx2 && is_x86_feature_detected!("avxvnni"),
                Kernel::Avx2 => avx2,
                Kernel::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Kernel::Portable
        }
    }

    /// The best kernel this CPU runs (no better than `DECODE_SIMD` allows: `avx2` leaves the
    /// AVX2 kernel, `portable` the portable one).
    pub fn detect() -> Kernel {
        let ceiling = match super::cpu::cap() {
            Some(super::cpu::Simd::Portable) => Kernel::Portable,
            Some(super::cpu::Simd::Avx2) => Kernel::Avx2,
            _ => Kernel::Avx512Vnni,
        };
        Kernel::ALL
            .into_iter()
            .filter(|&k| k >= ceiling)
            .find(|k| k.supported())
            .unwrap_or(Kernel::Portable)
    }

    /// Every kernel this CPU runs (for tests).
    #[cfg(test)]
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL.into_iter().filter(|k| k.supported()).collect()
    }
}

impl PartialOrd for Kernel {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Kernel {
    /// Best first: `Avx512Vnni < AvxVnni < Avx2 < Portable`.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (*self as u8).cmp(&(*other as u8))
    }
}

/// `out[r][c] = Σ_k x[r][k] · w[first + c][k]` for `c < width` (out rows `stride` apart).
#[allow(clippy::too_many_arguments)]
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
    assert!(
        first + width <= w.outputs,
        "columns {first}+{width} of {}",
        w.outputs
    );
    assert!(
        rows <= x.rows && x.padded == w.padded,
        "activations do not fit the weights"
    );
    assert!(
        rows == 0 || out.len() >= (rows - 1) * stride + width,
        "output too short"
    );
    assert!(
        width <= stride || rows <= 1,
        "stride {stride} < width {width}"
    );
    if width == 0 || rows == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let job = Job {
            w,
            first,
            width,
            x,
            rows,
            out: out.as_mut_ptr(),
            stride,
        };
        assert!(
            kernel.supported(),
            "{kernel:?} is not supported on this CPU"
        );
        match kernel {
            // SAFETY: `supported` checked the features; `job`'s bounds were checked above.
            Kernel::Avx512Vnni => return unsafe { x86::product_avx512(&job) },
            // SAFETY: as above.
            Kernel::AvxVnni => return unsafe { x86::product_avxvnni(&job) },
            // SAFETY: as above.
            Kernel::Avx2 => return unsafe { x86::product_avx2(&job) },
            Kernel::Portable => {}
        }
    }
    product_portable(w, first, width, x, rows, out, stride);
}

/// One product's operands (bounds checked by [`product`]).
#[cfg(target_arch = "x86_64")]
struct Job<'a> {
    w: &'a QuantMatrix,
    first: usize,
    width: usize,
    x: &'a QuantRows,
    rows: usize,
    out: *mut f32,
    stride: usize,
}

/// The reference: exact integer sums per block, then `acc += (d_w · d_x) · sum`.
fn product_portable(
    w: &QuantMatrix,
    first: usize,
    width: usize,
    x: &QuantRows,
    rows: usize,
    out: &mut [f32],
    stride: usize,
) {
    let blocks = w.block_count();
    let mut acc = vec![0f32; rows];
    for c in 0..width {
        acc.fill(0.0);
        for b in 0..blocks {
            let (d, q) = w.load_block(first + c, b);
            let d = d.to_f32();
            let q = w.format.unpack(&q[..w.format.block_bytes()]);
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = &x.values[r * x.padded + b * BLOCK..][..BLOCK];
                let sum: i32 = q.iter().zip(xv).map(|(&w, &x)| w as i32 * x as i32).sum();
                *a += d * x.scales[r * blocks + b] * sum as f32;
            }
        }
        for (r, a) in acc.iter().enumerate() {
            out[r * stride + c] = *a;
        }
    }
}

#[cfg(target_arch = "x86_64")]
// The kernels index several per-row and per-panel register arrays with one counter.
#[allow(clippy::needless_range_loop)]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::{BLOCK, Format, Job, PANEL};

    /// [`super::QuantRows::new`]'s quantizer for one whole block, the same operations as the
    /// scalar code (`round` as `trunc` plus one away from zero when the fraction is ≥ ½, exact):
    /// returns the scale and `Σ q`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
        assert!(x.len() >= BLOCK && q.len() >= BLOCK);
        unsafe {
            let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
            let sign = _mm256_set1_ps(-0.0);
            let a = v.map(|v| _mm256_andnot_ps(sign, v));
            let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
            let d = _mm_cvtss_f32(m) / 127.0;
            let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
            let (half, one) = (_mm256_set1_ps(0.5), _mm256_set1_ps(1.0));
            let i = v.map(|v| {
                let p = _mm256_mul_ps(v, id);
                let t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
                let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(p, t));
                let away = _mm256_or_ps(_mm256_and_ps(p, sign), one);
                let up = _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ), away);
                _mm256_cvttps_epi32(_mm256_add_ps(t, up))
            });
            let s = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
            let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
            let p01 = _mm256_packs_epi32(i[0], i[1]);
            let p23 = _mm256_packs_epi32(i[2], i[3]);
            let bytes = _mm256_permutevar8x32_epi32(
                _mm256_packs_epi16(p01, p23),
                _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
            );
            _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, bytes);
            (d, _mm_cvtsi128_si32(s))
        }
    }

    impl Job<'_> {
        fn panels(&self) -> (usize, usize) {
            (
                self.first / PANEL,
                (self.first + self.width).div_ceil(PANEL),
            )
        }

        /// Writes row `r`'s outputs of panel `p` (sixteen lanes in `lanes`).
        #[inline(always)]
        unsafe fn store(&self, r: usize, p: usize, lanes: &[f32; PANEL]) {
            let c0 = p * PANEL;
            let lo = c0.max(self.first);
            let hi = (c0 + PANEL).min(self.first + self.width);
            unsafe {
                let dst = self.out.add(r * self.stride + lo - self.first);
                std::ptr::copy_nonoverlapping(lanes.as_ptr().add(lo - c0), dst, hi - lo);
            }
        }
    }

    impl Job<'_> {
        /// Writes row `r`'s outputs of half-panel `g` (outputs `8g..8g + 8`, in `lanes`).
        #[inline(always)]
        unsafe fn store_half(&self, r: usize, g: usize, lanes: &[f32; PANEL / 2]) {
            let c0 = g * PANEL / 2;
            let lo = c0.max(self.first);
            let hi = (c0 + PANEL / 2).min(self.first + self.width);
            if lo < hi {
                unsafe {
                    let dst = self.out.add(r * self.stride + lo - self.first);
                    std::ptr::copy_nonoverlapping(lanes.as_ptr().add(lo - c0), dst, hi - lo);
                }
            }
        }
    }

    /// `-(Σx << shift)` for row `r`, block `b`: the offset's correction.
    #[inline(always)]
    unsafe fn correction(job: &Job, r: usize, b: usize, shift: u32) -> i32 {
        let blocks = job.w.padded / BLOCK;
        unsafe { -(*job.x.sums.get_unchecked(r * blocks + b) << shift) }
    }

    #[inline(always)]
    unsafe fn x_scale(job: &Job, r: usize, b: usize) -> f32 {
        let blocks = job.w.padded / BLOCK;
        unsafe { *job.x.scales.get_unchecked(r * blocks + b) }
    }

    /// Four activations of row `r` from input `k`, as one `i32`.
    #[inline(always)]
    unsafe fn x4(job: &Job, r: usize, k: usize) -> i32 {
        unsafe { (job.x.values.as_ptr().add(r * job.x.padded + k) as *const i32).read_unaligned() }
    }

    // ---------------------------------------------------------------- 512-bit: AVX-512 VNNI

    /// How far ahead (in blocks of each panel) multi-row kernels prefetch the weights: 8 measured
    /// best of 2, 4, 8 and 16 (4 KiB of q8_0 ahead).
    const PREFETCH_BLOCKS: usize = 8;

    /// `R` rows × `P` panels from panel `p0`, row `r0`: sixteen lanes per panel.
    #[inline(always)]
    unsafe fn tile512<const R: usize, const P: usize, const Q4: bool>(
        job: &Job,
        p0: usize,
        r0: usize,
    ) {
        unsafe {
            let w = job.w;
            let blocks = w.padded / BLOCK;
            let pb = w.panel_block_bytes();
            let quants = w.quant_bytes().as_ptr().add(p0 * blocks * pb);
            let scales = w.scales.as_ptr().add(p0 * blocks * PANEL);
            let shift = if Q4 { 3 } else { 7 };
            let mut acc = [[_mm512_setzero_ps(); P]; R];
            // One row streams at memory speed on the hardware prefetcher alone (measured: asking
            // for more only slows it); several rows compute long enough per line to fall behind.
            let ahead = if R > 1 { PREFETCH_BLOCKS } else { 0 };
            for b in 0..blocks {
                if ahead > 0 {
                    for p in 0..P {
                        let at = (p * blocks + b + ahead) * pb;
                        for l in (0..pb).step_by(64) {
                            _mm_prefetch::<_MM_HINT_T0>(quants.wrapping_add(at + l) as *const i8);
                        }
                        if b % 2 == 0 {
                            let s = scales.wrapping_add((p * blocks + b + ahead) * PANEL);
                            _mm_prefetch::<_MM_HINT_T0>(s as *const i8);
                        }
                    }
                }
                let mut sums = [[_mm512_setzero_si512(); P]; R];
                for (r, s) in sums.iter_mut().enumerate() {
                    *s = [_mm512_set1_epi32(correction(job, r0 + r, b, shift)); P];
                }
                if Q4 {
                    let low = _mm512_set1_epi8(0x0f);
                    for l in 0..4 {
                        let mut lo = [_mm512_setzero_si512(); P];
                        let mut hi = [_mm512_setzero_si512(); P];
                        for p in 0..P {
                            let v = _mm512_load_si512(
                                quants.add((p * blocks + b) * pb + l * 64) as *const _
                            );
                            lo[p] = _mm512_and_si512(v, low);
                            hi[p] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
                        }
                        for r in 0..R {
                            let xl = _mm512_set1_epi32(x4(job, r0 + r, b * BLOCK + 8 * l));
                            let xh = _mm512_set1_epi32(x4(job, r0 + r, b * BLOCK + 8 * l + 4));
                            for p in 0..P {
                                sums[r][p] = _mm512_dpbusd_epi32(sums[r][p], lo[p], xl);
                                sums[r][p] = _mm512_dpbusd_epi32(sums[r][p], hi[p], xh);
                            }
                        }
                    }
                } else {
                    let flip = _mm512_set1_epi8(-128);
                    for l in 0..8 {
                        let mut u = [_mm512_setzero_si512(); P];
                        for p in 0..P {
                            let v = _mm512_load_si512(
                                quants.add((p * blocks + b) * pb + l * 64) as *const _
                            );
                            u[p] = _mm512_xor_si512(v, flip);
                        }
                        for r in 0..R {
                            let xb = _mm512_set1_epi32(x4(job, r0 + r, b * BLOCK + 4 * l));
                            for p in 0..P {
                                sums[r][p] = _mm512_dpbusd_epi32(sums[r][p], u[p], xb);
                            }
                        }
                    }
                }
                let mut dw = [_mm512_setzero_ps(); P];
                for (p, d) in dw.iter_mut().enumerate() {
                    *d = _mm512_cvtph_ps(_mm256_loadu_si256(
                        scales.add((p * blocks + b) * PANEL) as *const _
                    ));
                }
                for r in 0..R {
                    let dx = _mm512_set1_ps(x_scale(job, r0 + r, b));
                    for p in 0..P {
                        let s = _mm512_mul_ps(dw[p], dx);
                        acc[r][p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[r][p]), s, acc[r][p]);
                    }
                }
            }
            for r in 0..R {
                for p in 0..P {
                    let mut lanes = [0f32; PANEL];
                    _mm512_storeu_ps(lanes.as_mut_ptr(), acc[r][p]);
                    job.store(r0 + r, p0 + p, &lanes);
                }
            }
        }
    }

    /// Every row of panels `p0..p0 + P`, `G` (≤ 4) at a time.
    #[inline(always)]
    unsafe fn rows512<const G: usize, const P: usize, const Q4: bool>(job: &Job, p0: usize) {
        unsafe {
            let mut r = 0;
            while r + G <= job.rows {
                tile512::<G, P, Q4>(job, p0, r);
                r += G;
            }
            match job.rows - r {
                1 => tile512::<1, P, Q4>(job, p0, r),
                2 => tile512::<2, P, Q4>(job, p0, r),
                3 => tile512::<3, P, Q4>(job, p0, r),
                _ => {}
            }
        }
    }

    /// One row: a panel at a time, one stream for the hardware prefetcher (measured: two or four
    /// panels at once, four streams, read memory 10–40% slower). Several rows: four rows × two
    /// panels, sixteen accumulators, each weight load feeding four `dpbusd` (measured best of
    /// 4×1, 6×1, 8×1 and 4×2 in cache and from memory).
    #[inline(always)]
    unsafe fn run512<const Q4: bool>(job: &Job) {
        unsafe {
            let (mut p, end) = job.panels();
            if job.rows == 1 {
                for p in p..end {
                    tile512::<1, 1, Q4>(job, p, 0);
                }
                return;
            }
            while p + 2 <= end {
                rows512::<4, 2, Q4>(job, p);
                p += 2;
            }
            if p < end {
                rows512::<4, 1, Q4>(job, p);
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn product_avx512(job: &Job) {
        unsafe {
            match job.w.format {
                Format::Q8_0 => run512::<false>(job),
                Format::Q4_0 => run512::<true>(job),
            }
        }
    }

    // ---------------------------------------------------------------- 256-bit: AVX2, AVX-VNNI

    /// `R` rows × `H / 2` panels (`H` 256-bit halves of eight outputs) from panel `p0`, row
    /// `r0`. `VNNI`: `dpbusd` on unsigned weights, as [`tile512`]; otherwise AVX2's `maddubs` on
    /// `|w|` and `sign(x, w)` (q8_0: `|w|` ≤ 128 read as `u8`, so even −128 is exact, and a pair
    /// sums to at most 2 · 128 · 127 < 2^15) or on the nibbles, summed in `i16` over a block
    /// (q4_0: at most 8 · 2 · 15 · 127 < 2^15) before the offset's correction.
    #[inline(always)]
    unsafe fn tile256<const R: usize, const H: usize, const Q4: bool, const VNNI: bool>(
        job: &Job,
        p0: usize,
        r0: usize,
    ) {
        unsafe {
            let w = job.w;
            let blocks = w.padded / BLOCK;
            let pb = w.panel_block_bytes();
            let quants = w.quant_bytes().as_ptr().add(p0 * blocks * pb);
            let scales = w.scales.as_ptr().add(p0 * blocks * PANEL);
            let at = |h: usize, b: usize, l: usize| {
                quants.add(((h / 2) * blocks + b) * pb + l * 64 + 32 * (h % 2)) as *const __m256i
            };
            let ones = _mm256_set1_epi16(1);
            let mut acc = [[_mm256_setzero_ps(); H]; R];
            for b in 0..blocks {
                let mut sums = [[_mm256_setzero_si256(); H]; R];
                if Q4 {
                    let low = _mm256_set1_epi8(0x0f);
                    let mut s16 = [[_mm256_setzero_si256(); H]; R];
                    for (r, s) in sums.iter_mut().enumerate() {
                        *s = [_mm256_set1_epi32(correction(job, r0 + r, b, 3)); H];
                    }
                    for l in 0..4 {
                        let mut lo = [_mm256_setzero_si256(); H];
                        let mut hi = [_mm256_setzero_si256(); H];
                        for h in 0..H {
                            let v = _mm256_load_si256(at(h, b, l));
                            lo[h] = _mm256_and_si256(v, low);
                            hi[h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                        }
                        for r in 0..R {
                            let xl = _mm256_set1_epi32(x4(job, r0 + r, b * BLOCK + 8 * l));
                            let xh = _mm256_set1_epi32(x4(job, r0 + r, b * BLOCK + 8 * l + 4));
                            for h in 0..H {
                                if VNNI {
                                    sums[r][h] = _mm256_dpbusd_avx_epi32(sums[r][h], lo[h], xl);
                                    sums[r][h] = _mm256_dpbusd_avx_epi32(sums[r][h], hi[h], xh);
                                } else {
                                    let t = _mm256_add_epi16(
                                        _mm256_maddubs_epi16(lo[h], xl),
                                        _mm256_maddubs_epi16(hi[h], xh),
                                    );
                                    s16[r][h] = _mm256_add_epi16(s16[r][h], t);
                                }
                            }
                        }
                    }
                    if !VNNI {
                        for r in 0..R {
                            for h in 0..H {
                                let s = _mm256_madd_epi16(s16[r][h], ones);
                                sums[r][h] = _mm256_add_epi32(sums[r][h], s);
                            }
                        }
                    }
                } else {
                    if VNNI {
                        for (r, s) in sums.iter_mut().enumerate() {
                            *s = [_mm256_set1_epi32(correction(job, r0 + r, b, 7)); H];
                        }
                    }
                    let flip = _mm256_set1_epi8(-128);
                    for l in 0..8 {
                        let mut v = [_mm256_setzero_si256(); H];
                        let mut a = [_mm256_setzero_si256(); H];
                        for h in 0..H {
                            v[h] = _mm256_load_si256(at(h, b, l));
                            a[h] = if VNNI {
                                _mm256_xor_si256(v[h], flip)
                            } else {
                                _mm256_abs_epi8(v[h])
                            };
                        }
                        for r in 0..R {
                            let xb = _mm256_set1_epi32(x4(job, r0 + r, b * BLOCK + 4 * l));
                            for h in 0..H {
                                sums[r][h] = if VNNI {
                                    _mm256_dpbusd_avx_epi32(sums[r][h], a[h], xb)
                                } else {
                                    let pairs =
                                        _mm256_maddubs_epi16(a[h], _mm256_sign_epi8(xb, v[h]));
                                    _mm256_add_epi32(sums[r][h], _mm256_madd_epi16(pairs, ones))
                                };
                            }
                        }
                    }
                }
                let mut dw = [_mm256_setzero_ps(); H];
                for (h, d) in dw.iter_mut().enumerate() {
                    let s = scales.add(((h / 2) * blocks + b) * PANEL + 8 * (h % 2));
                    *d = _mm256_cvtph_ps(_mm_loadu_si128(s as *const _));
                }
                for r in 0..R {
                    let dx = _mm256_set1_ps(x_scale(job, r0 + r, b));
                    for h in 0..H {
                        let s = _mm256_mul_ps(dw[h], dx);
                        acc[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[r][h]), s, acc[r][h]);
                    }
                }
            }
            for r in 0..R {
                for p in 0..H / 2 {
                    let mut lanes = [0f32; PANEL];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r][2 * p]);
                    _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[r][2 * p + 1]);
                    job.store(r0 + r, p0 + p, &lanes);
                }
            }
        }
    }

    /// `R` rows × `H` half-panels (eight outputs each) from half-panel `g0` (outputs
    /// `8g0..8g0 + 8H`), row `r0`; the same sums as [`tile256`], looped half by half within each
    /// line so that `R · H` accumulators, one line and one broadcast are live (`R · H` ≤ 8 fits
    /// the sixteen `ymm` registers; the `f32` sums live in memory, touched once a block).
    #[inline(always)]
    unsafe fn tile_halves<const R: usize, const H: usize, const Q4: bool, const VNNI: bool>(
        job: &Job,
        g0: usize,
        r0: usize,
    ) {
        unsafe {
            let w = job.w;
            let blocks = w.padded / BLOCK;
            let pb = w.panel_block_bytes();
            let base = w.quant_bytes().as_ptr();
            let q: [*const u8; H] = std::array::from_fn(|h| {
                base.add(((g0 + h) / 2) * blocks * pb + 32 * ((g0 + h) % 2))
            });
            let sc: [*const f16; H] = std::array::from_fn(|h| {
                w.scales
                    .as_ptr()
                    .add(((g0 + h) / 2) * blocks * PANEL + 8 * ((g0 + h) % 2))
            });
            let xs: [*const u8; R] = std::array::from_fn(|r| {
                job.x.values.as_ptr().add((r0 + r) * job.x.padded) as *const u8
            });
            let bcast = |r: usize, k: usize| {
                _mm256_set1_epi32((xs[r].add(k) as *const i32).read_unaligned())
            };
            let ones = _mm256_set1_epi16(1);
            let mut acc = [[_mm256_setzero_ps(); H]; R];
            for b in 0..blocks {
                let mut sums = [[_mm256_setzero_si256(); H]; R];
                if Q4 {
                    let low = _mm256_set1_epi8(0x0f);
                    if VNNI {
                        for (r, s) in sums.iter_mut().enumerate() {
                            *s = [_mm256_set1_epi32(correction(job, r0 + r, b, 3)); H];
                        }
                    }
                    let mut s16 = [[_mm256_setzero_si256(); H]; R];
                    for l in 0..4 {
                        for h in 0..H {
                            let v = _mm256_load_si256(q[h].add(b * pb + l * 64) as *const __m256i);
                            let lo = _mm256_and_si256(v, low);
                            let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                            for r in 0..R {
                                let xl = bcast(r, b * BLOCK + 8 * l);
                                let xh = bcast(r, b * BLOCK + 8 * l + 4);
                                if VNNI {
                                    sums[r][h] = _mm256_dpbusd_avx_epi32(sums[r][h], lo, xl);
                                    sums[r][h] = _mm256_dpbusd_avx_epi32(sums[r][h], hi, xh);
                                } else {
                                    let t = _mm256_add_epi16(
                                        _mm256_maddubs_epi16(lo, xl),
                                        _mm256_maddubs_epi16(hi, xh),
                                    );
                                    s16[r][h] = _mm256_add_epi16(s16[r][h], t);
                                }
                            }
                        }
                    }
                    if !VNNI {
                        for r in 0..R {
                            let c = _mm256_set1_epi32(correction(job, r0 + r, b, 3));
                            for h in 0..H {
                                sums[r][h] =
                                    _mm256_add_epi32(_mm256_madd_epi16(s16[r][h], ones), c);
                            }
                        }
                    }
                } else {
                    if VNNI {
                        for (r, s) in sums.iter_mut().enumerate() {
                            *s = [_mm256_set1_epi32(correction(job, r0 + r, b, 7)); H];
                        }
                    }
                    let flip = _mm256_set1_epi8(-128);
                    for l in 0..8 {
                        for h in 0..H {
                            let v = _mm256_load_si256(q[h].add(b * pb + l * 64) as *const __m256i);
                            let a = if VNNI {
                                _mm256_xor_si256(v, flip)
                            } else {
                                _mm256_abs_epi8(v)
                            };
                            for r in 0..R {
                                let xb = bcast(r, b * BLOCK + 4 * l);
                                sums[r][h] = if VNNI {
                                    _mm256_dpbusd_avx_epi32(sums[r][h], a, xb)
                                } else {
                                    let pairs = _mm256_maddubs_epi16(a, _mm256_sign_epi8(xb, v));
                                    _mm256_add_epi32(sums[r][h], _mm256_madd_epi16(pairs, ones))
                                };
                            }
                        }
                    }
                }
                for h in 0..H {
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(sc[h].add(b * PANEL) as *const _));
                    for r in 0..R {
                        let dx = _mm256_set1_ps(x_scale(job, r0 + r, b));
                        let s = _mm256_mul_ps(dw, dx);
                        acc[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[r][h]), s, acc[r][h]);
                    }
                }
            }
            for r in 0..R {
                for h in 0..H {
                    let mut lanes = [0f32; PANEL / 2];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r][h]);
                    job.store_half(r0 + r, g0 + h, &lanes);
                }
            }
        }
    }

    /// One row: [`tile256`] a panel at a time (the decode path). Several rows: AVX2 eight rows ×
    /// one half-panel ([`tile_halves`]: measured best of 4×1, 6×1, 8×1, 3×2 and 4×2 on Zen 5,
    /// +25–30% over two rows × one panel), AVX-VNNI q8_0 four rows × two halves (+55%); the rows
    /// left over, and AVX-VNNI q4_0 (no faster), two rows × one panel. Smaller `tile_halves`
    /// shapes for the leftover rows measured fragile: q4_0's four rows × one half spilled into a
    /// 2× slower loop in some builds.
    #[inline(always)]
    unsafe fn run256<const Q4: bool, const VNNI: bool>(job: &Job) {
        unsafe {
            let (p0, end) = job.panels();
            if job.rows == 1 {
                for p in p0..end {
                    tile256::<1, 2, Q4, VNNI>(job, p, 0);
                }
                return;
            }
            let done = if VNNI {
                if Q4 {
                    0
                } else {
                    let done = job.rows / 4 * 4;
                    for p in p0..end {
                        for r in (0..done).step_by(4) {
                            tile_halves::<4, 2, Q4, VNNI>(job, 2 * p, r);
                        }
                    }
                    done
                }
            } else {
                let done = job.rows / 8 * 8;
                // Only the half-panels that hold requested outputs.
                let first = job.first / (PANEL / 2);
                let last = (job.first + job.width).div_ceil(PANEL / 2);
                for g in first..last {
                    for r in (0..done).step_by(8) {
                        tile_halves::<8, 1, Q4, VNNI>(job, g, r);
                    }
                }
                done
            };
            for p in p0..end {
                let mut r = done;
                while r + 2 <= job.rows {
                    tile256::<2, 2, Q4, VNNI>(job, p, r);
                    r += 2;
                }
                if r < job.rows {
                    tile256::<1, 2, Q4, VNNI>(job, p, r);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn product_avx2(job: &Job) {
        unsafe {
            match job.w.format {
                Format::Q8_0 => run256::<false, false>(job),
                Format::Q4_0 => run256::<true, false>(job),
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    pub(super) unsafe fn product_avxvnni(job: &Job) {
        unsafe {
            match job.w.format {
                Format::Q8_0 => run256::<false, true>(job),
                Format::Q4_0 => run256::<true, true>(job),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// test-quantize-fns' synthetic data: `0.1 + 2·cos(i + offset)`.
    fn synthetic(n: usize, offset: f32) -> Vec<f32> {
        (0..n)
            .map(|i| 0.1 + 2.0 * (i as f32 + offset).cos())
            .collect()
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

    /// The activations' SIMD quantizer gives the scalar one's bits, ties included.
    #[test]
    fn activation_quantizer_simd_matches_scalar() {
        let mut x: Vec<f32> = (0..32 * 64)
            .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 37.0)
            .collect();
        // Blocks whose products land exactly on halves: amax 127 makes `x · id` ≈ `x`.
        for (i, v) in x[..64].iter_mut().enumerate() {
            *v = if i % 32 == 0 {
                127.0
            } else {
                (i as f32 - 40.0) + 0.5
            };
        }
        x[64..96].fill(0.0);
        let q = QuantRows::new(&x, 1, x.len(), x.len());
        for (b, chunk) in x.chunks(BLOCK).enumerate() {
            let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let want: Vec<i8> = chunk.iter().map(|&v| (v * id).round() as i8).collect();
            assert_eq!(
                &q.values[b * BLOCK..(b + 1) * BLOCK],
                &want[..],
                "block {b}"
            );
            assert_eq!(q.scales[b], d);
            assert_eq!(q.sums[b], want.iter().map(|&v| v as i32).sum::<i32>());
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
    /// row-group remainder, column ranges that start and end inside a panel, and a width that is
    /// not a whole block (padded).
    #[test]
    fn every_kernel_matches_the_portable_one() {
        let kernels = Kernel::available();
        eprintln!("q8_0/q4_0 kernels tested here: {kernels:?}");
        for format in [Format::Q8_0, Format::Q4_0] {
            for inputs in [32, 100, 768] {
                let outputs = 77;
                let (m, _) = matrix(format, outputs, inputs);
                for rows in [1, 2, 3, 4, 5, 7, 9, 13] {
                    let x: Vec<f32> = (0..rows * inputs)
                        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                        .collect();
                    let xq = QuantRows::new(&x, rows, inputs, m.padded_inputs());
                    for (first, width) in [(0, outputs), (0, 64), (64, 13), (5, 20), (16, 61)] {
                        check_kernels(&kernels, &m, first, width, &xq, rows, inputs);
                    }
                }
            }
        }
    }

    fn check_kernels(
        kernels: &[Kernel],
        m: &QuantMatrix,
        first: usize,
        width: usize,
        xq: &QuantRows,
        rows: usize,
        inputs: usize,
    ) {
        // A stride wider than the width: the kernels must leave the gaps alone.
        let stride = width + 3;
        let mut want = vec![f32::NAN; rows * stride];
        product(
            Kernel::Portable,
            m,
            first,
            width,
            xq,
            rows,
            &mut want,
            stride,
        );
        for &k in kernels {
            let mut got = vec![f32::NAN; rows * stride];
            product(k, m, first, width, xq, rows, &mut got, stride);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                if i % stride >= width {
                    assert!(g.is_nan(), "{k:?} wrote outside the output at {i}");
                    continue;
                }
                // Sums of the same block products in another order: f32 rounding grows with the
                // number of blocks.
                assert!(
                    (g - w).abs() <= 1e-6 * inputs as f32 * w.abs().max(1.0),
                    "{k:?} {:?} {inputs}×{rows} [{first}+{width}] at {i}: {g} vs {w}",
                    m.format
                );
            }
        }
    }

    /// q8_0's −128 (never written by llama.cpp) and the extremes of both formats are exact in
    /// every kernel: the weights' offset and AVX2's `|w|` cover the whole `i8` range.
    #[test]
    fn extreme_values_are_exact_in_every_kernel() {
        let kernels = Kernel::available();
        let (outputs, inputs, rows) = (19, 256, 6);
        for format in [Format::Q8_0, Format::Q4_0] {
            let bytes = format.block_bytes();
            let mut m = QuantMatrix::zeroed(format, outputs, inputs);
            for j in 0..outputs {
                let mut raw = Vec::new();
                for b in 0..inputs / BLOCK {
                    raw.extend_from_slice(&f16::from_f32(0.01 * (1 + j + b) as f32).to_le_bytes());
                    raw.extend((0..bytes).map(|i| match (i + j + b) % 3 {
                        0 => 0x80,
                        1 => 0x7f,
                        _ => 0x08,
                    }));
                }
                m.set_gguf_row(j, &raw);
            }
            // Activations at ±127 after quantizing: each block's extreme is ±amax.
            let x: Vec<f32> = (0..rows * inputs)
                .map(|i| if (i / 3) % 2 == 0 { 1.0 } else { -1.0 } * (1 + i % 5) as f32)
                .collect();
            let xq = QuantRows::new(&x, rows, inputs, m.padded_inputs());
            check_kernels(&kernels, &m, 0, outputs, &xq, rows, inputs);
            let mut got = vec![0f32; rows * outputs];
            product(
                Kernel::Portable,
                &m,
                0,
                outputs,
                &xq,
                rows,
                &mut got,
                outputs,
            );
            // The portable kernel against the dequantized values, in f64.
            let mut dense = vec![0f32; inputs];
            for j in 0..outputs {
                m.row_into(j, &mut dense);
                for r in 0..rows {
                    let mut want = 0f64;
                    for b in 0..inputs / BLOCK {
                        let d = xq.scales[r * (inputs / BLOCK) + b] as f64;
                        for i in 0..BLOCK {
                            let k = b * BLOCK + i;
                            want += dense[k] as f64 * d * xq.values[r * inputs + k] as f64;
                        }
                    }
                    let g = got[r * outputs + j] as f64;
                    assert!(
                        (g - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "{g} vs {want}"
                    );
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
            product(
                Kernel::detect(),
                &m,
                0,
                outputs,
                &xq,
                rows,
                &mut got,
                outputs,
            );
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
            for b in 0..2 {
                let (d, q) = m.load_block(j, b);
                raw.extend_from_slice(&d.to_le_bytes());
                raw.extend_from_slice(&q[..16]);
            }
            back.set_gguf_row(j, &raw);
        }
        assert_eq!(back.quants, m.quants);
        assert_eq!(back.scales, m.scales);
    }
    /// Single-threaded throughput of every kernel on one tile (64 outputs), both formats:
    /// `cargo test --release -p decode-models --features wgpu --lib quant_timing -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore]
    fn quant_timing() {
        let n = 64;
        for format in [Format::Q8_0, Format::Q4_0] {
            for k in [768, 3072] {
                let (m, _) = matrix(format, n, k);
                for rows in [1, 4, 8, 32, 64] {
                    let x = synthetic(rows * k, 0.5);
                    let xq = QuantRows::new(&x, rows, k, m.padded_inputs());
                    let mut line = format!("{format:?} k={k:5} rows={rows:2}:");
                    for kernel in Kernel::available() {
                        let mut out = vec![0f32; rows * n];
                        let work = 2.0 * (rows * k * n) as f64;
                        let reps = ((2e8 / work) as usize).max(3);
                        let mut best = f64::MAX;
                        for _ in 0..5 {
                            let t = std::time::Instant::now();
                            for _ in 0..reps {
                                product(kernel, &m, 0, n, &xq, rows, &mut out, n);
                                std::hint::black_box(&mut out);
                            }
                            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
                        }
                        line += &format!("  {kernel:?} {:7.1}", work / best / 1e9);
                    }
                    eprintln!("{line}  GOPS");
                }
            }
        }
        // Streaming from memory: every tile of a matrix larger than the caches, once per pass.
        let (n, k) = (16384, 3072);
        for format in [Format::Q8_0, Format::Q4_0] {
            let mut m = QuantMatrix::zeroed(format, n, k);
            let row = synthetic(k, 0.25);
            for j in 0..n {
                m.set_row(j, &row);
            }
            for rows in [1, 4, 32] {
                let x = synthetic(rows * k, 0.5);
                let xq = QuantRows::new(&x, rows, k, m.padded_inputs());
                let mut line = format!("{format:?} stream {n}×{k} rows={rows:2}:");
                for kernel in Kernel::available().into_iter().take(2) {
                    let mut out = vec![0f32; rows * 64];
                    let mut best = f64::MAX;
                    for _ in 0..3 {
                        let t = std::time::Instant::now();
                        for tile in 0..n / 64 {
                            product(kernel, &m, tile * 64, 64, &xq, rows, &mut out, 64);
                            std::hint::black_box(&mut out);
                        }
                        best = best.min(t.elapsed().as_secs_f64());
                    }
                    let gops = 2.0 * (rows * k * n) as f64 / best / 1e9;
                    let gbs = m.bytes() as f64 / best / 1e9;
                    line += &format!("  {kernel:?} {gops:7.1} GOPS {gbs:5.1} GB/s");
                }
                eprintln!("{line}");
            }
        }
    }
}
