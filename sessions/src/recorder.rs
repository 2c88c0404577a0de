//! The recorder: a named writer thread that turns the `RunEvent` stream into a session file.
//!
//! The training side sends events through a bounded channel and waits only when the channel is
//! full; nothing is ever dropped. The writer buffers rows and appends them to the HDF5 datasets
//! at least twice a second, then flushes, so a reader (`wsdscope replay`, or
//! `h5py.File(f, "r", swmr=True)`) sees the file grow and a killed process loses at most the
//! last half second. The file is written in SWMR mode; when a new run (a branch) needs new
//! groups, the writer briefly leaves SWMR mode, creates them and starts SWMR again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdf5::types::VarLenUnicode;
use hdf5::{Dataset, File, Group, H5Type, Location};

use crate::error::{Error, Result, write_err};
use crate::layout::*;
use crate::{EVENT_SCHEMA_VERSION, Phase, ProbeResult, RunEvent, RunId, RunStart, StepMetrics};

/// How often buffered rows reach the file at the latest.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// Events the training side may run ahead of the writer before it waits.
pub const CHANNEL_CAPACITY: usize = 8192;

/// What a finished recording holds.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordSummary {
    pub path: PathBuf,
    pub events: u64,
    pub runs: usize,
    pub bytes: u64,
}

/// Handle to the writer thread of one session file.
pub struct Recorder {
    path: PathBuf,
    tx: Option<SyncSender<RunEvent>>,
    thread: Option<JoinHandle<Result<RecordSummary>>>,
}

