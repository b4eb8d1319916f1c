//! The CPU path: GPT-2's whole forward pass on host memory, in plain Rust (private to the crate:
//! [`crate::gpt2::ComputePath::Host`] selects it).
//!
//! A batch-1 decode step is bound by how fast the weights stream from memory; everything else in
//! the step is overhead. burn's CPU backends spend a few milliseconds per step on tensor
//! bookkeeping around the matrix products (strided copies of the cache for attention, one
//! allocation per element-wise op, and a hand-off to the thread pool per op). Here the residual
//! stream is one `Vec<f32>`, the linear layers are [`decode_kernels::Linear`], attention reads the cache's
//! buffers in place ([`KvCache::take_host`](crate::KvCache::take_host)), and the loops inside
//! share the kernels' spinning pool ([`decode_kernels::pool`]) when that is measured to make a
//! pass faster (a [`Split`]). The tensor path
//! ([`super::BurnGpt2`]) computes the same function and is what GPUs run.

use burn::tensor::backend::Backend;
use decode_core::{Batch, Error, Result};
use decode_kernels::activation::{gelu, gelu_tanh, relu};
use decode_kernels::attention::{self, KvLayer, Span};
use decode_kernels::norm::LayerNorm;
use decode_kernels::pool::Split;
use decode_kernels::{Linear, Source};

use crate::KvCache;

use super::Quantization;
use crate::checkpoint::{Checkpoint, Raw};
use crate::{Activation, Gpt2Config};

/// What building the model needs besides the checkpoint.
struct Build<'a> {
    quantize: Option<Quantization>,
    epsilon: f64,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl Build<'_> {
    fn norm(&mut self, ckpt: &mut Checkpoint, prefix: &str) -> Result<LayerNorm> {
        let weight = ckpt.take(&format!("{prefix}.weight"), self.progress, |r| r.to_f32())?;
        let bias = ckpt.take(&format!("{prefix}.bias"), self.progress, |r| r.to_f32())?;
        Ok(LayerNorm::new(weight, bias, self.epsilon))
    }

    /// A `Conv1D` layer `prefix.{weight, bias}` (HuggingFace stores `[in, out]`).
    fn linear(&mut self, ckpt: &mut Checkpoint, prefix: &str) -> Result<Linear> {
        let bias = ckpt.take(&format!("{prefix}.bias"), self.progress, |r| r.to_f32())?;
        let quantize = self.quantize;
        let name = format!("{prefix}.weight");
        let layer = ckpt.take(&name, self.progress, |raw| {
            let [a, b] = [raw.shape[0], raw.shape[1]];
            let (inputs, outputs) = if raw.transposed { (b, a) } else { (a, b) };
            linear(&raw, inputs, outputs, raw.transposed, Some(bias), quantize)
        })??;
        finite_scales(&name, layer)
    }

    /// A `[vocab, embd]` table read as the `[embd → vocab]` LM head.
    fn head(&mut self, ckpt: &mut Checkpoint, name: &str) -> Result<Linear> {
        let quantize = self.quantize;
        let layer = ckpt.take(name, self.progress, |raw| {
            let [vocab, embd] = [raw.shape[0], raw.shape[1]];
            linear(&raw, embd, vocab, true, None, quantize)
        })??;
        finite_scales(name, layer)
    }
}

/// Refuses a layer quantized at load whose weights overflowed a block's f16 scale (the stored
/// values were checked finite already; a quantized file's scales too).
fn finite_scales(name: &str, layer: Linear) -> Result<Linear> {
    match layer.overflowed_format() {
        Some(format) => Err(Error::NonFinite(format!(
            "tensor {name} has weights too large for {format}: a block's f16 scale overflows to \
             infinity (load it without quantizing)"
        ))),
        None => Ok(layer),
    }
}

fn linear(
    raw: &Raw,
    inputs: usize,
    outputs: usize,
    output_rows: bool,
    bias: Option<Vec<f32>>,
    quantize: Option<Quantization>,
) -> Result<Linear> {
    let source = Source {
        bytes: raw.bytes,
        dtype: raw.dtype,
        inputs,
        outputs,
        output_rows,
        done: raw.done,
    };
    Linear::new(&source, bias, quantize)
}

/// One GPT-2 block on the host.
#[derive(Debug, Clone)]
struct HostBlock {
    ln_1: LayerNorm,
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
}

