//! The GPT-2 byte-level BPE tokenizer, over the `tokenizers` crate, and a streaming decoder that only
//! ever emits whole UTF-8 characters.

use std::path::Path;

use decode_core::{Error, Result, StreamDecoder, TokenText, files};

use crate::gguf::GgufFile;
use tokenizers::AddedToken;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

/// A byte-level BPE tokenizer (GPT-2's, or one trained the same way).
///
/// Any `tokenizer.json` loads (encoding goes through the `tokenizers` crate), but decoding reads
/// ids through GPT-2's byte map, so before pairing one with a model call
/// [`Tokenizer::check_against`]: it refuses a tokenizer that is not byte-level, whose ids have
/// gaps, or that has more ids than the model.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The raw bytes each id of `0..n` stands for (what streaming decodes from); `None` for an id
    /// no token has (a gap), which then decodes to an error rather than to nothing.
    id_bytes: Vec<Option<Vec<u8>>>,
    /// Why this tokenizer cannot be paired with any model (not byte-level, gaps in its ids),
    /// found once at load time so that [`Tokenizer::check_against`] costs nothing per call.
    defect: Option<String>,
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

    /// The tokenizer a GGUF file's metadata describes ([`GgufFile::bpe`]).
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        Ok(Self::wrap(file.bpe()?))
    }

    /// The tokenizer of a model [`crate::Gpt2::load`] takes: a HuggingFace directory's files
    /// ([`Tokenizer::from_dir`]) or, for a GGUF file, the vocabulary and merges in its metadata.
    pub fn for_model(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            Self::from_dir(path)
        } else {
            Self::from_gguf(&GgufFile::open(path)?)
        }
    }

    fn wrap(inner: tokenizers::Tokenizer) -> Self {
        let byte_of = unicode_to_byte();
        // Cloned once: `get_added_tokens_decoder` copies the whole map on every call.
        let added = inner.get_added_tokens_decoder();
        let mut outside_alphabet = None;
        // Indexed up to the number of tokens, not the largest id: a hostile id (4e9) allocates
        // nothing.
        let n = inner.get_vocab_size(true) as u32;
        let id_bytes = (0..n)
            .map(|id| {
                let token = inner.id_to_token(id)?;
                if added.get(&id).is_some_and(|t| t.special) {
                    return Some(token.into_bytes());
                }
                let mut bytes = Vec::with_capacity(token.len());
                for c in token.chars() {
                    match byte_of(c) {
                        Some(b) => bytes.push(b),
                        None => {
                            // Added tokens hold raw text; a model token must be in the alphabet.
                            if !added.contains_key(&id) {
                                outside_alphabet.get_or_insert((id, c));
                            }
                            bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                        }
                    }
                }
                Some(bytes)
            })
            .collect::<Vec<_>>();
        let defect = not_byte_level(&inner)
            .or_else(|| {
                outside_alphabet.map(|(id, c)| {
                    format!(
                        "token {id} holds {c:?}, which is not in the byte-level alphabet: the \
                         vocabulary is not byte-level"
                    )
                })
            })
            .or_else(|| id_gaps(&inner, &id_bytes));
        Tokenizer {
            inner,
            id_bytes,
            defect,
        }
    }

    /// Number of ids, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.id_bytes.len()
    }

    /// Checks that this tokenizer can serve a model of `vocab_size` ids, before anything is
    /// generated: it must be a byte-level BPE (decoding reads ids through GPT-2's byte map, which
    /// turns any other tokenizer's output into garbage), its ids must be exactly `0..n` (a gap
    /// would lose words), and `n` must not exceed `vocab_size` (the model could not take the
    /// tokenizer's last ids). A model with more ids than the tokenizer (a padded vocabulary) is
    /// accepted: an id the model generates past `n` decodes to [`Error::TokenOutOfRange`].
    ///
    /// Cheap: what it needs is worked out when the tokenizer is loaded.
    pub fn check_against(&self, vocab_size: usize) -> Result<()> {
        if let Some(defect) = &self.defect {
            return Err(Error::Tokenizer(defect.clone()));
        }
        let n = self.vocab_size();
        if n > vocab_size {
            return Err(Error::VocabMismatch(format!(
                "the tokenizer has {n} ids but the model's vocabulary has {vocab_size}"
            )));
        }
        Ok(())
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
        StreamDecoder::new(self)
    }

    fn bytes_of(&self, id: u32) -> Result<&[u8]> {
        match self.id_bytes.get(id as usize) {
            Some(Some(bytes)) => Ok(bytes),
            Some(None) => Err(Error::Tokenizer(format!("id {id} has no token"))),
            None => Err(Error::TokenOutOfRange {
                id,
                vocab_size: self.id_bytes.len(),
            }),
        }
    }
}

