//! Reading GPT-2 weights from a HuggingFace `model.safetensors`.
//!
//! Accepts tensors stored as f32, f16 or bf16, names with or without the `transformer.` prefix,
//! and a tied or separate `lm_head.weight`. [`Gpt2Weights`] holds every tensor in the dtype it was
//! stored in. What happens next depends on the path ([`crate::gpt2::ComputePath`]): the CPU host
//! path keeps f16 and bf16 weights as stored and widens them to f32 in registers as it computes
//! (f32 accumulation); the tensor path, what GPUs run, converts them at load to the dtype
//! [`crate::gpt2::Precision`] resolves to (the stored f16/bf16 where the device computes in it,
//! f32 otherwise and on CPUs).
//!
//! Every tensor's shape is checked against the config before anything is built; missing,
//! unexpected and misshapen tensors are errors that name the tensor. GPT-2's `Conv1D` weights are
//! `[in, out]`, which is already the layout burn's `linear` takes, so nothing is transposed.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{DType, Distribution, Tensor, TensorData};
use decode_core::{Error, Result};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use crate::Gpt2Config;

/// The weights of one transformer block, on the host.
#[derive(Debug, Clone)]
pub struct BlockWeights {
    /// `ln_1.weight`, `ln_1.bias`.
    pub ln_1: [TensorData; 2],
    /// `attn.c_attn.weight` `[n_embd, 3·n_embd]`, bias.
    pub c_attn: [TensorData; 2],
    /// `attn.c_proj.weight` `[n_embd, n_embd]`, bias.
    pub attn_proj: [TensorData; 2],
    /// `ln_2.weight`, `ln_2.bias`.
    pub ln_2: [TensorData; 2],
    /// `mlp.c_fc.weight` `[n_embd, n_inner]`, bias.
    pub c_fc: [TensorData; 2],
    /// `mlp.c_proj.weight` `[n_inner, n_embd]`, bias.
    pub mlp_proj: [TensorData; 2],
}

/// All GPT-2 weights, on the host, in their stored dtype, shapes checked.
#[derive(Debug, Clone)]
pub struct Gpt2Weights {
    /// Token embedding `[vocab_size, n_embd]`.
    pub wte: TensorData,
    /// Position embedding `[n_positions, n_embd]`.
    pub wpe: TensorData,
    /// One entry per layer.
    pub blocks: Vec<BlockWeights>,
    /// Final layer norm weight and bias.
    pub ln_f: [TensorData; 2],
    /// A separate LM head `[vocab_size, n_embd]`; `None` when tied to `wte`.
    pub lm_head: Option<TensorData>,
}

/// A weight and its bias (or a layer norm's pair), converted to `dtype`.
fn convert_pair([w, b]: [TensorData; 2], dtype: DType) -> [TensorData; 2] {
    [w.convert_dtype(dtype), b.convert_dtype(dtype)]
}

impl BlockWeights {
    fn convert(self, dtype: DType) -> Self {
        let pair = |p| convert_pair(p, dtype);
        BlockWeights {
            ln_1: pair(self.ln_1),
            c_attn: pair(self.c_attn),
            attn_proj: pair(self.attn_proj),
            ln_2: pair(self.ln_2),
            c_fc: pair(self.c_fc),
            mlp_proj: pair(self.mlp_proj),
        }
    }
}

impl Gpt2Weights {
    /// Random weights of `config`'s shape in f32 (GPT-2's initialisation scale: N(0, 0.02), layer
    /// norms at 1), drawn on the CPU from `seed`: the same values whatever backend later runs them.
    /// For benchmarks and tests, no files needed.
    // A test and bench helper: hidden from the docs (not part of the supported API), public for
    // the workspace's tests and benches.
    #[doc(hidden)]
    pub fn random(config: &Gpt2Config, seed: u64) -> Self {
        use burn::backend::Flex;
        let device = burn::backend::flex::FlexDevice;
        <Flex as burn::tensor::backend::Backend>::seed(&device, seed);
        let normal = |shape: Vec<usize>, std: f64| {
            let n: usize = shape.iter().product();
            let values =
                Tensor::<Flex, 1>::random([n], Distribution::Normal(0.0, std), &device).into_data();
            TensorData::new(
                values.to_vec::<f32>().unwrap_or_else(|_| vec![0.0; n]),
                shape,
            )
        };
        let pair = |shape: Vec<usize>, out: usize| [normal(shape, 0.02), normal(vec![out], 0.02)];
        let norm = |e: usize| [TensorData::new(vec![1f32; e], [e]), normal(vec![e], 0.02)];
        let (e, i, v) = (config.n_embd, config.n_inner, config.vocab_size);
        Gpt2Weights {
            wte: normal(vec![v, e], 0.02),
            wpe: normal(vec![config.n_positions, e], 0.01),
            blocks: (0..config.n_layer)
                .map(|_| BlockWeights {
                    ln_1: norm(e),
                    c_attn: pair(vec![e, 3 * e], 3 * e),
                    attn_proj: pair(vec![e, e], e),
                    ln_2: norm(e),
                    c_fc: pair(vec![e, i], i),
                    mlp_proj: pair(vec![i, e], e),
                })
                .collect(),
            ln_f: norm(e),
            lm_head: (!config.tie_word_embeddings).then(|| normal(vec![v, e], 0.02)),
        }
    }

