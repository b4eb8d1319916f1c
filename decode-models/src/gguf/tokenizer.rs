//! The tokenizer a GGUF file's `tokenizer.ggml.*` metadata describes, as a `tokenizers` BPE
//! ([`crate::Tokenizer::from_gguf`] wraps it).

use decode_core::{Error, Result};
use tokenizers::AddedToken;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

use super::{GgufFile, Value};

impl GgufFile {
    /// The tokenizer the metadata describes: GPT-2's byte-level BPE (no prefix space) from
    /// `tokenizer.ggml.tokens` (the id of a token is its index) and `tokenizer.ggml.merges`
    /// (`"left right"`, highest priority first). Tokens of type CONTROL (3) in
    /// `tokenizer.ggml.token_type`, and the eos token, are special (matched whole in text, like
    /// `<|endoftext|>`); tokens of type USER_DEFINED (4) are added tokens, matched whole too.
    ///
    /// `tokenizer.ggml.model` must be `gpt2`, and `tokenizer.ggml.pre`, when present, must name
    /// GPT-2's own pre-tokenizer (`gpt-2`): another split regex would give other ids than
    /// llama.cpp gives for the same file.
    pub fn bpe(&self) -> Result<tokenizers::Tokenizer> {
        let model = self.string_key("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::Unsupported(format!(
                "{}: tokenizer.ggml.model is \"{model}\"; decode reads byte-level BPE (gpt2) \
                 tokenizers",
                self.path().display()
            )));
        }
        if self.metadata("tokenizer.ggml.pre").is_some() {
            let pre = self.string_key("tokenizer.ggml.pre")?;
            if !matches!(pre, "gpt-2" | "gpt2") {
                return Err(Error::Unsupported(format!(
                    "{}: tokenizer.ggml.pre is \"{pre}\"; decode splits text as GPT-2 does \
                     (gpt-2), which would give other tokens than this file's pre-tokenizer",
                    self.path().display()
                )));
            }
        }
        let tokens = self.string_array("tokenizer.ggml.tokens")?;
        if tokens.is_empty() {
            return Err(self.error("tokenizer.ggml.tokens is empty"));
        }
        let types = self.token_types(tokens.len())?;
        let mut vocab = Vocab::default();
        for (id, token) in tokens.iter().enumerate() {
            // At most the file's size in tokens; ids must still fit a u32.
            let id = u32::try_from(id)
                .map_err(|_| self.error("tokenizer.ggml.tokens holds more than 2^32 tokens"))?;
            if vocab.insert(token.to_string(), id).is_some() {
                return Err(self.error(format!(
                    "tokenizer.ggml.tokens holds {token:?} twice (the second time as id {id})"
                )));
            }
        }
        let merges = self.merges()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| self.error(format!("cannot build BPE from the tokens and merges: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        inner.with_decoder(Some(ByteLevel::default()));

        let eos = self.token_id_key("tokenizer.ggml.eos_token_id")?;
        let mut special = Vec::new();
        let mut added = Vec::new();
        for (id, token) in tokens.iter().enumerate() {
            let is_eos = eos.is_some_and(|e| e as usize == id);
            match types.get(id) {
                _ if is_eos => special.push(AddedToken::from(token.to_string(), true)),
                Some(&3) => special.push(AddedToken::from(token.to_string(), true)),
                Some(&4) => added.push(AddedToken::from(token.to_string(), false)),
                _ => {}
            }
        }
        // The tokens are in the vocabulary already, so they keep their ids.
        inner
            .add_special_tokens(special)
            .map_err(|e| Error::Tokenizer(format!("cannot add the special tokens: {e}")))?;
        inner
            .add_tokens(added)
            .map_err(|e| Error::Tokenizer(format!("cannot add the user-defined tokens: {e}")))?;
        Ok(inner)
    }

    /// `tokenizer.ggml.token_type` (one integer a token), or nothing when absent.
    fn token_types(&self, n_tokens: usize) -> Result<Vec<i64>> {
        const KEY: &str = "tokenizer.ggml.token_type";
        let Some(v) = self.metadata(KEY) else {
            return Ok(Vec::new());
        };
        let items = v.as_array().ok_or_else(|| {
            self.error(format!(
                "metadata {KEY} is a {}, not an array",
                v.type_name()
            ))
        })?;
        if items.len() != n_tokens {
            return Err(self.error(format!(
                "{KEY} has {} entries but tokenizer.ggml.tokens has {n_tokens}",
                items.len()
            )));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match *item {
                Value::I32(t) => Ok(t.into()),
                ref other => other
                    .as_u64()
                    .and_then(|t| i64::try_from(t).ok())
                    .ok_or_else(|| {
                        self.error(format!(
                            "element {i} of {KEY} is {other:?}, not a token type"
                        ))
                    }),
            })
            .collect()
    }

    /// `tokenizer.ggml.merges`: `"left right"` pairs, highest priority first.
    fn merges(&self) -> Result<Merges> {
        const KEY: &str = "tokenizer.ggml.merges";
        self.string_array(KEY)?
            .into_iter()
            .enumerate()
            .map(
                |(i, merge)| match merge.split(' ').collect::<Vec<_>>()[..] {
                    [left, right] if !left.is_empty() && !right.is_empty() => {
                        Ok((left.to_string(), right.to_string()))
                    }
                    _ => Err(self.error(format!(
                        "merge {i} of {KEY} ({merge:?}) is not two tokens separated by a space"
                    ))),
                },
            )
            .collect()
    }
}
