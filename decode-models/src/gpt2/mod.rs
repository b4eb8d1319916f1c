//! GPT-2 (transformers' `GPT2LMHeadModel`) on any burn backend.
//!
//! [`Gpt2`] loads and checks a checkpoint, then computes on one of two paths that give the same
//! logits: the host path on CPU backends (the fast path: plain Rust over host memory, weights kept
//! in their stored dtype, f32 accumulation) and the tensor path (burn operations: what GPUs run).
//! [`ComputePath`] picks one explicitly; [`Precision`] says what the tensor path computes in.

mod host;
mod tensor;

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, TensorData};
use decode_core::{Batch, Cache, Error, LanguageModel, Logits, Result};

use crate::KvCache;
use crate::backend::is_cpu;
use crate::checkpoint::Checkpoint;
use crate::gguf::GgufFile;

use host::HostGpt2;
use tensor::BurnGpt2;

use crate::Gpt2Config;
use crate::weights::Gpt2Weights;

/// How the forward pass is computed. Both paths compute the same function; they differ in speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComputePath {
    /// The host path on CPU backends (flex, ndarray), the tensor path elsewhere.
    #[default]
    Auto,
    /// Plain Rust on host memory: the fast path on a CPU. The weights stay in host memory
    /// whatever the backend; the KV cache moves there for each pass.
    Host,
    /// burn tensor operations on the backend's device: what GPUs run.
    Tensor,
}

impl ComputePath {
    /// Whether a model on `device` computes on the host path ([`ComputePath::Auto`]: on CPUs).
    fn is_host<B: Backend>(self, device: &B::Device) -> bool {
        match self {
            ComputePath::Auto => is_cpu::<B>(device),
            ComputePath::Host => true,
            ComputePath::Tensor => false,
        }
    }
}

/// What the tensor path stores weights, activations and the KV cache in. The host path always
/// reads the stored dtype and accumulates in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// On a GPU, the checkpoint's own dtype when the device computes in it (f16 on most adapters;
    /// bf16 on CUDA; wgpu has no bf16 arithmetic, so bf16 runs in f32 there); f32 otherwise and on
    /// CPUs.
    #[default]
    Auto,
    /// f32 whatever the checkpoint: what the fidelity tests compare with transformers to 1e-4.
    F32,
}

impl Precision {
    /// The dtype a model whose checkpoint is stored in `stored` computes in on `device`.
    pub fn resolve<B: Backend>(self, stored: DType, device: &B::Device) -> DType {
        let half = matches!(stored, DType::F16 | DType::BF16);
        match self {
            Precision::Auto
                if half && !is_cpu::<B>(device) && B::supports_dtype(device, stored) =>
            {
                stored
            }
            _ => DType::F32,
        }
    }
}

/// Weights quantized to one of llama.cpp's block formats (`decode_kernels::quant::Format`): 32
/// weights of one output share an f16 scale. The host path computes with them (integer dot
/// products against activations quantized to q8_0 on the fly); GGUF files store them as they are.
pub use decode_kernels::quant::Format as Quantization;

/// How [`Gpt2::load_with`] builds the model. The default computes on the host path on CPUs and
/// on the tensor path elsewhere, in the checkpoint's own dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// Which path computes the forward pass.
    pub path: ComputePath,
    /// What the tensor path computes in.
    pub precision: Precision,
    /// Quantize float weights at load (host path only). A GGUF file already quantized keeps its
    /// own format; asking for another one is an error.
    pub quantize: Option<Quantization>,
}

impl LoadOptions {
    /// The given compute path.
    pub fn path(mut self, path: ComputePath) -> Self {
        self.path = path;
        self
    }

    /// The given tensor-path precision.
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Weights quantized to `format` at load.
    pub fn quantize(mut self, format: Quantization) -> Self {
        self.quantize = Some(format);
        self
    }
}

/// The weights, laid out for one of the two paths.
#[derive(Debug, Clone)]
enum Body<B: Backend> {
    Host(Box<HostGpt2>),
    Tensor(BurnGpt2<B>),
}

