//! What the writer reports: notices while it works, and a summary when it has finished.

use std::path::PathBuf;

/// What a finished recording holds.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordSummary {
    pub path: PathBuf,
    pub events: u64,
    pub runs: usize,
    pub bytes: u64,
    /// Notices the writer gave after the last [`Recorder::notices`](crate::Recorder::notices)
    /// call (e.g. a recovery while it wrote its last rows).
    pub notices: Vec<Notice>,
}

/// What the writer reports while it works, besides its final result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A write failed for a reason that can pass; it is being retried while training goes on.
    Retrying(String),
    /// Writes succeed again; nothing was lost.
    Recovered(String),
    /// The run must stop (the disk is nearly full). The writer still records what follows
    /// (the runs' `end` events), closes the file cleanly, and then reports this as its error.
    MustStop(String),
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Retrying(m) | Notice::Recovered(m) | Notice::MustStop(m) => f.write_str(m),
        }
    }
}
