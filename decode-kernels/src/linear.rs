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

use crate::dense::{self, TILE, Weight};
use decode_core::{Error, Result};
use half::{bf16, f16};

use crate::element::ElementType;
use crate::memory::Buffer;
use crate::pool;
use crate::quant::{self, BLOCK, Format, Kernel, QuantMatrix, QuantRows};
use crate::scratch::with_scratch;

/// The q8_0/q4_0 kernel, detected once.
fn quant_kernel() -> Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    *KERNEL.get_or_init(Kernel::detect)
}

/// Rows (tokens) per pass over the weights: a verify pass or a prompt of up to 64 tokens streams
/// them from memory once (the rows then reuse each tile from cache).
const ROWS: usize = 64;
/// Below this many multiply-adds a product runs on the calling thread: waking the pool costs more.
/// Measured on a 2-core Zen 3 EPYC, the embedded KJV target (products of 256 × 768 and smaller):
/// a decode step 200–225 µs at 2^16, 250–270 µs at 2^18, 460 µs all on one thread.
const PARALLEL_WORK: usize = 1 << 16;

/// A weight matrix as a checkpoint stores it, before it is laid out for the kernels: little-endian
/// bytes (any alignment), read once, in order.
pub struct Source<'a> {
    /// The stored values.
    pub bytes: &'a [u8],
    /// Their type.
    pub dtype: ElementType,
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
    F32(Buffer<f32>),
    F16(Buffer<f16>),
    BF16(Buffer<bf16>),
    /// Blocks along the inputs, one row per output.
    Quant(QuantMatrix),
}

/// Lays out float weights as tiles, reading the source once in its own order.
fn tiled<T: Weight>(source: &Source, from: impl Fn(&[u8]) -> T) -> Result<Buffer<T>> {
    let (k, n) = (source.inputs, source.outputs);
    let size = std::mem::size_of::<T>();
    let values = k
        .checked_mul(TILE)
        .and_then(|row| n.div_ceil(TILE).checked_mul(row))
        .ok_or_else(|| {
            Error::OutOfMemory(format!(
                "a {n} × {k} weight matrix is larger than memory can address"
            ))
        })?;
    let mut out = T::zeroed(values, &format!("a {n} × {k} weight matrix"))?;
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
    Ok(out)
}

/// Quantizes or copies the source's values into blocks.
fn quantized(source: &Source, format: Format) -> Result<QuantMatrix> {
    let (k, n) = (source.inputs, source.outputs);
    let mut m = QuantMatrix::zeroed(format, n, k)?;
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
    Ok(m)
}

/// `y = x · W + b` on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    inputs: usize,
    outputs: usize,
    layout: Layout,
    bias: Option<Vec<f32>>,
}

impl Linear {
    /// Lays out `source` for the kernels: float weights as tiles in their stored type, or as
    /// `quantize`'s blocks; quantized weights as they are (`quantize` must then be `None` or
    /// their own format: the caller checks). Memory the system refuses for the layout is
    /// [`Error::OutOfMemory`].
    pub fn new(source: &Source, bias: Option<Vec<f32>>, quantize: Option<Format>) -> Result<Self> {
        let layout = match (source.dtype.format().or(quantize), source.dtype) {
            (Some(format), _) => Layout::Quant(quantized(source, format)?),
            (None, ElementType::F16) => {
                Layout::F16(tiled(source, |b| f16::from_le_bytes([b[0], b[1]]))?)
            }
            (None, ElementType::BF16) => {
                Layout::BF16(tiled(source, |b| bf16::from_le_bytes([b[0], b[1]]))?)
            }
            (None, _) => Layout::F32(tiled(source, |b| {
                f32::from_le_bytes([b[0], b[1], b[2], b[3]])
            })?),
        };
        Ok(Linear {
            inputs: source.inputs,
            outputs: source.outputs,
            layout,
            bias,
        })
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
            with_scratch(n.div_ceil(TILE) * rows * TILE, |scratch| {
                let one = |t: usize, out: &mut [f32]| match (&self.layout, &xq) {
                    (Layout::F32(w), _) => {
                        dense::tile(&w[t * k * TILE..(t + 1) * k * TILE], xs, rows, k, out)
                    }
                    (Layout::F16(w), _) => {
                        dense::tile(&w[t * k * TILE..(t + 1) * k * TILE], xs, rows, k, out)
                    }
                    (Layout::BF16(w), _) => {
                        dense::tile(&w[t * k * TILE..(t + 1) * k * TILE], xs, rows, k, out)
                    }
                    (Layout::Quant(w), Some(xq)) => {
                        let width = TILE.min(n - t * TILE);
                        quant::product(kernel, w, t * TILE, width, xq, rows, out, TILE)
                    }
                    (Layout::Quant(_), None) => {}
                };
                if rows * k * n >= PARALLEL_WORK {
                    pool::for_each_chunk_mut(scratch, rows * TILE, one);
                } else {
                    scratch
                        .chunks_mut(rows * TILE)
                        .enumerate()
                        .for_each(|(t, out)| one(t, out));
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
            (ElementType::F32, &f32s, None, 1e-4),
            (ElementType::F16, &f16s, None, 1e-4),
            (ElementType::BF16, &bf16s, None, 1e-4),
            // Quantized: against the dequantized weights, within the activations' q8_0 rounding.
            (ElementType::F32, &f32s, Some(Format::Q8_0), 0.05),
            (ElementType::F16, &f16s, Some(Format::Q4_0), 0.05),
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
            let lin = Linear::new(&source, Some(b.clone()), quantize).unwrap();
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
            let flipped = Linear::new(
                &Source {
                    bytes: &transposed,
                    output_rows: true,
                    ..source
                },
                Some(b.clone()),
                quantize,
            )
            .unwrap();
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
