//! The element types a tensor is stored in ([`ElementType`]): sizes, widening to f32, and the
//! scan for NaN and ±∞ that every load path runs.

use half::{bf16, f16};

use crate::quant::{BLOCK, Format};

/// How a tensor's values are stored: the workspace's one element-type enum (checkpoints, GGUF
/// files, the kernels' layouts and the byte counts all go by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementType {
    /// f32.
    F32,
    /// f16.
    F16,
    /// bf16.
    BF16,
    /// llama.cpp's q8_0 blocks (`[f16 scale][32 × i8]`).
    Q8_0,
    /// llama.cpp's q4_0 blocks (`[f16 scale][16 bytes of nibbles]`).
    Q4_0,
}

impl ElementType {
    /// Every type, floats first.
    pub const ALL: [ElementType; 5] = [
        ElementType::F32,
        ElementType::F16,
        ElementType::BF16,
        ElementType::Q8_0,
        ElementType::Q4_0,
    ];

    /// ggml's name for the type (`F32`, `F16`, `BF16`, `Q8_0`, `Q4_0`).
    pub fn name(self) -> &'static str {
        match self {
            ElementType::F32 => "F32",
            ElementType::F16 => "F16",
            ElementType::BF16 => "BF16",
            ElementType::Q8_0 => "Q8_0",
            ElementType::Q4_0 => "Q4_0",
        }
    }

    /// The block format of a quantized type.
    pub fn format(self) -> Option<Format> {
        match self {
            ElementType::Q8_0 => Some(Format::Q8_0),
            ElementType::Q4_0 => Some(Format::Q4_0),
            _ => None,
        }
    }

    /// Values per block: [`BLOCK`] for the quantized types, 1 for the floats.
    pub fn block_values(self) -> usize {
        match self.format() {
            Some(_) => BLOCK,
            None => 1,
        }
    }

    /// Bytes per block: a float's size, or a quantized block's f16 scale and its values.
    pub fn block_bytes(self) -> usize {
        match self {
            ElementType::F32 => 4,
            ElementType::F16 | ElementType::BF16 => 2,
            ElementType::Q8_0 | ElementType::Q4_0 => {
                2 + self.format().map_or(0, Format::value_bytes)
            }
        }
    }

    /// Bytes of one stored row of `width` values (quantized rows: whole blocks), or `None` if
    /// that overflows a `usize`.
    pub fn checked_row_bytes(self, width: usize) -> Option<usize> {
        width
            .div_ceil(self.block_values())
            .checked_mul(self.block_bytes())
    }

    /// Bytes of one stored row of `width` values (quantized rows: whole blocks). `width` comes
    /// from a tensor already held in memory: use [`ElementType::checked_row_bytes`] for a size
    /// read from a file.
    pub fn row_bytes(self, width: usize) -> usize {
        width.div_ceil(self.block_values()) * self.block_bytes()
    }

    /// Little-endian values of rows `width` wide, as f32 (quantized blocks dequantized).
    pub fn widen_into(self, bytes: &[u8], width: usize, out: &mut [f32]) {
        match self {
            ElementType::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            ElementType::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            ElementType::BF16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            ElementType::Q8_0 | ElementType::Q4_0 => {
                let format = self.format().unwrap_or(Format::Q8_0);
                let row_bytes = self.row_bytes(width);
                for (row, out) in bytes.chunks_exact(row_bytes).zip(out.chunks_mut(width)) {
                    for (block, out) in row
                        .chunks_exact(self.block_bytes())
                        .zip(out.chunks_mut(BLOCK))
                    {
                        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
                        for (o, &q) in out.iter_mut().zip(&format.unpack(&block[2..])) {
                            *o = d * q as f32;
                        }
                    }
                }
            }
        }
    }

    /// Where the first NaN or ±∞ of `bytes` (rows `width` wide) is, or `None` when every value is
    /// finite; for quantized blocks, their f16 scales (the values are integers). One pass over the
    /// bytes, a chunk at a time: each chunk's test is branch-free, so it vectorises.
    pub fn first_non_finite(self, bytes: &[u8], width: usize) -> Option<NonFiniteValue> {
        // A value is NaN or ±∞ exactly when its exponent bits are all ones.
        fn scan<const N: usize>(
            bytes: &[u8],
            stride: usize,
            bits: impl Fn([u8; N]) -> u32,
            exponent: u32,
        ) -> Option<(usize, u32)> {
            const CHUNK: usize = 4096;
            let value = |c: &[u8]| {
                let mut v = [0u8; N];
                v.copy_from_slice(&c[..N]);
                bits(v)
            };
            let bad = |v: u32| v & exponent == exponent;
            bytes
                .chunks(CHUNK * stride)
                .enumerate()
                .find_map(|(chunk, part)| {
                    let values = part.chunks_exact(stride);
                    if values.clone().fold(false, |acc, c| acc | bad(value(c))) {
                        let (i, v) = values.map(value).enumerate().find(|&(_, v)| bad(v))?;
                        Some((chunk * CHUNK + i, v))
                    } else {
                        None
                    }
                })
        }
        let f16_bits = |b: [u8; 2]| u32::from(u16::from_le_bytes(b));
        let (index, value) = match self {
            ElementType::F32 => {
                let (i, v) = scan(bytes, 4, u32::from_le_bytes, 0x7f80_0000)?;
                (i, f32::from_bits(v))
            }
            ElementType::F16 => {
                let (i, v) = scan(bytes, 2, f16_bits, 0x7c00)?;
                (i, f16::from_bits(v as u16).to_f32())
            }
            ElementType::BF16 => {
                let (i, v) = scan(bytes, 2, f16_bits, 0x7f80)?;
                (i, bf16::from_bits(v as u16).to_f32())
            }
            ElementType::Q8_0 | ElementType::Q4_0 => {
                let block = self.block_bytes();
                let (b, v) = scan(bytes, block, f16_bits, 0x7c00)?;
                let per_row = width.div_ceil(BLOCK).max(1);
                return Some(NonFiniteValue {
                    value: f16::from_bits(v as u16).to_f32(),
                    row: b / per_row,
                    column: (b % per_row) * BLOCK,
                    scale: true,
                });
            }
        };
        let width = width.max(1);
        Some(NonFiniteValue {
            value,
            row: index / width,
            column: index % width,
            scale: false,
        })
    }
}

