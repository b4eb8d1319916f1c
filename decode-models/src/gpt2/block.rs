//! One GPT-2 transformer block: pre-norm attention with a KV cache, then a pre-norm MLP.

use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::module::{attention, linear};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use decode_core::cache::Step;
use decode_core::{KvCache, Result};
use rayon::prelude::*;

use crate::Activation;

/// `x · weight + bias` with GPT-2's `[in, out]` weight, stored as column blocks.
///
/// A batch-1 decode step is memory-bound, and burn's CPU backends run such a small matmul on one
/// core. Splitting the weight into one block of output columns per thread and running the blocks in
/// parallel streams the weights with every core (2× here on 2 cores). On a GPU there is one block.
#[derive(Debug, Clone)]
pub struct Linear<B: Backend> {
    blocks: Vec<(Tensor<B, 2>, Option<Tensor<B, 1>>)>,
}

impl<B: Backend> Linear<B> {
    /// From a host weight `[in, out]` and optional bias `[out]`, in `chunks` column blocks.
    pub fn new(
        weight: TensorData,
        bias: Option<TensorData>,
        chunks: usize,
        device: &B::Device,
    ) -> Self {
        let weight = Tensor::<B, 2>::from_data(weight, device);
        let bias = bias.map(|b| Tensor::<B, 1>::from_data(b, device));
        let [inputs, outputs] = weight.dims();
        let chunks = chunks.clamp(1, outputs.max(1));
        if chunks == 1 {
            return Linear {
                blocks: vec![(weight, bias)],
            };
        }
        let width = outputs.div_ceil(chunks);
        let blocks = (0..outputs)
            .step_by(width)
            .map(|start| {
                let end = (start + width).min(outputs);
                // A fresh contiguous copy, so each block streams its own memory.
                let w = Tensor::from_data(
                    weight.clone().slice([0..inputs, start..end]).into_data(),
                    device,
                );
                let b = bias
                    .clone()
                    .map(|b| Tensor::from_data(b.slice(start..end).into_data(), device));
                (w, b)
            })
            .collect();
        Linear { blocks }
    }

    /// From `[weight, bias]`.
    pub fn with_bias([weight, bias]: [TensorData; 2], chunks: usize, device: &B::Device) -> Self {
        Self::new(weight, Some(bias), chunks, device)
    }

    /// `x` is `[rows, steps, in]`; returns `[rows, steps, out]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let run =
            |(w, b): &(Tensor<B, 2>, Option<Tensor<B, 1>>)| linear(x.clone(), w.clone(), b.clone());
        match self.blocks.as_slice() {
            [one] => run(one),
            blocks => Tensor::cat(blocks.par_iter().map(run).collect(), 2),
        }
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
    /// From host weight and bias.
    pub fn new([weight, bias]: [TensorData; 2], epsilon: f64, device: &B::Device) -> Self {
        LayerNorm {
            weight: Tensor::from_data(weight, device),
            bias: Tensor::from_data(bias, device),
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
    /// Divide scores by √head_dim (`scale_attn_weights`).
    pub scale_by_head_dim: bool,
    /// Also divide by layer index + 1 (`scale_attn_by_inverse_layer_idx`).
    pub scale_by_layer: bool,
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
    /// From host weights.
    pub fn new(
        w: crate::weights::BlockWeights,
        epsilon: f64,
        activation: Activation,
        chunks: usize,
        device: &B::Device,
    ) -> Self {
        Block {
            ln_1: LayerNorm::new(w.ln_1, epsilon, device),
            c_attn: Linear::with_bias(w.c_attn, chunks, device),
            attn_proj: Linear::with_bias(w.attn_proj, chunks, device),
            ln_2: LayerNorm::new(w.ln_2, epsilon, device),
            c_fc: Linear::with_bias(w.c_fc, chunks, device),
            mlp_proj: Linear::with_bias(w.mlp_proj, chunks, device),
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
        let qkv = self.c_attn.forward(x);
        // [rows, steps, embd] → [rows, heads, steps, head_dim]
        let split = |i: usize| {
            qkv.clone()
                .slice([0..rows, 0..steps, i * embd..(i + 1) * embd])
                .reshape([rows, steps, heads, head_dim])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (split(0), split(1), split(2));
        let (k, v) = cache.append(layer, step.start, k, v)?;
        let len = k.dims()[2];
        let mut scale = 1.0;
        if shape.scale_by_head_dim {
            scale /= (head_dim as f64).sqrt();
        }
        if shape.scale_by_layer {
            scale /= (layer + 1) as f64;
        }
        let mask = step
            .mask
            .clone()
            .map(|m| m.expand([rows, heads, steps, len]));
        let options = AttentionModuleOptions {
            scale: Some(scale),
            softcap: None,
            // Bottom-right aligned: new token i sees every cached slot and new tokens ≤ i.
            is_causal: mask.is_none(),
        };
        let out = attention(q, k, v, mask, None, options)
            .swap_dims(1, 2)
            .reshape([rows, steps, embd]);
        Ok(self.attn_proj.forward(out))
    }
}
