//! Reading a session file, finished or still growing: the run table, the exact event stream
//! the live run produced, full series for plots, and min/max buckets of any step range for the
//! UI, read in slices so a million-step dataset is never loaded whole.

use std::io::Read;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;
use hdf5::{Dataset, File, OpenMode};

use crate::buckets::{Bucket, BucketFolder};
use crate::error::{Error, Result, session_err};
use crate::layout::*;
use crate::{
    EndReason, ModelSummary, Phase, PhaseBounds, ProbeResult, RunEvent, RunId, RunStart,
    StepGeometry, StepMetrics,
};

const HDF5_SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";
/// Rows read per slice when scanning a dataset.
const SLICE: usize = 1 << 16;

/// One run of a session, as far as it has been recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub id: RunId,
    pub name: String,
    pub parent: Option<RunId>,
    pub fork_step: Option<u64>,
    pub model: ModelSummary,
    pub phases: PhaseBounds,
    pub start_step: u64,
    /// Recorded step rows.
    pub steps: u64,
    pub first_step: Option<u64>,
    pub last_step: Option<u64>,
    pub final_train_loss: Option<f64>,
    pub final_val_loss: Option<f64>,
    pub evals: u64,
    /// How the run ended, if it has.
    pub end: Option<(EndReason, Option<String>)>,
    pub wall_s: Option<f64>,
    pub config: serde_json::Value,
}

/// An open session file.
pub struct Session {
    path: PathBuf,
    file: File,
    format_version: u32,
    log: Vec<(u64, RunEvent)>,
    runs: Vec<RunInfo>,
    /// Set when the file lost its tail (a write failed, e.g. a full disk) and is read through
    /// a zero-padded temporary copy: (bytes present, bytes the header promises).
    recovered: Option<(u64, u64)>,
    _copy: Option<tempfile::TempDir>,
}

fn damaged(path: &Path, what: impl std::fmt::Display) -> Error {
    session_err(path, format!("is damaged or truncated ({what})"))
}

impl Session {
    /// Opens a session for reading. Works on a file another process is still writing (SWMR)
    /// and on one whose writer was killed: if a dead writer (SWMR or not) left the file
    /// marked as open for writing, the mark is cleared first.
    pub fn open(path: &Path) -> Result<Self> {
        check_is_hdf5(path)?;
        if let Some((len, eof)) = truncation(path) {
            // A write that failed part-way (a full disk) leaves the header promising bytes that
            // never arrived; everything flushed before it is intact. Read a copy padded to the
            // promised length; if even that fails, the file is truly cut short.
            return Self::open_padded(path, len, eof).map_err(|e| {
                session_err(
                    path,
                    format!(
                        "is truncated: it has {len} bytes but its header says {eof}, and what it has does not read ({e})"
                    ),
                )
            });
        }
        Self::open_file(path, path)
    }