/// GPT-2 with its weights on a burn device.
#[derive(Debug, Clone)]
pub struct Gpt2<B: Backend> {
    config: Gpt2Config,
    body: Body<B>,
    device: B::Device,
}

impl<B: Backend> Gpt2<B> {
    /// Loads a HuggingFace GPT-2 directory (`config.json` + `model.safetensors`) or a GGUF file
    /// written by llama.cpp's `convert_hf_to_gguf.py` (f32, f16, bf16, q8_0 or q4_0 tensors).
    pub fn load(path: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        Self::load_with(path, device, LoadOptions::default())
    }

    /// Like [`Gpt2::load`], built as `options` say (compute path, precision, quantization).
    pub fn load_with(
        path: impl AsRef<Path>,
        device: &B::Device,
        options: LoadOptions,
    ) -> Result<Self> {
        Self::load_with_progress(path, device, options, &mut |_, _| {})
    }

    /// Like [`Gpt2::load_with`], reporting `(bytes read, total bytes)` of the weights.
    pub fn load_with_progress(
        path: impl AsRef<Path>,
        device: &B::Device,
        options: LoadOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self> {
        let path = path.as_ref();
        let (config, ckpt) = match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                let config = Gpt2Config::from_file(path.join("config.json"))?;
                let ckpt = Checkpoint::safetensors(&path.join("model.safetensors"), &config)?;
                (config, ckpt)
            }
            Ok(_) => {
                let file = GgufFile::open(path)?;
                let config = file.gpt2_config()?;
                let ckpt = Checkpoint::gguf(&file, &config)?;
                (config, ckpt)
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        Self::build(config, ckpt, device, options, progress)
    }

    /// Builds the model from host weights already checked against `config`.
    pub fn from_weights(config: Gpt2Config, w: Gpt2Weights, device: &B::Device) -> Result<Self> {
        Self::from_weights_with(config, w, device, LoadOptions::default())
    }

    /// Like [`Gpt2::from_weights`], built as `options` say.
    pub fn from_weights_with(
        config: Gpt2Config,
        w: Gpt2Weights,
        device: &B::Device,
        options: LoadOptions,
    ) -> Result<Self> {
        Self::build(
            config,
            Checkpoint::from_weights(w),
            device,
            options,
            &mut |_, _| {},
        )
    }

    fn build(
        config: Gpt2Config,
        mut ckpt: Checkpoint,
        device: &B::Device,
        options: LoadOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self> {
        // Both paths run on rayon (the host kernels, and burn-flex): its settings are read first.
        decode_kernels::cpu::check_env()?;
        let host = options.path.is_host::<B>(device);
        if let Some(asked) = options.quantize
            && let Some(stored) = ckpt.quantized().find(|&stored| stored != asked)
        {
            return Err(Error::invalid(
                "quantize",
                format!(
                    "the file is already quantized to {stored}; it cannot be requantized to {asked}"
                ),
            ));
        }
        let body = if host {
            let model = HostGpt2::new(&config, &mut ckpt, options.quantize, progress)?;
            Body::Host(Box::new(model))
        } else {
            if let Some(format) = options.quantize {
                return Err(Error::Unsupported(format!(
                    "{format} weights compute on the host path (CPU) only; {} runs the tensor path",
                    B::name(device)
                )));
            }
            // A quantized GGUF file is dequantized to f32 for the tensor path.
            let mut w = ckpt.into_weights(&config, progress)?;
            let dtype = options.precision.resolve::<B>(w.dtype(), device);
            check_buffer_limit::<B>(&w, dtype, device)?;
            let head = transpose(w.lm_head.take().unwrap_or_else(|| w.wte.clone()));
            Body::Tensor(BurnGpt2::new(&config, w, head, device, dtype))
        };
        Ok(Gpt2 {
            config,
            body,
            device: device.clone(),
        })
    }

    /// The dtype activations and the KV cache are held in: f32 on the host path; on the tensor
    /// path, what [`Precision`] resolved to.
    pub fn dtype(&self) -> DType {
        match &self.body {
            Body::Host(_) => DType::F32,
            Body::Tensor(model) => model.dtype(),
        }
    }

    /// Which path this model computes on ([`ComputePath::Host`] or [`ComputePath::Tensor`]).
    pub fn compute_path(&self) -> ComputePath {
        match self.body {
            Body::Host(_) => ComputePath::Host,
            Body::Tensor(_) => ComputePath::Tensor,
        }
    }

    // Test and bench helpers: hidden from the docs (not part of the supported API), public so the
    // workspace's tests, benches and examples can build models without files.

    /// A model of `config`'s shape with random weights (for benchmarks and tests; no files).
    #[doc(hidden)]
    pub fn random(config: Gpt2Config, seed: u64, device: &B::Device) -> Result<Self> {
        Self::random_with(config, seed, device, LoadOptions::default())
    }

    /// Like [`Gpt2::random`], built as `options` say.
    #[doc(hidden)]
    pub fn random_with(
        config: Gpt2Config,
        seed: u64,
        device: &B::Device,
        options: LoadOptions,
    ) -> Result<Self> {
        let weights = Gpt2Weights::random(&config, seed);
        Self::from_weights_with(config, weights, device, options)
    }

    /// Bytes the weights take on the host path (as its kernels read them); `None` on the tensor
    /// path.
    pub fn host_weight_bytes(&self) -> Option<usize> {
        match &self.body {
            Body::Host(model) => Some(model.weight_bytes()),
            Body::Tensor(_) => None,
        }
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
        let c = &self.config;
        let want = [c.n_layer, c.n_head, c.head_dim()];
        if cache.model_shape() != want {
            return Err(Error::Shape(format!(
                "the cache was made for another model ([layers, heads, head_dim] = {:?}, this one is {want:?})",
                cache.model_shape()
            )));
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

    fn cache_bytes_per_position(&self) -> usize {
        let c = &self.config;
        // Keys and values of every layer; the config's bounds keep this far from overflowing.
        c.n_layer * 2 * c.n_embd * self.dtype().size()
    }

    fn pass_bytes_per_token(&self) -> usize {
        // Every activation of a block at once (the residual stream, layer norms, q/k/v, the
        // attention output per head and joined, the MLP's hidden layer and output), in f32.
        let c = &self.config;
        4 * (11 * c.n_embd + c.n_inner)
    }

    fn new_cache(&self, rows: usize, positions: usize) -> Result<KvCache<B>> {
        let c = &self.config;
        KvCache::new(
            c.n_layer,
            rows,
            c.n_head,
            c.head_dim(),
            positions.min(c.n_positions),
            &self.device,
            self.dtype(),
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
        let data = match &self.body {
            Body::Tensor(model) => model.forward(batch, cache, last_only)?,
            Body::Host(model) => model.forward(batch, cache, last_only)?,
        };
        let out_steps = if last_only { 1 } else { batch.steps() };
        Logits::new(batch.rows(), out_steps, self.config.vocab_size, data)
    }
}

/// Refuses weights the device cannot hold (a tensor larger than the backend's buffer limit:
/// [`crate::backend::max_tensor_bytes`]) with an [`Error::Unsupported`] that names it, where burn
/// would panic on upload.
fn check_buffer_limit<B: Backend>(w: &Gpt2Weights, dtype: DType, device: &B::Device) -> Result<()> {
    let Some(limit) = crate::backend::max_tensor_bytes::<B>(device) else {
        return Ok(());
    };
    let largest = [&w.wte, &w.wpe]
        .into_iter()
        .chain(w.lm_head.as_ref())
        .chain(
            w.blocks
                .iter()
                .flat_map(|b| [&b.c_attn[0], &b.c_fc[0], &b.mlp_proj[0]]),
        )
        .map(|t| t.shape.iter().product::<usize>() as u64 * dtype.size() as u64)
        .max()
        .unwrap_or(0);
    if largest > limit {
        return Err(Error::Unsupported(format!(
            "{}: a {:.0} MiB weight in {dtype:?} exceeds the {:.0} MiB this device binds in one \
             buffer (an f16 checkpoint halves it)",
            B::name(device),
            largest as f64 / (1u64 << 20) as f64,
            limit as f64 / (1u64 << 20) as f64,
        )));
    }
    Ok(())
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
