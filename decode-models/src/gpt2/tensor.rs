//! The tensor path: GPT-2 as burn tensor operations, on any backend (what GPUs run).
//!
//! A block is pre-norm attention with a KV cache, then a pre-norm MLP. The CPU backends take the
//! host path ([`super::host`]) instead, which computes the same function with less overhead.
//!
//! Weights, activations and the cache are all in one dtype ([`BurnGpt2::dtype`]): f32, or the
//! checkpoint's f16/bf16 on a GPU that computes in it. A decode step reads nothing back but the
//! logits, and only the positions asked for.

use crate::cache::Step;
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::module::embedding;
use burn::tensor::module::linear;
use burn::tensor::{DType, Int, Tensor, TensorData, TensorPrimitive};
use decode_core::{Batch, Error, Result};

use crate::KvCache;

use crate::Activation;

/// `x · weight + bias` with GPT-2's `[in, out]` weight, through burn's matmul.
#[derive(Debug, Clone)]
pub struct Linear<B: Backend> {
    /// `[in, out]`.
    weight: Tensor<B, 2>,
    /// `[out]`.
    bias: Option<Tensor<B, 1>>,
}

/// A host tensor on `device`, converted to `dtype`.
fn upload<B: Backend, const D: usize>(
    t: TensorData,
    device: &B::Device,
    dtype: DType,
) -> Tensor<B, D> {
    Tensor::from_data(t.convert_dtype(dtype), (device, dtype))
}

impl<B: Backend> Linear<B> {
    /// From a host weight `[in, out]` (any float dtype) and optional bias `[out]`, stored in `dtype`.
    pub fn new(
        weight: TensorData,
        bias: Option<TensorData>,
        device: &B::Device,
        dtype: DType,
    ) -> Self {
        Linear {
            weight: upload(weight, device, dtype),
            bias: bias.map(|b| upload(b, device, dtype)),
        }
    }

    /// From `[weight, bias]`.
    pub fn with_bias([weight, bias]: [TensorData; 2], device: &B::Device, dtype: DType) -> Self {
        Self::new(weight, Some(bias), device, dtype)
    }

    /// `x` is `[rows, steps, in]`; returns `[rows, steps, out]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        linear(x, self.weight.clone(), self.bias.clone())
    }
}

/// Layer norm over the last axis, through the backend's fused kernel.
#[derive(Debug, Clone)]
pub struct LayerNorm<B: Backend> {
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    epsilon: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// From host weight and bias, stored in `dtype`.
    pub fn new(
        [weight, bias]: [TensorData; 2],
        epsilon: f64,
        device: &B::Device,
        dtype: DType,
    ) -> Self {
        LayerNorm {
            weight: upload(weight, device, dtype),
            bias: upload(bias, device, dtype),
            epsilon,
        }
    }

    /// Normalises `x` over its last axis.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(
            x.into_primitive().tensor(),
            self.weight.clone().into_primitive().tensor(),
            Some(self.bias.clone().into_primitive().tensor()),
            self.epsilon,
        )))
    }
}

/// Attention settings shared by every block.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    /// Heads.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// What this layer's scores are multiplied by ([`crate::Gpt2Config::attention_scale`]).
    pub scale: f64,
}

/// A GPT-2 block.
#[derive(Debug, Clone)]
pub struct Block<B: Backend> {
    ln_1: LayerNorm<B>,
    c_attn: Linear<B>,
    attn_proj: Linear<B>,
    ln_2: LayerNorm<B>,
    c_fc: Linear<B>,
    mlp_proj: Linear<B>,
    activation: Activation,
}

impl<B: Backend> Block<B> {
    /// From host weights, stored in `dtype`.
    pub fn new(
        w: crate::weights::BlockWeights,
        epsilon: f64,
        activation: Activation,
        device: &B::Device,
        dtype: DType,
    ) -> Self {
        Block {
            ln_1: LayerNorm::new(w.ln_1, epsilon, device, dtype),
            c_attn: Linear::with_bias(w.c_attn, device, dtype),
            attn_proj: Linear::with_bias(w.attn_proj, device, dtype),
            ln_2: LayerNorm::new(w.ln_2, epsilon, device, dtype),
            c_fc: Linear::with_bias(w.c_fc, device, dtype),
            mlp_proj: Linear::with_bias(w.mlp_proj, device, dtype),
            activation,
        }
    }

