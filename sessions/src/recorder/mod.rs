//! The recorder: a named writer thread that turns the `RunEvent` stream into a session file.
//!
//! The training side sends events through a bounded channel and waits only when the channel is
//! full; nothing is ever dropped. The writer buffers rows and appends them to the HDF5 datasets
//! at least twice a second, then flushes, so a reader (`wsdscope replay --follow`, or
//! `h5py.File(f, "r", swmr=True)`) sees the file grow and a killed process loses at most the
//! last half second.
//!
//! **Readers never harm the writer.** Every group and dataset the session can ever need — a
//! slot for each run the session has room for, a table for each probe kind of the
//! [vocabulary](crate::vocabulary) — is created before the file enters SWMR mode, and from then
//! on the writer only appends. It never closes and reopens the file, so a reader's lock can
//! never make a write fail, and a SIGKILL at any instant leaves a file that SWMR readers open.
//! The file is built under a hidden temporary name and linked to its real name only once it is
//! in SWMR mode, so no reader ever sees it half-built.
//!
//! **Failures.** A write that fails for a reason that can pass (a lock, a busy file) is retried
//! with backoff for up to [`RETRY_FOR`] while events keep arriving into bounded buffers (when
//! those fill, the channel fills and training waits); a persistent failure (a full disk, the
//! file removed) ends the writer with an error, and everything flushed before it stays
//! readable. Each column remembers how many of its rows reached the file, so a retry appends
//! exactly what is missing.

mod columns;
mod flush;
mod handle;
mod hooks;
mod memory;
mod plan;
mod publish;
mod report;
mod space;
mod tables;
mod thread;
mod writer;

pub use handle::{CHANNEL_CAPACITY, Recorder};
pub(crate) use memory::{CHUNK_CACHE_BYTES, CHUNK_CACHE_SLOTS};
pub use plan::{SessionPlan, run_widths};
pub use publish::iso_now;
pub use report::{Notice, RecordSummary};
pub use thread::{FLUSH_INTERVAL, RETRY_FOR};
