//! The event contract of a wsdscope session.
//!
//! A training run (live) and a recorded session (replayed) both produce the same stream of
//! [`RunEvent`]s, so every consumer — the progress line, `--jsonl`, the recorder, the TUI —
//! is written once against this vocabulary. The vocabulary is closed and versioned
//! ([`EVENT_SCHEMA_VERSION`]); a consumer that sees a newer version should refuse it rather
//! than guess.
//!
//! On the wire (`wsdscope record --jsonl`) each event is one JSON object per line with a
//! `"type"` field (`"run_start"`, `"step"`, `"eval"`, `"forked"`, `"probe"`, `"checkpoint"`,
//! `"note"`, `"end"`) and
//! the id of the run it belongs to (`"run"`; the trunk is run 0).
//!
//! The contract itself lives in the serde-only `wsdscope-events` crate (`sessions/events`),
//! re-exported here whole; this crate adds the session files. It depends on neither candle
//! nor the trainer.
//!
//! Sessions are recorded to HDF5 by [`Recorder`] (a writer thread) and read back by
//! [`Session`], which yields the same event stream and random access for plots and the UI;
//! [`layout`] describes the file. [`export`] writes a session as TensorBoard event files or
//! CSV.

pub mod buckets;
pub mod error;
pub mod export;
pub mod layout;
pub mod liveness;
pub mod reader;
pub mod recorder;

pub use buckets::Bucket;
pub use error::{Error, Result};
pub use liveness::writer_alive;
pub use reader::{RunInfo, Session};
pub use recorder::{Notice, RecordSummary, Recorder, SessionPlan};
pub use wsdscope_events::*;
