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

use decode_core::{Error, Result};
use half::f16;

mod layout;
mod product;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use layout::{PANEL, QuantMatrix, QuantRows};
pub use product::{Kernel, product};

/// Weights per block.
pub const BLOCK: usize = 32;

/// One of llama.cpp's block formats: 32 weights of one output share an f16 scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// 8-bit values: 8.5 bits a weight; perplexity within a fraction of a percent of f32.
    Q8_0,
    /// 4-bit values with an offset of 8: 4.5 bits a weight; a measurable loss of quality.
    Q4_0,
}

impl Format {
    /// The name llama.cpp uses (`q8_0`, `q4_0`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Q8_0 => "q8_0",
            Format::Q4_0 => "q4_0",
        }
    }

    /// Bytes of quantized values per block (the f16 scale is kept apart:
    /// [`crate::ElementType::block_bytes`] counts both).
    pub fn value_bytes(self) -> usize {
        match self {
            Format::Q8_0 => BLOCK,
            Format::Q4_0 => BLOCK / 2,
        }
    }

    /// Quantizes one block of 32 values into `q` (`value_bytes` long); returns the scale.
    pub fn quantize_block(self, x: &[f32], q: &mut [u8]) -> f16 {
        match self {
            Format::Q8_0 => quantize_q8_0(x, q),
            Format::Q4_0 => quantize_q4_0(x, q),
        }
    }

    /// The 32 values of a block, as stored (`q` is `value_bytes` long).
    pub fn unpack(self, q: &[u8]) -> [i8; BLOCK] {
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

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = Error;

    /// `q8_0` or `q4_0`, in any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "q8_0" => Ok(Format::Q8_0),
            "q4_0" => Ok(Format::Q4_0),
            _ => Err(Error::invalid(
                "quantize",
                format!("{s:?} is not a quantization (q8_0 or q4_0)"),
            )),
        }
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
