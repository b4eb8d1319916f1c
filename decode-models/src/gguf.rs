//! Reading GPT-2 GGUF files, as llama.cpp's `convert_hf_to_gguf.py` (and `llama-quantize`)
//! write them.
//!
//! [`GgufFile::open`] reads the header, the metadata and the tensor infos, never the tensor data,
//! and checks everything it reads: a hostile file gets an [`Error`] with a one-line message, never
//! a panic, a hang or an allocation larger than the file itself (every count and length is checked
//! against the bytes left in the file before anything is allocated for it, sizes are computed with
//! checked arithmetic, and every tensor's data must lie inside the file).
//!
//! Then [`GgufFile::gpt2_config`] maps the `gpt2.*` metadata to a [`Gpt2Config`],
//! [`GgufFile::gpt2_tensors`] checks every tensor against it and names it as HuggingFace does, and
//! [`GgufFile::tokenizer`] builds the byte-level BPE from the `tokenizer.ggml.*` metadata.
//!
//! The format (versions 2 and 3, little-endian): the magic `GGUF`, a u32 version, a u64 tensor
//! count and a u64 metadata count; the metadata (a string key, a u32 value type, the value); the
//! tensor infos (name, u32 number of dimensions, u64 dimensions with the contiguous one first,
//! u32 ggml type, u64 offset into the data section); padding to `general.alignment` (32 unless
//! set); the data section.
//!
//! Tensors may be stored as F32, F16, BF16, Q8_0 or Q4_0; any other ggml type (the K-quants
//! llama-quantize picks for some tensors unless told `--pure`) is refused by name.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use decode_core::{Error, Result};
use tokenizers::AddedToken;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

use crate::config::Activation;
use crate::{Gpt2Config, Tokenizer};

/// Alignment of the data section and of every tensor in it when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
/// The largest `general.alignment` accepted (real files use 32; a page or two is plausible).
const MAX_ALIGNMENT: u64 = 1 << 20;
/// The longest metadata key or tensor name, in bytes (ggml's own tensor names stop at 63).
const MAX_NAME_BYTES: u64 = 1 << 16;
/// The longest string value, in bytes (the longest real ones, chat templates, are tens of KiB).
const MAX_STRING_BYTES: u64 = 1 << 24;
/// Arrays of arrays may nest this deep (an array of arrays of scalars); nothing real nests.
const MAX_ARRAY_DEPTH: usize = 2;
/// The most metadata values (array elements included) one file may hold. Each is a [`Value`] of
/// 32 bytes, so this bounds the metadata's memory at 128 MiB beyond its strings whatever the file
/// holds; the largest real vocabularies (Gemma's 262k tokens, with scores and types) use < 1M.
const MAX_METADATA_VALUES: u64 = 1 << 22;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// The smallest possible metadata entry: an empty key's length, a value type, a one-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// The smallest possible tensor info: a name length, one dimension, a type and an offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7 (one byte, 0 or 1).
    Bool(bool),
    /// Type 8 (UTF-8).
    String(String),
    /// Type 9: values of one type.
    Array(Vec<Value>),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a u64, if it is an integer (of any width or signedness) that is not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The GGUF name of this value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::F32(_) => "f32",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F64(_) => "f64",
        }
    }
}

/// The ggml tensor types this reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float (type 0).
    F32,
    /// IEEE half (type 1).
    F16,
    /// bfloat16 (type 30).
    BF16,
    /// Blocks of 32 values: an f16 scale `d`, then 32 i8 `q`; value = `d·q` (type 8, 34 bytes).
    Q8_0,
    /// Blocks of 32 values: an f16 scale `d`, then 16 bytes whose low nibbles are values 0..16 and
    /// high nibbles values 16..32; value = `d·(nibble − 8)` (type 2, 18 bytes).
    Q4_0,
}

