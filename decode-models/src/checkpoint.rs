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
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use decode_kernels::ElementType;
use decode_kernels::quant::Format;

use crate::Gpt2Config;
use crate::gguf::GgufFile;
use crate::weights::{BlockWeights, Gpt2Weights, element_type_of, expected_shapes};

/// One tensor's stored values, lent while the model is built.
pub(crate) struct Raw<'a> {
    /// Little-endian values, any alignment.
    pub bytes: &'a [u8],
    /// Their type.
    pub dtype: ElementType,
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
    dtype: ElementType,
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
                Dtype::F32 => ElementType::F32,
                Dtype::F16 => ElementType::F16,
                Dtype::BF16 => ElementType::BF16,
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
            let dtype = tensor.element_type;
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
            let (t, dtype) = match element_type_of(t.dtype) {
                Some(dtype) => (t, dtype),
                None => (t.convert::<f32>(), ElementType::F32),
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
    pub fn quantized(&self) -> impl Iterator<Item = Format> + '_ {
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
                    ElementType::F32 | ElementType::F16 | ElementType::BF16 if !raw.transposed => {
                        let dtype = match raw.dtype {
                            ElementType::F16 => DType::F16,
                            ElementType::BF16 => DType::BF16,
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
fn le_to_native(bytes: &[u8], dtype: ElementType) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if cfg!(target_endian = "big") {
        let width = if dtype == ElementType::F32 { 4 } else { 2 };
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

impl Gpt2Weights {
    /// Reads `model.safetensors` at `path` for `config`.
    pub fn read(path: impl AsRef<Path>, config: &Gpt2Config) -> Result<Self> {
        Self::read_with_progress(path, config, &mut |_, _| {})
    }

    /// Like [`Gpt2Weights::read`], reporting `(bytes read, total bytes)` as tensors are read.
    pub fn read_with_progress(
        path: impl AsRef<Path>,
        config: &Gpt2Config,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self> {
        Checkpoint::safetensors(path.as_ref(), config)?.into_weights(config, progress)
    }
}
