//! GPT-2's HuggingFace `config.json`.

use std::path::Path;

use decode_core::files::CONFIG_MAX_BYTES;
use decode_core::{Error, Result};
use serde::Deserialize;

/// Bounds on a config's sizes (see [`Gpt2Config::validate`]).
const MAX_VOCAB: usize = 1 << 24;
const MAX_POSITIONS: usize = 1 << 20;
const MAX_WIDTH: usize = 1 << 16;
const MAX_LAYERS: usize = 1 << 10;
/// 10^12 parameters: 4 TB in f32, beyond any machine this runs on.
const MAX_PARAMETERS: u128 = 1_000_000_000_000;

/// The feed-forward activation (`activation_function` in `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// The tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`): GPT-2's own.
    GeluTanh,
    /// Exact GELU through erf (`gelu`).
    Gelu,
    /// `relu`.
    Relu,
}

impl Activation {
    fn parse(name: &str) -> Result<Self> {
        match name {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "gelu" => Ok(Activation::Gelu),
            "relu" => Ok(Activation::Relu),
            other => Err(Error::Unsupported(format!(
                "activation_function \"{other}\" (supported: gelu_new, gelu_pytorch_tanh, gelu_fast, gelu, relu)"
            ))),
        }
    }
}

/// A validated GPT-2 configuration. Field names and defaults are transformers' `GPT2Config`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpt2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Context length (learned positions).
    pub n_positions: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block.
    pub n_head: usize,
    /// Width of the feed-forward layer (`4 * n_embd` when `n_inner` is null).
    pub n_inner: usize,
    /// Feed-forward activation.
    pub activation: Activation,
    /// Layer-norm epsilon.
    pub layer_norm_epsilon: f64,
    /// Divide attention scores by √head_dim.
    pub scale_attn_weights: bool,
    /// Also divide attention scores by the layer index + 1.
    pub scale_attn_by_inverse_layer_idx: bool,
    /// The LM head is the token embedding (no `lm_head.weight` needed).
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence id, if any.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids (transformers accepts one id or a list).
    pub eos_token_ids: Vec<u32>,
}

/// `config.json` as written, before validation.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    #[serde(default = "d_vocab")]
    vocab_size: usize,
    #[serde(default = "d_positions")]
    n_positions: usize,
    #[serde(default = "d_embd")]
    n_embd: usize,
    #[serde(default = "d_layer")]
    n_layer: usize,
    #[serde(default = "d_head")]
    n_head: usize,
    #[serde(default)]
    n_inner: Option<usize>,
    #[serde(default = "d_activation")]
    activation_function: String,
    #[serde(default = "d_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "d_true")]
    scale_attn_weights: bool,
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: bool,
    #[serde(default = "d_true")]
    tie_word_embeddings: bool,
    #[serde(default = "d_special")]
    bos_token_id: Option<u32>,
    #[serde(default = "d_eos")]
    eos_token_id: Option<OneOrMany>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

fn d_vocab() -> usize {
    50257
}
fn d_positions() -> usize {
    1024
}
fn d_embd() -> usize {
    768
}
fn d_layer() -> usize {
    12
}
fn d_head() -> usize {
    12
}
fn d_activation() -> String {
    "gelu_new".into()
}
fn d_eps() -> f64 {
    1e-5
}
fn d_true() -> bool {
    true
}
fn d_special() -> Option<u32> {
    Some(50256)
}
fn d_eos() -> Option<OneOrMany> {
    Some(OneOrMany::One(50256))
}

