//! The sessions crate's error type. Every message names the file and the problem.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be used as a session (missing, a directory, empty, not HDF5, not a
    /// session, truncated, from a newer wsdscope, …).
    #[error("{path}: {message}")]
    Session { path: PathBuf, message: String },

    /// Writing the session failed (disk full, permissions, …). What was written before stays
    /// readable.
    #[error("recording to {path} failed: {message}")]
    Write { path: PathBuf, message: String },

    /// The recorder thread is gone (it failed earlier, or was finished).
    #[error("the recorder of {path} has stopped: {message}")]
    RecorderGone { path: PathBuf, message: String },

    /// Writing an export of the session failed (disk full, permissions, …).
    #[error("cannot write {path}: {message}")]
    Export { path: PathBuf, message: String },

    /// A request the session cannot answer (unknown run or metric, …).
    #[error("{0}")]
    Query(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn session_err(path: impl Into<PathBuf>, message: impl Into<String>) -> Error {
    Error::Session {
        path: path.into(),
        message: message.into(),
    }
}

pub(crate) fn write_err(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Error {
    Error::Write {
        path: path.into(),
        message: message.to_string(),
    }
}