impl HostBlock {
    fn new(ckpt: &mut Checkpoint, layer: usize, b: &mut Build) -> Result<Self> {
        let p = |name: &str| format!("h.{layer}.{name}");
        Ok(HostBlock {
            ln_1: b.norm(ckpt, &p("ln_1"))?,
            c_attn: b.linear(ckpt, &p("attn.c_attn"))?,
            attn_proj: b.linear(ckpt, &p("attn.c_proj"))?,
            ln_2: b.norm(ckpt, &p("ln_2"))?,
            c_fc: b.linear(ckpt, &p("mlp.c_fc"))?,
            mlp_proj: b.linear(ckpt, &p("mlp.c_proj"))?,
        })
    }

    fn linears(&self) -> [&Linear; 4] {
        [&self.c_attn, &self.attn_proj, &self.c_fc, &self.mlp_proj]
    }

    /// `x` is the residual stream `[tokens, embd]`, updated in place.
    fn forward(&self, x: &mut [f32], pass: &Pass, cache: &mut KvLayer, scale: f32) {
        let tokens = pass.tokens();
        let qkv = self.c_attn.forward(&self.ln_1.forward(x), tokens);
        let attended = attention::attend(&qkv, cache.shape[1], cache, pass.span, pass.real, scale);
        add(x, &self.attn_proj.forward(&attended, tokens));
        let mut h = self.c_fc.forward(&self.ln_2.forward(x), tokens);
        match pass.activation {
            Activation::GeluTanh => gelu_tanh(&mut h),
            Activation::Gelu => gelu(&mut h),
            Activation::Relu => relu(&mut h),
        }
        add(x, &self.mlp_proj.forward(&h, tokens));
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
}

/// What every block needs to know about the pass.
struct Pass<'a> {
    rows: usize,
    span: Span,
    real: &'a [&'a [bool]],
    activation: Activation,
}

impl Pass<'_> {
    fn tokens(&self) -> usize {
        self.rows * self.span.steps
    }
}

/// GPT-2 on the host.
#[derive(Debug, Clone)]
pub struct HostGpt2 {
    /// The token embedding, laid out as an LM head (embedding rows are its columns); `None` when
    /// the head is tied to it: the lookup then reads the head, and the table is held once.
    wte: Option<Linear>,
    /// `[n_positions, embd]`.
    wpe: Vec<f32>,
    blocks: Vec<HostBlock>,
    ln_f: LayerNorm,
    /// `[embd, vocab]`.
    lm_head: Linear,
    embd: usize,
    activation: Activation,
    /// Per layer, what attention scores are multiplied by.
    scales: Vec<f32>,
    /// Whether a pass runs faster with its loops shared out over the kernels' pool or on the
    /// calling thread alone, by the pass's tokens, as measured while the model runs.
    split: Split,
}