    fn open_padded(path: &Path, len: u64, eof: u64) -> Result<Self> {
        let dir = tempfile::tempdir()
            .map_err(|e| session_err(path, format!("cannot make a temporary copy: {e}")))?;
        let copy = dir.path().join("recovered.h5");
        std::fs::copy(path, &copy)
            .map_err(|e| session_err(path, format!("cannot copy it: {e}")))?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&copy)
            .map_err(|e| session_err(path, e.to_string()))?;
        f.set_len(eof)
            .map_err(|e| session_err(path, e.to_string()))?;
        drop(f);
        let mut s = Self::open_file(path, &copy)?;
        s.events()?; // every dataset must read back
        s.recovered = Some((len, eof));
        s._copy = Some(dir);
        Ok(s)
    }

    /// Opens `actual` (the file itself, or a recovered copy) on behalf of `path`.
    fn open_file(path: &Path, actual: &Path) -> Result<Self> {
        let file = match open_swmr(actual) {
            Ok(f) => f,
            // An "open for writing" mark: left by a SWMR writer ("already open for write"), or
            // by a plain writer ("not already open for SWMR writing": format-2 recorders left
            // SWMR mode briefly to add datasets). Only a dead writer's mark is cleared; a live
            // writer is never touched.
            Err(e) if writer_mark(&e.to_string()) => {
                if crate::liveness::writer_alive(actual) == Some(true) {
                    return Err(session_err(
                        path,
                        "is open for plain (non-SWMR) writing by a live process; try again when it has finished",
                    ));
                }
                clear_status_flags(actual)?;
                open_swmr(actual).map_err(|e| damaged(path, e))?
            }
            Err(e) => return Err(damaged(path, e)),
        };
        let format_version = match file.attr("format_version") {
            Ok(a) => a.read_scalar::<u32>().map_err(|e| damaged(path, e))?,
            Err(_) => {
                return Err(session_err(
                    path,
                    "is an HDF5 file but not a wsdscope session (it has no format_version attribute)",
                ));
            }
        };
        if format_version > FORMAT_VERSION {
            return Err(session_err(
                path,
                format!(
                    "was written by a newer wsdscope (session format {format_version}; this one reads up to {FORMAT_VERSION}); upgrade wsdscope"
                ),
            ));
        }
        let mut s = Session {
            path: path.to_path_buf(),
            file,
            format_version,
            log: Vec::new(),
            runs: Vec::new(),
            recovered: None,
            _copy: None,
        };
        s.refresh()?;
        Ok(s)
    }

    /// `Some((present, promised))` bytes when the file lost its tail and was recovered.
    pub fn recovered(&self) -> Option<(u64, u64)> {
        self.recovered
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format_version(&self) -> u32 {
        self.format_version
    }

    /// Whether a recorder is writing this session now (see [`crate::liveness`]):
    /// `Some(false)` once it has finished or died, `None` where this cannot be told.
    pub fn writer_alive(&self) -> Option<bool> {
        if self.recovered.is_some() {
            return Some(false);
        }
        crate::liveness::writer_alive(&self.path)
    }

    /// A root string attribute (`producer`, `created`, `config`), if present.
    pub fn root_attr(&self, name: &str) -> Option<String> {
        let a = self.file.attr(name).ok()?;
        a.read_scalar::<VarLenUnicode>()
            .ok()
            .map(|v| v.as_str().to_string())
    }

    /// Re-reads the event log and dataset lengths (for a session that is still growing).
    pub fn refresh(&mut self) -> Result<()> {
        let path = self.path.clone();
        let events = self.file.dataset(EVENTS).map_err(|e| damaged(&path, e))?;
        let _ = events.refresh();
        let bytes: Vec<u8> = events.read_raw().map_err(|e| damaged(&path, e))?;
        let mut log = Vec::new();
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            #[derive(serde::Deserialize)]
            struct Entry {
                seq: u64,
                event: RunEvent,
            }
            match serde_json::from_slice::<Entry>(line) {
                Ok(e) => log.push((e.seq, e.event)),
                Err(e) => return Err(damaged(&path, format!("event log entry unreadable: {e}"))),
            }
        }
        let mut runs = Vec::new();
        for (_, ev) in &log {
            if let RunEvent::RunStart(s) = ev {
                runs.push(self.run_info(s)?);
            }
        }
        for (_, ev) in &log {
            if let RunEvent::End {
                run,
                reason,
                message,
                final_val_loss,
                wall_s,
                ..
            } = ev
                && let Some(r) = runs.iter_mut().find(|r| r.id == *run)
            {
                r.end = Some((*reason, message.clone()));
                r.wall_s = Some(*wall_s);
                if r.final_val_loss.is_none() {
                    r.final_val_loss = *final_val_loss;
                }
            }
        }
        self.log = log;
        self.runs = runs;
        Ok(())
    }

    fn dataset(&self, run: RunId, name: &str) -> Result<Dataset> {
        let ds = self
            .file
            .dataset(&format!("{}/{name}", run_group(run)))
            .map_err(|e| damaged(&self.path, e))?;
        let _ = ds.refresh();
        Ok(ds)
    }

    fn len(&self, ds: &Dataset) -> u64 {
        ds.shape().first().copied().unwrap_or(0) as u64
    }

    fn read_at<T: hdf5::H5Type + Copy>(&self, ds: &Dataset, i: u64) -> Result<T> {
        let v = ds
            .read_slice_1d::<T, _>(i as usize..i as usize + 1)
            .map_err(|e| damaged(&self.path, e))?;
        Ok(v[0])
    }

    fn run_info(&self, s: &RunStart) -> Result<RunInfo> {
        let step = self.dataset(s.run, "step")?;
        let n = self.len(&step);
        let ev_loss = self.dataset(s.run, &format!("{EVAL}/val_loss"))?;
        let m = self.len(&ev_loss);
        let (first_step, last_step, final_train_loss) = if n > 0 {
            let loss = self.dataset(s.run, "loss")?;
            (
                Some(self.read_at::<u64>(&step, 0)?),
                Some(self.read_at::<u64>(&step, n - 1)?),
                Some(self.read_at::<f64>(&loss, n - 1)?),
            )
        } else {
            (None, None, None)
        };
        Ok(RunInfo {
            id: s.run,
            name: s.name.clone(),
            parent: s.parent,
            fork_step: s.fork_step,
            model: s.model.clone(),
            phases: s.phases,
            start_step: s.start_step,
            steps: n,
            first_step,
            last_step,
            final_train_loss,
            final_val_loss: if m > 0 {
                Some(self.read_at::<f64>(&ev_loss, m - 1)?)
            } else {
                None
            },
            evals: m,
            end: None,
            wall_s: None,
            config: s.config.clone(),
        })
    }

    /// The runs recorded so far, trunk first.
    pub fn runs(&self) -> &[RunInfo] {
        &self.runs
    }

    pub fn run(&self, id: RunId) -> Result<&RunInfo> {
        self.runs.iter().find(|r| r.id == id).ok_or_else(|| {
            let ids: Vec<String> = self.runs.iter().map(|r| r.id.to_string()).collect();
            Error::Query(format!(
                "{}: no run {id}; runs: {}",
                self.path.display(),
                ids.join(", ")
            ))
        })
    }

    /// Every event in the order the live run produced it.
    pub fn events(&self) -> Result<Vec<RunEvent>> {
        // Each source (the log, every run's steps, every run's evals) is already in seq order;
        // merging them is much cheaper than sorting a million large events.
        let mut sources: Vec<Vec<(u64, RunEvent)>> = vec![self.log.clone()];
        for r in &self.runs {
            let id = r.id;
            let u64col = |name: &str| -> Result<Vec<u64>> { self.read_all(id, name) };
            let f64col = |name: &str| -> Result<Vec<f64>> { self.read_all(id, name) };
            let (seq, step, tokens) = (u64col("seq")?, u64col("step")?, u64col("tokens")?);
            let phase: Vec<u8> = self.read_all(id, PHASE)?;
            let n = seq.len().min(step.len()).min(tokens.len()).min(phase.len());
            // Format 1 lacks the geometry columns: NaN reads back as "no geometry".
            let cols: Vec<Vec<f64>> = F64_METRICS
                .iter()
                .enumerate()
                .map(|(j, m)| {
                    if j < F64_METRICS_V1 || self.has(id, m) {
                        f64col(m)
                    } else {
                        Ok(vec![f64::NAN; n])
                    }
                })
                .collect::<Result<_>>()?;
            let n = cols.iter().fold(n, |n, c| n.min(c.len()));
            let mut all = Vec::with_capacity(n);
            let wide: Vec<(usize, Vec<f64>)> = WIDE
                .iter()
                .map(|name| self.read_wide(id, name, n))
                .collect::<Result<_>>()?;
            // A run narrower than its slot (format 3) reads back at its own width.
            let own = self.run_start(id).map(crate::recorder::run_widths);
            let row = |k: usize, i: usize| -> Vec<f64> {
                let (w, data) = &wide[k];
                let keep = own.map_or(*w, |o| o[k].min(*w));
                if *w > 0 && data.len() >= (i + 1) * w {
                    data[i * w..i * w + keep].to_vec()
                } else {
                    Vec::new()
                }
            };
            for i in 0..n {
                let geometry = (!cols[7][i].is_nan()).then(|| StepGeometry {
                    cos: cols[7][i],
                    d1: cols[8][i],
                    d2: cols[9][i],
                    curvature: cols[10][i],
                });
                all.push((
                    seq[i],
                    RunEvent::Step(StepMetrics {
                        run: id,
                        step: step[i],
                        phase: match phase[i] {
                            0 => Phase::Warmup,
                            1 => Phase::Stable,
                            _ => Phase::Decay,
                        },
                        loss: cols[0][i],
                        lr: cols[1][i],
                        grad_norm: cols[2][i],
                        update_norm: cols[3][i],
                        param_norm: cols[4][i],
                        tokens: tokens[i],
                        tokens_per_s: cols[5][i],
                        step_ms: cols[6][i],
                        grad_norm_per_layer: row(0, i),
                        grad_norm_per_group: row(1, i),
                        geometry,
                        max_update: row(2, i),
                    }),
                ));
            }
            sources.push(all);
            let mut all = Vec::new();
            let (eseq, estep, etok): (Vec<u64>, Vec<u64>, Vec<u64>) = (
                self.read_all(id, &format!("{EVAL}/seq"))?,
                self.read_all(id, &format!("{EVAL}/step"))?,
                self.read_all(id, &format!("{EVAL}/tokens"))?,
            );
            let eloss: Vec<f64> = self.read_all(id, &format!("{EVAL}/val_loss"))?;
            let m = eseq.len().min(estep.len()).min(etok.len()).min(eloss.len());
            for i in 0..m {
                all.push((
                    eseq[i],
                    RunEvent::Eval {
                        run: id,
                        step: estep[i],
                        val_loss: eloss[i],
                        tokens: etok[i],
                    },
                ));
            }
            sources.push(all);
        }
        Ok(merge_by_seq(sources))
    }

    /// The `run_start` event of a run, from the event log.
    fn run_start(&self, run: RunId) -> Option<&RunStart> {
        self.log.iter().find_map(|(_, e)| match e {
            RunEvent::RunStart(s) if s.run == run => Some(s.as_ref()),
            _ => None,
        })
    }

    /// Whether run `run` has a dataset `name` (format-1 files lack the newer ones).
    fn has(&self, run: RunId, name: &str) -> bool {
        self.file.link_exists(&format!("{}/{name}", run_group(run)))
    }

    /// The first `n` rows of a 2-D per-step dataset, row-major, and its width (0 when the
    /// file has no such dataset).
    fn read_wide(&self, run: RunId, name: &str, n: usize) -> Result<(usize, Vec<f64>)> {
        if !self.has(run, name) {
            return Ok((0, Vec::new()));
        }
        let ds = self.dataset(run, name)?;
        let w = ds.shape().get(1).copied().unwrap_or(0);
        let rows = ds.shape().first().copied().unwrap_or(0).min(n);
        if w == 0 || rows == 0 {
            return Ok((w, Vec::new()));
        }
        let data = ds
            .read_slice_2d::<f64, _>((0..rows, ..))
            .map_err(|e| damaged(&self.path, e))?
            .iter()
            .copied()
            .collect();
        Ok((w, data))
    }

    /// The probe kinds recorded for `run` and their scalar names, in the order first seen,
    /// from the event log's `probe` events (every format keeps them whole there).
    pub fn probe_scalars(&self, run: RunId) -> Result<Vec<(String, Vec<String>)>> {
        self.run(run)?;
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for p in self.probes(run) {
            let i = match out.iter().position(|(k, _)| *k == p.probe) {
                Some(i) => i,
                None => {
                    out.push((p.probe.clone(), Vec::new()));
                    out.len() - 1
                }
            };
            for k in p.scalars.keys() {
                if !out[i].1.contains(k) {
                    out[i].1.push(k.clone());
                }
            }
        }
        Ok(out)
    }

    /// The probe results of a run, in the order they were recorded.
    pub fn probes(&self, run: RunId) -> impl Iterator<Item = &ProbeResult> {
        self.log.iter().filter_map(move |(_, e)| match e {
            RunEvent::Probe(p) if p.run == run => Some(p),
            _ => None,
        })
    }

    fn read_all<T: hdf5::H5Type>(&self, run: RunId, name: &str) -> Result<Vec<T>> {
        self.dataset(run, name)?
            .read_raw()
            .map_err(|e| damaged(&self.path, e))
    }

    /// The (step, value) series of one metric of one run: a per-step metric
    /// (see [`layout::F64_METRICS`](crate::layout::F64_METRICS)), `val_loss`, or
    /// `probe.<probe>.<scalar>` (NaN where a result of that probe lacks the scalar).
    pub fn series(&self, run: RunId, metric: &str) -> Result<(Vec<u64>, Vec<f64>)> {
        match self.metric(run, metric)? {
            Metric::Column { steps, values } => {
                let s: Vec<u64> = self.read_all(run, &steps)?;
                let v: Vec<f64> = self.read_all(run, &values)?;
                let n = s.len().min(v.len());
                Ok((s[..n].to_vec(), v[..n].to_vec()))
            }
            Metric::Probe { probe, scalar } => Ok(self
                .probes(run)
                .filter(|p| p.probe == probe)
                .map(|p| (p.step, p.scalars.get(&scalar).copied().unwrap_or(f64::NAN)))
                .unzip()),
        }
    }

    fn metric(&self, run: RunId, metric: &str) -> Result<Metric> {
        self.run(run)?;
        if metric == "val_loss" {
            return Ok(Metric::Column {
                steps: format!("{EVAL}/step"),
                values: format!("{EVAL}/val_loss"),
            });
        }
        if F64_METRICS.contains(&metric) {
            if !self.has(run, metric) {
                return Err(Error::Query(format!(
                    "{}: metric {metric:?} is not in this session (format {}); it came with format 2",
                    self.path.display(),
                    self.format_version
                )));
            }
            return Ok(Metric::Column {
                steps: "step".into(),
                values: metric.into(),
            });
        }
        // `probe.<probe>.<scalar>`: a scalar of a periodic probe.
        if let Some(rest) = metric.strip_prefix("probe.")
            && let Some((probe, scalar)) = rest.split_once('.')
        {
            let known = self.probe_scalars(run)?;
            if known
                .iter()
                .any(|(p, names)| p == probe && names.iter().any(|n| n == scalar))
            {
                return Ok(Metric::Probe {
                    probe: probe.into(),
                    scalar: scalar.into(),
                });
            }
            let known: Vec<String> = known
                .into_iter()
                .flat_map(|(p, names)| names.into_iter().map(move |n| format!("probe.{p}.{n}")))
                .collect();
            return Err(Error::Query(format!(
                "run {run} has no probe scalar {metric:?}; recorded: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        Err(Error::Query(format!(
            "unknown metric {metric:?}; allowed: {}, or probe.<probe>.<scalar>",
            metric_names().join(", ")
        )))
    }

    /// At most `n` min/max buckets of `metric` of `run` over the steps in `steps`, reading the
    /// datasets in slices (a binary search finds the step range; nothing else is read).
    pub fn buckets(
        &self,
        run: RunId,
        metric: &str,
        steps: RangeInclusive<u64>,
        n: usize,
    ) -> Result<Vec<Bucket>> {
        let (sp, vp) = match self.metric(run, metric)? {
            Metric::Column { steps, values } => (steps, values),
            Metric::Probe { .. } => {
                // Probe results are few: fold them from memory.
                let (s, v) = self.series(run, metric)?;
                let lo = s.partition_point(|x| x < steps.start()) as u64;
                let hi = s.partition_point(|x| x <= steps.end()) as u64;
                let mut folder = BucketFolder::new(lo, hi, n);
                folder.push(
                    lo,
                    &s[lo as usize..hi as usize],
                    &v[lo as usize..hi as usize],
                );
                return Ok(folder.finish());
            }
        };
        let step_ds = self.dataset(run, &sp)?;
        let val_ds = self.dataset(run, &vp)?;
        let len = self.len(&step_ds).min(self.len(&val_ds));
        let lo = self.lower_bound(&step_ds, len, *steps.start())?;
        let hi = self.lower_bound(&step_ds, len, steps.end().saturating_add(1))?;
        let mut folder = BucketFolder::new(lo, hi, n);
        let mut i = lo;
        while i < hi {
            let j = (i + SLICE as u64).min(hi);
            let r = i as usize..j as usize;
            let s = step_ds
                .read_slice_1d::<u64, _>(r.clone())
                .map_err(|e| damaged(&self.path, e))?;
            let v = val_ds
                .read_slice_1d::<f64, _>(r)
                .map_err(|e| damaged(&self.path, e))?;
            let (s, v) = (
                s.as_slice().expect("contiguous"),
                v.as_slice().expect("contiguous"),
            );
            folder.push(i, s, v);
            i = j;
        }
        Ok(folder.finish())
    }

    /// First index whose step is ≥ `step` (steps are increasing within a run).
    fn lower_bound(&self, ds: &Dataset, len: u64, step: u64) -> Result<u64> {
        let (mut lo, mut hi) = (0u64, len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.read_at::<u64>(ds, mid)? < step {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

/// Where a metric's values come from.
enum Metric {
    /// A run's datasets: a step column and a value column.
    Column { steps: String, values: String },
    /// The event log's probe results.
    Probe { probe: String, scalar: String },
}

/// Merges lists that are each sorted by seq into one event list in seq order.
fn merge_by_seq(sources: Vec<Vec<(u64, RunEvent)>>) -> Vec<RunEvent> {
    let total = sources.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total);
    let mut iters: Vec<std::iter::Peekable<std::vec::IntoIter<(u64, RunEvent)>>> = sources
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.into_iter().peekable())
        .collect();
    while !iters.is_empty() {
        // Few sources (3 per run at most): a linear scan for the smallest head is cheapest.
        let mut best = 0;
        let mut best_seq = u64::MAX;
        for (i, it) in iters.iter_mut().enumerate() {
            if let Some((seq, _)) = it.peek()
                && *seq < best_seq
            {
                best_seq = *seq;
                best = i;
            }
        }
        // Take the whole run of events from that source that precede every other head.
        let next_other = iters
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| *i != best)
            .filter_map(|(_, it)| it.peek().map(|(s, _)| *s))
            .min()
            .unwrap_or(u64::MAX);
        let it = &mut iters[best];
        while let Some((seq, _)) = it.peek() {
            if *seq > next_other {
                break;
            }
            out.push(it.next().expect("peeked").1);
        }
        if it.peek().is_none() {
            drop(iters.swap_remove(best));
        }
    }
    out
}

/// Opens for SWMR reading with a bounded number of metadata read retries: HDF5's default
/// (100, with exponential back-off) makes a damaged file look like a hang of many minutes.
fn open_swmr(path: &Path) -> hdf5::Result<File> {
    File::with_options()
        .with_fapl(|p| {
            p.metadata_read_attempts(READ_ATTEMPTS).chunk_cache(
                crate::recorder::CHUNK_CACHE_SLOTS,
                crate::recorder::CHUNK_CACHE_BYTES,
                1.0,
            )
        })
        .open_as(path, OpenMode::ReadSWMR)
}

/// Metadata read attempts of a SWMR reader (about one second of back-off in all).
const READ_ATTEMPTS: u32 = 10;

/// A version 2/3 superblock records the end-of-file address; a shorter file lost its tail.
/// Returns (length, promised length) for such a file. A live writer can be mid-flush, so a
/// short file is looked at twice.
fn truncation(path: &Path) -> Option<(u64, u64)> {
    let eof_of = |path: &Path| -> Option<(u64, u64)> {
        let mut f = std::fs::File::open(path).ok()?;
        let mut sb = [0u8; 36];
        f.read_exact(&mut sb).ok()?;
        // signature(8) version(1) offset size(1) length size(1) flags(1) base(8) ext(8) eof(8)
        let (version, offset_size) = (sb[8], sb[9]);
        if !(version == 2 || version == 3) || offset_size != 8 {
            return None;
        }
        let base = u64::from_le_bytes(sb[12..20].try_into().ok()?);
        let eof = u64::from_le_bytes(sb[28..36].try_into().ok()?);
        let len = f.metadata().ok()?.len();
        (len < base + eof).then_some((len, base + eof))
    };
    eof_of(path)?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    eof_of(path)
}

/// Names what is wrong with a path before HDF5 sees it.
fn check_is_hdf5(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| {
        session_err(
            path,
            if e.kind() == std::io::ErrorKind::NotFound {
                "no such file".to_string()
            } else {
                format!("cannot be read: {e}")
            },
        )
    })?;
    if meta.is_dir() {
        return Err(session_err(path, "is a directory, not a session file"));
    }
    if meta.len() == 0 {
        return Err(session_err(path, "is empty (0 bytes), not a session file"));
    }
    let mut head = [0u8; 8];
    let mut f =
        std::fs::File::open(path).map_err(|e| session_err(path, format!("cannot be read: {e}")))?;
    let n = f.read(&mut head).unwrap_or(0);
    if n < 8 || &head != HDF5_SIGNATURE {
        return Err(session_err(
            path,
            "is not an HDF5 file (no HDF5 signature), so not a session file",
        ));
    }
    Ok(())
}

