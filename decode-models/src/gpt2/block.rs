//! One GPT-2 transformer block: pre-norm attention with a KV cache, then a pre-norm MLP.

use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::module::{attention, linear};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use decode_core::cache::Step;
use decode_core::{KvCache, Result};

use super::host_linear::{HostLinear, HostWeights};
use crate::Activation;

/// `x · weight + bias` with GPT-2's `[in, out]` weight.
///
/// On CPU backends the weights stay on the host in their stored dtype and run through
/// [`HostLinear`] (streams the weights once per 16 tokens, on every core); elsewhere they are a
/// burn tensor and burn's matmul runs.
#[derive(Debug, Clone)]
pub enum Linear<B: Backend> {
    /// burn's matmul.
    Burn {
        /// `[in, out]`, f32.
        weight: Tensor<B, 2>,
        /// `[out]`.
        bias: Option<Tensor<B, 1>>,
    },
    /// The host kernel.
    Host {
        /// Weights and bias.
        linear: HostLinear,
        /// Where results go.
        device: B::Device,
    },
}

impl<B: Backend> Linear<B> {
    /// From a host weight `[in, out]` (f32, f16 or bf16) and optional bias `[out]`.
    pub fn new(
        weight: TensorData,
        bias: Option<TensorData>,
        host: bool,
        device: &B::Device,
    ) -> Self {
        if host && let Some(w) = host_weights(&weight) {
            let [inputs, outputs] = [weight.shape[0], weight.shape[1]];
            let bias = bias.and_then(|b| b.convert::<f32>().into_vec::<f32>().ok());
            return Linear::Host {
                linear: HostLinear::new(inputs, outputs, w, bias),
                device: device.clone(),
            };
        }
        Linear::Burn {
            weight: Tensor::from_data(weight.convert::<f32>(), device),
            bias: bias.map(|b| Tensor::from_data(b.convert::<f32>(), device)),
        }
    }

    /// From `[weight, bias]`.
    pub fn with_bias([weight, bias]: [TensorData; 2], host: bool, device: &B::Device) -> Self {
        Self::new(weight, Some(bias), host, device)
    }

    /// `x` is `[rows, steps, in]`; returns `[rows, steps, out]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            Linear::Burn { weight, bias } => linear(x, weight.clone(), bias.clone()),
            Linear::Host { linear, device } => {
                let [rows, steps, _] = x.dims();
                let values = x
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .unwrap_or_default();
                let y = linear.forward(&values, rows * steps);
                Tensor::from_data(TensorData::new(y, [rows, steps, linear.outputs()]), device)
            }
        }
    }
}

/// The host copy of a weight, in its stored dtype (`None` for other dtypes).
fn host_weights(data: &TensorData) -> Option<HostWeights> {
    Some(match data.dtype {
        DType::F32 => HostWeights::F32(data.to_vec::<f32>().ok()?),
        DType::F16 => HostWeights::F16(data.to_vec::<half::f16>().ok()?),
        DType::BF16 => HostWeights::BF16(data.to_vec::<half::bf16>().ok()?),
        _ => return None,
    })
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
            weight: Tensor::from_data(weight.convert::<f32>(), device),
            bias: Tensor::from_data(bias.convert::<f32>(), device),
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
        host: bool,
        device: &B::Device,
    ) -> Self {
        Block {
            ln_1: LayerNorm::new(w.ln_1, epsilon, device),
            c_attn: Linear::with_bias(w.c_attn, host, device),
            attn_proj: Linear::with_bias(w.attn_proj, host, device),
            ln_2: LayerNorm::new(w.ln_2, epsilon, device),
            c_fc: Linear::with_bias(w.c_fc, host, device),
            mlp_proj: Linear::with_bias(w.mlp_proj, host, device),
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
