//! A checkpoint opened for building a model: every GPT-2 tensor found and checked, its values read
//! only as the model is built, one tensor at a time.
//!
//! A `model.safetensors` or GGUF file is memory-mapped, and each tensor's pages are handed back to
//! the kernel as soon as the host path has laid the tensor out (tiled, or quantized). The loader
//! therefore never holds the file and the model side by side: peak memory stays near the size of
//! the weights in the form the kernels read.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, TensorData};
use decode_core::{Error, Result};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::Gpt2Config;
use crate::gguf::{GgmlType, GgufFile};
use crate::gpt2::Quantization;
use crate::weights::{BlockWeights, Gpt2Weights, expected_shapes};

/// How a checkpoint stores a tensor's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
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

impl Stored {
    /// The block format of a quantized type.
    pub fn format(self) -> Option<Quantization> {
        match self {
            Stored::Q8_0 => Some(Quantization::Q8_0),
            Stored::Q4_0 => Some(Quantization::Q4_0),
            _ => None,
        }
    }

    /// Bytes of one stored row of `width` values (quantized rows: whole blocks).
    pub fn row_bytes(self, width: usize) -> usize {
        match self {
            Stored::F32 => 4 * width,
            Stored::F16 | Stored::BF16 => 2 * width,
            Stored::Q8_0 => width.div_ceil(32) * (2 + Quantization::Q8_0.block_bytes()),
            Stored::Q4_0 => width.div_ceil(32) * (2 + Quantization::Q4_0.block_bytes()),
        }
    }

    /// Little-endian values of rows `width` wide, as f32 (quantized blocks dequantized).
    pub fn widen_into(self, bytes: &[u8], width: usize, out: &mut [f32]) {
        match self {
            Stored::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            Stored::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            Stored::BF16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            Stored::Q8_0 | Stored::Q4_0 => {
                let format = match self {
                    Stored::Q4_0 => Quantization::Q4_0,
                    _ => Quantization::Q8_0,
                };
                let row_bytes = self.row_bytes(width);
                for (row, out) in bytes.chunks_exact(row_bytes).zip(out.chunks_mut(width)) {
                    for (block, out) in row
                        .chunks_exact(2 + format.block_bytes())
                        .zip(out.chunks_mut(32))
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
            Stored::F32 => {
                let (i, v) = scan(bytes, 4, u32::from_le_bytes, 0x7f80_0000)?;
                (i, f32::from_bits(v))
            }
            Stored::F16 => {
                let (i, v) = scan(bytes, 2, f16_bits, 0x7c00)?;
                (i, f16::from_bits(v as u16).to_f32())
            }
            Stored::BF16 => {
                let (i, v) = scan(bytes, 2, f16_bits, 0x7f80)?;
                (i, bf16::from_bits(v as u16).to_f32())
            }
            Stored::Q8_0 | Stored::Q4_0 => {
                let block = self.row_bytes(32);
                let (b, v) = scan(bytes, block, f16_bits, 0x7c00)?;
                let per_row = width.div_ceil(32).max(1);
                return Some(NonFiniteValue {
                    value: f16::from_bits(v as u16).to_f32(),
                    row: b / per_row,
                    column: (b % per_row) * 32,
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

    pub fn of_dtype(dtype: DType) -> Option<Stored> {
        match dtype {
            DType::F32 => Some(Stored::F32),
            DType::F16 => Some(Stored::F16),
            DType::BF16 => Some(Stored::BF16),
            _ => None,
        }
    }
}

/// A NaN or ±∞ found in a stored tensor ([`Stored::first_non_finite`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NonFiniteValue {
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
                self.column + 32
            ),
            false => write!(f, "{what} at row {}, column {}", self.row, self.column),
        }
    }
}

/// One tensor's stored values, lent while the model is built.
pub(crate) struct Raw<'a> {
    /// Little-endian values, any alignment.
    pub bytes: &'a [u8],
    /// Their type.
    pub dtype: Stored,
    /// The shape as stored, row-major.
    pub shape: &'a [usize],
    /// Whether this is a `Conv1D` weight stored as HuggingFace's transpose (`[out][in]`: GGUF).
    pub transposed: bool,
    /// Report a byte range of `bytes` read: its pages may be dropped.
    pub done: &'a dyn Fn(Range<usize>),
}

impl Raw<'_> {
    /// All values as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        let width = self.shape.last().copied().unwrap_or(1);
        let mut out = vec![0f32; self.shape.iter().product()];
        self.dtype.widen_into(self.bytes, width, &mut out);
        (self.done)(0..self.bytes.len());
        out
    }
}

/// Where a tensor's values are.
enum Data {
    /// A byte range of the memory map.
    Mapped(Range<usize>),
    /// Already in memory.
    Owned(TensorData),
}

