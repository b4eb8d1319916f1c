//! The small default models trained in this repository by `tools/train_embedded.py` on the King
//! James Bible: a GPT-2 target and a much smaller draft of the same vocabulary, both in the
//! HuggingFace layout (f16 safetensors, tokenizer.json).
//!
//! They are found by path, relative to this crate's source (`models/kjv-target`,
//! `models/kjv-draft`), not compiled into binaries: an application that depends on `decode` from
//! git or a path gets them at no cost in binary size. The crates.io package leaves `models/` out
//! (it would exceed crates.io's size limit): there, [`target_dir`] and [`draft_dir`] return a
//! one-line [`decode_core::Error::Io`] that says so.

use std::path::PathBuf;

use decode_core::{Error, Result};

/// Where this crate's source keeps the embedded models.
fn models_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn existing(name: &str) -> Result<PathBuf> {
    let dir = models_root().join(name);
    if dir.join("config.json").is_file() {
        Ok(dir)
    } else {
        Err(Error::io(
            &dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the embedded models ship with decode's git repository, not its crates.io package: \
                 depend on decode from git or a path, or load your own model directory",
            ),
        ))
    }
}

/// The embedded target model's directory (4 layers × 256, 4,096-token byte-level BPE).
pub fn target_dir() -> Result<PathBuf> {
    existing("kjv-target")
}

/// The embedded draft model's directory (1 layer × 128, distilled from the target).
pub fn draft_dir() -> Result<PathBuf> {
    existing("kjv-draft")
}