impl HostGpt2 {
    /// Builds the model from `ckpt` (checked against `config`), tensor by tensor, each laid out
    /// for the kernels (tiled in its stored dtype, or quantized) and then released.
    pub fn new(
        config: &Gpt2Config,
        ckpt: &mut Checkpoint,
        quantize: Option<Quantization>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self> {
        let mut b = Build {
            quantize,
            epsilon: config.layer_norm_epsilon,
            progress,
        };
        let mut blocks = Vec::with_capacity(config.n_layer);
        for layer in 0..config.n_layer {
            blocks.push(HostBlock::new(ckpt, layer, &mut b)?);
        }
        let ln_f = b.norm(ckpt, "ln_f")?;
        let wpe = ckpt.take("wpe.weight", b.progress, |r| r.to_f32())?;
        let (wte, lm_head) = if config.tie_word_embeddings {
            (None, b.head(ckpt, "wte.weight")?)
        } else {
            (
                Some(b.head(ckpt, "wte.weight")?),
                b.head(ckpt, "lm_head.weight")?,
            )
        };
        let model = HostGpt2 {
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
            embd: config.n_embd,
            activation: config.activation,
            scales: (0..config.n_layer)
                .map(|layer| config.attention_scale(layer) as f32)
                .collect(),
            split: Split::default(),
        };
        Ok(model)
    }

    fn linears(&self) -> impl Iterator<Item = &Linear> {
        self.blocks
            .iter()
            .flat_map(HostBlock::linears)
            .chain(self.wte.as_ref())
            .chain([&self.lm_head])
    }

    /// Bytes the weights take in memory, as the kernels read them.
    pub fn weight_bytes(&self) -> usize {
        let linears: usize = self.linears().map(Linear::weight_bytes).sum();
        linears + 4 * self.wpe.len()
    }

    /// Runs `batch` (already checked) through the model from `cache`; with `last_only`, the LM
    /// head runs on each row's last position only. Returns the logits' values.
    pub fn forward<B: Backend>(
        &self,
        batch: &Batch,
        cache: &mut KvCache<B>,
        last_only: bool,
    ) -> Result<Vec<f32>> {
        let step = cache.begin(batch)?;
        let mut layers = cache.take_host()?;
        let real: Vec<&[bool]> = (0..batch.rows()).map(|r| cache.real_slots(r)).collect();
        let pass = Pass {
            rows: batch.rows(),
            span: Span {
                steps: batch.steps(),
                start: step.start,
            },
            real: &real,
            activation: self.activation,
        };
        let logits = self.split.run(pass.tokens(), || {
            self.run(batch, &step.positions, &pass, &mut layers, last_only)
        });
        cache.restore_host(layers);
        Ok(logits)
    }

    fn run(
        &self,
        batch: &Batch,
        positions: &[i64],
        pass: &Pass,
        layers: &mut [KvLayer],
        last_only: bool,
    ) -> Vec<f32> {
        let (e, steps) = (self.embd, pass.span.steps);
        let mut x = vec![0f32; pass.tokens() * e];
        for (t, xt) in x.chunks_exact_mut(e).enumerate() {
            // Padding ids may lie outside the vocabulary; they are masked, so any row will do.
            let real = batch.is_real(t / steps, t % steps);
            let id = if real { batch.tokens()[t] as usize } else { 0 };
            self.wte
                .as_ref()
                .unwrap_or(&self.lm_head)
                .column_into(id, xt);
            let p = positions[t] as usize;
            add(xt, &self.wpe[p * e..(p + 1) * e]);
        }
        for ((block, cache), &scale) in self.blocks.iter().zip(layers).zip(&self.scales) {
            block.forward(&mut x, pass, cache, scale);
        }
        if last_only {
            x = x
                .chunks_exact(steps * e)
                .flat_map(|row| &row[(steps - 1) * e..])
                .copied()
                .collect();
        }
        let m = x.len() / e;
        self.lm_head.forward(&self.ln_f.forward(&x), m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;
    use std::path::PathBuf;

    fn repo(path: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path)
    }

    /// The same checkpoint quantized by llama.cpp (`convert_hf_to_gguf.py --outtype q8_0`;
    /// `llama-quantize --pure` to q4_0) and by decode at load time holds the same weights, bit for
    /// bit: every block's scale and values, every bias, norm and position embedding.
    #[test]
    fn load_time_quantization_equals_llama_cpp_bit_for_bit() {
        let dir = repo("models/kjv-target");
        let config = Gpt2Config::from_file(dir.join("config.json")).unwrap();
        for format in [Quantization::Q8_0, Quantization::Q4_0] {
            let gguf = repo(&format!("models/gguf/kjv-target-{format}.gguf"));
            let file = GgufFile::open(&gguf).unwrap_or_else(|e| panic!("fixture missing: {e}"));
            assert_eq!(file.gpt2_config().unwrap().n_embd, config.n_embd);
            let mut theirs = Checkpoint::gguf(&file, &config).unwrap();
            let theirs = HostGpt2::new(&config, &mut theirs, None, &mut |_, _| {}).unwrap();
            let mut ours =
                Checkpoint::safetensors(&dir.join("model.safetensors"), &config).unwrap();
            let ours = HostGpt2::new(&config, &mut ours, Some(format), &mut |_, _| {}).unwrap();
            for (i, (a, b)) in ours.linears().zip(theirs.linears()).enumerate() {
                assert!(a == b, "{format}: linear layer {i} differs");
            }
            assert_eq!(ours.wpe, theirs.wpe, "{format}: position embedding");
            assert_eq!(ours.ln_f, theirs.ln_f, "{format}: final layer norm");
            for (a, b) in ours.blocks.iter().zip(&theirs.blocks) {
                assert_eq!(
                    [&a.ln_1, &a.ln_2],
                    [&b.ln_1, &b.ln_2],
                    "{format}: layer norms"
                );
            }
            assert_eq!(ours.weight_bytes(), theirs.weight_bytes());
        }
    }
}