struct Entry {
    data: Data,
    dtype: Stored,
    shape: Vec<usize>,
    transposed: bool,
}

/// Every tensor of a GPT-2 checkpoint, checked against its config, by HuggingFace name (without
/// `transformer.`).
pub(crate) struct Checkpoint {
    path: PathBuf,
    map: Option<Mmap>,
    entries: HashMap<String, Entry>,
    /// Bytes of tensor data in all, and handed out so far (for progress reports).
    total: u64,
    taken: u64,
}

impl Checkpoint {
    /// Opens `model.safetensors` at `path`, checking every tensor's name, shape and dtype against
    /// `config` (nothing is read beyond the header yet).
    pub fn safetensors(path: &Path, config: &Gpt2Config) -> Result<Self> {
        let map = map_file(path)?;
        let st = SafeTensors::deserialize(&map).map_err(|e| {
            Error::format(
                path,
                format!("not a valid safetensors file (truncated or corrupt): {e}"),
            )
        })?;
        let expected: HashMap<String, Vec<usize>> = expected_shapes(config).into_iter().collect();
        let mut entries = HashMap::with_capacity(expected.len());
        // Sorted, so the first problem reported is the same on every run.
        let mut tensors = st.tensors();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        for (stored, view) in tensors {
            let name = stored.strip_prefix("transformer.").unwrap_or(&stored);
            // The causal-mask buffers old checkpoints carry, and a head that is tied anyway.
            if name.ends_with(".attn.bias")
                || name.ends_with(".attn.masked_bias")
                || (config.tie_word_embeddings && name == "lm_head.weight")
            {
                continue;
            }
            let Some(shape) = expected.get(name) else {
                return Err(Error::format(
                    path,
                    format!("unexpected tensor {stored} (not part of a GPT-2 with this config)"),
                ));
            };
            if view.shape() != shape.as_slice() {
                return Err(Error::Shape(format!(
                    "{}: tensor {stored} has shape {:?} but config.json implies {:?}",
                    path.display(),
                    view.shape(),
                    shape
                )));
            }
            let dtype = match view.dtype() {
                Dtype::F32 => Stored::F32,
                Dtype::F16 => Stored::F16,
                Dtype::BF16 => Stored::BF16,
                other => {
                    return Err(Error::format(
                        path,
                        format!("tensor {stored} has dtype {other:?} (expected F32, F16 or BF16)"),
                    ));
                }
            };
            // The view borrows the map: its offset there is the distance between the pointers.
            let start = view.data().as_ptr() as usize - map.as_ptr() as usize;
            let entry = Entry {
                data: Data::Mapped(start..start + view.data().len()),
                dtype,
                shape: shape.clone(),
                transposed: false,
            };
            if entries.insert(name.to_string(), entry).is_some() {
                return Err(Error::format(path, format!("tensor {name} appears twice")));
            }
        }
        drop(st);
        Self::finish(path, Some(map), entries, config)
    }

    /// Opens the tensors of a GGUF file whose config is `config` (from [`GgufFile::gpt2_config`]).
    pub fn gguf(file: &GgufFile, config: &Gpt2Config) -> Result<Self> {
        let path = file.path();
        let map = map_file(path)?;
        if map.len() as u64 != file.file_len() {
            return Err(Error::format(
                path,
                "the file changed while it was being read",
            ));
        }
        let mut entries = HashMap::new();
        for (name, tensor, transposed) in file.gpt2_tensors(config)? {
            let dtype = match tensor.ggml_type {
                GgmlType::F32 => Stored::F32,
                GgmlType::F16 => Stored::F16,
                GgmlType::BF16 => Stored::BF16,
                GgmlType::Q8_0 => Stored::Q8_0,
                GgmlType::Q4_0 => Stored::Q4_0,
            };
            // `open` checked that every tensor lies inside the file, which is mapped whole.
            let start = usize::try_from(tensor.offset).map_err(|_| too_large(path))?;
            let len = usize::try_from(tensor.bytes).map_err(|_| too_large(path))?;
            let end = start.checked_add(len).ok_or_else(|| too_large(path))?;
            entries.insert(
                name,
                Entry {
                    data: Data::Mapped(start..end),
                    dtype,
                    shape: tensor.shape(),
                    transposed,
                },
            );
        }
        Self::finish(path, Some(map), entries, config)
    }

