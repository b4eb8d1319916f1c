//! The GPT-2 byte-level BPE tokenizer, over the `tokenizers` crate, and a streaming decoder that only
//! ever emits whole UTF-8 characters.

use std::path::Path;

use decode_core::{Error, Result, files};
use tokenizers::AddedToken;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

/// A byte-level BPE tokenizer (GPT-2's, or one trained the same way).
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The raw bytes each id stands for: what streaming decodes from.
    id_bytes: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl Tokenizer {
    /// Loads a `tokenizer.json` (a regular file of at most
    /// [`TOKENIZER_MAX_BYTES`](decode_core::files::TOKENIZER_MAX_BYTES)).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = files::read_capped(path, files::TOKENIZER_MAX_BYTES)?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| Error::format(path, format!("not a valid tokenizer.json: {e}")))?;
        Ok(Self::wrap(inner))
    }

    /// Builds GPT-2's tokenizer from `vocab.json` and `merges.txt` (no prefix space,
    /// `<|endoftext|>` special).
    pub fn from_vocab_merges(vocab: impl AsRef<Path>, merges: impl AsRef<Path>) -> Result<Self> {
        let (vocab_path, merges_path) = (vocab.as_ref(), merges.as_ref());
        let vocab = read_vocab(vocab_path)?;
        let merges = read_merges(merges_path)?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| {
                Error::format(
                    vocab_path,
                    format!("cannot build BPE from vocab and merges: {e}"),
                )
            })?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        inner.with_decoder(Some(ByteLevel::default()));
        inner
            .add_special_tokens([AddedToken::from("<|endoftext|>", true)])
            .map_err(|e| Error::Tokenizer(format!("cannot add <|endoftext|>: {e}")))?;
        Ok(Self::wrap(inner))
    }

    /// Loads the tokenizer of a HuggingFace model directory: `tokenizer.json`, or else
    /// `vocab.json` + `merges.txt`. A `tokenizer.json` that is there but is not a regular file is
    /// an error, not skipped.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let json = dir.join("tokenizer.json");
        if files::is_present(&json) {
            Self::from_file(json)
        } else {
            Self::from_vocab_merges(dir.join("vocab.json"), dir.join("merges.txt"))
        }
    }

    fn wrap(inner: tokenizers::Tokenizer) -> Self {
        let byte_of = unicode_to_byte();
        let id_bytes = (0..inner.get_vocab_size(true) as u32)
            .map(|id| {
                let token = inner.id_to_token(id).unwrap_or_default();
                let special = inner
                    .get_added_tokens_decoder()
                    .get(&id)
                    .is_some_and(|t| t.special);
                if special {
                    return token.into_bytes();
                }
                let mut bytes = Vec::with_capacity(token.len());
                for c in token.chars() {
                    match byte_of(c) {
                        Some(b) => bytes.push(b),
                        None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
                bytes
            })
            .collect();
        Tokenizer { inner, id_bytes }
    }

    /// Number of ids, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.id_bytes.len()
    }

    /// The id of a token string (for example `<|endoftext|>`), if it exists.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Text to ids. Special tokens written in the text (such as `<|endoftext|>`) become their ids,
    /// as in transformers.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(format!("cannot encode text: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Ids to text; invalid UTF-8 (a character cut between ids) becomes U+FFFD, as in transformers.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.bytes_of(id)?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A decoder that turns ids into text as they arrive.
    pub fn stream(&self) -> StreamDecoder<'_> {
        StreamDecoder {
            tokenizer: self,
            pending: Vec::new(),
        }
    }

    fn bytes_of(&self, id: u32) -> Result<&[u8]> {
        self.id_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .ok_or(Error::TokenOutOfRange {
                id,
                vocab_size: self.id_bytes.len(),
            })
    }
}

/// Turns a stream of ids into text, emitting only whole UTF-8 characters: a character whose bytes
/// span several tokens (emoji, CJK) comes out once its last byte has arrived.
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    pending: Vec<u8>,
}

impl StreamDecoder<'_> {
    /// Adds one id; returns the text it completes (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.pending.extend_from_slice(self.tokenizer.bytes_of(id)?);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return Ok(out);
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Safe: `valid_up_to` bytes were just checked.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // Incomplete character at the end: wait for the next id.
                        None => {
                            self.pending.drain(..valid);
                            return Ok(out);
                        }
                        // Bytes that can never become a character: emit U+FFFD, as decode does.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Flushes what is left (an unfinished character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// Reads a `vocab.json`: an object of token → id (as `tokenizers`' `BPE::read_file`, which keeps
/// only number values; ids must fit in a u32).
fn read_vocab(path: &Path) -> Result<Vocab> {
    let bytes = files::read_capped(path, files::TOKENIZER_MAX_BYTES)?;
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(path, format!("not a valid vocab.json: {e}")))?;
    json.into_iter()
        .filter_map(|(token, id)| match id {
            serde_json::Value::Number(id) => Some((token, id)),
            _ => None,
        })
        .map(|(token, id)| match id.as_u64().map(u32::try_from) {
            Some(Ok(id)) => Ok((token, id)),
            _ => Err(Error::format(
                path,
                format!("token {token:?} has id {id}, not a u32"),
            )),
        })
        .collect()
}

/// Reads a `merges.txt`: one `left right` pair a line, after an optional `#version` line (as
/// `tokenizers`' `BPE::read_file`).
fn read_merges(path: &Path) -> Result<Merges> {
    let text = files::read_to_string_capped(path, files::TOKENIZER_MAX_BYTES)?;
    text.lines()
        .filter(|line| !line.starts_with("#version"))
        .enumerate()
        .map(
            |(rank, line)| match line.split(' ').collect::<Vec<_>>()[..] {
                [left, right] => Ok((left.to_string(), right.to_string())),
                _ => Err(Error::format(
                    path,
                    format!("merge {} is not two tokens separated by a space", rank + 1),
                )),
            },
        )
        .collect()
}

/// The inverse of GPT-2's `bytes_to_unicode`: the byte a vocabulary character stands for.
fn unicode_to_byte() -> impl Fn(char) -> Option<u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = std::collections::HashMap::with_capacity(256);
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let c = if printable(b) {
            b as u32
        } else {
            shifted += 1;
            255 + shifted
        };
        if let Some(c) = char::from_u32(c) {
            table.insert(c, b);
        }
    }
    move |c| table.get(&c).copied()
}
