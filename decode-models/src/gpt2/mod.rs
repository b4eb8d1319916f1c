//! GPT-2 (transformers' `GPT2LMHeadModel`) on any burn backend.

mod block;
pub mod host_linear;

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::module::embedding;
use burn::tensor::{DType, Distribution, Int, Tensor, TensorData};
use decode_core::{Batch, Cache, Error, KvCache, LanguageModel, Logits, Result};

pub use block::{AttentionShape, Block, LayerNorm, Linear};

use crate::Gpt2Config;
use crate::weights::Gpt2Weights;

/// Slots a new cache holds before it first grows.
const INITIAL_CACHE_SLOTS: usize = 128;

/// GPT-2 with its weights on a burn device.
#[derive(Debug, Clone)]
pub struct Gpt2<B: Backend> {
    config: Gpt2Config,
    wte: Tensor<B, 2>,
    wpe: Tensor<B, 2>,
    blocks: Vec<Block<B>>,
    ln_f: LayerNorm<B>,
    /// `[n_embd, vocab_size]`: a transposed copy of the head (tied or not).
    lm_head: Linear<B>,
    device: B::Device,
}

impl<B: Backend> Gpt2<B> {
    /// Loads a HuggingFace GPT-2 directory (`config.json` + `model.safetensors`).
    pub fn load(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        Self::load_with_progress(dir, device, &mut |_, _| {})
    }