impl Recorder {
    /// Creates `path` (which must not exist yet) and starts the writer thread. Fails before any
    /// training starts if the file cannot be created.
    pub fn create(path: &Path) -> Result<Self> {
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
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let (ready_tx, ready_rx) = mpsc::channel();
        let owned = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("wsdscope-recorder".into())
            .spawn(move || {
                let writer = match SessionWriter::create(&owned) {
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

    /// Closes the channel, waits for the writer to write everything and close the file.
    pub fn finish(mut self) -> Result<RecordSummary> {
        self.tx.take();
        let thread = self.thread.take().expect("recorder not finished");
        thread
            .join()
            .unwrap_or_else(|_| Err(write_err(&self.path, "the writer thread panicked")))
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

fn h5(path: &Path) -> impl Fn(hdf5::Error) -> Error + '_ {
    move |e| write_err(path, e)
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

/// Appends `rows` to a 1-D dataset of current length `len`.
fn append_1d<T: H5Type>(ds: &Dataset, len: usize, rows: &[T]) -> hdf5::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    ds.resize(len + rows.len())?;
    ds.write_slice(rows, len..len + rows.len())
}

/// Buffered rows of one run, not yet in the file.
#[derive(Default)]
struct Pending {
    u64s: [Vec<u64>; 3], // seq, step, tokens
    phase: Vec<u8>,
    f64s: [Vec<f64>; F64_METRICS.len()],
    /// Row-major rows of the 2-D datasets of [`WIDE`].
    wide: [Vec<f64>; WIDE.len()],
    eval_u64s: [Vec<u64>; 3], // seq, step, tokens
    eval_loss: Vec<f64>,
    /// Probe results waiting to be appended to their `probes/<probe>` datasets.
    probes: Vec<(u64, ProbeResult)>,
}

impl Pending {
    fn rows(&self) -> usize {
        self.phase.len()
    }

    fn clear(&mut self) {
        *self = Pending::default();
    }
}

struct RunDatasets {
    u64s: [Dataset; 3],
    phase: Dataset,
    f64s: Vec<Dataset>,
    wide: Vec<Dataset>,
    eval_u64s: [Dataset; 3],
    eval_loss: Dataset,
}

impl RunDatasets {
    fn open(file: &File, id: RunId) -> hdf5::Result<Self> {
        let g = file.group(&run_group(id))?;
        let e = g.group(EVAL)?;
        Ok(RunDatasets {
            u64s: [g.dataset("seq")?, g.dataset("step")?, g.dataset("tokens")?],
            phase: g.dataset(PHASE)?,
            f64s: F64_METRICS
                .iter()
                .map(|m| g.dataset(m))
                .collect::<hdf5::Result<_>>()?,
            wide: WIDE
                .iter()
                .map(|m| g.dataset(m))
                .collect::<hdf5::Result<_>>()?,
            eval_u64s: [e.dataset("seq")?, e.dataset("step")?, e.dataset("tokens")?],
            eval_loss: e.dataset("val_loss")?,
        })
    }
}

/// The datasets of one probe kind of one run: `seq`, `step` and one per scalar.
struct ProbeDatasets {
    rows: usize,
    /// Scalar names, in dataset creation order.
    scalars: Vec<String>,
    open: Option<(Dataset, Dataset, Vec<Dataset>)>,
}

/// A probe or scalar name made safe as an HDF5 link name.
fn h5_name(s: &str) -> String {
    s.replace(['/', '.'], "_")
}

struct RunState {
    /// Columns of each [`WIDE`] dataset.
    widths: [usize; WIDE.len()],
    rows: usize,
    eval_rows: usize,
    pending: Pending,
    ds: Option<RunDatasets>,
    probes: BTreeMap<String, ProbeDatasets>,
}

struct SessionWriter {
    path: PathBuf,
    file: Option<File>,
    events_ds: Option<Dataset>,
    events_len: usize,
    pending_log: Vec<u8>,
    runs: BTreeMap<RunId, RunState>,
    swmr: bool,
    seq: u64,
}

impl SessionWriter {
    fn create(path: &Path) -> Result<Self> {
        let file = File::with_options()
            .with_fapl(|p| p.libver_v110())
            .create_excl(path)
            .map_err(h5(path))?;
        let root: &Location = &file;
        put(root, "format_version", FORMAT_VERSION).map_err(h5(path))?;
        put(root, "event_schema_version", EVENT_SCHEMA_VERSION).map_err(h5(path))?;
        put_str(
            root,
            "producer",
            concat!("wsdscope ", env!("CARGO_PKG_VERSION")),
        )
        .map_err(h5(path))?;
        put_str(root, "created", &iso_now()).map_err(h5(path))?;
        let events = file
            .new_dataset::<u8>()
            .chunk(1 << 16)
            .deflate(DEFLATE)
            .shape(0..)
            .create(EVENTS)
            .map_err(h5(path))?;
        file.create_group(RUNS).map_err(h5(path))?;
        file.flush().map_err(h5(path))?;
        Ok(SessionWriter {
            path: path.to_path_buf(),
            file: Some(file),
            events_ds: Some(events),
            events_len: 0,
            pending_log: Vec::new(),
            runs: BTreeMap::new(),
            swmr: false,
            seq: 0,
        })
    }

    fn file(&self) -> &File {
        self.file.as_ref().expect("file open")
    }

    /// The writer loop: handle events, flush on a timer, finish when the channel closes.
    fn run(mut self, rx: Receiver<RunEvent>) -> Result<RecordSummary> {
        let mut last_flush = Instant::now();
        loop {
            let timeout = FLUSH_INTERVAL.saturating_sub(last_flush.elapsed());
            match rx.recv_timeout(timeout) {
                Ok(ev) => self.handle(ev)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_flush.elapsed() >= FLUSH_INTERVAL {
                self.flush()?;
                last_flush = Instant::now();
            }
        }
        self.flush()?;
        let summary = RecordSummary {
            path: self.path.clone(),
            events: self.seq,
            runs: self.runs.len(),
            bytes: 0,
        };
        let path = self.path.clone();
        self.close()?;
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok(RecordSummary { bytes, ..summary })
    }

    fn handle(&mut self, ev: RunEvent) -> Result<()> {
        let seq = self.seq;
        self.seq += 1;
        match ev {
            RunEvent::Step(m) => self.push_step(seq, &m),
            RunEvent::Eval {
                run,
                step,
                val_loss,
                tokens,
            } => {
                let r = self.run_mut(run)?;
                r.pending.eval_u64s[0].push(seq);
                r.pending.eval_u64s[1].push(step);
                r.pending.eval_u64s[2].push(tokens);
                r.pending.eval_loss.push(val_loss);
                Ok(())
            }
            other => {
                if let RunEvent::RunStart(s) = &other
                    && !self.runs.contains_key(&s.run)
                {
                    self.add_run(s)?;
                }
                if let RunEvent::Probe(p) = &other {
                    self.add_probe_datasets(p)?;
                    self.run_mut(p.run)?.pending.probes.push((seq, p.clone()));
                }
                let line = serde_json::json!({ "seq": seq, "event": other });
                self.pending_log
                    .extend_from_slice(line.to_string().as_bytes());
                self.pending_log.push(b'\n');
                if matches!(other, RunEvent::End { .. } | RunEvent::RunStart(_)) {
                    // Starts and ends reach the file at once: readers key on them.
                    self.flush()?;
                }
                Ok(())
            }
        }
    }

    fn run_mut(&mut self, run: RunId) -> Result<&mut RunState> {
        let path = self.path.clone();
        self.runs
            .get_mut(&run)
            .ok_or_else(|| write_err(path, format!("event for run {run} before its run_start")))
    }

    fn push_step(&mut self, seq: u64, m: &StepMetrics) -> Result<()> {
        let r = self.run_mut(m.run)?;
        let wide = [
            &m.grad_norm_per_layer,
            &m.grad_norm_per_group,
            &m.max_update,
        ];
        for ((name, row), want) in WIDE.iter().zip(wide).zip(r.widths) {
            if row.len() != want {
                let got = row.len();
                return Err(write_err(
                    &self.path,
                    format!(
                        "step {} of run {} has {got} values of {name}, expected {want}",
                        m.step, m.run
                    ),
                ));
            }
        }
        let p = &mut r.pending;
        p.u64s[0].push(seq);
        p.u64s[1].push(m.step);
        p.u64s[2].push(m.tokens);
        p.phase.push(match m.phase {
            Phase::Warmup => 0,
            Phase::Stable => 1,
            Phase::Decay => 2,
        });
        let g = m.geometry;
        for (buf, v) in p.f64s.iter_mut().zip([
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
            buf.push(v);
        }
        for (buf, row) in p.wide.iter_mut().zip(wide) {
            buf.extend_from_slice(row);
        }
        Ok(())
    }

    /// Creates the `probes/<probe>` datasets a result needs that do not exist yet (outside
    /// SWMR mode, as HDF5 requires); a scalar first seen late is NaN in earlier rows.
    fn add_probe_datasets(&mut self, p: &ProbeResult) -> Result<()> {
        let path = self.path.clone();
        let probe = h5_name(&p.probe);
        let r = self.run_mut(p.run)?;
        let known = r.probes.get(&probe);
        let missing: Vec<String> = p
            .scalars
            .keys()
            .map(|k| h5_name(k))
            .filter(|k| known.is_none_or(|d| !d.scalars.contains(k)))
            .collect();
        if known.is_some() && missing.is_empty() {
            return Ok(());
        }
        self.flush()?;
        if self.swmr {
            self.reopen_non_swmr()?;
        }
        let file = self.file.as_ref().expect("file open");
        let r = self.runs.get_mut(&p.run).expect("checked");
        let err = h5(&path);
        let gname = probe_group(p.run, &probe);
        let g = match file.group(&gname) {
            Ok(g) => g,
            Err(_) => {
                let g = file.create_group(&gname).map_err(&err)?;
                new_1d::<u64>(&g, "seq").map_err(&err)?;
                new_1d::<u64>(&g, "step").map_err(&err)?;
                g
            }
        };
        let d = r.probes.entry(probe).or_insert(ProbeDatasets {
            rows: 0,
            scalars: Vec::new(),
            open: None,
        });
        for k in missing {
            let ds = new_f64(&g, &k).map_err(&err)?;
            if d.rows > 0 {
                append_1d(&ds, 0, &vec![f64::NAN; d.rows]).map_err(&err)?;
            }
            d.scalars.push(k);
        }
        self.start_swmr()
    }

    /// Creates the group of a new run, leaving SWMR mode for it if needed.
    fn add_run(&mut self, s: &RunStart) -> Result<()> {
        let widths = [
            s.model.layers,
            s.param_groups.len(),
            s.tracked_tensors.len(),
        ];
        self.flush()?;
        if self.swmr {
            self.reopen_non_swmr()?;
        }
        let path = self.path.clone();
        let file = self.file.as_ref().expect("file open");
        if self.runs.is_empty() {
            put_str(file, "config", &s.config.to_string()).map_err(h5(&path))?;
        }
        create_run_group(file, s).map_err(h5(&path))?;
        self.runs.insert(
            s.run,
            RunState {
                widths,
                rows: 0,
                eval_rows: 0,
                pending: Pending::default(),
                ds: None,
                probes: BTreeMap::new(),
            },
        );
        self.start_swmr()
    }

    fn reopen_non_swmr(&mut self) -> Result<()> {
        for r in self.runs.values_mut() {
            r.ds = None;
            for d in r.probes.values_mut() {
                d.open = None;
            }
        }
        self.events_ds = None;
        if let Some(f) = self.file.take() {
            f.close().map_err(h5(&self.path))?;
        }
        let f = File::with_options()
            .with_fapl(|p| p.libver_v110())
            .open_rw(&self.path)
            .map_err(h5(&self.path))?;
        self.file = Some(f);
        self.swmr = false;
        Ok(())
    }

    fn start_swmr(&mut self) -> Result<()> {
        let path = self.path.clone();
        let file = self.file.as_ref().expect("file open");
        file.flush().map_err(h5(&path))?;
        // Every dataset a SWMR writer appends to must be open before SWMR starts.
        self.events_ds = Some(file.dataset(EVENTS).map_err(h5(&path))?);
        for (id, r) in self.runs.iter_mut() {
            r.ds = Some(RunDatasets::open(file, *id).map_err(h5(&path))?);
            for (probe, d) in r.probes.iter_mut() {
                d.open = Some(open_probe(file, *id, probe, &d.scalars).map_err(h5(&path))?);
            }
        }
        file.start_swmr().map_err(h5(&path))?;
        self.swmr = true;
        Ok(())
    }

    /// Appends every buffered row and flushes the file.
    fn flush(&mut self) -> Result<()> {
        let path = self.path.clone();
        let err = h5(&path);
        if !self.pending_log.is_empty() {
            let ds = match &self.events_ds {
                Some(d) => d.clone(),
                None => self.file().dataset(EVENTS).map_err(&err)?,
            };
            append_1d(&ds, self.events_len, &self.pending_log).map_err(&err)?;
            self.events_len += self.pending_log.len();
            self.pending_log.clear();
        }
        for (id, r) in self.runs.iter_mut() {
            if r.pending.rows() == 0
                && r.pending.eval_loss.is_empty()
                && r.pending.probes.is_empty()
            {
                continue;
            }
            if r.ds.is_none() {
                r.ds =
                    Some(RunDatasets::open(self.file.as_ref().expect("open"), *id).map_err(&err)?);
            }
            let ds = r.ds.as_ref().expect("opened");
            let p = &r.pending;
            let n = p.rows();
            for (d, rows) in ds.u64s.iter().zip(&p.u64s) {
                append_1d(d, r.rows, rows).map_err(&err)?;
            }
            append_1d(&ds.phase, r.rows, &p.phase).map_err(&err)?;
            for (d, rows) in ds.f64s.iter().zip(&p.f64s) {
                append_1d(d, r.rows, rows).map_err(&err)?;
            }
            for ((d, rows), w) in ds.wide.iter().zip(&p.wide).zip(r.widths) {
                if n > 0 && w > 0 {
                    d.resize((r.rows + n, w)).map_err(&err)?;
                    let arr = ndarray::ArrayView2::from_shape((n, w), rows)
                        .map_err(|e| write_err(&path, e))?;
                    d.write_slice(arr, (r.rows..r.rows + n, ..)).map_err(&err)?;
                }
            }
            for (seq, probe) in &p.probes {
                let Some(d) = r.probes.get_mut(&h5_name(&probe.probe)) else {
                    continue;
                };
                if d.open.is_none() {
                    let f = self.file.as_ref().expect("open");
                    d.open =
                        Some(open_probe(f, *id, &h5_name(&probe.probe), &d.scalars).map_err(&err)?);
                }
                let (sq, st, cols) = d.open.as_ref().expect("opened");
                append_1d(sq, d.rows, &[*seq]).map_err(&err)?;
                append_1d(st, d.rows, &[probe.step]).map_err(&err)?;
                for (name, col) in d.scalars.iter().zip(cols) {
                    let v = probe
                        .scalars
                        .iter()
                        .find(|(k, _)| h5_name(k) == *name)
                        .map_or(f64::NAN, |(_, v)| *v);
                    append_1d(col, d.rows, &[v]).map_err(&err)?;
                }
                d.rows += 1;
            }
            let m = p.eval_loss.len();
            for (d, rows) in ds.eval_u64s.iter().zip(&p.eval_u64s) {
                append_1d(d, r.eval_rows, rows).map_err(&err)?;
            }
            append_1d(&ds.eval_loss, r.eval_rows, &p.eval_loss).map_err(&err)?;
            r.rows += n;
            r.eval_rows += m;
            r.pending.clear();
        }
        self.file().flush().map_err(&err)?;
        Ok(())
    }

    fn close(mut self) -> Result<()> {
        for r in self.runs.values_mut() {
            r.ds = None;
            r.probes.clear();
        }
        self.events_ds = None;
        if let Some(f) = self.file.take() {
            f.close().map_err(h5(&self.path))?;
        }
        Ok(())
    }
}

fn create_run_group(file: &File, s: &RunStart) -> hdf5::Result<()> {
    let g = file.create_group(&run_group(s.run))?;
    let loc: &Location = &g;
    put(loc, "id", s.run)?;
    put_str(loc, "name", &s.name)?;
    put(loc, "parent", s.parent.map(i64::from).unwrap_or(-1))?;
    put(
        loc,
        "fork_step",
        s.fork_step.map(|x| x as i64).unwrap_or(-1),
    )?;
    put(loc, "start_step", s.start_step)?;
    put(loc, "batch", s.batch as u64)?;
    put(loc, "seq_len", s.seq as u64)?;
    put_str(loc, "device", &s.device)?;
    put(loc, "threads", s.threads as u64)?;
    put(loc, "layers", s.model.layers as u64)?;
    put_str(
        loc,
        "model",
        &serde_json::to_string(&s.model).expect("json"),
    )?;
    put_str(loc, "data", &serde_json::to_string(&s.data).expect("json"))?;
    put_str(
        loc,
        "phases",
        &serde_json::to_string(&s.phases).expect("json"),
    )?;
    put_str(loc, "config", &s.config.to_string())?;
    for name in U64_COLUMNS {
        new_1d::<u64>(&g, name)?;
    }
    new_1d::<u8>(&g, PHASE)?;
    for name in F64_METRICS {
        new_f64(&g, name)?;
    }
    put_str(
        loc,
        "param_groups",
        &serde_json::to_string(&s.param_groups).expect("json"),
    )?;
    put_str(
        loc,
        "tracked_tensors",
        &serde_json::to_string(&s.tracked_tensors).expect("json"),
    )?;
    let widths = [
        s.model.layers,
        s.param_groups.len(),
        s.tracked_tensors.len(),
    ];
    for (name, w) in WIDE.iter().zip(widths) {
        // Wide rows are read once per replay, not column by column: compressing them costs
        // less and saves more than for the 1-D columns.
        g.new_dataset::<f64>()
            .chunk((CHUNK_2D, w.max(1)))
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

/// Opens the `seq`, `step` and scalar datasets of `runs/<id>/probes/<probe>`.
fn open_probe(
    file: &File,
    id: RunId,
    probe: &str,
    scalars: &[String],
) -> hdf5::Result<(Dataset, Dataset, Vec<Dataset>)> {
    let g = file.group(&probe_group(id, probe))?;
    Ok((
        g.dataset("seq")?,
        g.dataset("step")?,
        scalars
            .iter()
            .map(|k| g.dataset(k))
            .collect::<hdf5::Result<_>>()?,
    ))
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
