//! A user's mistakes give typed errors with messages that name the problem, never panics.

use std::path::{Path, PathBuf};

use decode_core::{Batch, Error, GenerationConfig, LanguageModel};
use decode_models::Gpt2;
use decode_models::backend::{Cpu, cpu_device};
use decode_samplers::GenerationOutput;
use decode_samplers::engine::Engine;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tiny-tied")
}

/// A scratch copy of the tied fixture model, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("decode-bad-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["config.json", "model.safetensors"] {
            std::fs::copy(fixture().join(file), dir.join(file)).unwrap();
        }
        Scratch(dir)
    }
    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
    fn edit_config(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = self.path("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut config);
        std::fs::write(path, config.to_string()).unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// Greedy decoding of `max_new_tokens` tokens after `prompt`.
fn greedy(
    model: &Gpt2<Cpu>,
    prompt: &[u32],
    max_new_tokens: usize,
    ignore_eos: bool,
) -> Result<GenerationOutput, Error> {
    let config = GenerationConfig {
        max_new_tokens: Some(max_new_tokens),
        ignore_eos,
        ..GenerationConfig::default()
    };
    Ok(Engine::new(model, &config)
        .run(&[prompt.to_vec()])?
        .pop()
        .expect("one output per prompt"))
}

fn load(dir: &Path) -> Result<Gpt2<Cpu>, Error> {
    Gpt2::<Cpu>::load(dir, &cpu_device())
}

/// Loading fails with `matches`, and the one-line message mentions `needle`.
fn refused(dir: &Path, needle: &str, matches: fn(&Error) -> bool) {
    let err = load(dir).expect_err("load must fail");
    let message = err.to_string();
    assert!(matches(&err), "unexpected variant: {err:?}");
    assert!(
        message.contains(needle),
        "message {message:?} lacks {needle:?}"
    );
    assert!(
        !message.contains('\n'),
        "message is not one line: {message:?}"
    );
}

#[test]
fn missing_folder() {
    refused(Path::new("/no/such/model"), "/no/such/model", |e| {
        matches!(e, Error::Io { .. })
    });
}

#[test]
fn missing_weights() {
    let s = Scratch::new("missing");
    std::fs::remove_file(s.path("model.safetensors")).unwrap();
    refused(&s.0, "model.safetensors", |e| matches!(e, Error::Io { .. }));
}

#[test]
fn truncated_weights() {
    let s = Scratch::new("truncated");
    let bytes = std::fs::read(s.path("model.safetensors")).unwrap();
    for keep in [0, 5, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(s.path("model.safetensors"), &bytes[..keep]).unwrap();
        refused(&s.0, "truncated", |e| matches!(e, Error::Format { .. }));
    }
}

#[test]
fn corrupt_weights() {
    let s = Scratch::new("corrupt");
    let mut bytes = std::fs::read(s.path("model.safetensors")).unwrap();
    bytes[10..40].fill(b'#'); // inside the JSON header
    std::fs::write(s.path("model.safetensors"), &bytes).unwrap();
    refused(&s.0, "model.safetensors", |e| {
        matches!(e, Error::Format { .. })
    });
}

#[test]
fn invalid_config_json() {
    let s = Scratch::new("json");
    std::fs::write(s.path("config.json"), "{ \"n_layer\": ").unwrap();
    refused(&s.0, "not valid JSON", |e| matches!(e, Error::Config(_)));
    std::fs::remove_file(s.path("config.json")).unwrap();
    refused(&s.0, "config.json", |e| matches!(e, Error::Io { .. }));
}

#[test]
fn config_that_contradicts_itself() {
    let s = Scratch::new("self");
    s.edit_config(|c| c["n_head"] = 7.into());
    refused(&s.0, "n_embd (60) is not divisible by n_head (7)", |e| {
        matches!(e, Error::Config(_))
    });
}

#[test]
fn config_that_contradicts_the_tensors() {
    let s = Scratch::new("tensors");
    s.edit_config(|c| c["n_inner"] = 64.into());
    refused(
        &s.0,
        "h.0.mlp.c_fc.bias has shape [100] but config.json implies [64]",
        |e| matches!(e, Error::Shape(_)),
    );
    let s = Scratch::new("layers");
    s.edit_config(|c| c["n_layer"] = 4.into());
    refused(&s.0, "missing tensor h.3.", |e| {
        matches!(e, Error::Format { .. })
    });
    let s = Scratch::new("fewer");
    s.edit_config(|c| c["n_layer"] = 2.into());
    refused(&s.0, "unexpected tensor transformer.h.2.", |e| {
        matches!(e, Error::Format { .. })
    });
    let s = Scratch::new("untied");
    s.edit_config(|c| c["tie_word_embeddings"] = false.into());
    refused(&s.0, "missing tensor lm_head.weight", |e| {
        matches!(e, Error::Format { .. })
    });
}

#[test]
fn prompt_longer_than_the_context() {
    let model = load(&fixture()).unwrap();
    let limit = model.context_length();
    let prompt = vec![1; limit - 4];
    let err = greedy(&model, &prompt, 5, true).unwrap_err();
    assert!(
        matches!(err, Error::ContextOverflow { needed, limit: l } if needed == limit + 1 && l == limit),
        "{err}"
    );
    assert!(greedy(&model, &prompt, 4, true).is_ok());
    // The model itself refuses too, leaving the cache untouched.
    let mut cache = model.new_cache(1, model.context_length()).unwrap();
    let err = model
        .forward(&Batch::single(&vec![1; limit + 1]), &mut cache)
        .unwrap_err();
    assert!(matches!(err, Error::ContextOverflow { .. }), "{err}");
}

#[test]
fn token_outside_the_vocabulary() {
    let model = load(&fixture()).unwrap();
    let vocab = model.vocab_size() as u32;
    let err = greedy(&model, &[1, vocab], 3, false).unwrap_err();
    assert!(
        matches!(err, Error::TokenOutOfRange { id, .. } if id == vocab),
        "{err}"
    );
    let err = greedy(&model, &[], 3, false).unwrap_err();
    assert!(
        matches!(err, Error::InvalidParameter { name: "prompt", .. }),
        "{err}"
    );
}

#[test]
fn a_cache_from_another_model_is_refused() {
    let model = load(&fixture()).unwrap();
    let other = Gpt2::<Cpu>::load(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tiny-bf16"),
        &cpu_device(),
    )
    .unwrap();
    let mut cache = other.new_cache(1, other.context_length()).unwrap();
    let err = model
        .forward(&Batch::single(&[1, 2]), &mut cache)
        .unwrap_err();
    assert!(
        matches!(err, Error::Shape(ref m) if m.contains("another model")),
        "{err}"
    );
}

/// Runs `f` on its own thread and fails if it has not returned within a few seconds: a regression
/// that blocks (opening a FIFO, reading /dev/zero) fails the test instead of hanging CI.
fn quickly<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::sync::mpsc::RecvTimeoutError;
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(10);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()).ok());
    match rx.recv_timeout(LIMIT) {
        Ok(value) => value,
        Err(RecvTimeoutError::Timeout) => panic!("{what} did not return within {LIMIT:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

/// Like `refused`, within a few seconds.
fn refused_quickly(dir: &Path, needle: &str, matches: fn(&Error) -> bool) {
    let owned = dir.to_path_buf();
    let err = quickly(&format!("loading {}", dir.display()), move || {
        load(&owned).err()
    })
    .expect("load must fail");
    let message = err.to_string();
    assert!(matches(&err), "unexpected variant: {err:?}");
    assert!(
        message.contains(needle),
        "message {message:?} lacks {needle:?}"
    );
    assert!(
        !message.contains('\n'),
        "message is not one line: {message:?}"
    );
}

fn mkfifo(path: &Path) {
    std::fs::remove_file(path).ok();
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo must run");
    assert!(status.success(), "mkfifo {} failed", path.display());
}

fn is_io(e: &Error) -> bool {
    matches!(e, Error::Io { .. })
}

#[test]
fn fifo_as_config_json() {
    let s = Scratch::new("fifo-config");
    mkfifo(&s.path("config.json"));
    refused_quickly(&s.0, "config.json: is a FIFO, not a regular file", is_io);
}

#[test]
fn fifo_as_model_safetensors() {
    let s = Scratch::new("fifo-weights");
    mkfifo(&s.path("model.safetensors"));
    refused_quickly(
        &s.0,
        "model.safetensors: is a FIFO, not a regular file",
        is_io,
    );
}

#[test]
fn directory_as_config_json() {
    let s = Scratch::new("dir-config");
    std::fs::remove_file(s.path("config.json")).unwrap();
    std::fs::create_dir(s.path("config.json")).unwrap();
    refused_quickly(
        &s.0,
        "config.json: is a directory, not a regular file",
        is_io,
    );
}

#[test]
fn config_json_linked_to_dev_zero() {
    let s = Scratch::new("zero-config");
    std::fs::remove_file(s.path("config.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", s.path("config.json")).unwrap();
    refused_quickly(
        &s.0,
        "config.json: is a character device, not a regular file",
        is_io,
    );
}

#[test]
fn oversized_config_json() {
    let s = Scratch::new("big-config");
    let cap = decode_core::files::CONFIG_MAX_BYTES;
    std::fs::write(s.path("config.json"), " ".repeat(cap as usize + 1)).unwrap();
    refused_quickly(&s.0, "config.json: larger than 1 MiB", |e| {
        matches!(e, Error::Format { .. })
    });
    // At the cap it is read (and refused only as JSON).
    std::fs::write(s.path("config.json"), " ".repeat(cap as usize)).unwrap();
    refused_quickly(&s.0, "not valid JSON", |e| matches!(e, Error::Config(_)));
}

#[test]
fn special_tokenizer_and_generation_config_files() {
    use decode_core::GenerationConfig;
    use decode_models::Tokenizer;
    let s = Scratch::new("fifo-tokenizer");
    // A generation_config.json that is there but unreadable is an error, not the defaults.
    mkfifo(&s.path("generation_config.json"));
    let dir = s.0.clone();
    let err = quickly("reading generation_config.json", move || {
        GenerationConfig::for_model_dir(&dir).err()
    })
    .expect("a FIFO generation_config.json must be refused");
    assert!(err.to_string().contains("is a FIFO"), "{err}");
    // A tokenizer.json that is a FIFO is refused, not passed over for vocab.json + merges.txt.
    mkfifo(&s.path("tokenizer.json"));
    let dir = s.0.clone();
    let err = quickly("reading tokenizer.json", move || {
        Tokenizer::from_dir(&dir).err()
    })
    .expect("a FIFO tokenizer.json must be refused");
    assert!(
        err.to_string().contains("tokenizer.json: is a FIFO"),
        "{err}"
    );
    // vocab.json and merges.txt go through the same checks.
    let (vocab, merges) = (s.path("vocab.json"), s.path("merges.txt"));
    std::os::unix::fs::symlink("/dev/zero", &vocab).unwrap();
    std::fs::write(&merges, "#version: 0.2\na b\n").unwrap();
    let err = quickly("reading vocab.json", move || {
        Tokenizer::from_vocab_merges(&vocab, &merges).err()
    })
    .expect("vocab.json linked to /dev/zero must be refused");
    assert!(err.to_string().contains("is a character device"), "{err}");
    let (vocab, merges) = (s.path("vocab2.json"), s.path("merges.txt"));
    std::fs::write(&vocab, r#"{"a": 0, "b": 1, "ab": 2}"#).unwrap();
    mkfifo(&merges);
    let err = quickly("reading merges.txt", move || {
        Tokenizer::from_vocab_merges(&vocab, &merges).err()
    })
    .expect("a FIFO merges.txt must be refused");
    assert!(err.to_string().contains("merges.txt: is a FIFO"), "{err}");
}
