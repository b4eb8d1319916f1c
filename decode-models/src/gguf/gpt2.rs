//! GPT-2 in a GGUF file: the `gpt2.*` metadata as a [`Gpt2Config`], and llama.cpp's tensor
//! names and layouts mapped to HuggingFace's.

use std::collections::HashMap;

use decode_core::{Error, Result};

use super::{GgufFile, GgufTensor};
use crate::Gpt2Config;
use crate::config::Activation;

impl GgufFile {
    /// The GPT-2 configuration the metadata describes, validated.
    ///
    /// `general.architecture` must be `gpt2`. The sizes come from `gpt2.context_length`,
    /// `gpt2.embedding_length`, `gpt2.feed_forward_length` (4 × the embedding length when absent,
    /// as in transformers), `gpt2.attention.head_count`, `gpt2.block_count` and
    /// `gpt2.attention.layer_norm_epsilon`; the vocabulary size is that of `token_embd.weight`
    /// (the model's, which may be padded past the tokenizer's); the LM head is tied unless the
    /// file has an `output.weight`; bos and eos are `tokenizer.ggml.bos_token_id` and
    /// `tokenizer.ggml.eos_token_id`. What llama.cpp's GPT-2 fixes rather than stores is fixed
    /// here the same way: the tanh GELU, attention scaled by 1/√head_dim only.
    pub fn gpt2_config(&self) -> Result<Gpt2Config> {
        self.require_gpt2()?;
        let n_embd = self.usize_key("gpt2.embedding_length")?;
        let n_inner = match self.metadata("gpt2.feed_forward_length") {
            Some(_) => self.usize_key("gpt2.feed_forward_length")?,
            None => n_embd.saturating_mul(4),
        };
        let embd = self
            .tensor("token_embd.weight")
            .ok_or_else(|| self.error("missing tensor token_embd.weight"))?;
        let &[_, vocab_size] = embd.dims.as_slice() else {
            return Err(Error::Shape(format!(
                "{}: tensor token_embd.weight has ggml dims {:?}; a token embedding has two",
                self.path().display(),
                embd.dims
            )));
        };
        let config = Gpt2Config {
            vocab_size,
            n_positions: self.usize_key("gpt2.context_length")?,
            n_embd,
            n_layer: self.usize_key("gpt2.block_count")?,
            n_head: self.usize_key("gpt2.attention.head_count")?,
            n_inner,
            // llama.cpp's GPT-2 graph uses ggml_gelu, the tanh approximation (HF's gelu_new).
            activation: Activation::GeluTanh,
            layer_norm_epsilon: self.epsilon("gpt2.attention.layer_norm_epsilon")?,
            // llama.cpp scales GPT-2's attention scores by 1/√head_dim, and by nothing else.
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            tie_word_embeddings: self.tensor("output.weight").is_none(),
            bos_token_id: self.token_id_key("tokenizer.ggml.bos_token_id")?,
            eos_token_ids: self
                .token_id_key("tokenizer.ggml.eos_token_id")?
                .into_iter()
                .collect(),
        };
        config.validate().map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", self.path().display())),
            other => other,
        })?;
        Ok(config)
    }

    /// The GPT-2 tensors of this file for `config`, each under its HuggingFace name (the names
    /// and order of [`crate::weights::expected_shapes`], `transformer.` prefix omitted), with the
    /// GGUF tensor that holds it and whether it is stored transposed relative to HuggingFace.
    ///
    /// `convert_hf_to_gguf.py` transposes GPT-2's four `Conv1D` weights per block
    /// (`attn.c_attn`, `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj`, HF shape `[in, out]`), so GGUF
    /// stores them row-major as `[out][in]` (ggml dims `[in, out]`, equal to the HF shape): those
    /// entries are marked `true`. Everything else is stored as in HF (`true` never applies to a
    /// vector): `wte`, `wpe` and `lm_head` row-major `[rows][n_embd]` (ggml dims reversed from
    /// the HF shape).
    ///
    /// Every tensor's dimensions are checked against `config`; a missing tensor, one that is not
    /// part of a GPT-2 of this config, or one of the wrong shape is an error naming it. An
    /// `output.weight` is ignored when `config` ties the LM head (as HF ignores `lm_head.weight`).
    pub fn gpt2_tensors(&self, config: &Gpt2Config) -> Result<Vec<(String, &GgufTensor, bool)>> {
        // Bounds the sizes below, so none overflows.
        config.validate()?;
        let expected: Vec<Expected> = crate::weights::expected_shapes(config)
            .into_iter()
            .map(|(hf, shape)| Expected::new(hf, shape))
            .collect();
        let by_gguf: HashMap<&str, &Expected> =
            expected.iter().map(|e| (e.gguf.as_str(), e)).collect();
        for tensor in self.tensors() {
            if config.tie_word_embeddings && tensor.name == "output.weight" {
                continue;
            }
            let Some(e) = by_gguf.get(tensor.name.as_str()) else {
                return Err(self.error(format!(
                    "unexpected tensor {} (not part of a GPT-2 with this config)",
                    tensor.name
                )));
            };
            if tensor.dims != e.dims {
                return Err(Error::Shape(format!(
                    "{}: tensor {} ({}) has ggml dims {:?} but the config implies {:?}",
                    self.path().display(),
                    tensor.name,
                    e.hf,
                    tensor.dims,
                    e.dims
                )));
            }
        }
        expected
            .iter()
            .map(|e| match self.tensor(&e.gguf) {
                Some(t) => Ok((e.hf.clone(), t, e.transposed)),
                None => Err(self.error(format!("missing tensor {} ({})", e.gguf, e.hf))),
            })
            .collect()
    }

    fn require_gpt2(&self) -> Result<()> {
        let arch = self.string_key("general.architecture")?;
        if arch != "gpt2" {
            return Err(Error::Unsupported(format!(
                "{}: general.architecture is \"{arch}\"; decode reads GPT-2 (gpt2) GGUF files",
                self.path().display()
            )));
        }
        Ok(())
    }
}