/// Whether an open error means the superblock still carries a writer's status flags.
fn writer_mark(err: &str) -> bool {
    err.contains("already open for write") || err.contains("not already open for SWMR writing")
}

/// Clears the "open for writing" status flags a killed writer leaves in the superblock
/// (what `h5clear -s` does), so the file can be opened again.
fn clear_status_flags(path: &Path) -> Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    let fapl = hdf5::plist::FileAccess::build()
        .libver_v110()
        .finish()
        .map_err(|e| damaged(path, e))?;
    let name = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| session_err(path, "path contains a NUL byte"))?;
    let prop = c"clear_status_flags";
    hdf5::sync::sync(|| {
        let mut yes: hdf5_sys::h5::hbool_t = 1;
        // SAFETY: `fapl` is a live file-access property list; "clear_status_flags" is the
        // library's own (private) property that h5clear sets, taking an hbool_t by pointer;
        // the file id is closed before returning.
        unsafe {
            if hdf5_sys::h5p::H5Pset(fapl.id(), prop.as_ptr(), (&raw mut yes).cast()) < 0 {
                return Err(damaged(path, "cannot request clearing of its status flags"));
            }
            let fid = hdf5_sys::h5f::H5Fopen(name.as_ptr(), hdf5_sys::h5f::H5F_ACC_RDWR, fapl.id());
            if fid < 0 {
                return Err(damaged(
                    path,
                    "it is marked open for writing and the mark could not be cleared (is it read-only?)",
                ));
            }
            hdf5_sys::h5f::H5Fclose(fid);
        }
        Ok(())
    })
}
