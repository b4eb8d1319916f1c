//! The CPU path: GPT-2's whole forward pass on host memory, in plain Rust (private to the crate:
//! [`crate::gpt2::ComputePath::Host`] selects it).
//!
//! A batch-1 decode step is bound by how fast the weights stream from memory; everything else in
//! the step is overhead. burn's CPU backends spend a few milliseconds per step on tensor
//! bookkeeping around the matrix products (strided copies of the cache for attention, one
//! allocation per element-wise op, and a hand-off to the thread pool per op). Here the residual
//! stream is one `Vec<f32>`, the linear layers are [`HostLinear`], attention reads the cache's
//! buffers in place ([`KvCache::take_host`](crate::KvCache::take_host)), and the whole pass
//! runs on one rayon pool so no call hands work across threads. The tensor path
//! ([`super::BurnGpt2`]) computes the same function and is what GPUs run.

mod attention;
mod linear;
mod ops;

use std::sync::OnceLock;

use burn::tensor::TensorData;
use burn::tensor::backend::Backend;
use decode_core::{Batch, Result};

use crate::KvCache;
use crate::cache::HostLayer;

use attention::Span;
use linear::{HostLinear, HostWeights};
use ops::LayerNorm;

use crate::weights::{BlockWeights, Gpt2Weights};
use crate::{Activation, Gpt2Config};

/// One GPT-2 block on the host.
#[derive(Debug, Clone)]
struct HostBlock {
    ln_1: LayerNorm,
    c_attn: HostLinear,
    attn_proj: HostLinear,
    ln_2: LayerNorm,
    c_fc: HostLinear,
    mlp_proj: HostLinear,
}

impl HostBlock {
    fn new(w: BlockWeights, epsilon: f64) -> Self {
        HostBlock {
            ln_1: LayerNorm::new(w.ln_1, epsilon),
            c_attn: HostLinear::from_data(w.c_attn),
            attn_proj: HostLinear::from_data(w.attn_proj),
            ln_2: LayerNorm::new(w.ln_2, epsilon),
            c_fc: HostLinear::from_data(w.c_fc),
            mlp_proj: HostLinear::from_data(w.mlp_proj),
        }
    }

    /// `x` is the residual stream `[tokens, embd]`, updated in place.
    fn forward(&self, x: &mut [f32], pass: &Pass, cache: &mut HostLayer, scale: f32) {
        let tokens = pass.tokens();
        let qkv = self.c_attn.forward(&self.ln_1.forward(x), tokens);
        let attended = attention::attend(&qkv, cache, pass.span, pass.real, scale);
        add(x, &self.attn_proj.forward(&attended, tokens));
        let mut h = self.c_fc.forward(&self.ln_2.forward(x), tokens);
        ops::activate(pass.activation, &mut h);
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
    /// `[vocab, embd]` in the stored dtype, for the embedding lookup.
    wte: HostWeights,
    /// `[n_positions, embd]`.
    wpe: Vec<f32>,
    blocks: Vec<HostBlock>,
    ln_f: LayerNorm,
    /// `[embd, vocab]`.
    lm_head: HostLinear,
    embd: usize,
    activation: Activation,
    /// Per layer, what attention scores are multiplied by.
    scales: Vec<f32>,
}

impl HostGpt2 {
    /// From weights checked against `config`; `head` is the LM head transposed to `[embd, vocab]`.
    pub fn new(config: &Gpt2Config, w: Gpt2Weights, head: TensorData) -> Self {
        let eps = config.layer_norm_epsilon;
        HostGpt2 {
            wte: HostWeights::from_data(w.wte),
            wpe: f32_vec(w.wpe),
            blocks: w
                .blocks
                .into_iter()
                .map(|b| HostBlock::new(b, eps))
                .collect(),
            ln_f: LayerNorm::new(w.ln_f, eps),
            lm_head: HostLinear::new(config.n_embd, config.vocab_size, head.into(), None),
            embd: config.n_embd,
            activation: config.activation,
            scales: (0..config.n_layer)
                .map(|layer| config.attention_scale(layer) as f32)
                .collect(),
        }
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
        let logits =
            run_on_pool(|| self.run(batch, &step.positions, &pass, &mut layers, last_only));
        cache.restore_host(layers);
        Ok(logits)
    }

    fn run(
        &self,
        batch: &Batch,
        positions: &[i64],
        pass: &Pass,
        layers: &mut [HostLayer],
        last_only: bool,
    ) -> Vec<f32> {
        let (e, steps) = (self.embd, pass.span.steps);
        let mut x = vec![0f32; pass.tokens() * e];
        for (t, xt) in x.chunks_exact_mut(e).enumerate() {
            // Padding ids may lie outside the vocabulary; they are masked, so any row will do.
            let real = batch.is_real(t / steps, t % steps);
            let id = if real { batch.tokens()[t] as usize } else { 0 };
            self.wte.row_into(id, xt);
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

/// Runs `f` on a worker of the host path's rayon pool, so the parallel loops inside start without
/// a cross-thread hand-off (calling rayon from outside its pool costs a wake-up per loop).
fn run_on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    match POOL.get_or_init(|| rayon::ThreadPoolBuilder::new().build().ok()) {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

/// Any float tensor's values as f32.
fn f32_vec(data: TensorData) -> Vec<f32> {
    data.convert::<f32>().into_vec::<f32>().unwrap_or_default()
}
