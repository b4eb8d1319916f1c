//! The GGUF reader: files written here by a small test writer round-trip; hostile ones (huge
//! lengths and counts, overflowing dimensions, data past the end, misaligned offsets, unknown
//! types, duplicates, a tokenizer or architecture that is not GPT-2's) give one-line errors that
//! name the problem; random mutations never panic or over-allocate (proptest); and the files
//! llama.cpp made from `models/kjv-target` read as the HuggingFace checkpoint does, and refuse
//! to load with a NaN or infinite block scale.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use decode_core::Error;
use decode_models::gguf::{ElementType, GgufFile, Value};
use decode_models::{Gpt2Config, Tokenizer};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Allocation measurement (as in tests/properties.rs, but per thread: the tests run in parallel,
// and a bound of a few MiB must not count another test's allocations).

/// Counts, per thread, the bytes allocated now and the peak since [`peak_during`] last reset it.
struct Counting;

thread_local! {
    // Signed: a thread may free what another allocated. Const-initialised, without a destructor,
    // so using them from the allocator allocates nothing.
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let _ = CURRENT.try_with(|c| {
                let now = c.get() + layout.size() as isize;
                c.set(now);
                let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
            });
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        let _ = CURRENT.try_with(|c| c.set(c.get() - layout.size() as isize));
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`, returning the most bytes this thread had allocated at once beyond what was live
/// before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, (peak - base).max(0) as usize)
}

// ---------------------------------------------------------------------------------------------
// A small GGUF writer.

/// A tensor to write: ggml dims, ggml type number, the data, and an offset to write instead of
/// the one the writer would choose.
#[derive(Clone)]
struct TensorSpec {
    name: String,
    dims: Vec<u64>,
    ty: u32,
    data: Vec<u8>,
    offset: Option<u64>,
}

impl TensorSpec {
    /// An F32 tensor of `dims`, holding 0, 1, 2, …
    fn f32(name: &str, dims: &[u64]) -> Self {
        let n: u64 = dims.iter().product();
        TensorSpec {
            name: name.into(),
            dims: dims.to_vec(),
            ty: 0,
            data: (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect(),
            offset: None,
        }
    }

    /// A tensor of type `ty` whose data is `bytes` zero bytes.
    fn raw(name: &str, dims: &[u64], ty: u32, bytes: usize) -> Self {
        TensorSpec {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
            data: vec![0; bytes],
            offset: None,
        }
    }
}

/// A GGUF file under construction.
#[derive(Clone)]
struct Writer {
    version: u32,
    /// What the writer pads to (`general.alignment` must agree, if set).
    alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorSpec>,
}

impl Writer {
    fn new() -> Self {
        Writer {
            version: 3,
            alignment: 32,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    fn kv(mut self, key: &str, value: Value) -> Self {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.into(), value));
        self
    }

    fn tensor(mut self, t: TensorSpec) -> Self {
        self.tensors.push(t);
        self
    }

    fn without_tensor(mut self, name: &str) -> Self {
        self.tensors.retain(|t| t.name != name);
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_str(&mut out, key);
            out.extend(type_id(value).to_le_bytes());
            put_value(&mut out, value);
        }
        let mut next = 0u64;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            let offset = t.offset.unwrap_or(next);
            offsets.push(offset);
            next = offset
                .saturating_add(t.data.len() as u64)
                .next_multiple_of(self.alignment);
        }
        for (t, offset) in self.tensors.iter().zip(&offsets) {
            put_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
        }
        let data_start = (out.len() as u64).next_multiple_of(self.alignment) as usize;
        out.resize(data_start, 0);
        for (t, &offset) in self.tensors.iter().zip(&offsets) {
            // A tensor without data only claims an offset (perhaps far past any file).
            if t.data.is_empty() {
                continue;
            }
            let at = data_start + offset as usize;
            if out.len() < at + t.data.len() {
                out.resize(at + t.data.len(), 0);
            }
            out[at..at + t.data.len()].copy_from_slice(&t.data);
        }
        out
    }

    /// Writes the file and opens it.
    fn open(&self, tag: &str) -> Result<GgufFile, Error> {
        let file = Temp::new(tag, &self.bytes());
        GgufFile::open(&file.0)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend(x.to_le_bytes()),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::Array(items) => {
            out.extend(items.first().map_or(4, type_id).to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
    }
}

fn string(s: &str) -> Value {
    Value::String(s.into())
}

fn strings<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Value {
    Value::Array(items.into_iter().map(|s| string(s.as_ref())).collect())
}

/// A temporary file, removed on drop.
struct Temp(PathBuf);

impl Temp {
    fn new(tag: &str, bytes: &[u8]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "decode-gguf-{tag}-{}-{}.gguf",
            std::process::id(),
            NEXT.fetch_add(1, Relaxed)
        ));
        std::fs::write(&path, bytes).unwrap();
        Temp(path)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny GPT-2 as llama.cpp writes one.

const N_EMBD: u64 = 8;
const N_INNER: u64 = 32;
const N_LAYER: u64 = 2;
const N_POSITIONS: u64 = 16;

/// GPT-2's `bytes_to_unicode`: the character each byte is written as in the vocabulary.
fn byte_chars() -> Vec<char> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut shifted = 0;
    (0..=255u8)
        .map(|b| {
            if printable(b) {
                b as char
            } else {
                shifted += 1;
                char::from_u32(255 + shifted).unwrap()
            }
        })
        .collect()
}

/// The tiny vocabulary: `<|endoftext|>` (id 0), the 256 byte tokens, then what the merges make.
fn tiny_vocab() -> (Vec<String>, Vec<String>) {
    let mut tokens = vec!["<|endoftext|>".to_string()];
    tokens.extend(byte_chars().into_iter().map(String::from));
    let merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ in"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    (tokens, merges.iter().map(|m| m.to_string()).collect())
}

/// A tiny GPT-2 in F32 (tied), metadata and tensors as convert_hf_to_gguf.py writes them.
fn tiny_gpt2() -> Writer {
    let (tokens, merges) = tiny_vocab();
    let vocab = tokens.len() as u64;
    let mut types = vec![Value::I32(1); tokens.len()];
    types[0] = Value::I32(3);
    let (e, i) = (N_EMBD, N_INNER);
    let mut w = Writer::new()
        .kv("general.architecture", string("gpt2"))
        .kv("general.name", string("tiny"))
        .kv("gpt2.block_count", Value::U32(N_LAYER as u32))
        .kv("gpt2.context_length", Value::U32(N_POSITIONS as u32))
        .kv("gpt2.embedding_length", Value::U32(e as u32))
        .kv("gpt2.feed_forward_length", Value::U32(i as u32))
        .kv("gpt2.attention.head_count", Value::U32(2))
        .kv("gpt2.attention.layer_norm_epsilon", Value::F32(1e-5))
        .kv("general.file_type", Value::U32(0))
        .kv("tokenizer.ggml.model", string("gpt2"))
        .kv("tokenizer.ggml.pre", string("gpt-2"))
        .kv("tokenizer.ggml.tokens", strings(&tokens))
        .kv("tokenizer.ggml.token_type", Value::Array(types))
        .kv("tokenizer.ggml.merges", strings(&merges))
        .kv("tokenizer.ggml.bos_token_id", Value::U32(0))
        .kv("tokenizer.ggml.eos_token_id", Value::U32(0))
        .tensor(TensorSpec::f32("token_embd.weight", &[e, vocab]))
        .tensor(TensorSpec::f32("position_embd.weight", &[e, N_POSITIONS]));
    for l in 0..N_LAYER {
        for (name, dims) in [
            ("attn_norm.weight", vec![e]),
            ("attn_norm.bias", vec![e]),
            ("attn_qkv.weight", vec![e, 3 * e]),
            ("attn_qkv.bias", vec![3 * e]),
            ("attn_output.weight", vec![e, e]),
            ("attn_output.bias", vec![e]),
            ("ffn_norm.weight", vec![e]),
            ("ffn_norm.bias", vec![e]),
            ("ffn_up.weight", vec![e, i]),
            ("ffn_up.bias", vec![i]),
            ("ffn_down.weight", vec![i, e]),
            ("ffn_down.bias", vec![e]),
        ] {
            w = w.tensor(TensorSpec::f32(&format!("blk.{l}.{name}"), &dims));
        }
    }
    w.tensor(TensorSpec::f32("output_norm.weight", &[e]))
        .tensor(TensorSpec::f32("output_norm.bias", &[e]))
}

fn message(result: Result<impl std::fmt::Debug, Error>) -> String {
    let err = result.expect_err("an error");
    let text = err.to_string();
    assert!(!text.contains('\n'), "not one line: {text}");
    text
}

fn assert_mentions(result: Result<impl std::fmt::Debug, Error>, part: &str) {
    let text = message(result);
    assert!(text.contains(part), "{text:?} does not mention {part:?}");
}

// ---------------------------------------------------------------------------------------------
// Valid files.

#[test]
fn metadata_and_tensor_infos_round_trip() {
    let nested = Value::Array(vec![
        Value::Array(vec![Value::U8(1), Value::U8(2)]),
        Value::Array(vec![Value::U8(3)]),
    ]);
    let all = [
        ("u8", Value::U8(200)),
        ("i8", Value::I8(-100)),
        ("u16", Value::U16(60000)),
        ("i16", Value::I16(-30000)),
        ("u32", Value::U32(4_000_000_000)),
        ("i32", Value::I32(-2_000_000_000)),
        ("f32", Value::F32(1.5)),
        ("bool", Value::Bool(true)),
        ("string", string("héllo")),
        ("empty", string("")),
        ("array", strings(["a", "bc"])),
        ("empty_array", Value::Array(vec![])),
        ("nested", nested),
        ("u64", Value::U64(u64::MAX)),
        ("i64", Value::I64(i64::MIN)),
        ("f64", Value::F64(-0.25)),
    ];
    for (version, alignment) in [(3, 32), (2, 64)] {
        let mut w = Writer::new();
        w.version = version;
        w.alignment = alignment;
        for (key, value) in all.clone() {
            w = w.kv(key, value);
        }
        if alignment != 32 {
            w = w.kv("general.alignment", Value::U32(alignment as u32));
        }
        let w = w
            .tensor(TensorSpec::f32("a", &[3, 2]))
            .tensor(TensorSpec::raw("q8", &[64, 2], 8, 2 * 2 * 34))
            .tensor(TensorSpec::raw("q4", &[32, 1, 1, 3], 2, 3 * 18))
            .tensor(TensorSpec::raw("h", &[5], 1, 10))
            .tensor(TensorSpec::raw("b", &[7], 30, 14));
        let file = w.open("round-trip").unwrap();
        assert_eq!(file.version(), version);
        assert_eq!(file.alignment(), alignment);
        assert_eq!(file.data_offset() % alignment, 0);
        for (key, value) in &all {
            assert_eq!(file.metadata(key), Some(value), "{key}");
        }
        let keys: Vec<&str> = file.metadata_entries().map(|(k, _)| k).collect();
        assert_eq!(keys[..2], ["u8", "i8"]);
        assert_eq!(file.metadata("absent"), None);
        let expect = [
            ("a", vec![3, 2], ElementType::F32, 24),
            ("q8", vec![64, 2], ElementType::Q8_0, 136),
            ("q4", vec![32, 1, 1, 3], ElementType::Q4_0, 54),
            ("h", vec![5], ElementType::F16, 10),
            ("b", vec![7], ElementType::BF16, 14),
        ];
        assert_eq!(file.tensors().len(), expect.len());
        let mut next = file.data_offset();
        for ((name, dims, ty, bytes), t) in expect.into_iter().zip(file.tensors()) {
            assert_eq!(
                (t.name.as_str(), &t.dims, t.element_type, t.bytes),
                (name, &dims, ty, bytes)
            );
            assert_eq!(t.offset, next, "{name}");
            assert_eq!(t.offset % alignment, 0);
            next = (t.offset + bytes).next_multiple_of(alignment);
            assert_eq!(file.tensor(name), Some(t));
        }
        assert_eq!(file.tensor("a").unwrap().shape(), vec![2, 3]);
        assert_eq!(file.tensor("q4").unwrap().values(), 96);
        assert!(file.tensor("absent").is_none());
        // The data really is where the offset says.
        let bytes = std::fs::read(Temp::new("data", &w.bytes()).0.clone()).unwrap();
        let a = file.tensor("a").unwrap().offset as usize;
        assert_eq!(bytes[a + 4..a + 8], 1f32.to_le_bytes());
    }
}

#[test]
fn gpt2_config_maps_the_metadata() {
    let file = tiny_gpt2().open("config").unwrap();
    let config = file.gpt2_config().unwrap();
    let (tokens, _) = tiny_vocab();
    let expected = Gpt2Config {
        vocab_size: tokens.len(),
        n_positions: N_POSITIONS as usize,
        n_embd: N_EMBD as usize,
        n_layer: N_LAYER as usize,
        n_head: 2,
        n_inner: N_INNER as usize,
        activation: decode_models::Activation::GeluTanh,
        // 1e-5 exactly, though the file holds the f32 nearest it.
        layer_norm_epsilon: 1e-5,
        scale_attn_weights: true,
        scale_attn_by_inverse_layer_idx: false,
        tie_word_embeddings: true,
        bos_token_id: Some(0),
        eos_token_ids: vec![0],
    };
    assert_eq!(config, expected);

    let vocab = tokens.len() as u64;
    let untied = tiny_gpt2()
        .tensor(TensorSpec::f32("output.weight", &[N_EMBD, vocab]))
        .open("untied")
        .unwrap();
    let config = untied.gpt2_config().unwrap();
    assert!(!config.tie_word_embeddings);
    let tensors = untied.gpt2_tensors(&config).unwrap();
    assert!(
        tensors
            .iter()
            .any(|(name, t, _)| name == "lm_head.weight" && t.name == "output.weight")
    );

    // Without feed_forward_length, 4 × n_embd (as transformers); without ids, none.
    let mut w = tiny_gpt2();
    w.metadata.retain(|(k, _)| {
        !matches!(
            k.as_str(),
            "gpt2.feed_forward_length"
                | "tokenizer.ggml.bos_token_id"
                | "tokenizer.ggml.eos_token_id"
        )
    });
    let config = w.open("defaults").unwrap().gpt2_config().unwrap();
    assert_eq!(config.n_inner, 4 * N_EMBD as usize);
    assert_eq!((config.bos_token_id, config.eos_token_ids), (None, vec![]));
}

#[test]
fn gpt2_tensors_are_named_and_laid_out_as_huggingface_expects() {
    let file = tiny_gpt2().open("tensors").unwrap();
    let config = file.gpt2_config().unwrap();
    let tensors = file.gpt2_tensors(&config).unwrap();
    let expected = decode_models::weights::expected_shapes(&config);
    assert_eq!(tensors.len(), expected.len());
    for ((name, tensor, transposed), (hf, hf_shape)) in tensors.iter().zip(&expected) {
        assert_eq!(name, hf);
        let conv1d = [".c_attn.weight", ".c_proj.weight", ".c_fc.weight"]
            .iter()
            .any(|s| hf.ends_with(s));
        assert_eq!(*transposed, conv1d, "{hf}");
        // Row-major as stored: HF's shape, transposed for the Conv1D weights.
        let mut stored = hf_shape.clone();
        if conv1d {
            stored.reverse();
        }
        assert_eq!(tensor.shape(), stored, "{hf}");
    }
    let (_, qkv, _) = tensors
        .iter()
        .find(|(n, _, _)| n == "h.1.attn.c_attn.weight")
        .unwrap();
    assert_eq!(qkv.name, "blk.1.attn_qkv.weight");
    assert_eq!(qkv.shape(), vec![3 * N_EMBD as usize, N_EMBD as usize]);
    let (_, wte, _) = &tensors[0];
    assert_eq!(wte.name, "token_embd.weight");
    assert_eq!(wte.shape(), vec![config.vocab_size, N_EMBD as usize]);

    // A tied config ignores an output.weight, as the safetensors reader ignores lm_head.weight.
    let with_head = tiny_gpt2()
        .tensor(TensorSpec::f32(
            "output.weight",
            &[N_EMBD, config.vocab_size as u64],
        ))
        .open("tied-with-head")
        .unwrap();
    let tied = with_head.gpt2_tensors(&config).unwrap();
    assert!(tied.iter().all(|(name, _, _)| name != "lm_head.weight"));
}

/// The tiny vocabulary through GGUF and through vocab.json + merges.txt gives the same ids.
#[test]
fn tokenizer_matches_vocab_and_merges() {
    let file = tiny_gpt2().open("tokenizer").unwrap();
    let gguf = Tokenizer::from_gguf(&file).unwrap();
    let (tokens, merges) = tiny_vocab();
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), id.into()))
        .collect();
    let v = Temp::new("vocab", serde_json::to_string(&vocab).unwrap().as_bytes());
    let m = Temp::new("merges", merges.join("\n").as_bytes());
    let reference = Tokenizer::from_vocab_merges(&v.0, &m.0).unwrap();
    assert_eq!(gguf.vocab_size(), tokens.len());
    gguf.check_against(file.gpt2_config().unwrap().vocab_size)
        .unwrap();
    for text in [
        "the thin in the inn",
        " in<|endoftext|>the",
        "héllo wörld 🙂 日本",
        "  spaces\n\nand\ttabs ",
        "",
    ] {
        let ids = gguf.encode(text).unwrap();
        assert_eq!(ids, reference.encode(text).unwrap(), "{text:?}");
        assert_eq!(gguf.decode(&ids).unwrap(), text);
    }
    assert_eq!(gguf.encode("<|endoftext|>").unwrap(), vec![0]);
    assert_eq!(gguf.encode(" the").unwrap(), vec![259]);
}

/// GPT-2's real vocabulary and merges, written as convert_hf_to_gguf.py writes them, give the
/// ids transformers and tiktoken agreed on.
#[test]
fn real_gpt2_vocabulary_gives_reference_ids() {
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/gpt2-tokenizer");
    let vocab: std::collections::HashMap<String, u32> =
        serde_json::from_str(&std::fs::read_to_string(assets.join("vocab.json")).unwrap()).unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (token, id) in vocab {
        tokens[id as usize] = token;
    }
    let merges: Vec<String> = std::fs::read_to_string(assets.join("merges.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.is_empty())
        .map(String::from)
        .collect();
    let mut types = vec![Value::I32(1); tokens.len()];
    types[50256] = Value::I32(3);
    let file = tiny_gpt2()
        .kv("tokenizer.ggml.tokens", strings(&tokens))
        .kv("tokenizer.ggml.token_type", Value::Array(types))
        .kv("tokenizer.ggml.merges", strings(&merges))
        .kv("tokenizer.ggml.eos_token_id", Value::U32(50256))
        .open("gpt2-vocab")
        .unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    assert_eq!(tokenizer.vocab_size(), 50257);
    #[derive(serde::Deserialize)]
    struct Case {
        text: String,
        ids: Vec<u32>,
    }
    let cases: Vec<Case> = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer_cases.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(cases.len() >= 30);
    for case in cases {
        assert_eq!(
            tokenizer.encode(&case.text).unwrap(),
            case.ids,
            "{:?}",
            case.text
        );
        assert_eq!(tokenizer.decode(&case.ids).unwrap(), case.text);
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile files: each a one-line error naming the problem.

/// The header of a GGUF v3 file with these counts.
fn header(tensors: u64, kvs: u64) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(tensors.to_le_bytes());
    out.extend(kvs.to_le_bytes());
    out
}

fn open_bytes(tag: &str, bytes: &[u8]) -> Result<GgufFile, Error> {
    let file = Temp::new(tag, bytes);
    GgufFile::open(&file.0)
}

#[test]
fn huge_string_lengths_are_refused_before_allocating() {
    // A key claiming 2^60 bytes.
    let mut bytes = header(0, 1);
    bytes.extend((1u64 << 60).to_le_bytes());
    bytes.extend([0; 64]);
    let (result, peak) = peak_during(|| open_bytes("huge-key", &bytes));
    assert_mentions(result, "bytes long; the limit is");
    assert!(peak < 1 << 20, "peak {peak}");

    // A string value within the cap but longer than the file.
    let mut bytes = header(0, 1);
    put_str(&mut bytes, "k");
    bytes.extend(8u32.to_le_bytes());
    bytes.extend((1u64 << 23).to_le_bytes());
    bytes.extend(b"short");
    let (result, peak) = peak_during(|| open_bytes("long-string", &bytes));
    assert_mentions(
        result,
        "truncated: the file ends inside the value of metadata k",
    );
    assert!(peak < 1 << 20, "peak {peak}");

    // Past the cap on string values.
    let mut bytes = header(0, 1);
    put_str(&mut bytes, "k");
    bytes.extend(8u32.to_le_bytes());
    bytes.extend(u64::MAX.to_le_bytes());
    assert_mentions(open_bytes("max-string", &bytes), "the limit is 16777216");
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    let mut bytes = header(0, 1);
    put_str(&mut bytes, "tokens");
    bytes.extend(9u32.to_le_bytes());
    bytes.extend(8u32.to_le_bytes());
    bytes.extend((1u64 << 40).to_le_bytes());
    bytes.extend([0; 100]);
    let (result, peak) = peak_during(|| open_bytes("huge-array", &bytes));
    assert_mentions(result, "metadata tokens claims 1099511627776 elements");
    assert!(peak < 1 << 20, "peak {peak}");

    let (result, peak) = peak_during(|| open_bytes("huge-tensors", &header(u64::MAX, 0)));
    assert_mentions(result, "claims 18446744073709551615 tensors");
    assert!(peak < 1 << 20, "peak {peak}");
    // A count the file's bytes could hold, but whose first element is corrupt: little reserved.
    let mut bytes = header(0, 1);
    put_str(&mut bytes, "merges");
    bytes.extend(9u32.to_le_bytes());
    bytes.extend(8u32.to_le_bytes());
    bytes.extend((1u64 << 20).to_le_bytes());
    bytes.extend(u64::MAX.to_le_bytes());
    bytes.resize(bytes.len() + (8 << 20), 0);
    let (result, peak) = peak_during(|| open_bytes("corrupt-element", &bytes));
    assert_mentions(
        result,
        "the value of metadata merges is 18446744073709551615 bytes long",
    );
    assert!(peak < 4 << 20, "peak {peak}");
    // More values than any real file holds, though the bytes are there.
    let mut bytes = header(0, 1);
    put_str(&mut bytes, "many");
    bytes.extend(9u32.to_le_bytes());
    bytes.extend(0u32.to_le_bytes());
    bytes.extend(((1u64 << 22) + 1).to_le_bytes());
    bytes.resize(bytes.len() + (1 << 22) + 1, 0);
    assert_mentions(
        open_bytes("many-values", &bytes),
        "metadata many claims 4194305 elements, more than the 4194304 values",
    );
    assert_mentions(
        open_bytes("huge-kvs", &header(0, 1 << 50)),
        "claims 1125899906842624 metadata entries",
    );
    // The tensor count is checked again after the metadata, against what is left.
    let w = Writer::new().kv("pad", string(&"x".repeat(200)));
    let mut bytes = w.bytes();
    bytes[8..16].copy_from_slice(&6u64.to_le_bytes());
    assert_mentions(
        open_bytes("tensors-after-metadata", &bytes),
        "claims 6 tensors",
    );
}

#[test]
fn arrays_nest_two_deep_at_most() {
    let deep = Value::Array(vec![Value::Array(vec![Value::Array(vec![Value::U8(1)])])]);
    assert_mentions(
        Writer::new().kv("deep", deep).open("deep"),
        "metadata deep nests arrays more than 2 deep",
    );
}

#[test]
fn dimensions_are_checked() {
    let w = Writer::new().tensor(TensorSpec::raw("big", &[1 << 40, 1 << 40], 0, 0));
    assert_mentions(
        w.open("overflow"),
        "tensor big's dimensions [1099511627776, 1099511627776] overflow",
    );
    let w = Writer::new().tensor(TensorSpec::raw("zero", &[4, 0], 0, 0));
    assert_mentions(w.open("zero-dim"), "tensor zero has a zero dimension");
    let w = Writer::new().tensor(TensorSpec::raw("five", &[1, 1, 1, 1, 1], 0, 4));
    assert_mentions(
        w.open("five-dims"),
        "tensor five has 5 dimensions; ggml allows 1 to 4",
    );
    let w = Writer::new().tensor(TensorSpec::raw("none", &[], 0, 4));
    assert_mentions(w.open("no-dims"), "tensor none has 0 dimensions");
    let w = Writer::new().tensor(TensorSpec::raw("q", &[48, 2], 8, 200));
    assert_mentions(
        w.open("partial-block"),
        "tensor q is Q8_0 but its rows of 48 values are not whole blocks of 32",
    );
}

#[test]
fn tensor_data_must_lie_inside_the_file() {
    let mut bytes = Writer::new()
        .tensor(TensorSpec::f32("a", &[4]))
        .tensor(TensorSpec::f32("w", &[8, 8]))
        .bytes();
    bytes.truncate(bytes.len() - 1);
    assert_mentions(
        open_bytes("past-eof", &bytes),
        "tensor w's data (256 bytes at offset 32",
    );
    // An offset so large that adding the data section's start overflows.
    let mut far = TensorSpec::raw("far", &[4], 0, 0);
    far.offset = Some(u64::MAX - 31);
    assert_mentions(
        Writer::new().tensor(far).open("offset-overflow"),
        "tensor far's data (16 bytes at offset 18446744073709551584",
    );
}

#[test]
fn tensor_data_must_follow_in_order_without_overlaps_or_gaps() {
    // `a` takes 16 bytes, padded to 32: `b` must start at 32.
    let two = |a: Option<u64>, b: Option<u64>| {
        let (mut ta, mut tb) = (TensorSpec::f32("a", &[4]), TensorSpec::f32("b", &[4]));
        ta.offset = a;
        tb.offset = b;
        Writer::new().tensor(ta).tensor(tb)
    };
    two(None, None).open("in-order").unwrap();
    for (a, b, part) in [
        // `b` shares `a`'s bytes.
        (
            None,
            Some(0),
            "tensor b's data starts at offset 0 of the data section, but the tensors listed before it end at 32",
        ),
        // Out of order: `a` after `b`.
        (
            Some(32),
            Some(0),
            "tensor a's data starts at offset 32 of the data section, but the tensors listed before it end at 0",
        ),
        // A gap before `b`.
        (None, Some(64), "tensor b's data starts at offset 64"),
    ] {
        assert_mentions(two(a, b).open("overlap"), part);
    }
}

#[test]
fn misaligned_offsets_are_refused() {
    let mut t = TensorSpec::f32("odd", &[4]);
    t.offset = Some(4);
    assert_mentions(
        Writer::new().tensor(t).open("misaligned"),
        "tensor odd's data offset 4 is not a multiple of the alignment 32",
    );
    for bad in [
        Value::U32(0),
        Value::U32(48),
        Value::U32(1 << 21),
        string("32"),
    ] {
        assert_mentions(
            Writer::new().kv("general.alignment", bad).open("alignment"),
            "general.alignment is",
        );
    }
}

#[test]
fn unsupported_tensor_types_are_named() {
    let w = Writer::new().tensor(TensorSpec::raw("output.weight", &[256, 4], 14, 840));
    assert_mentions(
        w.open("q6k"),
        concat!(
            "tensor output.weight is Q6_K; decode reads F32, F16, BF16, Q8_0 and Q4_0 ",
            "(requantize with llama-quantize --pure)"
        ),
    );
    let w = Writer::new().tensor(TensorSpec::raw("x", &[4], 77, 4));
    assert_mentions(w.open("type-77"), "tensor x is of unknown ggml type 77");
}

#[test]
fn duplicates_are_refused() {
    let w = Writer::new()
        .tensor(TensorSpec::f32("a", &[4]))
        .tensor(TensorSpec::f32("a", &[4]));
    assert_mentions(w.open("dup-tensor"), "tensor a appears twice");
    let mut w = Writer::new().kv("k", Value::U8(1));
    w.metadata.push(("k".into(), Value::U8(2)));
    assert_mentions(w.open("dup-key"), "metadata k appears twice");
}

#[test]
fn malformed_headers_are_refused() {
    assert_mentions(open_bytes("empty", b""), "not a GGUF file (0 bytes)");
    assert_mentions(
        open_bytes("magic", b"GGML\x03\0\0\0"),
        "not a GGUF file (it starts with",
    );
    let mut w = Writer::new();
    w.version = 1;
    assert_mentions(
        w.open("v1"),
        "GGUF version 1; decode reads versions 2 and 3",
    );
    let mut bytes = Writer::new().bytes();
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert_mentions(
        open_bytes("big-endian", &bytes),
        "a big-endian GGUF file (version 3)",
    );
    // Enough bytes for the counts' check, too few for the entry.
    let mut bytes = header(0, 1);
    put_str(&mut bytes, "k");
    bytes.extend(4u32.to_le_bytes());
    bytes.extend([1, 2]);
    assert_mentions(
        open_bytes("short", &bytes),
        "truncated: the file ends inside the value of metadata k (at byte 37 of 39)",
    );
    let mut bytes = header(0, 1);
    put_str(&mut bytes, "k");
    bytes.extend(13u32.to_le_bytes());
    bytes.extend([0; 16]);
    assert_mentions(
        open_bytes("value-type", &bytes),
        "metadata k has unknown value type 13",
    );
    let mut bytes = header(0, 1);
    put_str(&mut bytes, "k");
    bytes.extend(7u32.to_le_bytes());
    bytes.push(2);
    assert_mentions(open_bytes("bool", &bytes), "metadata k holds bool 2");
    let mut bytes = header(0, 1);
    bytes.extend(2u64.to_le_bytes());
    bytes.extend([0xff, 0xfe]);
    bytes.extend(4u32.to_le_bytes());
    bytes.extend(0u32.to_le_bytes());
    assert_mentions(
        open_bytes("utf8", &bytes),
        "the key of metadata entry 0 is not UTF-8",
    );
    let w = Writer::new().tensor(TensorSpec::raw("", &[4], 0, 16));
    assert_mentions(w.open("empty-name"), "tensor 0 has an empty name");
}

#[test]
fn what_is_not_a_regular_file_is_refused() {
    let err = GgufFile::open(std::env::temp_dir()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("is a directory"), "{err}");
    #[cfg(unix)]
    assert_mentions(GgufFile::open("/dev/zero"), "is a character device");
    assert!(matches!(
        GgufFile::open("/nonexistent/model.gguf"),
        Err(Error::Io { .. })
    ));
}

#[test]
fn other_architectures_are_refused_by_name() {
    let file = tiny_gpt2()
        .kv("general.architecture", string("llama"))
        .open("llama")
        .unwrap();
    let err = file.gpt2_config().unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    assert!(
        err.to_string()
            .contains("general.architecture is \"llama\""),
        "{err}"
    );
    let mut w = tiny_gpt2();
    w.metadata.retain(|(k, _)| k != "general.architecture");
    assert_mentions(
        w.open("no-arch").unwrap().gpt2_config(),
        "missing metadata general.architecture",
    );
}

#[test]
fn bad_config_metadata_is_refused() {
    let open = |w: Writer| w.open("bad-config").unwrap().gpt2_config();
    let mut w = tiny_gpt2();
    w.metadata.retain(|(k, _)| k != "gpt2.block_count");
    assert_mentions(open(w), "missing metadata gpt2.block_count");
    assert_mentions(
        open(tiny_gpt2().kv("gpt2.attention.head_count", Value::I32(-2))),
        "metadata gpt2.attention.head_count is I32(-2), not a size",
    );
    assert_mentions(
        open(tiny_gpt2().kv("gpt2.attention.head_count", Value::U32(3))),
        "n_embd (8) is not divisible by n_head (3)",
    );
    assert_mentions(
        open(tiny_gpt2().kv("gpt2.attention.layer_norm_epsilon", string("1e-5"))),
        "is a string, not a float",
    );
    assert_mentions(
        open(tiny_gpt2().kv("tokenizer.ggml.eos_token_id", Value::U32(5000))),
        "special token id 5000 is outside the vocabulary",
    );
    assert_mentions(
        open(tiny_gpt2().kv("tokenizer.ggml.eos_token_id", Value::I64(1 << 40))),
        "not a token id",
    );
    assert_mentions(
        open(tiny_gpt2().without_tensor("token_embd.weight")),
        "missing tensor token_embd.weight",
    );
}

#[test]
fn missing_unexpected_and_misshapen_tensors_are_named() {
    let tensors = |w: Writer| {
        let file = w.open("tensor-check").unwrap();
        let config = file.gpt2_config().unwrap();
        file.gpt2_tensors(&config).map(|t| t.len())
    };
    assert_mentions(
        tensors(tiny_gpt2().without_tensor("blk.1.ffn_down.bias")),
        "missing tensor blk.1.ffn_down.bias (h.1.mlp.c_proj.bias)",
    );
    assert_mentions(
        tensors(tiny_gpt2().tensor(TensorSpec::f32("blk.2.attn_norm.weight", &[N_EMBD]))),
        "unexpected tensor blk.2.attn_norm.weight (not part of a GPT-2 with this config)",
    );
    // The Conv1D weight stored without its transpose: ggml dims reversed.
    let w = tiny_gpt2()
        .without_tensor("blk.0.attn_qkv.weight")
        .tensor(TensorSpec::f32(
            "blk.0.attn_qkv.weight",
            &[3 * N_EMBD, N_EMBD],
        ));
    let result = tensors(w);
    assert!(matches!(result, Err(Error::Shape(_))), "{result:?}");
    assert_mentions(
        result,
        concat!(
            "tensor blk.0.attn_qkv.weight (h.0.attn.c_attn.weight) has ggml dims [24, 8] but the ",
            "config implies [8, 24]"
        ),
    );
    let w = tiny_gpt2()
        .without_tensor("position_embd.weight")
        .tensor(TensorSpec::f32(
            "position_embd.weight",
            &[N_EMBD, N_POSITIONS - 1],
        ));
    assert_mentions(
        tensors(w),
        "tensor position_embd.weight (wpe.weight) has ggml dims [8, 15]",
    );
    let w = tiny_gpt2()
        .without_tensor("token_embd.weight")
        .tensor(TensorSpec::f32("token_embd.weight", &[N_EMBD, 4, 2]));
    assert_mentions(
        w.open("embd-3d").unwrap().gpt2_config(),
        "tensor token_embd.weight has ggml dims [8, 4, 2]; a token embedding has two",
    );
}

#[test]
fn bad_tokenizers_are_refused() {
    let tokenizer =
        |w: Writer| Tokenizer::from_gguf(&w.open("bad-tokenizer").unwrap()).map(|t| t.vocab_size());
    let result = tokenizer(tiny_gpt2().kv("tokenizer.ggml.model", string("llama")));
    assert!(matches!(result, Err(Error::Unsupported(_))), "{result:?}");
    assert_mentions(result, "tokenizer.ggml.model is \"llama\"");
    assert_mentions(
        tokenizer(tiny_gpt2().kv("tokenizer.ggml.pre", string("qwen2"))),
        "tokenizer.ggml.pre is \"qwen2\"",
    );
    assert_mentions(
        tokenizer(tiny_gpt2().kv("tokenizer.ggml.merges", strings(["Ġ t", "h e x"]))),
        "merge 1 of tokenizer.ggml.merges (\"h e x\") is not two tokens separated by a space",
    );
    assert_mentions(
        tokenizer(tiny_gpt2().kv("tokenizer.ggml.merges", strings(["q z"]))),
        "cannot build BPE from the tokens and merges",
    );
    let (mut tokens, _) = tiny_vocab();
    tokens[5] = "a".into();
    assert_mentions(
        tokenizer(tiny_gpt2().kv("tokenizer.ggml.tokens", strings(&tokens))),
        "tokenizer.ggml.tokens holds \"a\" twice",
    );
    assert_mentions(
        tokenizer(tiny_gpt2().kv("tokenizer.ggml.tokens", Value::Array(vec![Value::U32(1)]))),
        "element 0 of tokenizer.ggml.tokens is a u32, not a string",
    );
    assert_mentions(
        tokenizer(tiny_gpt2().kv(
            "tokenizer.ggml.token_type",
            Value::Array(vec![Value::I32(1)]),
        )),
        "tokenizer.ggml.token_type has 1 entries but tokenizer.ggml.tokens has",
    );
    let mut w = tiny_gpt2();
    w.metadata.retain(|(k, _)| k != "tokenizer.ggml.merges");
    assert_mentions(tokenizer(w), "missing metadata tokenizer.ggml.merges");
}

// ---------------------------------------------------------------------------------------------
// Random damage never panics and never allocates beyond a bound.

fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6775_6666),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Everything a caller would do with a file; any outcome but a panic is fine.
fn exercise(bytes: &[u8]) -> Result<usize, Error> {
    let file = open_bytes("fuzz", bytes)?;
    let _ = Tokenizer::from_gguf(&file).map(|t| t.encode("the thin inn"));
    let config = file.gpt2_config()?;
    file.gpt2_tensors(&config).map(|t| t.len())
}

/// The tiny GPT-2 (with a nested array in its metadata) as bytes, and where its data starts.
fn valid_file() -> (Vec<u8>, usize) {
    static FILE: std::sync::OnceLock<(Vec<u8>, usize)> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let w = tiny_gpt2().kv(
            "nested",
            Value::Array(vec![Value::Array(vec![Value::U16(1)])]),
        );
        let data_offset = w.open("valid").unwrap().data_offset() as usize;
        (w.bytes(), data_offset)
    })
    .clone()
}

/// Reading may take this much beyond the file's own size (a few MiB at most in practice).
const ALLOCATION_BOUND: usize = 64 << 20;

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn truncated_files_never_panic(cut in 0usize..20_000) {
        let (bytes, _) = valid_file();
        let cut = cut % bytes.len();
        let (result, peak) = peak_during(|| exercise(&bytes[..cut]));
        prop_assert!(result.is_err());
        prop_assert!(peak < ALLOCATION_BOUND, "peak {peak}");
    }

    #[test]
    fn damaged_files_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        in_header in any::<bool>(),
    ) {
        // The header, metadata and tensor infos end where the tensor data starts (~3 KiB in).
        let (mut bytes, header_len) = valid_file();
        for (at, b) in edits {
            let at = if in_header { at.index(header_len) } else { at.index(bytes.len()) };
            bytes[at] = b;
        }
        let (result, peak) = peak_during(|| exercise(&bytes));
        prop_assert!(peak < ALLOCATION_BOUND, "peak {peak}");
        if let Err(e) = result {
            prop_assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn overwritten_lengths_never_panic(
        at in any::<prop::sample::Index>(),
        value in prop_oneof![any::<u64>(), 0u64..1 << 20, Just(u64::MAX)],
    ) {
        // A u64 written anywhere: most often over a length or count.
        let (mut bytes, _) = valid_file();
        let at = at.index(bytes.len() - 8);
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
        let (result, peak) = peak_during(|| exercise(&bytes));
        prop_assert!(peak < ALLOCATION_BOUND, "peak {peak}");
        let _ = result;
    }

    #[test]
    fn overlapping_tensors_are_refused(
        moved in any::<prop::sample::Index>(),
        onto in any::<prop::sample::Index>(),
    ) {
        // One tensor's data placed where another's (or its own neighbour's) lies.
        let mut w = tiny_gpt2();
        let offsets: Vec<u64> = {
            let file = w.open("offsets").unwrap();
            file.tensors().iter().map(|t| t.offset - file.data_offset()).collect()
        };
        let (i, j) = (moved.index(offsets.len()), onto.index(offsets.len()));
        prop_assume!(offsets[i] != offsets[j]);
        w.tensors[i].offset = Some(offsets[j]);
        let text = message(w.open("overlap"));
        prop_assert!(text.contains("without overlaps or gaps"), "{text}");
    }

    #[test]
    fn random_bytes_never_panic(
        tail in prop::collection::vec(any::<u8>(), 0..512),
        tensors in 0u64..4,
        kvs in 0u64..4,
    ) {
        let mut bytes = header(tensors, kvs);
        bytes.extend(tail);
        let (result, peak) = peak_during(|| exercise(&bytes));
        prop_assert!(peak < ALLOCATION_BOUND, "peak {peak}");
        let _ = result;
    }
}

// ---------------------------------------------------------------------------------------------
// The files llama.cpp made from models/kjv-target.

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `models/gguf/kjv-target-{kind}.gguf`; fails, saying so, when the fixture is missing.
fn kjv_fixture(kind: &str) -> PathBuf {
    let path = repo().join(format!("models/gguf/kjv-target-{kind}.gguf"));
    assert!(
        path.is_file(),
        "fixture missing: {} (llama.cpp's convert_hf_to_gguf.py on models/kjv-target, then \
         llama-quantize --pure {})",
        path.display(),
        kind.to_uppercase()
    );
    path
}

/// The fixture's config, tensors and tokenizer agree with the HuggingFace checkpoint's.
fn check_kjv(path: &Path) {
    let hf_dir = repo().join("models/kjv-target");
    let hf = Gpt2Config::from_file(hf_dir.join("config.json")).unwrap();
    let file = GgufFile::open(path).unwrap();
    let config = file.gpt2_config().unwrap();
    let fields = |c: &Gpt2Config| {
        (
            c.vocab_size,
            c.n_positions,
            c.n_embd,
            c.n_layer,
            c.n_head,
            c.n_inner,
            c.layer_norm_epsilon,
            c.tie_word_embeddings,
            c.activation,
        )
    };
    assert_eq!(fields(&config), fields(&hf), "{}", path.display());
    let tensors = file.gpt2_tensors(&config).unwrap();
    assert_eq!(
        tensors.len(),
        decode_models::weights::expected_shapes(&hf).len()
    );

    let reference = Tokenizer::from_dir(&hf_dir).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    assert_eq!(tokenizer.vocab_size(), reference.vocab_size());
    tokenizer.check_against(config.vocab_size).unwrap();
    for text in [
        "In the beginning God created the heaven and the earth.",
        "And God said, Let there be light: and there was light.",
        "<|endoftext|>The LORD is my shepherd; I shall not want.",
        "Jesus wept.\n\nAnd he said unto them,   Verily, verily...",
        "Ἐν ἀρχῇ ἦν ὁ λόγος — בְּרֵאשִׁית, 太初有道 🙏 café",
        "",
    ] {
        let ids = tokenizer.encode(text).unwrap();
        assert_eq!(ids, reference.encode(text).unwrap(), "{text:?}");
        assert_eq!(tokenizer.decode(&ids).unwrap(), text);
    }
}

#[test]
fn kjv_target_q8_0_reads_as_the_checkpoint() {
    let path = kjv_fixture("q8_0");
    check_kjv(&path);
    let file = GgufFile::open(&path).unwrap();
    assert!(
        file.tensors()
            .iter()
            .any(|t| t.element_type == ElementType::Q8_0)
    );
}

#[test]
fn kjv_target_q4_0_reads_as_the_checkpoint() {
    let path = kjv_fixture("q4_0");
    check_kjv(&path);
    let file = GgufFile::open(&path).unwrap();
    assert!(
        file.tensors()
            .iter()
            .any(|t| t.element_type == ElementType::Q4_0)
    );
}

/// Conversions a developer has made (not part of the repository, so not run by default):
/// kjv-target in other precisions, and OpenAI's GPT-2 small (`gpt2-*.gguf`) against
/// `assets/gpt2-tokenizer`. `DECODE_GGUF_DIR=/tmp/gguf cargo test --test gguf -- --ignored`.
#[test]
#[ignore = "needs GGUF conversions a developer made: set DECODE_GGUF_DIR"]
fn conversions_a_developer_made_read_as_their_checkpoints() {
    let dir = std::env::var_os("DECODE_GGUF_DIR").expect("DECODE_GGUF_DIR names the folder");
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("DECODE_GGUF_DIR is a readable folder")
        .map(|e| e.expect("a readable folder entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    assert!(!found.is_empty(), "no *.gguf in {dir:?}");
    for path in found {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("kjv-target") {
            check_kjv(&path);
        } else if name.starts_with("gpt2-") {
            check_gpt2_small(&path);
        } else {
            panic!("{name}: neither kjv-target-* nor gpt2-*, so nothing says what it must read as");
        }
    }
}

proptest! {
    #![proptest_config(cases(16))]

    /// Any quantized block's f16 scale made NaN or infinite (any payload) is refused when the
    /// model loads, naming the tensor.
    #[test]
    fn non_finite_block_scales_are_refused(
        q4 in any::<bool>(),
        tensor in any::<prop::sample::Index>(),
        block in any::<prop::sample::Index>(),
        mantissa in 0u16..0x400,
        negative in any::<bool>(),
    ) {
        let path = kjv_fixture(if q4 { "q4_0" } else { "q8_0" });
        let file = GgufFile::open(&path).unwrap();
        let quantized: Vec<_> = file
            .tensors()
            .iter()
            .filter(|t| matches!(t.element_type, ElementType::Q8_0 | ElementType::Q4_0))
            .collect();
        prop_assert!(!quantized.is_empty());
        let t = quantized[tensor.index(quantized.len())];
        let size = t.element_type.block_bytes() as u64;
        let at = (t.offset + block.index((t.bytes / size) as usize) as u64 * size) as usize;
        let bits = 0x7c00 | mantissa | if negative { 0x8000 } else { 0 };
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at..at + 2].copy_from_slice(&bits.to_le_bytes());
        let temp = Temp::new("scale", &bytes);
        let result = decode_models::Gpt2::<decode_models::backend::Cpu>::load(
            &temp.0,
            &decode_models::backend::cpu_device(),
        );
        let text = message(result);
        prop_assert!(text.contains("non-finite") && text.contains("a block scale of"), "{text}");
    }
}

fn check_gpt2_small(path: &Path) {
    let file = GgufFile::open(path).unwrap();
    let config = file.gpt2_config().unwrap();
    assert_eq!(config, Gpt2Config::gpt2_small(), "{}", path.display());
    file.gpt2_tensors(&config).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let reference = Tokenizer::from_dir(repo().join("assets/gpt2-tokenizer")).unwrap();
    assert_eq!(tokenizer.vocab_size(), 50257);
    for text in [
        "Hello world, it's 2024!",
        "  naïve café — 日本語 🙂",
        "<|endoftext|>x",
    ] {
        let ids = tokenizer.encode(text).unwrap();
        assert_eq!(ids, reference.encode(text).unwrap(), "{text:?}");
        assert_eq!(tokenizer.decode(&ids).unwrap(), text);
    }
}
