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

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdf5::types::VarLenUnicode;
use hdf5::{Dataset, File, Group, H5Type, Location};

use crate::error::{Error, Result, write_err};
use crate::layout::*;
use crate::liveness::WriterLock;
use crate::vocabulary::{PROBES as PROBE_KINDS, ProbeSpec, probe_columns};
use crate::{EVENT_SCHEMA_VERSION, Phase, ProbeResult, RunEvent, RunId, RunStart, StepMetrics};

/// How often buffered rows reach the file at the latest.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// Events the training side may run ahead of the writer before it waits.
pub const CHANNEL_CAPACITY: usize = 8192;
/// How long a write failure that can pass (a lock, a busy file) is retried before it counts
/// as persistent.
pub const RETRY_FOR: Duration = Duration::from_secs(60);
/// Raw-data chunk cache of every dataset the writer holds open: room for the chunk each
/// appends to and one more (no chunk is larger than [`MAX_CHUNK_BYTES`]). HDF5 2's default,
/// 8191 slots and 8 MiB per dataset, costs about 80 KiB per open dataset and fills with
/// finished chunks: a long session's memory would grow with it. Fully written chunks go first
/// (w0 = 1).
pub(crate) const CHUNK_CACHE_SLOTS: usize = 11;
pub(crate) const CHUNK_CACHE_BYTES: usize = 2 * MAX_CHUNK_BYTES;
/// The metadata cache of a session file: at most 4 MiB. A writer touches a few blocks of
/// each dataset's chunk index per flush; HDF5's default lets the cache grow to 32 MiB of
/// index blocks it will not need again, so a long session's memory would grow with it.
pub(crate) fn metadata_cache() -> hdf5::plist::file_access::MetadataCacheConfig {
    hdf5::plist::file_access::MetadataCacheConfig {
        initial_size: 1 << 21,
        max_size: 1 << 22,
        ..Default::default()
    }
}

/// The longest wait between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Step rows the writer holds while a retry waits before it stops taking events (the engine
/// then waits on the full channel: nothing is dropped, memory stays bounded).
const MAX_PENDING_ROWS: usize = 1 << 16;
/// Rows after which the writer flushes without waiting for [`FLUSH_INTERVAL`]: keeps its
/// buffers small when events arrive faster than the timer (a fast model, a replayed stream).
const FLUSH_ROWS: usize = 1 << 12;

/// What the file is created for: the trunk's configuration and how many runs it can hold.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPlan {
    /// The trunk's run configuration (the root `config` attribute).
    pub config: serde_json::Value,
    /// Run slots to create, the trunk's included. A run with a higher id cannot be recorded.
    pub runs: u32,
    /// Columns of `grad_norm_per_layer`, `grad_norm_per_group` and `max_update`: the widest
    /// run's (rows of narrower runs are padded with NaN and read back at their own width).
    pub widths: [usize; WIDE.len()],
}

impl SessionPlan {
    /// A plan for a session whose trunk starts with `start` and that holds `runs` runs, all of
    /// the trunk's shape (forks copy their parent's shape).
    pub fn for_trunk(start: &RunStart, runs: u32) -> Self {
        SessionPlan {
            config: start.config.clone(),
            runs: runs.max(1),
            widths: run_widths(start),
        }
    }
}

/// Columns of each [`WIDE`] dataset that a run's step events carry.
pub fn run_widths(s: &RunStart) -> [usize; WIDE.len()] {
    [
        s.model.layers,
        s.param_groups.len(),
        s.tracked_tensors.len(),
    ]
}

/// What a finished recording holds.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordSummary {
    pub path: PathBuf,
    pub events: u64,
    pub runs: usize,
    pub bytes: u64,
    /// Notices the writer gave after the last [`Recorder::notices`] call (e.g. a recovery
    /// while it wrote its last rows).
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

/// Handle to the writer thread of one session file.
pub struct Recorder {
    path: PathBuf,
    tx: Option<SyncSender<RunEvent>>,
    thread: Option<JoinHandle<Result<RecordSummary>>>,
    notices: Arc<Mutex<Vec<Notice>>>,
}