    /// Weights already in memory.
    pub fn from_weights(w: Gpt2Weights) -> Self {
        let mut entries = HashMap::new();
        let mut add = |name: String, t: TensorData| {
            // Other dtypes (weights built by hand) are widened to f32 first.
            let (t, dtype) = match Stored::of_dtype(t.dtype) {
                Some(dtype) => (t, dtype),
                None => (t.convert::<f32>(), Stored::F32),
            };
            let entry = Entry {
                dtype,
                shape: t.shape.to_vec(),
                transposed: false,
                data: Data::Owned(t),
            };
            entries.insert(name, entry);
        };
        let [ln_f_w, ln_f_b] = w.ln_f;
        add("wte.weight".into(), w.wte);
        add("wpe.weight".into(), w.wpe);
        add("ln_f.weight".into(), ln_f_w);
        add("ln_f.bias".into(), ln_f_b);
        if let Some(head) = w.lm_head {
            add("lm_head.weight".into(), head);
        }
        for (l, b) in w.blocks.into_iter().enumerate() {
            let pairs = [
                ("ln_1", b.ln_1),
                ("attn.c_attn", b.c_attn),
                ("attn.c_proj", b.attn_proj),
                ("ln_2", b.ln_2),
                ("mlp.c_fc", b.c_fc),
                ("mlp.c_proj", b.mlp_proj),
            ];
            for (name, [weight, bias]) in pairs {
                add(format!("h.{l}.{name}.weight"), weight);
                add(format!("h.{l}.{name}.bias"), bias);
            }
        }
        let total = entries.values().map(|e| e.bytes() as u64).sum();
        Checkpoint {
            path: PathBuf::new(),
            map: None,
            entries,
            total,
            taken: 0,
        }
    }

    fn finish(
        path: &Path,
        map: Option<Mmap>,
        entries: HashMap<String, Entry>,
        config: &Gpt2Config,
    ) -> Result<Self> {
        if let Some((name, _)) = expected_shapes(config)
            .into_iter()
            .find(|(name, _)| !entries.contains_key(name))
        {
            return Err(Error::format(path, format!("missing tensor {name}")));
        }
        let total = entries.values().map(|e| e.bytes() as u64).sum();
        Ok(Checkpoint {
            path: path.to_path_buf(),
            map,
            entries,
            total,
            taken: 0,
        })
    }

    /// The quantized formats of the tensors stored quantized.
    pub fn quantized(&self) -> impl Iterator<Item = Quantization> + '_ {
        self.entries.values().filter_map(|e| e.dtype.format())
    }

    /// Lends tensor `name` to `f`, then forgets it (its pages, or its memory, are released);
    /// `progress` hears `(bytes handed out so far, total)`. Every tensor of every loading path
    /// passes here once: a NaN or ±∞ value (for quantized blocks, scale) is refused first, with
    /// [`Error::NonFinite`] naming the tensor and where in it.
    pub fn take<R>(
        &mut self,
        name: &str,
        progress: &mut dyn FnMut(u64, u64),
        f: impl FnOnce(Raw) -> R,
    ) -> Result<R> {
        let entry = self
            .entries
            .remove(name)
            .ok_or_else(|| Error::format(&self.path, format!("missing tensor {name}")))?;
        self.taken += entry.bytes() as u64;
        let bytes = match &entry.data {
            Data::Owned(t) => t.as_bytes(),
            Data::Mapped(range) => self
                .map
                .as_ref()
                .and_then(|map| map.get(range.clone()))
                .ok_or_else(|| Error::format(&self.path, "the file is not mapped"))?,
        };
        let width = entry.shape.last().copied().unwrap_or(1);
        if let Some(bad) = entry.dtype.first_non_finite(bytes, width) {
            return Err(Error::NonFinite(format!(
                "{}tensor {name} holds {bad}: the model would compute NaN",
                match self.path.as_os_str().is_empty() {
                    true => String::new(),
                    false => format!("{}: ", self.path.display()),
                }
            )));
        }
        let out = match &entry.data {
            Data::Owned(t) => f(Raw {
                bytes: t.as_bytes(),
                dtype: entry.dtype,
                shape: &entry.shape,
                transposed: entry.transposed,
                done: &|_| {},
            }),
            Data::Mapped(range) => {
                let map = self
                    .map
                    .as_ref()
                    .ok_or_else(|| Error::format(&self.path, "the file is not mapped"))?;
                let base = range.start;
                let release = |r: Range<usize>| release(map, base + r.start..base + r.end);
                f(Raw {
                    bytes: &map[range.clone()],
                    dtype: entry.dtype,
                    shape: &entry.shape,
                    transposed: entry.transposed,
                    done: &release,
                })
            }
        };
        progress(self.taken, self.total);
        Ok(out)
    }

    /// Every tensor as [`TensorData`] in HuggingFace's layout (quantized ones dequantized to f32,
    /// GGUF's transposed weights turned back): what the tensor path and [`Gpt2Weights`] hold.
    pub fn into_weights(
        mut self,
        config: &Gpt2Config,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Gpt2Weights> {
        let mut read = |name: &str| -> Result<TensorData> {
            self.take(name, progress, |raw| {
                let shape = raw.shape.to_vec();
                match raw.dtype {
                    Stored::F32 | Stored::F16 | Stored::BF16 if !raw.transposed => {
                        let dtype = match raw.dtype {
                            Stored::F16 => DType::F16,
                            Stored::BF16 => DType::BF16,
                            _ => DType::F32,
                        };
                        (raw.done)(0..raw.bytes.len());
                        TensorData::from_bytes_vec(le_to_native(raw.bytes, raw.dtype), shape, dtype)
                    }
                    _ => {
                        let values = raw.to_f32();
                        if raw.transposed {
                            let [rows, cols] = [shape[0], shape[1]];
                            let mut t = vec![0f32; values.len()];
                            for i in 0..rows {
                                for j in 0..cols {
                                    t[j * rows + i] = values[i * cols + j];
                                }
                            }
                            TensorData::new(t, [cols, rows])
                        } else {
                            TensorData::new(values, shape)
                        }
                    }
                }
            })
        };
        let mut pair = |prefix: &str| -> Result<[TensorData; 2]> {
            Ok([
                read(&format!("{prefix}.weight"))?,
                read(&format!("{prefix}.bias"))?,
            ])
        };
        let mut blocks = Vec::with_capacity(config.n_layer);
        for l in 0..config.n_layer {
            blocks.push(BlockWeights {
                ln_1: pair(&format!("h.{l}.ln_1"))?,
                c_attn: pair(&format!("h.{l}.attn.c_attn"))?,
                attn_proj: pair(&format!("h.{l}.attn.c_proj"))?,
                ln_2: pair(&format!("h.{l}.ln_2"))?,
                c_fc: pair(&format!("h.{l}.mlp.c_fc"))?,
                mlp_proj: pair(&format!("h.{l}.mlp.c_proj"))?,
            });
        }
        let ln_f = pair("ln_f")?;
        Ok(Gpt2Weights {
            wte: read("wte.weight")?,
            wpe: read("wpe.weight")?,
            blocks,
            ln_f,
            lm_head: if config.tie_word_embeddings {
                None
            } else {
                Some(read("lm_head.weight")?)
            },
        })
    }
}

