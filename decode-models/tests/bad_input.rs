//! A user's mistakes give typed errors with messages that name the problem, never panics.

use std::path::{Path, PathBuf};

use decode_core::{Batch, Error, LanguageModel};
use decode_models::Gpt2;
use decode_models::backend::{Cpu, cpu_device};

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
    let err = decode_core::greedy(&model, &prompt, 5, true, |_| {}).unwrap_err();
    assert!(
        matches!(err, Error::ContextOverflow { needed, limit: l } if needed == limit + 1 && l == limit),
        "{err}"
    );
    assert!(decode_core::greedy(&model, &prompt, 4, true, |_| {}).is_ok());
    // The model itself refuses too, leaving the cache untouched.
    let mut cache = model.new_cache(1);
    let err = model
        .forward(&Batch::single(&vec![1; limit + 1]), &mut cache)
        .unwrap_err();
    assert!(matches!(err, Error::ContextOverflow { .. }), "{err}");
}

#[test]
fn token_outside_the_vocabulary() {
    let model = load(&fixture()).unwrap();
    let vocab = model.vocab_size() as u32;
    let err = decode_core::greedy(&model, &[1, vocab], 3, false, |_| {}).unwrap_err();
    assert!(
        matches!(err, Error::TokenOutOfRange { id, .. } if id == vocab),
        "{err}"
    );
    let err = decode_core::greedy(&model, &[], 3, false, |_| {}).unwrap_err();
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
    let mut cache = other.new_cache(1);
    let err = model
        .forward(&Batch::single(&[1, 2]), &mut cache)
        .unwrap_err();
    assert!(
        matches!(err, Error::Shape(ref m) if m.contains("another model")),
        "{err}"
    );
}