    /// Every tensor converted to `dtype` (f32, f16 or bf16), as a checkpoint stored in it would be.
    pub fn convert(self, dtype: DType) -> Self {
        Gpt2Weights {
            wte: self.wte.convert_dtype(dtype),
            wpe: self.wpe.convert_dtype(dtype),
            blocks: self.blocks.into_iter().map(|b| b.convert(dtype)).collect(),
            ln_f: convert_pair(self.ln_f, dtype),
            lm_head: self.lm_head.map(|h| h.convert_dtype(dtype)),
        }
    }

    /// The dtype the checkpoint stores its weights in (that of `wte`).
    pub fn dtype(&self) -> DType {
        self.wte.dtype
    }
}

/// Every tensor GPT-2 needs for `config`, with its shape (names without the `transformer.` prefix).
pub fn expected_shapes(config: &Gpt2Config) -> Vec<(String, Vec<usize>)> {
    let (e, i) = (config.n_embd, config.n_inner);
    let mut out = vec![
        ("wte.weight".to_string(), vec![config.vocab_size, e]),
        ("wpe.weight".to_string(), vec![config.n_positions, e]),
        ("ln_f.weight".to_string(), vec![e]),
        ("ln_f.bias".to_string(), vec![e]),
    ];
    if !config.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![config.vocab_size, e]));
    }
    for l in 0..config.n_layer {
        let per_layer: [(&str, Vec<usize>); 12] = [
            ("ln_1.weight", vec![e]),
            ("ln_1.bias", vec![e]),
            ("attn.c_attn.weight", vec![e, 3 * e]),
            ("attn.c_attn.bias", vec![3 * e]),
            ("attn.c_proj.weight", vec![e, e]),
            ("attn.c_proj.bias", vec![e]),
            ("ln_2.weight", vec![e]),
            ("ln_2.bias", vec![e]),
            ("mlp.c_fc.weight", vec![e, i]),
            ("mlp.c_fc.bias", vec![i]),
            ("mlp.c_proj.weight", vec![i, e]),
            ("mlp.c_proj.bias", vec![e]),
        ];
        out.extend(
            per_layer
                .into_iter()
                .map(|(name, shape)| (format!("h.{l}.{name}"), shape)),
        );
    }
    out
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
        let path = path.as_ref();
        // Refuses a FIFO, device or directory before opening it; the size is checked below and by
        // safetensors' header parsing.
        let file = decode_core::files::open_regular(path)?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if size < 8 {
            return Err(Error::format(
                path,
                format!("truncated safetensors file ({size} bytes)"),
            ));
        }
        // SAFETY: the file is only read; as with every memory map, it must not be modified while
        // the weights load (they are copied out before this function returns).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let st = SafeTensors::deserialize(&map).map_err(|e| {
            Error::format(
                path,
                format!("not a valid safetensors file (truncated or corrupt): {e}"),
            )
        })?;
        let mut tensors = read_all(&st, config, path, size, progress)?;
        let mut take = |name: &str| {
            tensors
                .remove(name)
                .ok_or_else(|| Error::format(path, format!("missing tensor {name}")))
        };
        let mut pair = |prefix: &str| -> Result<[TensorData; 2]> {
            Ok([
                take(&format!("{prefix}.weight"))?,
                take(&format!("{prefix}.bias"))?,
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
            wte: take("wte.weight")?,
            wpe: take("wpe.weight")?,
            blocks,
            ln_f,
            lm_head: if config.tie_word_embeddings {
                None
            } else {
                Some(take("lm_head.weight")?)
            },
        })
    }
}

/// Every expected tensor of `st`, in its stored dtype, after checking names and shapes.
fn read_all(
    st: &SafeTensors<'_>,
    config: &Gpt2Config,
    path: &Path,
    total: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<HashMap<String, TensorData>> {
    let mut done = 0u64;
    let expected: HashMap<String, Vec<usize>> = expected_shapes(config).into_iter().collect();
    let mut found = HashMap::with_capacity(expected.len());
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
        let data = to_data(view.dtype(), view.data(), shape).ok_or_else(|| {
            Error::format(
                path,
                format!(
                    "tensor {stored} has dtype {:?} (expected F32, F16 or BF16)",
                    view.dtype()
                ),
            )
        })?;
        done += view.data().len() as u64;
        progress(done, total);
        if found.insert(name.to_string(), data).is_some() {
            return Err(Error::format(path, format!("tensor {name} appears twice")));
        }
    }
    if let Some((name, _)) = expected_shapes(config)
        .into_iter()
        .find(|(name, _)| !found.contains_key(name))
    {
        return Err(Error::format(path, format!("missing tensor {name}")));
    }
    Ok(found)
}

/// Little-endian f32, f16 or bf16 bytes to a tensor of the same dtype; `None` for other dtypes.
fn to_data(dtype: Dtype, bytes: &[u8], shape: &[usize]) -> Option<TensorData> {
    let shape = shape.to_vec();
    Some(match dtype {
        Dtype::F32 => TensorData::new(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect::<Vec<_>>(),
            shape,
        ),
        Dtype::F16 => TensorData::new(
            bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]))
                .collect::<Vec<_>>(),
            shape,
        ),
        Dtype::BF16 => TensorData::new(
            bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]))
                .collect::<Vec<_>>(),
            shape,
        ),
        _ => return None,
    })
}
