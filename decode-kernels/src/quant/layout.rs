//! How quantized operands are held: weights as panels of sixteen outputs with their blocks
//! interleaved ([`QuantMatrix`]), activation rows quantized to q8_0 on the fly ([`QuantRows`]).

use half::f16;

use super::{BLOCK, Format, round_half_away};
use crate::cpu::{self, Simd};
use crate::memory::Buffer;

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
/// `b` is 16 scales and `16 · value_bytes` bytes of values: 64-byte line `l` holds, at byte
/// `4c + i`, output `16p + c`'s weight `4l + i` of the block (q8_0), or its weights `8l + i`
/// (low nibble) and `8l + 4 + i` (high nibble) (q4_0). A 512-bit load is then four consecutive
/// weights of sixteen outputs, the `u8` operand of `dpbusd` against four activations broadcast to
/// every lane: the lanes sum whole blocks without any shuffle. The bytes per weight are GGUF's.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantMatrix {
    pub(crate) format: Format,
    pub(crate) outputs: usize,
    /// Inputs rounded up to a whole block (the padding weights are zero).
    pub(crate) padded: usize,
    /// `[panels][padded / 32][PANEL · value_bytes / 64]`.
    quants: Buffer<Line>,
    /// `[panels][padded / 32][PANEL]`.
    pub(crate) scales: Buffer<f16>,
}

impl QuantMatrix {
    /// A zero matrix of `outputs × inputs`, to be filled with [`QuantMatrix::set_row`],
    /// [`QuantMatrix::set_block`] or [`QuantMatrix::set_gguf_row`]. A size past what memory can
    /// hold, or memory the system refuses, is [`decode_core::Error::OutOfMemory`].
    pub fn zeroed(format: Format, outputs: usize, inputs: usize) -> decode_core::Result<Self> {
        let too_large = || {
            decode_core::Error::OutOfMemory(format!(
                "a {outputs} × {inputs} {format} matrix is larger than memory can address"
            ))
        };
        let padded = inputs.div_ceil(BLOCK) * BLOCK;
        let blocks = outputs
            .div_ceil(PANEL)
            .checked_mul(padded / BLOCK)
            .ok_or_else(too_large)?;
        let lines = blocks
            .checked_mul(format.value_bytes() * PANEL / 64)
            .ok_or_else(too_large)?;
        let scales = blocks.checked_mul(PANEL).ok_or_else(too_large)?;
        let what = format!("a {outputs} × {inputs} {format} matrix");
        Ok(QuantMatrix {
            format,
            outputs,
            padded,
            // SAFETY: zero bits are a valid `Line` (bytes) and f16 (+0).
            quants: unsafe { Buffer::zeroed(lines, &what)? },
            scales: unsafe { Buffer::zeroed(scales, &what)? },
        })
    }

    /// Inputs rounded up to a whole block.
    pub fn padded_inputs(&self) -> usize {
        self.padded
    }

    pub(crate) fn block_count(&self) -> usize {
        self.padded / BLOCK
    }

    /// Bytes of values in one panel's block.
    pub(crate) fn panel_block_bytes(&self) -> usize {
        PANEL * self.format.value_bytes()
    }

    pub(crate) fn quant_bytes(&self) -> &[u8] {
        // SAFETY: `Line` is 64 plain bytes (`repr(C)`, no padding).
        unsafe { std::slice::from_raw_parts(self.quants.as_ptr().cast(), self.quants.len() * 64) }
    }

    pub(crate) fn quant_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `quant_bytes`.
        unsafe {
            std::slice::from_raw_parts_mut(self.quants.as_mut_ptr().cast(), self.quants.len() * 64)
        }
    }

    /// Where block `b` of output `j` lives: its panel block's first byte and scale, and the lane.
    pub(crate) fn place(&self, j: usize, b: usize) -> (usize, usize, usize) {
        let at = (j / PANEL) * self.block_count() + b;
        (
            at * self.panel_block_bytes(),
            at * PANEL + j % PANEL,
            j % PANEL,
        )
    }

    /// Stores block `b` of output `j`, given in GGUF's layout (`value_bytes` of `q`).
    pub(crate) fn store_block(&mut self, j: usize, b: usize, d: f16, q: &[u8]) {
        let (base, s, c) = self.place(j, b);
        self.scales[s] = d;
        let format = self.format;
        let bytes = &mut self.quant_bytes_mut()[base..base + PANEL * format.value_bytes()];
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

    /// Block `b` of output `j` in GGUF's layout (the first `value_bytes` of the array).
    pub(crate) fn load_block(&self, j: usize, b: usize) -> (f16, [u8; BLOCK]) {
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
        let bytes = self.format.value_bytes();
        let d = self.format.quantize_block(&block, &mut q[..bytes]);
        self.store_block(j, b, d, &q[..bytes]);
    }

    /// Quantizes output `j`'s weights (`inputs` values).
    pub fn set_row(&mut self, j: usize, row: &[f32]) {
        for (b, chunk) in row.chunks(BLOCK).enumerate() {
            self.set_block(j, b, chunk);
        }
    }

    /// Output `j`'s blocks as GGUF stores them (`[f16 scale][values]`, `2 + value_bytes` each).
    pub fn set_gguf_row(&mut self, j: usize, raw: &[u8]) {
        let bytes = self.format.value_bytes();
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
            let q = self.format.unpack(&q[..self.format.value_bytes()]);
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
            (d, self.format.unpack(&q[..self.format.value_bytes()]))
        })
    }
}

/// Activation rows quantized to q8_0 (scales kept in f32), in the forms the kernels read.
pub struct QuantRows {
    pub(crate) rows: usize,
    pub(crate) padded: usize,
    /// `[rows][padded]`.
    pub(crate) values: Vec<i8>,
    /// `[rows][padded / 32]`.
    pub(crate) scales: Vec<f32>,
    /// `[rows][padded / 32]`, twice: each block's `−128 · Σx` and `−8 · Σx`. The kernels take the
    /// weights as unsigned (`w + 128`, or q4_0's nibble `w + 8`) and start each block's sums
    /// from these corrections (read from memory: a broadcast of a loaded value costs no ALU work).
    pub(crate) corrections: [Vec<i32>; 2],
}

impl QuantRows {
    /// `x` is `[rows][inputs]`; each row is padded with zeros to `padded`.
    pub fn new(x: &[f32], rows: usize, inputs: usize, padded: usize) -> Self {
        let blocks = padded / BLOCK;
        let mut values = vec![0i8; rows * padded];
        let mut scales = vec![0f32; rows * blocks];
        let mut sums = vec![0i32; rows * blocks];
        #[cfg(target_arch = "x86_64")]
        let simd = cpu::level() >= Simd::Avx2;
        for r in 0..rows {
            let row = &x[r * inputs..(r + 1) * inputs];
            for (b, chunk) in row.chunks(BLOCK).enumerate() {
                #[cfg(target_arch = "x86_64")]
                if simd && chunk.len() == BLOCK {
                    let at = r * blocks + b;
                    let out = &mut values[r * padded + b * BLOCK..][..BLOCK];
                    // SAFETY: the CPU has AVX2; `chunk` and `out` are whole blocks.
                    (scales[at], sums[at]) = unsafe { super::x86::quantize_block(chunk, out) };
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
        let corrections = [7, 3].map(|shift| sums.iter().map(|&s| -(s << shift)).collect());
        QuantRows {
            rows,
            padded,
            values,
            scales,
            corrections,
        }
    }
}