impl TokenText for Tokenizer {
    fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        self.bytes_of(id)
    }

    fn check_against(&self, vocab_size: usize) -> Result<()> {
        Tokenizer::check_against(self, vocab_size)
    }
}

/// Why `tokenizer` is not a byte-level BPE (model, pre-tokenizer and decoder), if it is not.
fn not_byte_level(tokenizer: &tokenizers::Tokenizer) -> Option<String> {
    use tokenizers::DecoderWrapper as D;
    use tokenizers::ModelWrapper as M;
    use tokenizers::PreTokenizerWrapper as P;
    let model = match tokenizer.get_model() {
        M::BPE(_) => None,
        M::WordPiece(_) => Some("WordPiece"),
        M::WordLevel(_) => Some("WordLevel"),
        M::Unigram(_) => Some("Unigram"),
    };
    if let Some(model) = model {
        return Some(format!(
            "a {model} tokenizer, not a byte-level BPE like GPT-2's"
        ));
    }
    // Llama 3 and Qwen split with a regex first, then map bytes: a ByteLevel step anywhere will do.
    let pre = match tokenizer.get_pre_tokenizer() {
        Some(P::ByteLevel(_)) => true,
        Some(P::Sequence(steps)) => steps.as_ref().iter().any(|p| matches!(p, P::ByteLevel(_))),
        _ => false,
    };
    if !pre {
        return Some(
            "a BPE without the ByteLevel pre-tokenizer, not a byte-level BPE like GPT-2's".into(),
        );
    }
    // Any other decoding step (Replace, Strip, ByteFallback…) would change text that decoding
    // here, through the byte map alone, does not.
    let dec = match tokenizer.get_decoder() {
        Some(D::ByteLevel(_)) => true,
        Some(D::Sequence(steps)) => {
            !steps.get_decoders().is_empty()
                && steps
                    .get_decoders()
                    .iter()
                    .all(|d| matches!(d, D::ByteLevel(_)))
        }
        _ => false,
    };
    if !dec {
        return Some(
            "a BPE without the ByteLevel decoder, not a byte-level BPE like GPT-2's".into(),
        );
    }
    None
}

/// Why the ids of `tokenizer` are not exactly `0..n`, if they are not. `id_bytes` covers `0..n`
/// (n tokens, added ones included): an id there without a token, or a token with an id past it.
fn id_gaps(tokenizer: &tokenizers::Tokenizer, id_bytes: &[Option<Vec<u8>>]) -> Option<String> {
    let n = id_bytes.len();
    if n == 0 {
        return Some("the tokenizer has no tokens".into());
    }
    let largest = tokenizer
        .get_vocab(true)
        .into_values()
        .max()
        .unwrap_or_default();
    let missing = id_bytes.iter().position(Option::is_none);
    if missing.is_none() && (largest as usize) < n {
        return None;
    }
    let missing = missing
        .map(|id| format!("no token has id {id} and "))
        .unwrap_or_default();
    Some(format!(
        "the tokenizer's ids are not 0..{n}: it has {n} tokens but {missing}the largest id is \
         {largest}"
    ))
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
