//! The one error type of kiln-core: every variant names the file or tensor at fault.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read from disk.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A required file of a model directory is absent.
    #[error("model directory {dir} has no {file}: {hint}")]
    MissingFile {
        /// The model directory.
        dir: PathBuf,
        /// The file that was expected.
        file: String,
        /// What the user can do about it.
        hint: String,
    },
    /// A JSON configuration file is malformed or lacks a field.
    #[error("invalid {path}: {message}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A weights file is malformed, truncated or hostile.
    #[error("invalid weights file {path}: {message}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A tensor the architecture needs is absent from the weights.
    #[error("weights file {path} has no tensor `{name}`")]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor name that was looked up.
        name: String,
    },
    /// A tensor has a shape the architecture does not accept.
    #[error("tensor `{name}` in {path} has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape found in the file.
        actual: Vec<usize>,
    },
    /// The model uses a feature kiln does not implement.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// The tokenizer file could not be loaded or failed on an input.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// An input is longer than the model accepts and truncation is off.
    #[error("input {index} has {tokens} tokens, more than the model's maximum of {max}")]
    InputTooLong {
        /// The position of the input in the request.
        index: usize,
        /// Its length in tokens.
        tokens: usize,
        /// The model's maximum sequence length.
        max: usize,
    },
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::Weights`] for `path`.
    pub fn weights(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Weights {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Builds an [`Error::Config`] for `path`.
    pub fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            message: message.into(),
        }
    }
}