impl Entry {
    fn bytes(&self) -> usize {
        match &self.data {
            Data::Mapped(r) => r.len(),
            Data::Owned(t) => t.as_bytes().len(),
        }
    }
}

/// Little-endian bytes in native order (a copy; the same bytes on little-endian machines).
fn le_to_native(bytes: &[u8], dtype: Stored) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if cfg!(target_endian = "big") {
        let width = if dtype == Stored::F32 { 4 } else { 2 };
        out.chunks_exact_mut(width).for_each(|c| c.reverse());
    }
    out
}

fn too_large(path: &Path) -> Error {
    Error::format(path, "a tensor is larger than this machine's address space")
}

/// Maps a regular file for reading.
fn map_file(path: &Path) -> Result<Mmap> {
    // Refuses a FIFO, device or directory before opening it.
    let file = decode_core::files::open_regular(path)?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if size < 8 {
        return Err(Error::format(
            path,
            format!("truncated file ({size} bytes)"),
        ));
    }
    // SAFETY: the file is only read; as with every memory map, it must not be modified while the
    // model loads (the weights are copied out before loading returns).
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// Drops the whole pages of `range` from this process's memory (they are re-read from the file
/// if touched again), so a tensor already laid out costs nothing twice.
fn release(map: &Mmap, range: Range<usize>) {
    #[cfg(unix)]
    {
        const PAGE: usize = 4096;
        let start = range.start.div_ceil(PAGE) * PAGE;
        let end = range.end / PAGE * PAGE;
        if end > start {
            // SAFETY: the map is private and read-only: dropping its pages only means they are
            // read from the file again on the next access, which sees the same bytes.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }
    #[cfg(not(unix))]
    let _ = (map, range);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every f16 and bf16 bit pattern: the scan flags exactly the non-finite ones.
    #[test]
    fn every_half_precision_pattern_is_classified_as_is_finite_says() {
        for bits in 0..=u16::MAX {
            let bytes = bits.to_le_bytes();
            let f16_bad = Stored::F16.first_non_finite(&bytes, 1).is_some();
            assert_eq!(
                f16_bad,
                !f16::from_bits(bits).is_finite(),
                "f16 {bits:#06x}"
            );
            let bf16_bad = Stored::BF16.first_non_finite(&bytes, 1).is_some();
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
            prop_assert!(Stored::F32.first_non_finite(bytemuck_f32(&values).as_slice(), width).is_none());
            let i = at.index(len);
            values[i] = bad;
            let found = Stored::F32.first_non_finite(&bytemuck_f32(&values), width).unwrap();
            prop_assert_eq!((found.row, found.column, found.scale), (i / width, i % width, false));

            let stored = if q4 { Stored::Q4_0 } else { Stored::Q8_0 };
            let block = stored.row_bytes(32);
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