impl GgmlType {
    /// The type for ggml's type number, or else the name of what that number is (for a message).
    fn from_id(id: u32) -> std::result::Result<Self, String> {
        Ok(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            30 => GgmlType::BF16,
            8 => GgmlType::Q8_0,
            2 => GgmlType::Q4_0,
            other => return Err(ggml_type_name(other)),
        })
    }

    /// ggml's number for this type.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::BF16 => 30,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4_0 => 2,
        }
    }

    /// ggml's name for this type (`F32`, `Q8_0`, …).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4_0 => "Q4_0",
        }
    }

    /// Values per block: 32 for the quantized types, 1 for the float ones.
    pub fn block_values(self) -> u64 {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q8_0 | GgmlType::Q4_0 => 32,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q8_0 => 2 + 32,
            GgmlType::Q4_0 => 2 + 16,
        }
    }
}

/// ggml's name for a type number (ggml.h's `ggml_type`), for the message refusing it.
fn ggml_type_name(id: u32) -> String {
    let name = match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        other => return format!("of unknown ggml type {other}"),
    };
    name.to_string()
}

/// One tensor's info, checked: its data lies inside the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensor {
    /// The GGUF name (`token_embd.weight`, `blk.0.attn_qkv.weight`, …).
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the contiguous one (the row length), so the
    /// row-major shape is these reversed (see [`GgufTensor::shape`]). Each at least 1.
    pub dims: Vec<usize>,
    /// How the values are stored.
    pub ggml_type: GgmlType,
    /// Where the data starts, from the start of the file.
    pub offset: u64,
    /// How many bytes the data takes.
    pub bytes: u64,
}

impl GgufTensor {
    /// The row-major shape (ggml's dimensions reversed): `[rows, row length]` for a matrix.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }

    /// The number of values (the product of the dimensions; checked to fit when the file was
    /// opened).
    pub fn values(&self) -> usize {
        self.dims.iter().product()
    }
}

/// A GGUF file's header, metadata and tensor infos, checked (the tensor data is not read).
#[derive(Clone)]
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    /// In file order.
    metadata: Vec<(String, Value)>,
    /// Key → index into `metadata`.
    metadata_index: HashMap<String, usize>,
    /// In file order.
    tensors: Vec<GgufTensor>,
    /// Name → index into `tensors`.
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
    file_len: u64,
}

