//! GPT-2's weights in memory: [`Gpt2Weights`] holds every tensor of a HuggingFace
//! `model.safetensors` in the dtype it was stored in (f32, f16 or bf16; names with or without the
//! `transformer.` prefix; a tied or separate `lm_head.weight`), shapes checked against the config.
//! It is what the tensor path uploads to a device, and what tests and benchmarks build models from
//! ([`crate::Gpt2::from_weights`]).
//!
//! [`crate::Gpt2::load`] on the host path does not go through it: it lays the weights out for its
//! kernels straight from the memory-mapped file, tensor by tensor, so a second copy is never held.
//!
//! Missing, unexpected and misshapen tensors are errors that name the tensor. GPT-2's `Conv1D`
//! weights are `[in, out]`, which is already the layout burn's `linear` takes.

use burn::tensor::{DType, Distribution, Tensor, TensorData};
use decode_kernels::ElementType;

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

/// Where the loader's check finds the first NaN or ±∞ of `t` (f32, f16 or bf16), as `(row,
/// column)`; `None` when every value is finite (or the dtype is another). Every loading path runs
/// this check on every tensor. Public for its benchmark (`cargo bench --bench gpt2 -- load`).
#[doc(hidden)]
pub fn first_non_finite(t: &TensorData) -> Option<(usize, usize)> {
    let dtype = element_type_of(t.dtype)?;
    let width = t.shape.last().copied().unwrap_or(1);
    dtype
        .first_non_finite(t.as_bytes(), width)
        .map(|bad| (bad.row, bad.column))
}

/// The element type of a burn dtype that checkpoints store (f32, f16, bf16), or `None`.
pub(crate) fn element_type_of(dtype: DType) -> Option<ElementType> {
    match dtype {
        DType::F32 => Some(ElementType::F32),
        DType::F16 => Some(ElementType::F16),
        DType::BF16 => Some(ElementType::BF16),
        _ => None,
    }
}