impl Recorder {
    /// Creates `path` (which must not exist yet) laid out for `plan`, and starts the writer
    /// thread. Fails before any training starts if the file cannot be created.
    pub fn create(path: &Path, plan: &SessionPlan) -> Result<Self> {
        if path.exists() {
            return Err(write_err(
                path,
                "the file exists; choose a new path (nothing is overwritten)",
            ));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            return Err(write_err(
                path,
                format!("directory {} does not exist", parent.display()),
            ));
        }
        if path.file_name().is_none() {
            return Err(write_err(path, "not a file name"));
        }
        limit_hdf5_free_lists();
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let (ready_tx, ready_rx) = mpsc::channel();
        let owned = path.to_path_buf();
        let plan = plan.clone();
        let notices = Arc::new(Mutex::new(Vec::new()));
        let thread_notices = Arc::clone(&notices);
        let thread = std::thread::Builder::new()
            .name("wsdscope-recorder".into())
            .spawn(move || {
                let hooks = TestHooks::from_env();
                let writer = match SessionWriter::create(&owned, &plan, hooks, thread_notices) {
                    Ok(w) => {
                        let _ = ready_tx.send(Ok(()));
                        w
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        let _ = ready_tx.send(Err(e));
                        return Err(write_err(&owned, msg));
                    }
                };
                writer.run(rx)
            })
            .map_err(|e| write_err(path, format!("cannot start the recorder thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Recorder {
                path: path.to_path_buf(),
                tx: Some(tx),
                thread: Some(thread),
                notices,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(write_err(
                path,
                "the recorder thread ended before creating the file",
            )),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues an event; waits only while the channel is full. Fails if the writer has stopped
    /// (its error is returned by [`Recorder::finish`]).
    pub fn record(&self, ev: RunEvent) -> Result<()> {
        let tx = self.tx.as_ref().expect("recorder not finished");
        tx.send(ev).map_err(|_| Error::RecorderGone {
            path: self.path.clone(),
            message: "the writer thread has stopped (see the error that follows)".into(),
        })
    }

    /// What the writer has to say since the last call: a write failing and being retried,
    /// or recovering. Empty while all is well.
    pub fn notices(&self) -> Vec<Notice> {
        std::mem::take(&mut *self.notices.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Closes the channel, waits for the writer to write everything and close the file.
    pub fn finish(mut self) -> Result<RecordSummary> {
        self.tx.take();
        let thread = self.thread.take().expect("recorder not finished");
        let mut summary = thread
            .join()
            .unwrap_or_else(|_| Err(write_err(&self.path, "the writer thread panicked")))?;
        summary.notices = self.notices();
        Ok(summary)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Caps the memory HDF5 keeps on its internal free lists for reuse (by default up to 16 MiB
/// of chunk-sized blocks alone, which a long recording fills and never returns). Once per
/// process.
fn limit_hdf5_free_lists() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        hdf5::sync::sync(|| {
            // SAFETY: a plain call into the library, under the crate's global HDF5 lock; the
            // arguments are byte limits (global, per list) for the regular, array and block
            // free lists.
            unsafe {
                hdf5_sys::h5::H5set_free_list_limits(
                    1 << 20,
                    1 << 18,
                    1 << 20,
                    1 << 16,
                    1 << 21,
                    1 << 18,
                )
            };
        });
    });
}

/// Places where tests can stop the writer, to kill it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PausePoint {
    /// While the file is being built, before it has its real name.
    Create,
    /// In the middle of the flush that follows a branch's `run_start`.
    Fork,
    /// In the middle of the flush that follows the first probe result.
    Probe,
}

/// Test-only behaviour, off unless the environment asks for it:
/// `WSDSCOPE_TEST_PAUSE=create|fork|probe` makes the writer print
/// `wsdscope-test: paused at <point> (events before seq <n> are in the file)` to stderr and
/// sleep for two minutes at that point, so a test can SIGKILL it there;
/// `WSDSCOPE_TEST_FAULTS=flush-busy:N` makes the first N flushes after the first run starts
/// fail half-way with a transient error, as a reader's lock used to.
#[derive(Debug, Clone, Default)]
struct TestHooks {
    pause: Option<PausePoint>,
    busy_flushes: u32,
}

impl TestHooks {
    fn from_env() -> Self {
        let pause = match std::env::var("WSDSCOPE_TEST_PAUSE").ok().as_deref() {
            Some("create") => Some(PausePoint::Create),
            Some("fork") => Some(PausePoint::Fork),
            Some("probe") => Some(PausePoint::Probe),
            _ => None,
        };
        let busy_flushes = std::env::var("WSDSCOPE_TEST_FAULTS")
            .ok()
            .and_then(|v| v.strip_prefix("flush-busy:")?.parse().ok())
            .unwrap_or(0);
        TestHooks {
            pause,
            busy_flushes,
        }
    }

    fn pause(point: PausePoint, durable_seq: u64) {
        let name = match point {
            PausePoint::Create => "create",
            PausePoint::Fork => "fork",
            PausePoint::Probe => "probe",
        };
        // Straight to fd 2: the training side may hold the stderr lock for its progress line.
        let line = format!(
            "wsdscope-test: paused at {name} (events before seq {durable_seq} are in the file)\n"
        );
        // SAFETY: write(2) from a buffer that lives for the call.
        unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
        std::thread::sleep(Duration::from_secs(120));
    }
}

/// Writes a string attribute.
pub(crate) fn put_str(loc: &Location, name: &str, value: &str) -> hdf5::Result<()> {
    let v: VarLenUnicode = value
        .parse()
        .map_err(|e| hdf5::Error::from(format!("{e:?}")))?;
    loc.new_attr::<VarLenUnicode>()
        .create(name)?
        .write_scalar(&v)
}

fn put<T: H5Type>(loc: &Location, name: &str, value: T) -> hdf5::Result<()> {
    loc.new_attr::<T>().create(name)?.write_scalar(&value)
}

/// A write that failed, and whether retrying may help.
#[derive(Debug)]
struct Failure {
    message: String,
    transient: bool,
}

impl From<hdf5::Error> for Failure {
    fn from(e: hdf5::Error) -> Self {
        let message = e.to_string();
        Failure {
            transient: transient(&message),
            message,
        }
    }
}

/// Whether an HDF5 error message describes a failure that can pass: a lock held elsewhere,
/// an interrupted or busy operation. HDF5 puts the system's errno into its messages.
fn transient(message: &str) -> bool {
    let errno = message
        .split("errno = ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse::<i32>().ok());
    match errno {
        Some(e) => [
            libc::EAGAIN,
            libc::EINTR,
            libc::EBUSY,
            libc::ENOLCK,
            libc::ETIMEDOUT,
        ]
        .contains(&e),
        // No errno: a library-level failure. Give it the retry window too; if it persists
        // it ends the recording then.
        None => !message.contains("No space left"),
    }
}

/// One extendable dataset and the rows it has not received yet. `width` 0: a 1-D dataset;
/// otherwise a 2-D one with that many columns (`buf` row-major).
struct Col<T> {
    ds: Dataset,
    /// Rows in the file.
    len: usize,
    width: usize,
    buf: Vec<T>,
}

impl<T: H5Type + Copy> Col<T> {
    fn open(g: &Group, name: &str) -> hdf5::Result<Self> {
        let ds = g.dataset(name)?;
        let shape = ds.shape();
        let width = if shape.len() == 2 { shape[1] } else { 0 };
        Ok(Col {
            ds,
            len: shape.first().copied().unwrap_or(0),
            width,
            buf: Vec::new(),
        })
    }

    fn rows(&self) -> usize {
        match self.width {
            0 => self.buf.len(),
            w => self.buf.len() / w,
        }
    }

    /// Appends the buffered rows. On failure nothing is forgotten: a later call writes them
    /// again from the same position.
    fn flush(&mut self) -> hdf5::Result<()> {
        let n = self.rows();
        if n == 0 {
            return Ok(());
        }
        let (from, to) = (self.len, self.len + n);
        if self.width == 0 {
            self.ds.resize(to)?;
            self.ds.write_slice(&self.buf, from..to)?;
        } else {
            self.ds.resize((to, self.width))?;
            let arr = ndarray::ArrayView2::from_shape((n, self.width), &self.buf)
                .map_err(|e| hdf5::Error::from(e.to_string()))?;
            self.ds.write_slice(arr, (from..to, ..))?;
        }
        self.len = to;
        self.buf.clear();
        Ok(())
    }
}

/// An extendable, compressed 1-D dataset (for the integer columns, which compress well).
fn new_1d<T: H5Type>(g: &Group, name: &str) -> hdf5::Result<Dataset> {
    g.new_dataset::<T>()
        .chunk(CHUNK)
        .shuffle()
        .deflate(DEFLATE)
        .shape(0..)
        .create(name)
}

/// An extendable 1-D float64 dataset, uncompressed: measured values are noisy in their low
/// bits, so deflate saves only about a third of their bytes while inflating them was most of
/// the time `replay` needs to open a long session.
fn new_f64(g: &Group, name: &str) -> hdf5::Result<Dataset> {
    g.new_dataset::<f64>().chunk(CHUNK).shape(0..).create(name)
}

/// Creates run slot `id`: its group and every dataset a run appends to.
fn create_slot(runs: &Group, id: RunId, widths: [usize; WIDE.len()]) -> hdf5::Result<()> {
    let g = runs.create_group(&id.to_string())?;
    put(&g, "id", id)?;
    g.new_dataset::<u8>()
        .chunk(1 << 12)
        .shape(0..)
        .create(RUN_INFO)?;
    for name in U64_COLUMNS {
        new_1d::<u64>(&g, name)?;
    }
    new_1d::<u8>(&g, PHASE)?;
    for name in F64_METRICS {
        new_f64(&g, name)?;
    }
    for (name, w) in WIDE.iter().zip(widths) {
        // Wide rows are read once per replay, not column by column: compressing them costs
        // less and saves more than for the 1-D columns.
        g.new_dataset::<f64>()
            .chunk((chunk_rows_2d(w), w.max(1)))
            .deflate(DEFLATE)
            .shape((0.., w))
            .create(*name)?;
    }
    let e = g.create_group(EVAL)?;
    for name in U64_COLUMNS {
        new_1d::<u64>(&e, name)?;
    }
    new_f64(&e, "val_loss")?;
    Ok(())
}

/// The open datasets of a run that has started (an open dataset costs memory in HDF5, so
/// unused slots stay closed).
struct RunSlot {
    /// The run's own widths of the [`WIDE`] rows.
    widths: [usize; WIDE.len()],
    info: Col<u8>,
    u64s: [Col<u64>; 3], // seq, step, tokens
    phase: Col<u8>,
    f64s: Vec<Col<f64>>,
    wide: Vec<Col<f64>>,
    eval_u64s: [Col<u64>; 3], // seq, step, tokens
    eval_loss: Col<f64>,
}

impl RunSlot {
    /// Opens the datasets of slot `id` for a run of `widths`.
    fn open(file: &File, id: RunId, widths: [usize; WIDE.len()]) -> hdf5::Result<Self> {
        let g = file.group(&run_group(id))?;
        let e = g.group(EVAL)?;
        let u64s = |g: &Group| -> hdf5::Result<[Col<u64>; 3]> {
            Ok([
                Col::open(g, "seq")?,
                Col::open(g, "step")?,
                Col::open(g, "tokens")?,
            ])
        };
        Ok(RunSlot {
            widths,
            info: Col::open(&g, RUN_INFO)?,
            u64s: u64s(&g)?,
            phase: Col::open(&g, PHASE)?,
            f64s: F64_METRICS
                .iter()
                .map(|m| Col::open(&g, m))
                .collect::<hdf5::Result<_>>()?,
            wide: WIDE
                .iter()
                .map(|m| Col::open(&g, m))
                .collect::<hdf5::Result<_>>()?,
            eval_u64s: u64s(&e)?,
            eval_loss: Col::open(&e, "val_loss")?,
        })
    }

    fn pending_rows(&self) -> usize {
        self.phase.rows().max(self.eval_loss.rows())
    }

    fn flush(&mut self) -> hdf5::Result<()> {
        self.info.flush()?;
        for c in &mut self.u64s {
            c.flush()?;
        }
        self.phase.flush()?;
        for c in &mut self.f64s {
            c.flush()?;
        }
        for c in &mut self.wide {
            c.flush()?;
        }
        for c in &mut self.eval_u64s {
            c.flush()?;
        }
        self.eval_loss.flush()
    }
}

/// The table of one probe kind: every run's results of that kind.
struct ProbeTable {
    spec: &'static ProbeSpec,
    run: Col<u32>,
    seq: Col<u64>,
    step: Col<u64>,
    scalars: Vec<(&'static str, Col<f64>)>,
}

impl ProbeTable {
    fn create(probes: &Group, spec: &'static ProbeSpec) -> hdf5::Result<Self> {
        let g = probes.create_group(spec.name)?;
        new_1d::<u32>(&g, "run")?;
        new_1d::<u64>(&g, "seq")?;
        new_1d::<u64>(&g, "step")?;
        for name in probe_columns(spec) {
            new_f64(&g, name)?;
        }
        Ok(ProbeTable {
            spec,
            run: Col::open(&g, "run")?,
            seq: Col::open(&g, "seq")?,
            step: Col::open(&g, "step")?,
            scalars: probe_columns(spec)
                .map(|n| Ok((n, Col::open(&g, n)?)))
                .collect::<hdf5::Result<_>>()?,
        })
    }

    fn push(&mut self, seq: u64, p: &ProbeResult) {
        self.run.buf.push(p.run);
        self.seq.buf.push(seq);
        self.step.buf.push(p.step);
        for (name, col) in &mut self.scalars {
            col.buf
                .push(p.scalars.get(*name).copied().unwrap_or(f64::NAN));
        }
    }

    fn flush(&mut self) -> hdf5::Result<()> {
        self.run.flush()?;
        self.seq.flush()?;
        self.step.flush()?;
        for (_, c) in &mut self.scalars {
            c.flush()?;
        }
        Ok(())
    }
}

/// Identity of a file on disk, to notice when the session file is removed or replaced.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// A pending retry of a failed flush.
struct Retry {
    since: Instant,
    next: Instant,
    delay: Duration,
    attempts: u32,
}

struct SessionWriter {
    path: PathBuf,
    file: Option<File>,
    events: Col<u8>,
    run_ids: Col<u32>,
    /// One entry per run slot of the file: the open datasets of runs that have started.
    slots: Vec<Option<RunSlot>>,
    /// The widths of the run that took each slot (a slot is never reused).
    taken: Vec<Option<[usize; WIDE.len()]>>,
    /// Runs that have ended: their datasets are closed after the next flush writes their
    /// last rows, so a long session with many branches holds only its live runs open.
    ended: Vec<RunId>,
    /// Columns of the slots' [`WIDE`] datasets.
    slot_widths: [usize; WIDE.len()],
    probes: Vec<ProbeTable>,
    seq: u64,
    /// Events before this seq are in the file (as of the last completed flush).
    durable_seq: u64,
    identity: Option<(u64, u64)>,
    /// How much the file grew in recent flushes (a decaying maximum), to keep a margin of
    /// free space.
    max_growth: u64,
    /// Set when the run must stop (the disk is nearly full): the message the writer ends with.
    stopping: Option<String>,
    hooks: TestHooks,
    /// Pause in the middle of the next flush (a test asked to).
    pause_in_flush: Option<PausePoint>,
    notices: Arc<Mutex<Vec<Notice>>>,
    _lock: Option<WriterLock>,
}

impl SessionWriter {
    /// Builds the whole file under a temporary name, enters SWMR mode, and only then gives it
    /// its real name (refusing to replace an existing file).
    fn create(
        path: &Path,
        plan: &SessionPlan,
        hooks: TestHooks,
        notices: Arc<Mutex<Vec<Notice>>>,
    ) -> Result<Self> {
        let name = path
            .file_name()
            .expect("checked by Recorder::create")
            .to_string_lossy()
            .into_owned();
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new("."));
        remove_stale_partials(dir, &name);
        let tmp = dir.join(format!(".{name}.partial-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let built = Self::build(&tmp, path, plan, hooks, notices);
        let mut w = match built {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // SWMR is on and everything is flushed: hold the liveness lock, then publish.
        let published = WriterLock::acquire(&tmp)
            .map_err(|e| write_err(path, format!("cannot lock the new file: {e}")))
            .and_then(|lock| {
                std::fs::hard_link(&tmp, path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        write_err(
                            path,
                            "the file exists; choose a new path (nothing is overwritten)",
                        )
                    } else {
                        write_err(path, format!("cannot create it: {e}"))
                    }
                })?;
                Ok(lock)
            });
        let _ = std::fs::remove_file(&tmp);
        w._lock = Some(published?);
        w.identity = identity(path);
        Ok(w)
    }

    fn build(
        tmp: &Path,
        path: &Path,
        plan: &SessionPlan,
        hooks: TestHooks,
        notices: Arc<Mutex<Vec<Notice>>>,
    ) -> Result<Self> {
        let err = |e: hdf5::Error| write_err(path, e);
        let file = File::with_options()
            .with_fapl(|p| {
                p.libver_v110()
                    .chunk_cache(CHUNK_CACHE_SLOTS, CHUNK_CACHE_BYTES, 1.0)
                    .mdc_config(&metadata_cache())
            })
            .create_excl(tmp)
            .map_err(err)?;
        let root: &Location = &file;
        put(root, "format_version", FORMAT_VERSION).map_err(err)?;
        put(root, "event_schema_version", EVENT_SCHEMA_VERSION).map_err(err)?;
        put_str(
            root,
            "producer",
            concat!("wsdscope ", env!("CARGO_PKG_VERSION")),
        )
        .map_err(err)?;
        put_str(root, "created", &iso_now()).map_err(err)?;
        put_str(root, "config", &plan.config.to_string()).map_err(err)?;
        put(root, RUN_SLOTS, plan.runs).map_err(err)?;
        file.new_dataset::<u8>()
            .chunk(MAX_CHUNK_BYTES)
            .deflate(DEFLATE)
            .shape(0..)
            .create(EVENTS)
            .map_err(err)?;
        file.new_dataset::<u32>()
            .chunk(1 << 10)
            .shape(0..)
            .create(RUN_IDS)
            .map_err(err)?;
        let runs = file.create_group(RUNS).map_err(err)?;
        for id in 0..plan.runs {
            if id == plan.runs / 2 && hooks.pause == Some(PausePoint::Create) {
                file.flush().map_err(err)?;
                TestHooks::pause(PausePoint::Create, 0);
            }
            create_slot(&runs, id, plan.widths).map_err(err)?;
        }
        drop(runs);
        let probes = file.create_group(PROBES).map_err(err)?;
        let tables = PROBE_KINDS
            .iter()
            .map(|spec| ProbeTable::create(&probes, spec))
            .collect::<hdf5::Result<Vec<_>>>()
            .map_err(err)?;
        let events = Col::open(&file, EVENTS).map_err(err)?;
        let run_ids = Col::open(&file, RUN_IDS).map_err(err)?;
        file.flush().map_err(err)?;
        // From here on the writer only appends (a run's slot is opened when it starts).
        file.start_swmr().map_err(err)?;
        file.flush().map_err(err)?;
        Ok(SessionWriter {
            path: path.to_path_buf(),
            file: Some(file),
            events,
            run_ids,
            slots: (0..plan.runs).map(|_| None).collect(),
            taken: vec![None; plan.runs as usize],
            ended: Vec::new(),
            slot_widths: plan.widths,
            probes: tables,
            seq: 0,
            durable_seq: 0,
            identity: None,
            max_growth: 0,
            stopping: None,
            hooks,
            pause_in_flush: None,
            notices,
            _lock: None,
        })
    }

    fn notice(&self, message: Notice) {
        self.notices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message);
    }

    /// Rows waiting for the file (log bytes counted per KiB).
    fn pending_rows(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .map(RunSlot::pending_rows)
            .sum::<usize>()
            + self.probes.iter().map(|t| t.run.rows()).sum::<usize>()
            + self.events.buf.len() / 1024
    }

    /// The writer loop: handle events, flush on a timer (or at once for starts and ends),
    /// retry failures that can pass, finish when the channel closes.
    fn run(mut self, rx: Receiver<RunEvent>) -> Result<RecordSummary> {
        let mut last_flush = Instant::now();
        let mut retry: Option<Retry> = None;
        let mut open = true;
        let mut urgent = false;
        loop {
            let full = self.pending_rows() >= FLUSH_ROWS;
            let wake = match &retry {
                Some(r) => r.next,
                None if urgent || !open || full => Instant::now(),
                None => last_flush + FLUSH_INTERVAL,
            };
            if open && self.pending_rows() < MAX_PENDING_ROWS {
                match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                    Ok(ev) => match self.handle(ev) {
                        Ok(u) => urgent |= u,
                        Err(e) => {
                            // An event the file cannot take (a run beyond its slots): keep
                            // everything before it, then stop.
                            let _ = self.flush();
                            let _ = self.close();
                            return Err(e);
                        }
                    },
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
            } else {
                std::thread::sleep(wake.saturating_duration_since(Instant::now()));
            }
            let now = Instant::now();
            let due = match &retry {
                Some(r) => now >= r.next,
                None => {
                    urgent
                        || !open
                        || now >= last_flush + FLUSH_INTERVAL
                        || self.pending_rows() >= FLUSH_ROWS
                }
            };
            if !due {
                continue;
            }
            if self.stopping.is_none() {
                let margin = self.margin();
                if let Some(left) = self.space_left().filter(|&left| left < margin) {
                    let message = format!(
                        "the disk is nearly full ({} left, {} needed to go on safely); the run was stopped and the session closed with everything in it",
                        human_bytes(left),
                        human_bytes(margin)
                    );
                    self.notice(Notice::MustStop(message.clone()));
                    self.stopping = Some(message);
                }
            }
            match self.flush() {
                Ok(()) => {
                    if let Some(r) = retry.take() {
                        self.notice(Notice::Recovered(format!(
                            "recording to {} recovered after {} retries over {:.1} s; nothing was lost",
                            self.path.display(),
                            r.attempts,
                            r.since.elapsed().as_secs_f64()
                        )));
                    }
                    last_flush = now;
                    urgent = false;
                    if !open {
                        break;
                    }
                }
                Err(f)
                    if f.transient
                        && retry.as_ref().is_none_or(|r| r.since.elapsed() < RETRY_FOR) =>
                {
                    let r = retry.get_or_insert_with(|| Retry {
                        since: now,
                        next: now,
                        delay: Duration::from_millis(50),
                        attempts: 0,
                    });
                    if r.attempts == 0 {
                        let msg = format!(
                            "writing {} failed ({}); retrying with backoff for up to {} s while training goes on",
                            self.path.display(),
                            f.message,
                            RETRY_FOR.as_secs()
                        );
                        self.notice(Notice::Retrying(msg));
                    }
                    let r = retry.as_mut().expect("set");
                    r.attempts += 1;
                    r.next = now + r.delay;
                    r.delay = (r.delay * 2).min(MAX_BACKOFF);
                }
                Err(f) => {
                    let mut message = f.message;
                    if let Some(r) = &retry {
                        message.push_str(&format!(
                            " (still failing after {} retries over {:.0} s)",
                            r.attempts,
                            r.since.elapsed().as_secs_f64()
                        ));
                    }
                    return Err(write_err(&self.path, message));
                }
            }
        }
        let summary = RecordSummary {
            path: self.path.clone(),
            events: self.seq,
            runs: self.taken.iter().flatten().count(),
            bytes: 0,
            notices: Vec::new(),
        };
        let path = self.path.clone();
        let stopping = self.stopping.take();
        self.close()?;
        if let Some(message) = stopping {
            return Err(write_err(&path, message));
        }
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok(RecordSummary { bytes, ..summary })
    }

    /// Buffers one event. Returns whether it should reach the file at once (starts and ends,
    /// which readers key on).
    fn handle(&mut self, ev: RunEvent) -> Result<bool> {
        let seq = self.seq;
        self.seq += 1;
        match ev {
            RunEvent::Step(m) => {
                self.push_step(seq, &m)?;
                Ok(false)
            }
            RunEvent::Eval {
                run,
                step,
                val_loss,
                tokens,
            } => {
                let s = self.slot(run)?;
                s.eval_u64s[0].buf.push(seq);
                s.eval_u64s[1].buf.push(step);
                s.eval_u64s[2].buf.push(tokens);
                s.eval_loss.buf.push(val_loss);
                Ok(false)
            }
            other => {
                let mut urgent = matches!(other, RunEvent::End { .. });
                match &other {
                    RunEvent::End { run, .. } => self.ended.push(*run),
                    RunEvent::RunStart(s) => {
                        self.start_run(s)?;
                        urgent = true;
                        if s.run > 0 && self.hooks.pause == Some(PausePoint::Fork) {
                            self.pause_in_flush = Some(PausePoint::Fork);
                        }
                    }
                    RunEvent::Probe(p) => {
                        if let Some(t) = self.probes.iter_mut().find(|t| t.spec.name == p.probe) {
                            t.push(seq, p);
                        }
                        if self.hooks.pause == Some(PausePoint::Probe) {
                            self.pause_in_flush = Some(PausePoint::Probe);
                            urgent = true;
                        }
                    }
                    _ => {}
                }
                let line = serde_json::json!({ "seq": seq, "event": other });
                self.events
                    .buf
                    .extend_from_slice(line.to_string().as_bytes());
                self.events.buf.push(b'\n');
                Ok(urgent)
            }
        }
    }

    /// The open datasets of a run that has started (reopened if it had ended).
    fn slot(&mut self, run: RunId) -> Result<&mut RunSlot> {
        let i = run as usize;
        let Some(Some(widths)) = self.taken.get(i).copied() else {
            return Err(write_err(
                &self.path,
                format!("event for run {run} before its run_start"),
            ));
        };
        if self.slots[i].is_none() {
            let file = self.file.as_ref().expect("open");
            let slot = RunSlot::open(file, run, widths).map_err(|e| write_err(&self.path, e))?;
            self.slots[i] = Some(slot);
        }
        Ok(self.slots[i].as_mut().expect("opened"))
    }

    /// Takes the slot of a run that starts: its datasets are opened and its `run_start` goes
    /// into the slot's `info`.
    fn start_run(&mut self, s: &RunStart) -> Result<()> {
        let slots = self.slots.len();
        let widths = run_widths(s);
        let path = self.path.clone();
        match self.taken.get(s.run as usize) {
            None => {
                return Err(write_err(
                    &path,
                    format!(
                        "run {} cannot be recorded: the session was created with room for {slots} runs",
                        s.run
                    ),
                ));
            }
            Some(Some(_)) => {
                return Err(write_err(&path, format!("run {} started twice", s.run)));
            }
            Some(None) => {}
        }
        for ((name, want), have) in WIDE.iter().zip(widths).zip(self.slot_widths) {
            if want > have {
                return Err(write_err(
                    &path,
                    format!(
                        "run {} has {want} columns of {name}; the session was created for {have}",
                        s.run
                    ),
                ));
            }
        }
        let file = self.file.as_ref().expect("open");
        let mut slot = RunSlot::open(file, s.run, widths).map_err(|e| write_err(&path, e))?;
        let json =
            serde_json::to_vec(&RunEvent::RunStart(Box::new(s.clone()))).expect("events serialise");
        slot.info.buf.extend_from_slice(&json);
        self.slots[s.run as usize] = Some(slot);
        self.taken[s.run as usize] = Some(widths);
        self.run_ids.buf.push(s.run);
        Ok(())
    }

    fn push_step(&mut self, seq: u64, m: &StepMetrics) -> Result<()> {
        let path = self.path.clone();
        let slot = self.slot(m.run)?;
        let widths = slot.widths;
        let rows = [
            &m.grad_norm_per_layer,
            &m.grad_norm_per_group,
            &m.max_update,
        ];
        for ((name, row), want) in WIDE.iter().zip(rows).zip(widths) {
            if row.len() != want {
                let got = row.len();
                return Err(write_err(
                    path,
                    format!(
                        "step {} of run {} has {got} values of {name}, expected {want}",
                        m.step, m.run
                    ),
                ));
            }
        }
        slot.u64s[0].buf.push(seq);
        slot.u64s[1].buf.push(m.step);
        slot.u64s[2].buf.push(m.tokens);
        slot.phase.buf.push(match m.phase {
            Phase::Warmup => 0,
            Phase::Stable => 1,
            Phase::Decay => 2,
        });
        let g = m.geometry;
        for (col, v) in slot.f64s.iter_mut().zip([
            m.loss,
            m.lr,
            m.grad_norm,
            m.update_norm,
            m.param_norm,
            m.tokens_per_s,
            m.step_ms,
            g.map_or(f64::NAN, |g| g.cos),
            g.map_or(f64::NAN, |g| g.d1),
            g.map_or(f64::NAN, |g| g.d2),
            g.map_or(f64::NAN, |g| g.curvature),
        ]) {
            col.buf.push(v);
        }
        for (col, row) in slot.wide.iter_mut().zip(rows) {
            col.buf.extend_from_slice(row);
            // A run narrower than the slot (a smaller sibling) is padded with NaN.
            col.buf
                .extend(std::iter::repeat_n(f64::NAN, col.width - row.len()));
        }
        Ok(())
    }

    /// Appends every buffered row and flushes the file. A failure leaves each column's
    /// unwritten rows buffered, so calling it again continues where it stopped.
    fn flush(&mut self) -> std::result::Result<(), Failure> {
        let before = self.file_len();
        if self.identity.is_some() && identity(&self.path) != self.identity {
            return Err(Failure {
                message: "the session file was removed or replaced while it was being written"
                    .into(),
                transient: false,
            });
        }
        for s in self.slots.iter_mut().flatten() {
            s.flush()?;
        }
        for run in self.ended.drain(..) {
            if let Some(slot) = self.slots.get_mut(run as usize) {
                *slot = None;
            }
        }
        if self.hooks.busy_flushes > 0 && self.taken.iter().any(Option::is_some) {
            self.hooks.busy_flushes -= 1;
            return Err(Failure {
                message: "H5Dwrite(): unable to lock file, errno = 11, error message = 'Resource temporarily unavailable' (injected by WSDSCOPE_TEST_FAULTS)".into(),
                transient: true,
            });
        }
        if let Some(point) = self.pause_in_flush.take() {
            TestHooks::pause(point, self.durable_seq);
        }
        for t in &mut self.probes {
            t.flush()?;
        }
        self.run_ids.flush()?;
        self.events.flush()?;
        self.file.as_ref().expect("open").flush()?;
        let grew = self.file_len().saturating_sub(before);
        self.max_growth = grew.max(self.max_growth - self.max_growth / 8);
        self.durable_seq = self.seq;
        Ok(())
    }

    fn file_len(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Free space the file may still grow into: the file system's space available to this
    /// user, and the process's file-size limit (`ulimit -f`), whichever is smaller.
    fn space_left(&self) -> Option<u64> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let fs = {
            use std::os::unix::ffi::OsStrExt;
            let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
            // SAFETY: `c` is a NUL-terminated path and `st` a zeroed statvfs the call fills.
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            (unsafe { libc::statvfs(c.as_ptr(), &raw mut st) } == 0)
                .then(|| st.f_bavail as u64 * st.f_frsize as u64)
        };
        // SAFETY: getrlimit fills the zeroed struct it is given.
        let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
        let limit = (unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &raw mut lim) } == 0
            && lim.rlim_cur != libc::RLIM_INFINITY)
            .then(|| (lim.rlim_cur as u64).saturating_sub(self.file_len()));
        match (fs, limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Free space to keep: room for a few more flushes and closing the file.
    fn margin(&self) -> u64 {
        (2 << 20) + 4 * self.max_growth
    }

    fn close(mut self) -> Result<()> {
        self.slots.clear();
        self.probes.clear();
        let SessionWriter {
            path,
            file,
            events,
            run_ids,
            _lock,
            ..
        } = self;
        drop((events, run_ids));
        if let Some(f) = file {
            f.close().map_err(|e| write_err(&path, e))?;
        }
        drop(_lock);
        Ok(())
    }
}

/// Removes `.NAME.partial-PID` files that a recorder killed while building `NAME` left
/// behind (their process is gone).
fn remove_stale_partials(dir: &Path, name: &str) {
    let prefix = format!(".{name}.partial-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file_name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = file_name
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Bytes in binary units, e.g. `1.5 MiB`.
fn human_bytes(b: u64) -> String {
    let mut v = b as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if v < 1024.0 {
            return format!("{v:.1} {unit}");
        }
        v /= 1024.0;
    }
    format!("{v:.1} TiB")
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SSZ` (no dependency on a date crate).
pub fn iso_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_decides_what_is_retried() {
        assert!(transient(
            "H5Fopen(): unable to lock file, errno = 11, error message = 'Resource temporarily unavailable'"
        ));
        assert!(!transient(
            "H5Dwrite(): write failed, errno = 28, error message = 'No space left on device'"
        ));
        assert!(!transient("file write failed: errno = 2"));
        assert!(transient("H5Dwrite(): some library failure"));
    }
}