/// What [`GgufFile::gpt2_tensors`] expects of one tensor.
struct Expected {
    /// HF name, without `transformer.`.
    hf: String,
    /// GGUF name.
    gguf: String,
    /// The ggml dims it must have.
    dims: Vec<usize>,
    /// Stored transposed relative to HF (the four Conv1D weights of a block).
    transposed: bool,
}

impl Expected {
    fn new(hf: String, hf_shape: Vec<usize>) -> Self {
        let (gguf, transposed) = gguf_name(&hf);
        // ggml dims are the row-major shape reversed. The Conv1D weights were transposed before
        // they were written, which reverses the HF shape once more: their dims are the HF shape.
        let dims = if transposed {
            hf_shape
        } else {
            hf_shape.into_iter().rev().collect()
        };
        Expected {
            hf,
            gguf,
            dims,
            transposed,
        }
    }
}

/// The GGUF name of the HF tensor `hf` (llama.cpp's gguf-py tensor map for GPT-2), and whether
/// `convert_hf_to_gguf.py` transposes it.
fn gguf_name(hf: &str) -> (String, bool) {
    match hf {
        "wte.weight" => return ("token_embd.weight".into(), false),
        "wpe.weight" => return ("position_embd.weight".into(), false),
        "lm_head.weight" => return ("output.weight".into(), false),
        _ => {}
    }
    if let Some(kind) = hf.strip_prefix("ln_f.") {
        return (format!("output_norm.{kind}"), false);
    }
    // `h.{layer}.{module}.{weight|bias}`; expected_shapes names nothing else.
    let rest = hf.strip_prefix("h.").unwrap_or(hf);
    let (layer, rest) = rest.split_once('.').unwrap_or(("", rest));
    let (module, kind) = rest.rsplit_once('.').unwrap_or((rest, ""));
    let (gguf_module, conv1d) = match module {
        "ln_1" => ("attn_norm", false),
        "attn.c_attn" => ("attn_qkv", true),
        "attn.c_proj" => ("attn_output", true),
        "ln_2" => ("ffn_norm", false),
        "mlp.c_fc" => ("ffn_up", true),
        "mlp.c_proj" => ("ffn_down", true),
        other => (other, false),
    };
    (
        format!("blk.{layer}.{gguf_module}.{kind}"),
        conv1d && kind == "weight",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_as_llama_cpp_writes_them() {
        for (hf, gguf, transposed) in [
            ("wte.weight", "token_embd.weight", false),
            ("wpe.weight", "position_embd.weight", false),
            ("ln_f.bias", "output_norm.bias", false),
            ("lm_head.weight", "output.weight", false),
            ("h.3.ln_1.weight", "blk.3.attn_norm.weight", false),
            ("h.3.attn.c_attn.weight", "blk.3.attn_qkv.weight", true),
            ("h.3.attn.c_attn.bias", "blk.3.attn_qkv.bias", false),
            ("h.3.attn.c_proj.weight", "blk.3.attn_output.weight", true),
            ("h.10.ln_2.bias", "blk.10.ffn_norm.bias", false),
            ("h.0.mlp.c_fc.weight", "blk.0.ffn_up.weight", true),
            ("h.0.mlp.c_proj.weight", "blk.0.ffn_down.weight", true),
            ("h.0.mlp.c_proj.bias", "blk.0.ffn_down.bias", false),
        ] {
            assert_eq!(gguf_name(hf), (gguf.to_string(), transposed), "{hf}");
        }
        // Every name expected_shapes gives maps to a distinct GGUF name.
        let names: std::collections::HashSet<String> =
            crate::weights::expected_shapes(&Gpt2Config::gpt2_small())
                .into_iter()
                .map(|(hf, _)| gguf_name(&hf).0)
                .collect();
        assert_eq!(names.len(), 4 + 12 * 12);
    }

    #[test]
    fn expected_dims_follow_the_stored_layout() {
        let e = Expected::new("wte.weight".into(), vec![50257, 768]);
        assert_eq!(e.dims, vec![768, 50257]);
        let e = Expected::new("h.0.attn.c_attn.weight".into(), vec![768, 2304]);
        assert_eq!(e.dims, vec![768, 2304]);
        assert!(e.transposed);
        let e = Expected::new("h.0.attn.c_attn.bias".into(), vec![2304]);
        assert_eq!(e.dims, vec![2304]);
    }
}
