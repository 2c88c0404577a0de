//! The trainer's error type: one enum, each variant naming the value at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value outside what is allowed; the message names both.
    #[error("{0}")]
    Config(String),

    #[error("{path}: {message}")]
    Data { path: PathBuf, message: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// Training met a non-finite value; nothing of this step was applied.
    #[error(
        "non-finite {what} at step {step} (run {run}); training stopped before applying the step"
    )]
    NonFinite {
        run: u32,
        step: u64,
        what: &'static str,
    },

    /// The ranks could not do something together (NCCL); the message says what and why.
    #[error("{0}")]
    Collective(String),

    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),

    /// A kernel backend refused or failed an op of the hand-written step.
    #[error("kernels: {0}")]
    Kernels(#[from] wsdscope_kernels::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