/// A NaN or ±∞ found in a stored tensor ([`ElementType::first_non_finite`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NonFiniteValue {
    /// The value (NaN, +∞ or −∞).
    pub value: f32,
    /// Its row and column (for a block scale, the block's first column).
    pub row: usize,
    /// See `row`.
    pub column: usize,
    /// Whether it is a quantized block's scale.
    pub scale: bool,
}

impl std::fmt::Display for NonFiniteValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.value.is_nan() {
            "NaN"
        } else if self.value > 0.0 {
            "+inf"
        } else {
            "-inf"
        };
        match self.scale {
            true => write!(
                f,
                "a block scale of {what} (row {}, columns {}..{})",
                self.row,
                self.column,
                self.column + BLOCK
            ),
            false => write!(f, "{what} at row {}, column {}", self.row, self.column),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};
    use proptest::prelude::*;

    /// Every f16 and bf16 bit pattern: the scan flags exactly the non-finite ones.
    #[test]
    fn every_half_precision_pattern_is_classified_as_is_finite_says() {
        for bits in 0..=u16::MAX {
            let bytes = bits.to_le_bytes();
            let f16_bad = ElementType::F16.first_non_finite(&bytes, 1).is_some();
            assert_eq!(
                f16_bad,
                !f16::from_bits(bits).is_finite(),
                "f16 {bits:#06x}"
            );
            let bf16_bad = ElementType::BF16.first_non_finite(&bytes, 1).is_some();
            assert_eq!(
                bf16_bad,
                !bf16::from_bits(bits).is_finite(),
                "bf16 {bits:#06x}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// One non-finite f32 anywhere in a tensor (chunk boundaries included) is found at its
        /// row and column; a q8_0 / q4_0 block scale likewise, and never a quantized value.
        #[test]
        fn the_first_non_finite_value_is_found_where_it_is(
            len in 1usize..20_000,
            at in any::<prop::sample::Index>(),
            width in 1usize..300,
            bad in prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY)],
            q4 in any::<bool>(),
        ) {
            let mut values: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin() * 1e30).collect();
            prop_assert!(ElementType::F32.first_non_finite(bytemuck_f32(&values).as_slice(), width).is_none());
            let i = at.index(len);
            values[i] = bad;
            let found = ElementType::F32.first_non_finite(&bytemuck_f32(&values), width).unwrap();
            prop_assert_eq!((found.row, found.column, found.scale), (i / width, i % width, false));

            let stored = if q4 { ElementType::Q4_0 } else { ElementType::Q8_0 };
            let block = stored.block_bytes();
            let blocks = len.div_ceil(32);
            // Finite scales, and value bytes of 0xff (which would read as NaN if taken for a scale).
            let mut q = vec![0xffu8; blocks * block];
            for b in 0..blocks {
                q[b * block..b * block + 2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
            }
            prop_assert!(stored.first_non_finite(&q, 32 * blocks).is_none());
            let b = at.index(blocks);
            q[b * block..b * block + 2].copy_from_slice(&f16::from_f32(bad).to_le_bytes());
            let found = stored.first_non_finite(&q, 32 * blocks).unwrap();
            prop_assert_eq!((found.row, found.column, found.scale), (0, 32 * b, true));
        }
    }

    fn bytemuck_f32(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}