impl std::fmt::Debug for GgufFile {
    // Counts, not contents: the metadata holds the whole vocabulary.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_entries", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Reads and checks the header, metadata and tensor infos of the GGUF file at `path` (a
    /// regular file: see [`decode_core::files::open_regular`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = decode_core::files::open_regular(path)?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut r = Reader {
            inner: BufReader::new(file),
            path,
            pos: 0,
            len: file_len,
            values_left: MAX_METADATA_VALUES,
        };
        let version = read_header(&mut r)?;
        let tensor_count = r.u64("the tensor count")?;
        let kv_count = r.u64("the metadata count")?;
        r.check_count(kv_count, MIN_KV_BYTES, "metadata entries")?;
        r.check_count(tensor_count, MIN_TENSOR_INFO_BYTES, "tensors")?;

        let (metadata, metadata_index) = read_metadata(&mut r, kv_count)?;
        let alignment = alignment(
            path,
            metadata_index
                .get("general.alignment")
                .map(|&i| &metadata[i].1),
        )?;

        // Counted again now that the metadata is read: fewer bytes are left.
        r.check_count(tensor_count, MIN_TENSOR_INFO_BYTES, "tensors")?;
        let mut infos = Vec::with_capacity(capacity(tensor_count));
        let mut tensor_index = HashMap::with_capacity(capacity(tensor_count));
        for i in 0..tensor_count {
            let info = read_tensor_info(&mut r, i)?;
            if tensor_index
                .insert(info.name.clone(), infos.len())
                .is_some()
            {
                return Err(r.error(format!("tensor {} appears twice", info.name)));
            }
            infos.push(info);
        }

        // The data section starts at the next multiple of the alignment.
        let data_offset = r
            .pos
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| r.error("the data section's offset overflows"))?;
        // As llama.cpp reads it: each tensor's data starts where the one before it ends (padded to
        // the alignment), so no two tensors share bytes and none hides in a gap.
        let mut expected = 0u64;
        let mut tensors = Vec::with_capacity(infos.len());
        for info in infos {
            let tensor = place_tensor(path, info, data_offset, alignment, file_len)?;
            let start = tensor.offset - data_offset;
            if start != expected {
                return Err(Error::format(
                    path,
                    format!(
                        "tensor {}'s data starts at offset {start} of the data section, but the \
                         tensors listed before it end at {expected}: tensor data must follow in \
                         order, without overlaps or gaps",
                        tensor.name
                    ),
                ));
            }
            // Inside the file, so far from overflowing.
            expected = start + tensor.bytes.next_multiple_of(alignment);
            tensors.push(tensor);
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            version,
            metadata,
            metadata_index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
            file_len,
        })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of the data section and of every tensor in it (`general.alignment`, or 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Where the data section starts, from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The file's length in bytes when it was opened.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The metadata value under `key`, if any.
    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// Every metadata entry, in file order.
    pub fn metadata_entries(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[GgufTensor] {
        &self.tensors
    }

    /// The tensor named `name` (its GGUF name), if any.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

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
                self.path.display(),
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
            Error::Config(m) => Error::Config(format!("{}: {m}", self.path.display())),
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
        for tensor in &self.tensors {
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
                    self.path.display(),
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

    /// The tokenizer the metadata describes: GPT-2's byte-level BPE (no prefix space) from
    /// `tokenizer.ggml.tokens` (the id of a token is its index) and `tokenizer.ggml.merges`
    /// (`"left right"`, highest priority first). Tokens of type CONTROL (3) in
    /// `tokenizer.ggml.token_type`, and the eos token, are special (matched whole in text, like
    /// `<|endoftext|>`); tokens of type USER_DEFINED (4) are added tokens, matched whole too.
    ///
    /// `tokenizer.ggml.model` must be `gpt2`, and `tokenizer.ggml.pre`, when present, must name
    /// GPT-2's own pre-tokenizer (`gpt-2`): another split regex would give other ids than
    /// llama.cpp gives for the same file.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let model = self.string_key("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::Unsupported(format!(
                "{}: tokenizer.ggml.model is \"{model}\"; decode reads byte-level BPE (gpt2) \
                 tokenizers",
                self.path.display()
            )));
        }
        if self.metadata("tokenizer.ggml.pre").is_some() {
            let pre = self.string_key("tokenizer.ggml.pre")?;
            if !matches!(pre, "gpt-2" | "gpt2") {
                return Err(Error::Unsupported(format!(
                    "{}: tokenizer.ggml.pre is \"{pre}\"; decode splits text as GPT-2 does \
                     (gpt-2), which would give other tokens than this file's pre-tokenizer",
                    self.path.display()
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
        Ok(Tokenizer::from_bpe(inner))
    }

    /// An [`Error::Format`] for this file.
    fn error(&self, message: impl Into<String>) -> Error {
        Error::format(&self.path, message)
    }

    fn require_gpt2(&self) -> Result<()> {
        let arch = self.string_key("general.architecture")?;
        if arch != "gpt2" {
            return Err(Error::Unsupported(format!(
                "{}: general.architecture is \"{arch}\"; decode reads GPT-2 (gpt2) GGUF files",
                self.path.display()
            )));
        }
        Ok(())
    }

    fn string_key(&self, key: &str) -> Result<&str> {
        match self.metadata(key) {
            None => Err(self.error(format!("missing metadata {key}"))),
            Some(v) => v.as_str().ok_or_else(|| {
                self.error(format!(
                    "metadata {key} is a {}, not a string",
                    v.type_name()
                ))
            }),
        }
    }

    /// A required non-negative integer that fits a usize.
    fn usize_key(&self, key: &str) -> Result<usize> {
        let v = self
            .metadata(key)
            .ok_or_else(|| self.error(format!("missing metadata {key}")))?;
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.error(format!("metadata {key} is {v:?}, not a size")))
    }

    /// An optional token id (a non-negative integer that fits a u32).
    fn token_id_key(&self, key: &str) -> Result<Option<u32>> {
        let Some(v) = self.metadata(key) else {
            return Ok(None);
        };
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| self.error(format!("metadata {key} is {v:?}, not a token id")))
    }

    /// A required epsilon, widened to f64.
    fn epsilon(&self, key: &str) -> Result<f64> {
        match self.metadata(key) {
            None => Err(self.error(format!("missing metadata {key}"))),
            Some(Value::F32(x)) => Ok(f32_to_f64_as_written(*x)),
            Some(Value::F64(x)) => Ok(*x),
            Some(v) => Err(self.error(format!(
                "metadata {key} is a {}, not a float",
                v.type_name()
            ))),
        }
    }

    /// A required array of strings.
    fn string_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self
            .metadata(key)
            .ok_or_else(|| self.error(format!("missing metadata {key}")))?;
        let items = v.as_array().ok_or_else(|| {
            self.error(format!(
                "metadata {key} is a {}, not an array",
                v.type_name()
            ))
        })?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str().ok_or_else(|| {
                    self.error(format!(
                        "element {i} of {key} is a {}, not a string",
                        item.type_name()
                    ))
                })
            })
            .collect()
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

