//! Opening the files a user names (a model directory's `config.json`, `model.safetensors`,
//! tokenizer files) without hanging or running out of memory.
//!
//! A path may name something that is not a regular file: a FIFO (opening one for reading blocks
//! until a writer appears, possibly forever), a device such as `/dev/zero` (endless), a socket or a
//! directory. [`open_regular`] looks at the path with [`std::fs::metadata`], which follows
//! symbolic links, *before* opening it, and refuses anything but a regular file with an
//! [`Error::Io`] saying what it is. [`read_capped`] also reads at most a given number of bytes
//! (through [`Read::take`], so even a file that grows while it is read cannot exceed the cap): a
//! JSON file far larger than any real one is refused rather than read into memory.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::Path;

use crate::{Error, Result};

/// The most bytes read from a configuration file (`config.json`, `generation_config.json`); real
/// ones are a few KiB.
pub const CONFIG_MAX_BYTES: u64 = 1 << 20;

/// The most bytes read from a tokenizer file (`tokenizer.json`, `vocab.json`, `merges.txt`);
/// GPT-2's `tokenizer.json` is 1.4 MiB, the largest common ones (250k-token vocabularies) ~20 MiB.
pub const TOKENIZER_MAX_BYTES: u64 = 64 << 20;

/// Opens `path` for reading if it is a regular file (or a symbolic link to one).
///
/// A FIFO, device, socket or directory is refused before it is opened, with an [`Error::Io`] whose
/// one-line message says what it is; a missing file is the [`Error::Io`] of the failed look-up.
pub fn open_regular(path: &Path) -> Result<File> {
    let metadata = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    check_regular(path, &metadata)?;
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // The path could have been replaced between the look-up and the open: check what was opened.
    let metadata = file.metadata().map_err(|e| Error::io(path, e))?;
    check_regular(path, &metadata)?;
    Ok(file)
}

/// Reads the whole of the regular file `path` (see [`open_regular`]), refusing it with an
/// [`Error::Format`] that names the cap if it holds more than `max_bytes` bytes.
pub fn read_capped(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(Error::format(
            path,
            format!(
                "larger than {}, the limit for this kind of file",
                size(max_bytes)
            ),
        ));
    }
    Ok(bytes)
}

/// [`read_capped`], as UTF-8 text (invalid UTF-8 is an [`Error::Format`]).
pub fn read_to_string_capped(path: &Path, max_bytes: u64) -> Result<String> {
    String::from_utf8(read_capped(path, max_bytes)?)
        .map_err(|e| Error::format(path, format!("not UTF-8 text: {e}")))
}

/// Whether anything is at `path`, even a broken symbolic link or a FIFO: an optional file that is
/// present is then read (and refused if it is not a regular file) rather than silently skipped.
pub fn is_present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn check_regular(path: &Path, metadata: &Metadata) -> Result<()> {
    let kind = metadata.file_type();
    if kind.is_file() {
        return Ok(());
    }
    let (error_kind, what) = if kind.is_dir() {
        (io::ErrorKind::IsADirectory, "a directory")
    } else {
        (io::ErrorKind::InvalidInput, special_kind(&kind))
    };
    Err(Error::io(
        path,
        io::Error::new(error_kind, format!("is {what}, not a regular file")),
    ))
}

#[cfg(unix)]
fn special_kind(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::FileType) -> &'static str {
    "a special file"
}

/// `bytes` for a message: whole MiB or KiB where exact.
fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("decode-files-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_a_file_up_to_the_cap() {
        let dir = scratch("cap");
        let path = dir.join("a.json");
        std::fs::write(&path, "0123456789").unwrap();
        assert_eq!(read_capped(&path, 10).unwrap(), b"0123456789");
        let err = read_capped(&path, 9).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err}");
        assert!(err.to_string().contains("larger than 9 bytes"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let dir = scratch("special");
        let err = read_capped(&dir, 10).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        #[cfg(unix)]
        {
            let err = open_regular(Path::new("/dev/zero")).unwrap_err();
            assert!(err.to_string().contains("is a character device"), "{err}");
        }
        assert!(matches!(
            read_capped(&dir.join("missing"), 10),
            Err(Error::Io { .. })
        ));
        assert!(!is_present(&dir.join("missing")));
        assert!(is_present(&dir));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(CONFIG_MAX_BYTES), "1 MiB");
        assert_eq!(size(TOKENIZER_MAX_BYTES), "64 MiB");
        assert_eq!(size(2048), "2 KiB");
        assert_eq!(size(1000), "1000 bytes");
    }
}