    /// `x` is `[rows, steps, n_embd]`; writes this layer's keys and values into `cache`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        layer: usize,
        shape: AttentionShape,
        cache: &mut KvCache<B>,
        step: &Step<B>,
    ) -> Result<Tensor<B, 3>> {
        let x = x.clone() + self.attention(self.ln_1.forward(x), layer, shape, cache, step)?;
        let h = self.c_fc.forward(self.ln_2.forward(x.clone()));
        let h = match self.activation {
            Activation::GeluTanh => activation::gelu_approximate(h),
            Activation::Gelu => activation::gelu(h),
            Activation::Relu => activation::relu(h),
        };
        Ok(x + self.mlp_proj.forward(h))
    }

    fn attention(
        &self,
        x: Tensor<B, 3>,
        layer: usize,
        shape: AttentionShape,
        cache: &mut KvCache<B>,
        step: &Step<B>,
    ) -> Result<Tensor<B, 3>> {
        let [rows, steps, embd] = x.dims();
        let AttentionShape {
            heads, head_dim, ..
        } = shape;
        // [rows, steps, 3·embd] → [3·rows, heads, steps, head_dim] in one copy (the reshape after
        // the permute); q, k and v are then contiguous slices of it, where slicing each part out
        // of the projection first would need a copy per part.
        let qkv = self
            .c_attn
            .forward(x)
            .reshape([rows, steps, 3, heads, head_dim])
            .permute([2, 0, 3, 1, 4])
            .reshape([3 * rows, heads, steps, head_dim]);
        let part = |i: usize| qkv.clone().narrow(0, i * rows, rows);
        let (q, k, v) = (part(0), part(1), part(2));
        let (k, v) = cache.append(layer, step.start, k, v)?;
        let len = k.dims()[2];
        // softmax(q·kᵀ · scale, masked) · v as plain tensor operations, so burn's fusion merges the
        // scale into the first matmul and the softmax's elementwise work into its reductions.
        // (burn's `attention` op runs its fallback unfused, 12 kernels a layer, whenever the
        // scale is explicit or autotune prefers it; its fused kernel aligns the causal mask
        // top-left, which is wrong for new tokens after a cache.)
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(shape.scale);
        let scores = match &step.mask {
            Some(mask) => {
                let mask = mask.clone().expand([rows, heads, steps, len]);
                scores.mask_fill(mask, f32::NEG_INFINITY)
            }
            None => scores,
        };
        let out = activation::softmax(scores, 3).matmul(v);
        // [rows, heads, steps, head_dim] → [rows, steps, embd]; with one step the two layouts are
        // the same bytes, so no copy.
        let out = if steps == 1 {
            out.reshape([rows, steps, embd])
        } else {
            out.swap_dims(1, 2).reshape([rows, steps, embd])
        };
        Ok(self.attn_proj.forward(out))
    }
}

/// GPT-2's weights as burn tensors, and the forward pass over them.
#[derive(Debug, Clone)]
pub struct BurnGpt2<B: Backend> {
    wte: Tensor<B, 2>,
    wpe: Tensor<B, 2>,
    blocks: Vec<Block<B>>,
    ln_f: LayerNorm<B>,
    /// `[n_embd, vocab_size]`.
    lm_head: Linear<B>,
    /// Per layer.
    shapes: Vec<AttentionShape>,
    dtype: DType,
    device: B::Device,
}

impl<B: Backend> BurnGpt2<B> {
    /// From weights checked against `config`; `head` is the LM head transposed to `[embd, vocab]`.
    /// Everything is stored and computed in `dtype`.
    pub fn new(
        config: &crate::Gpt2Config,
        w: crate::weights::Gpt2Weights,
        head: TensorData,
        device: &B::Device,
        dtype: DType,
    ) -> Self {
        let eps = config.layer_norm_epsilon;
        BurnGpt2 {
            wte: upload(w.wte, device, dtype),
            wpe: upload(w.wpe, device, dtype),
            blocks: w
                .blocks
                .into_iter()
                .map(|b| Block::new(b, eps, config.activation, device, dtype))
                .collect(),
            ln_f: LayerNorm::new(w.ln_f, eps, device, dtype),
            lm_head: Linear::new(head, None, device, dtype),
            shapes: (0..config.n_layer)
                .map(|layer| AttentionShape {
                    heads: config.n_head,
                    head_dim: config.head_dim(),
                    scale: config.attention_scale(layer),
                })
                .collect(),
            dtype,
            device: device.clone(),
        }
    }

    /// The dtype weights, activations and the cache are held in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Runs `batch` (already checked) through the model from `cache`; with `last_only`, the LM
    /// head runs on each row's last position only. Returns the logits' values.
    pub fn forward(
        &self,
        batch: &Batch,
        cache: &mut KvCache<B>,
        last_only: bool,
    ) -> Result<Vec<f32>> {
        let (rows, steps) = (batch.rows(), batch.steps());
        let step = cache.begin(batch)?;
        // Padding ids may lie outside the vocabulary; they are masked, so any row will do.
        let ids = (0..rows * steps)
            .map(|i| {
                let real = batch.is_real(i / steps, i % steps);
                if real { batch.tokens()[i] as i64 } else { 0 }
            })
            .collect();
        let tokens = embedding(self.wte.clone(), self.int_tensor(ids, rows, steps));
        let positions = embedding(
            self.wpe.clone(),
            self.int_tensor(step.positions.clone(), rows, steps),
        );
        let mut x = tokens + positions;
        // Several new tokens need the causal mask; the cache gives one only when slots are hidden.
        let step = Step {
            mask: step
                .mask
                .or_else(|| (steps > 1).then(|| cache.attention_mask(step.start, steps))),
            ..step
        };
        for (layer, (block, &shape)) in self.blocks.iter().zip(&self.shapes).enumerate() {
            x = block.forward(x, layer, shape, cache, &step)?;
        }
        if last_only {
            let embd = x.dims()[2];
            x = x.slice([0..rows, steps - 1..steps, 0..embd]);
        }
        // The one read back of the step.
        self.lm_head
            .forward(self.ln_f.forward(x))
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| Error::Shape(format!("reading logits back: {e:?}")))
    }

    fn int_tensor(&self, values: Vec<i64>, rows: usize, steps: usize) -> Tensor<B, 2, Int> {
        Tensor::from_data(TensorData::new(values, [rows, steps]), &self.device)
    }
}
