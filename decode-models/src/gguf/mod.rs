//! The GGUF container, as llama.cpp's `convert_hf_to_gguf.py` (and `llama-quantize`) write it:
//! header, metadata, tensor infos. It knows the format, not the architectures: [`gpt2`] maps a
//! GPT-2 file's metadata and tensors onto [`crate::Gpt2Config`] and HuggingFace's names, and
//! [`GgufFile::bpe`] builds the tokenizer its metadata describes.
//!
//! [`GgufFile::open`] reads the header, the metadata and the tensor infos, never the tensor data,
//! and checks everything it reads: a hostile file gets an [`Error`] with a one-line message, never
//! a panic, a hang or an allocation larger than the file itself (every count and length is checked
//! against the bytes left in the file before anything is allocated for it, sizes are computed with
//! checked arithmetic, and every tensor's data must lie inside the file).
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
pub use decode_kernels::ElementType;

pub mod gpt2;
mod tokenizer;

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

/// The element type stored under ggml's type number `id`, or else the name of what that number
/// is (for a message): the types this reader accepts are F32 (0), F16 (1), BF16 (30), Q8_0 (8)
/// and Q4_0 (2).
pub fn element_type(id: u32) -> std::result::Result<ElementType, String> {
    Ok(match id {
        0 => ElementType::F32,
        1 => ElementType::F16,
        30 => ElementType::BF16,
        8 => ElementType::Q8_0,
        2 => ElementType::Q4_0,
        other => return Err(ggml_type_name(other)),
    })
}

/// ggml's number for an element type (ggml.h's `ggml_type`).
pub fn ggml_type_id(element_type: ElementType) -> u32 {
    match element_type {
        ElementType::F32 => 0,
        ElementType::F16 => 1,
        ElementType::BF16 => 30,
        ElementType::Q8_0 => 8,
        ElementType::Q4_0 => 2,
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
    pub element_type: ElementType,
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

    /// An [`Error::Format`] for this file.
    pub(crate) fn error(&self, message: impl Into<String>) -> Error {
        Error::format(&self.path, message)
    }

    pub(crate) fn string_key(&self, key: &str) -> Result<&str> {
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
    pub(crate) fn usize_key(&self, key: &str) -> Result<usize> {
        let v = self
            .metadata(key)
            .ok_or_else(|| self.error(format!("missing metadata {key}")))?;
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.error(format!("metadata {key} is {v:?}, not a size")))
    }

    /// An optional token id (a non-negative integer that fits a u32).
    pub(crate) fn token_id_key(&self, key: &str) -> Result<Option<u32>> {
        let Some(v) = self.metadata(key) else {
            return Ok(None);
        };
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| self.error(format!("metadata {key} is {v:?}, not a token id")))
    }

    /// A required epsilon, widened to f64.
    pub(crate) fn epsilon(&self, key: &str) -> Result<f64> {
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
    pub(crate) fn string_array(&self, key: &str) -> Result<Vec<&str>> {
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
}

/// llama.cpp stores `layer_norm_epsilon` as an f32, so HF's 1e-5 arrives as 9.99999974738e-06;
/// widened as it is, that would be a slightly different layer norm from the one the HF
/// `config.json` describes. The writer meant a decimal, and the shortest decimal that reads back
/// as this f32 (what `Display` prints) is that decimal whenever it had at most ~7 significant
/// digits, as every real epsilon has; parsed as an f64, it is the HF value exactly.
pub(crate) fn f32_to_f64_as_written(x: f32) -> f64 {
    format!("{x}").parse().unwrap_or(f64::from(x))
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
    element_type: ElementType,
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
    let element_type = element_type(type_id).map_err(|type_name| {
        r.error(format!(
            "tensor {name} is {type_name}; decode reads F32, F16, BF16, Q8_0 and Q4_0 \
             (requantize with llama-quantize --pure)"
        ))
    })?;
    let (dims, bytes) = tensor_size(&name, &raw_dims, element_type).map_err(|m| r.error(m))?;
    Ok(TensorInfo {
        name,
        dims,
        element_type,
        relative_offset,
        bytes,
    })
}

/// The dims as usizes and the data's size in bytes, checked: every dim at least 1, the number
/// of values fits a usize, a row is whole blocks.
fn tensor_size(
    name: &str,
    raw_dims: &[u64],
    element_type: ElementType,
) -> std::result::Result<(Vec<usize>, u64), String> {
    if raw_dims.contains(&0) {
        return Err(format!("tensor {name} has a zero dimension: {raw_dims:?}"));
    }
    let values = raw_dims
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(|| format!("tensor {name}'s dimensions {raw_dims:?} overflow"))?;
    let block = element_type.block_values() as u64;
    if !raw_dims[0].is_multiple_of(block) {
        return Err(format!(
            "tensor {name} is {} but its rows of {} values are not whole blocks of {block}",
            element_type.name(),
            raw_dims[0]
        ));
    }
    let bytes = (values / block)
        .checked_mul(element_type.block_bytes() as u64)
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
            element_type: info.element_type,
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
    pub(crate) fn error(&self, message: impl Into<String>) -> Error {
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
            (ElementType::F32, 0, 1, 4),
            (ElementType::F16, 1, 1, 2),
            (ElementType::BF16, 30, 1, 2),
            (ElementType::Q8_0, 8, 32, 34),
            (ElementType::Q4_0, 2, 32, 18),
        ] {
            assert_eq!(element_type(id), Ok(ty));
            assert_eq!(ggml_type_id(ty), id);
            assert_eq!((ty.block_values(), ty.block_bytes()), (values, bytes));
        }
        assert_eq!(element_type(14), Err("Q6_K".to_string()));
        assert_eq!(
            element_type(999),
            Err("of unknown ggml type 999".to_string())
        );
    }

    #[test]
    fn tensor_sizes_are_checked() {
        assert_eq!(
            tensor_size("t", &[64, 3], ElementType::Q8_0),
            Ok((vec![64, 3], 2 * 3 * 34))
        );
        assert_eq!(
            tensor_size("t", &[64, 3], ElementType::Q4_0).unwrap().1,
            2 * 3 * 18
        );
        assert_eq!(tensor_size("t", &[5, 3], ElementType::F16).unwrap().1, 30);
        let err = tensor_size("t", &[48, 3], ElementType::Q4_0).unwrap_err();
        assert!(err.contains("not whole blocks of 32"), "{err}");
        let err = tensor_size("t", &[1 << 40, 1 << 40], ElementType::F32).unwrap_err();
        assert!(err.contains("overflow"), "{err}");
        // The values fit but the bytes do not.
        let err = tensor_size("t", &[1 << 62], ElementType::F32).unwrap_err();
        assert!(err.contains("overflow"), "{err}");
        let err = tensor_size("t", &[4, 0], ElementType::F32).unwrap_err();
        assert!(err.contains("zero dimension"), "{err}");
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