/// llama.cpp stores `layer_norm_epsilon` as an f32, so HF's 1e-5 arrives as 9.99999974738e-06;
/// widened as it is, that would be a slightly different layer norm from the one the HF
/// `config.json` describes. The writer meant a decimal, and the shortest decimal that reads back
/// as this f32 (what `Display` prints) is that decimal whenever it had at most ~7 significant
/// digits, as every real epsilon has; parsed as an f64, it is the HF value exactly.
fn f32_to_f64_as_written(x: f32) -> f64 {
    format!("{x}").parse().unwrap_or(f64::from(x))
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

/// `general.alignment`, checked, or the default.
fn alignment(path: &Path, value: Option<&Value>) -> Result<u64> {
    let Some(value) = value else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match value.as_u64() {
        Some(a) if a.is_power_of_two() && a <= MAX_ALIGNMENT => Ok(a),
        _ => Err(Error::format(
            path,
            format!(
                "general.alignment is {value:?}; it must be a power of two no larger than \
                 {MAX_ALIGNMENT}"
            ),
        )),
    }
}

/// The magic and the version.
fn read_header(r: &mut Reader<'_>) -> Result<u32> {
    if r.len < 4 {
        return Err(r.error(format!("not a GGUF file ({} bytes)", r.len)));
    }
    let magic = r.bytes::<4>("the magic")?;
    if &magic != b"GGUF" {
        return Err(r.error(format!(
            "not a GGUF file (it starts with {magic:02x?}, not \"GGUF\"); a HuggingFace model \
             loads from its folder"
        )));
    }
    let version = r.u32("the version")?;
    match version {
        2 | 3 => Ok(version),
        // A big-endian file's version reads byte-swapped here.
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => Err(r.error(format!(
            "a big-endian GGUF file (version {}); decode reads little-endian ones",
            v.swap_bytes()
        ))),
        v => Err(r.error(format!("GGUF version {v}; decode reads versions 2 and 3"))),
    }
}

type Metadata = (Vec<(String, Value)>, HashMap<String, usize>);

fn read_metadata(r: &mut Reader<'_>, count: u64) -> Result<Metadata> {
    let mut entries = Vec::with_capacity(capacity(count));
    let mut index = HashMap::with_capacity(capacity(count));
    for i in 0..count {
        let key = r.string(&format!("the key of metadata entry {i}"), MAX_NAME_BYTES)?;
        let kind = r.u32(&format!("the type of metadata {key}"))?;
        let value = r.value(kind, &key, 0)?;
        if index.insert(key.clone(), entries.len()).is_some() {
            return Err(r.error(format!("metadata {key} appears twice")));
        }
        entries.push((key, value));
    }
    Ok((entries, index))
}

/// A tensor's info as stored, before its data is placed.
struct TensorInfo {
    name: String,
    dims: Vec<usize>,
    ggml_type: GgmlType,
    /// From the start of the data section.
    relative_offset: u64,
    bytes: u64,
}

fn read_tensor_info(r: &mut Reader<'_>, i: u64) -> Result<TensorInfo> {
    let name = r.string(&format!("the name of tensor {i}"), MAX_NAME_BYTES)?;
    if name.is_empty() {
        return Err(r.error(format!("tensor {i} has an empty name")));
    }
    let n_dims = r.u32(&format!("the dimension count of tensor {name}"))?;
    if !(1..=MAX_DIMS).contains(&n_dims) {
        return Err(r.error(format!(
            "tensor {name} has {n_dims} dimensions; ggml allows 1 to {MAX_DIMS}"
        )));
    }
    let mut raw_dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        raw_dims.push(r.u64(&format!("the dimensions of tensor {name}"))?);
    }
    let type_id = r.u32(&format!("the type of tensor {name}"))?;
    let relative_offset = r.u64(&format!("the offset of tensor {name}"))?;
    let ggml_type = GgmlType::from_id(type_id).map_err(|type_name| {
        r.error(format!(
            "tensor {name} is {type_name}; decode reads F32, F16, BF16, Q8_0 and Q4_0 \
             (requantize with llama-quantize --pure)"
        ))
    })?;
    let (dims, bytes) = tensor_size(&name, &raw_dims, ggml_type).map_err(|m| r.error(m))?;
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        relative_offset,
        bytes,
    })
}