    /// Like [`Gpt2::load`], reporting `(bytes read, total bytes)` of `model.safetensors`.
    pub fn load_with_progress(
        dir: impl AsRef<Path>,
        device: &B::Device,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such model directory"),
            ));
        }
        let config = Gpt2Config::from_file(dir.join("config.json"))?;
        let weights =
            Gpt2Weights::read_with_progress(dir.join("model.safetensors"), &config, progress)?;
        Ok(Self::from_weights(config, weights, device))
    }

    /// Builds the model from host weights already checked against `config`.
    pub fn from_weights(config: Gpt2Config, w: Gpt2Weights, device: &B::Device) -> Self {
        let host = uses_host_kernels::<B>(device);
        let head = w.lm_head.unwrap_or_else(|| w.wte.clone());
        let lm_head = Linear::new(transpose(head), None, host, device);
        let wte = Tensor::<B, 2>::from_data(w.wte.convert::<f32>(), device);
        let eps = config.layer_norm_epsilon;
        Gpt2 {
            wpe: Tensor::from_data(w.wpe.convert::<f32>(), device),
            blocks: w
                .blocks
                .into_iter()
                .map(|b| Block::new(b, eps, config.activation, host, device))
                .collect(),
            ln_f: LayerNorm::new(w.ln_f, eps, device),
            lm_head,
            wte,
            config,
            device: device.clone(),
        }
    }

    /// A model of `config`'s shape with random weights (for benchmarks and tests; no files).
    pub fn random(config: Gpt2Config, seed: u64, device: &B::Device) -> Self {
        B::seed(device, seed);
        let normal = |shape: Vec<usize>, std: f64| {
            let n: usize = shape.iter().product();
            let values = Tensor::<B, 1>::random([n], Distribution::Normal(0.0, std), device)
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap_or_else(|_| vec![0.0; n]);
            TensorData::new(values, shape)
        };
        let pair = |shape: Vec<usize>, out: usize| [normal(shape, 0.02), normal(vec![out], 0.02)];
        let norm = |e: usize| {
            let ones = TensorData::new(vec![1f32; e], [e]);
            [ones, normal(vec![e], 0.02)]
        };
        let (e, i, v) = (config.n_embd, config.n_inner, config.vocab_size);
        let weights = Gpt2Weights {
            wte: normal(vec![v, e], 0.02),
            wpe: normal(vec![config.n_positions, e], 0.01),
            blocks: (0..config.n_layer)
                .map(|_| crate::weights::BlockWeights {
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
        };
        Self::from_weights(config, weights, device)
    }

    /// The configuration.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Checks `batch` against the model and cache before anything is written.
    fn check(&self, batch: &Batch, cache: &KvCache<B>) -> Result<()> {
        if batch.steps() == 0 {
            return Err(Error::invalid("batch", "has no tokens"));
        }
        if batch.rows() != cache.rows() {
            return Err(Error::Shape(format!(
                "batch has {} rows but the cache holds {}",
                batch.rows(),
                cache.rows()
            )));
        }
        batch.check_vocab(self.config.vocab_size)?;
        for (row, &seen) in cache.positions().iter().enumerate() {
            let new = (0..batch.steps())
                .filter(|&s| batch.is_real(row, s))
                .count();
            if seen + new > self.config.n_positions {
                return Err(Error::ContextOverflow {
                    needed: seen + new,
                    limit: self.config.n_positions,
                });
            }
        }
        Ok(())
    }

    fn int_tensor(&self, values: Vec<i64>, rows: usize, steps: usize) -> Tensor<B, 2, Int> {
        Tensor::from_data(TensorData::new(values, [rows, steps]), &self.device)
    }
}

impl<B: Backend> LanguageModel for Gpt2<B> {
    type Cache = KvCache<B>;

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn context_length(&self) -> usize {
        self.config.n_positions
    }

    fn eos_token_ids(&self) -> &[u32] {
        &self.config.eos_token_ids
    }

    fn new_cache(&self, rows: usize) -> KvCache<B> {
        let c = &self.config;
        KvCache::new(
            c.n_layer,
            rows,
            c.n_head,
            c.head_dim(),
            c.n_positions.min(INITIAL_CACHE_SLOTS),
            &self.device,
        )
    }

    fn forward(&self, batch: &Batch, cache: &mut KvCache<B>) -> Result<Logits> {
        self.run(batch, cache, false)
    }

    fn forward_last(&self, batch: &Batch, cache: &mut KvCache<B>) -> Result<Logits> {
        self.run(batch, cache, true)
    }
}

impl<B: Backend> Gpt2<B> {
    /// The forward pass; with `last_only`, the LM head runs on each row's last position only.
    fn run(&self, batch: &Batch, cache: &mut KvCache<B>, last_only: bool) -> Result<Logits> {
        self.check(batch, cache)?;
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
        let shape = AttentionShape {
            heads: self.config.n_head,
            head_dim: self.config.head_dim(),
            scale_by_head_dim: self.config.scale_attn_weights,
            scale_by_layer: self.config.scale_attn_by_inverse_layer_idx,
        };
        let mut x = tokens + positions;
        for (layer, block) in self.blocks.iter().enumerate() {
            x = block.forward(x, layer, shape, cache, &step)?;
        }
        let out_steps = if last_only { 1 } else { steps };
        if last_only {
            let embd = x.dims()[2];
            x = x.slice([0..rows, steps - 1..steps, 0..embd]);
        }
        let logits = self.lm_head.forward(self.ln_f.forward(x));
        let data = logits
            .into_data()
            .into_vec::<f32>()
            .map_err(|e| Error::Shape(format!("reading logits back: {e:?}")))?;
        Logits::new(rows, out_steps, self.config.vocab_size, data)
    }
}

/// `[a, b]` → `[b, a]`, on the host, in the stored dtype.
fn transpose(t: TensorData) -> TensorData {
    fn flip<E: burn::tensor::Element>(t: &TensorData) -> Option<TensorData> {
        let [a, b] = [t.shape[0], t.shape[1]];
        let values = t.as_slice::<E>().ok()?;
        let mut out = Vec::with_capacity(values.len());
        for j in 0..b {
            out.extend((0..a).map(|i| values[i * b + j]));
        }
        Some(TensorData::new(out, [b, a]))
    }
    match t.dtype {
        DType::F16 => flip::<half::f16>(&t),
        DType::BF16 => flip::<half::bf16>(&t),
        _ => None,
    }
    .unwrap_or_else(|| {
        flip::<f32>(&t.convert::<f32>()).unwrap_or(TensorData::new(Vec::<f32>::new(), [0, 0]))
    })
}

/// Whether linear layers run on the host kernel: on CPU backends (see [`host_linear`]).
fn uses_host_kernels<B: Backend>(device: &B::Device) -> bool {
    matches!(B::name(device).as_str(), "flex" | "ndarray")
}