impl Gpt2Config {
    /// Reads and validates a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = decode_core::files::read_to_string_capped(path, CONFIG_MAX_BYTES)?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses and validates the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("not valid JSON: {e}")))?;
        // serde would read a JSON array as the fields in order; transformers refuses it.
        if !value.is_object() {
            return Err(Error::Config("config.json must be a JSON object".into()));
        }
        let raw: RawConfig = serde_json::from_value(value)
            .map_err(|e| Error::Config(format!("not a valid GPT-2 config: {e}")))?;
        if let Some(kind) = raw.model_type.as_deref()
            && kind != "gpt2"
        {
            return Err(Error::Unsupported(format!(
                "model_type \"{kind}\" (only gpt2 is supported)"
            )));
        }
        let eos_token_ids = match raw.eos_token_id {
            None => Vec::new(),
            Some(OneOrMany::One(id)) => vec![id],
            Some(OneOrMany::Many(ids)) => ids,
        };
        let config = Gpt2Config {
            vocab_size: raw.vocab_size,
            n_positions: raw.n_positions,
            n_embd: raw.n_embd,
            n_layer: raw.n_layer,
            n_head: raw.n_head,
            // Saturating: a huge n_embd is refused by `validate`, not wrapped here.
            n_inner: raw.n_inner.unwrap_or(raw.n_embd.saturating_mul(4)),
            activation: Activation::parse(&raw.activation_function)?,
            layer_norm_epsilon: raw.layer_norm_epsilon,
            scale_attn_weights: raw.scale_attn_weights,
            scale_attn_by_inverse_layer_idx: raw.scale_attn_by_inverse_layer_idx,
            tie_word_embeddings: raw.tie_word_embeddings,
            bos_token_id: raw.bos_token_id,
            eos_token_ids,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks that the numbers agree with each other.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_inner", self.n_inner),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Config(format!("{name} must be positive")));
        }
        // Far above any GPT-2 (gpt2-xl: 48 layers, 1600 wide, 1024 positions, 50257 ids), and low
        // enough that every size computed from them (3·n_embd, 4·n_embd, the tensor list, the
        // parameter count below) fits a usize: a hostile config is refused before anything is
        // built from it.
        for (name, value, max) in [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("n_positions", self.n_positions, MAX_POSITIONS),
            ("n_embd", self.n_embd, MAX_WIDTH),
            ("n_inner", self.n_inner, 4 * MAX_WIDTH),
            ("n_layer", self.n_layer, MAX_LAYERS),
        ] {
            if value > max {
                return Err(Error::Config(format!(
                    "{name} is {value}, above the {max} this library accepts"
                )));
            }
        }
        let params = self.parameter_count();
        if params > MAX_PARAMETERS {
            return Err(Error::Config(format!(
                "the config describes {params} parameters, above the {MAX_PARAMETERS} this \
                 library accepts"
            )));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(Error::Config(format!(
                "n_embd ({}) is not divisible by n_head ({})",
                self.n_embd, self.n_head
            )));
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon > 0.0) {
            return Err(Error::Config(format!(
                "layer_norm_epsilon must be a positive number, not {}",
                self.layer_norm_epsilon
            )));
        }
        let vocab = self.vocab_size;
        if let Some(id) = self
            .eos_token_ids
            .iter()
            .chain(&self.bos_token_id)
            .find(|&&id| id as usize >= vocab)
        {
            return Err(Error::Config(format!(
                "special token id {id} is outside the vocabulary (vocab_size {vocab})"
            )));
        }
        Ok(())
    }

    /// Parameters the config describes (weights and biases, the LM head counted when untied),
    /// in u128 so no bounded config can overflow it.
    pub fn parameter_count(&self) -> u128 {
        let (v, p, e, i, l) = (
            self.vocab_size as u128,
            self.n_positions as u128,
            self.n_embd as u128,
            self.n_inner as u128,
            self.n_layer as u128,
        );
        let block = 4 * e + (e * 3 * e + 3 * e) + (e * e + e) + (e * i + i) + (i * e + e);
        let head = if self.tie_word_embeddings { 0 } else { v * e };
        v * e + p * e + l * block + 2 * e + head
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// What attention scores of layer `layer` (from 0) are multiplied by: transformers divides
    /// them by √head_dim (`scale_attn_weights`) and, optionally, by the layer's number
    /// (`scale_attn_by_inverse_layer_idx`).
    pub fn attention_scale(&self, layer: usize) -> f64 {
        let mut scale = 1.0;
        if self.scale_attn_weights {
            scale /= (self.head_dim() as f64).sqrt();
        }
        if self.scale_attn_by_inverse_layer_idx {
            scale /= (layer + 1) as f64;
        }
        scale
    }

    /// GPT-2 small (124 M parameters): the shape benchmarks use.
    pub fn gpt2_small() -> Self {
        Gpt2Config {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: 3072,
            activation: Activation::GeluTanh,
            layer_norm_epsilon: 1e-5,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            tie_word_embeddings: true,
            bos_token_id: Some(50256),
            eos_token_ids: vec![50256],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_scale_follows_both_flags() {
        let mut c = Gpt2Config::gpt2_small();
        assert_eq!(c.attention_scale(5), 1.0 / 8.0); // head_dim 64
        c.scale_attn_by_inverse_layer_idx = true;
        assert_eq!(c.attention_scale(2), 1.0 / 8.0 / 3.0);
        c.scale_attn_weights = false;
        assert_eq!(c.attention_scale(2), 1.0 / 3.0);
    }

    #[test]
    fn defaults_are_gpt2_small() {
        assert_eq!(
            Gpt2Config::from_json("{}").unwrap(),
            Gpt2Config::gpt2_small()
        );
    }

    #[test]
    fn contradictions_are_refused() {
        let err = Gpt2Config::from_json(r#"{"n_embd": 100, "n_head": 12}"#).unwrap_err();
        assert!(err.to_string().contains("not divisible"), "{err}");
        assert!(matches!(
            Gpt2Config::from_json(r#"{"n_layer": 0}"#),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Gpt2Config::from_json(r#"{"vocab_size": 10}"#),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Gpt2Config::from_json(r#"{"n_embd": "wide"}"#),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Gpt2Config::from_json(r#"{"activation_function": "swish"}"#),
            Err(Error::Unsupported(_))
        ));
    }

    #[test]
    fn eos_may_be_a_list() {
        let c = Gpt2Config::from_json(r#"{"eos_token_id": [1, 2]}"#).unwrap();
        assert_eq!(c.eos_token_ids, vec![1, 2]);
    }
}