/// The dims as usizes and the data's size in bytes, checked: every dim at least 1, the number
/// of values fits a usize, a row is whole blocks.
fn tensor_size(
    name: &str,
    raw_dims: &[u64],
    ggml_type: GgmlType,
) -> std::result::Result<(Vec<usize>, u64), String> {
    if raw_dims.contains(&0) {
        return Err(format!("tensor {name} has a zero dimension: {raw_dims:?}"));
    }
    let values = raw_dims
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(|| format!("tensor {name}'s dimensions {raw_dims:?} overflow"))?;
    let block = ggml_type.block_values();
    if !raw_dims[0].is_multiple_of(block) {
        return Err(format!(
            "tensor {name} is {} but its rows of {} values are not whole blocks of {block}",
            ggml_type.name(),
            raw_dims[0]
        ));
    }
    let bytes = (values / block)
        .checked_mul(ggml_type.block_bytes())
        .ok_or_else(|| format!("tensor {name}'s size in bytes overflows"))?;
    // Every dim fits a usize: their product does.
    let dims = raw_dims.iter().map(|&d| d as usize).collect();
    Ok((dims, bytes))
}

/// Places `info`'s data in the file: aligned, and inside it.
fn place_tensor(
    path: &Path,
    info: TensorInfo,
    data_offset: u64,
    alignment: u64,
    file_len: u64,
) -> Result<GgufTensor> {
    let name = &info.name;
    let rel = info.relative_offset;
    if !rel.is_multiple_of(alignment) {
        return Err(Error::format(
            path,
            format!(
                "tensor {name}'s data offset {rel} is not a multiple of the alignment {alignment}"
            ),
        ));
    }
    let start = data_offset.checked_add(rel);
    let end = start.and_then(|s| s.checked_add(info.bytes));
    match (start, end) {
        (Some(start), Some(end)) if end <= file_len => Ok(GgufTensor {
            name: info.name,
            dims: info.dims,
            ggml_type: info.ggml_type,
            offset: start,
            bytes: info.bytes,
        }),
        _ => Err(Error::format(
            path,
            format!(
                "tensor {name}'s data ({} bytes at offset {rel} of the data section, which starts \
                 at {data_offset}) lies past the end of the file ({file_len} bytes): truncated?",
                info.bytes
            ),
        )),
    }
}

/// Reads the header's fields, counting the bytes left so that no length read from the file is
/// trusted beyond them.
struct Reader<'a> {
    inner: BufReader<File>,
    path: &'a Path,
    /// Bytes consumed so far.
    pos: u64,
    /// The file's length.
    len: u64,
    /// How many more metadata values may be read (see [`MAX_METADATA_VALUES`]).
    values_left: u64,
}

