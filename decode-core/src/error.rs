//! The one error type of the workspace.

use std::path::PathBuf;

/// Everything that can go wrong, as variants a caller can match on.
///
/// Messages are one line and name the problem (the file, the parameter, the token).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or folder could not be read (or an output could not be written).
    #[error("{path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its contents are not what its format requires (truncated, corrupt, wrong dtype).
    #[error("{path}: {message}")]
    Format {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A model configuration is invalid or contradicts itself.
    #[error("invalid config: {0}")]
    Config(String),
    /// A tensor or input does not have the shape the model requires.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The sequence would grow past the model's context length.
    #[error(
        "context overflow: {needed} positions needed but the model's context length is {limit}"
    )]
    ContextOverflow {
        /// Positions the request needs (prompt plus new tokens).
        needed: usize,
        /// The model's context length (`n_positions`).
        limit: usize,
    },
    /// A token id is not in the model's vocabulary.
    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfRange {
        /// The offending id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// A parameter is outside its valid range.
    #[error("invalid {name}: {message}")]
    InvalidParameter {
        /// The parameter, as the user spells it.
        name: &'static str,
        /// Why it is refused.
        message: String,
    },
    /// Two models that must share a vocabulary do not.
    #[error("vocabulary mismatch: {0}")]
    VocabMismatch(String),
    /// The tokenizer failed to load, encode or decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The request is valid but not supported (a missing GPU driver, an unknown activation…).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An allocation the system refused (a KV cache, a batch's logits): the request needs more
    /// memory than this process may use. Requests are estimated first
    /// ([`crate::memory::available_bytes`]), so this is rare: another process took the memory.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// NaN or infinite values where finite ones are required: a weight or quantized block scale
    /// when the model loads (the message names the tensor), a weight too large to quantize, the
    /// model's logits (activations that overflow), or logits after the processors (a setting
    /// whose effect overflows f32, or every token masked; the message names the step and the
    /// sequence).
    #[error("non-finite values: {0}")]
    NonFinite(String),
    /// A drafter's proposal breaks the contract speculative decoding relies on (a token outside
    /// the vocabulary, a distribution that is not finite, negative or normalised, or that gives
    /// its own token probability 0): keeping it would change the output distribution.
    #[error("invalid draft: {0}")]
    Draft(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Format`] for `path`.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An [`Error::InvalidParameter`].
    pub fn invalid(name: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name,
            message: message.into(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