impl Reader<'_> {
    fn error(&self, message: impl Into<String>) -> Error {
        Error::format(self.path, message)
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn truncated(&self, what: &str) -> Error {
        self.error(format!(
            "truncated: the file ends inside {what} (at byte {} of {})",
            self.pos, self.len
        ))
    }

    /// Refuses `count` items of at least `min_bytes` each if the rest of the file cannot hold them.
    fn check_count(&self, count: u64, min_bytes: u64, what: &str) -> Result<()> {
        let room = self.remaining() / min_bytes;
        if count > room {
            return Err(self.error(format!(
                "the header claims {count} {what} but the {} bytes left hold at most {room}",
                self.remaining()
            )));
        }
        Ok(())
    }

    /// Fills `buf` from the file, which must hold that many more bytes.
    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        if buf.len() as u64 > self.remaining() {
            return Err(self.truncated(what));
        }
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            // The file shrank after its length was taken.
            std::io::ErrorKind::UnexpectedEof => self.truncated(what),
            _ => Error::io(self.path, e),
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut buf = [0; N];
        self.fill(&mut buf, what)?;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.bytes(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.bytes(what).map(u64::from_le_bytes)
    }

    /// A u64 length, then that many bytes of UTF-8, at most `max` of them.
    fn string(&mut self, what: &str, max: u64) -> Result<String> {
        let len = self.u64(what)?;
        if len > max {
            return Err(self.error(format!("{what} is {len} bytes long; the limit is {max}")));
        }
        if len > self.remaining() {
            return Err(self.truncated(what));
        }
        // At most `max` bytes, and no more than the file holds.
        let mut buf = vec![0; len as usize];
        self.fill(&mut buf, what)?;
        String::from_utf8(buf).map_err(|_| self.error(format!("{what} is not UTF-8")))
    }

    /// A value of type `kind` of the metadata `key`, inside `depth` arrays.
    fn value(&mut self, kind: u32, key: &str, depth: usize) -> Result<Value> {
        if self.values_left == 0 {
            return Err(self.error(format!(
                "the metadata holds more than {MAX_METADATA_VALUES} values (at {key})"
            )));
        }
        self.values_left -= 1;
        let what = &format!("the value of metadata {key}");
        Ok(match kind {
            0 => Value::U8(u8::from_le_bytes(self.bytes(what)?)),
            1 => Value::I8(i8::from_le_bytes(self.bytes(what)?)),
            2 => Value::U16(u16::from_le_bytes(self.bytes(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.bytes(what)?)),
            4 => Value::U32(u32::from_le_bytes(self.bytes(what)?)),
            5 => Value::I32(i32::from_le_bytes(self.bytes(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.bytes(what)?)),
            7 => match self.bytes::<1>(what)? {
                [0] => Value::Bool(false),
                [1] => Value::Bool(true),
                [b] => return Err(self.error(format!("metadata {key} holds bool {b}, not 0 or 1"))),
            },
            8 => Value::String(self.string(what, MAX_STRING_BYTES)?),
            9 => self.array(key, depth + 1)?,
            10 => Value::U64(u64::from_le_bytes(self.bytes(what)?)),
            11 => Value::I64(i64::from_le_bytes(self.bytes(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.bytes(what)?)),
            other => {
                return Err(self.error(format!("metadata {key} has unknown value type {other}")));
            }
        })
    }

    /// An array (element type, count, elements), itself at nesting level `depth` (from 1).
    fn array(&mut self, key: &str, depth: usize) -> Result<Value> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(self.error(format!(
                "metadata {key} nests arrays more than {MAX_ARRAY_DEPTH} deep"
            )));
        }
        let what = &format!("the array of metadata {key}");
        let kind = self.u32(what)?;
        let count = self.u64(what)?;
        let min_bytes = min_value_bytes(kind).ok_or_else(|| {
            self.error(format!("metadata {key} is an array of unknown type {kind}"))
        })?;
        if count > self.remaining() / min_bytes {
            return Err(self.error(format!(
                "metadata {key} claims {count} elements but the {} bytes left cannot hold them",
                self.remaining()
            )));
        }
        if count > self.values_left {
            return Err(self.error(format!(
                "metadata {key} claims {count} elements, more than the {MAX_METADATA_VALUES} \
                 values a file may hold"
            )));
        }
        let mut items = Vec::with_capacity(capacity(count));
        for _ in 0..count {
            items.push(self.value(kind, key, depth)?);
        }
        Ok(Value::Array(items))
    }
}

/// Room to reserve for `count` items read from the file. `count` has been checked against the
/// bytes left, but in a multi-GB model file that still allows a corrupt count to ask for GBs: past
/// this many, the vector grows only as items are actually read (each consuming file bytes).
fn capacity(count: u64) -> usize {
    count.min(1 << 16) as usize
}

/// The fewest bytes a value of type `kind` takes in the file, or `None` for an unknown type.
fn min_value_bytes(kind: u32) -> Option<u64> {
    Some(match kind {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        // The length; the text may be empty.
        8 => 8,
        // The element type and count; the array may be empty.
        9 => 12,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epsilon_reads_as_written() {
        assert_eq!(f32_to_f64_as_written(1e-5), 1e-5);
        assert_eq!(f32_to_f64_as_written(1e-6), 1e-6);
        assert_eq!(f32_to_f64_as_written(0.5), 0.5);
        // Widening alone would not give 1e-5.
        assert_ne!(f64::from(1e-5f32), 1e-5);
    }

    #[test]
    fn type_sizes_follow_ggml() {
        for (ty, id, values, bytes) in [
            (GgmlType::F32, 0, 1, 4),
            (GgmlType::F16, 1, 1, 2),
            (GgmlType::BF16, 30, 1, 2),
            (GgmlType::Q8_0, 8, 32, 34),
            (GgmlType::Q4_0, 2, 32, 18),
        ] {
            assert_eq!(GgmlType::from_id(id), Ok(ty));
            assert_eq!(ty.id(), id);
            assert_eq!((ty.block_values(), ty.block_bytes()), (values, bytes));
        }
        assert_eq!(GgmlType::from_id(14), Err("Q6_K".to_string()));
        assert_eq!(
            GgmlType::from_id(999),
            Err("of unknown ggml type 999".to_string())
        );
    }

    #[test]
    fn tensor_sizes_are_checked() {
        assert_eq!(
            tensor_size("t", &[64, 3], GgmlType::Q8_0),
            Ok((vec![64, 3], 2 * 3 * 34))
        );
        assert_eq!(
            tensor_size("t", &[64, 3], GgmlType::Q4_0).unwrap().1,
            2 * 3 * 18
        );
        assert_eq!(tensor_size("t", &[5, 3], GgmlType::F16).unwrap().1, 30);
        let err = tensor_size("t", &[48, 3], GgmlType::Q4_0).unwrap_err();
        assert!(err.contains("not whole blocks of 32"), "{err}");
        let err = tensor_size("t", &[1 << 40, 1 << 40], GgmlType::F32).unwrap_err();
        assert!(err.contains("overflow"), "{err}");
        // The values fit but the bytes do not.
        let err = tensor_size("t", &[1 << 62], GgmlType::F32).unwrap_err();
        assert!(err.contains("overflow"), "{err}");
        let err = tensor_size("t", &[4, 0], GgmlType::F32).unwrap_err();
        assert!(err.contains("zero dimension"), "{err}");
    }

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

    #[test]
    fn value_accessors() {
        assert_eq!(Value::I32(7).as_u64(), Some(7));
        assert_eq!(Value::I64(-1).as_u64(), None);
        assert_eq!(Value::F32(1.0).as_u64(), None);
        assert_eq!(Value::String("x".into()).as_str(), Some("x"));
        assert_eq!(Value::Array(vec![]).as_array(), Some(&[][..]));
        assert_eq!(Value::Bool(true).type_name(), "bool");
    }
}
