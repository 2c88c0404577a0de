//! The HDF5 layout of a session file (format version 3), shared by the writer and the reader.
//! `docs/session-format.md` documents it for h5py/pandas users.
//!
//! ```text
//! /                       attrs: format_version, event_schema_version, producer, created,
//!                                config (JSON), run_slots
//! /events                 uint8[n]: the event log, JSON lines {"seq": N, "event": {...}}
//! /run_ids                uint32[r]: ids of the runs that have started, in order (format 3)
//! /runs/<id>/             one slot per possible run, 0..run_slots, all created with the file
//!     info                uint8[k]: the run's `run_start` event as JSON; empty: slot unused (3)
//!     seq, step, tokens   uint64[n]
//!     phase               uint8[n]   0 warmup, 1 stable, 2 decay
//!     loss, lr, grad_norm, update_norm, param_norm, tokens_per_s, step_ms   float64[n]
//!     grad_cos, d1, d2, curvature    float64[n]   NaN where undefined (format 2)
//!     grad_norm_per_layer float64[n, layers]
//!     grad_norm_per_group float64[n, groups]        (format 2)
//!     max_update          float64[n, tracked]       (format 2)
//!     eval/seq, eval/step, eval/tokens   uint64[m]
//!     eval/val_loss       float64[m]
//! /probes/<probe>/        one table per probe kind of the vocabulary, every run's rows (3)
//!     run                 uint32[k]
//!     seq, step           uint64[k]
//!     <scalar>            float64[k]   NaN where a result lacks it
//! ```
//! Format 2 kept run metadata in attributes of `runs/<id>` and probe tables per run under
//! `runs/<id>/probes/<probe>/`, created when first needed; format 3 creates every group and
//! dataset before the writer enters SWMR mode and only appends afterwards, so no reader can
//! ever block or observe a structural change. Probe series (loss slices, interpolation
//! curves) live in the event log's `probe` events. A format-1 file lacks the datasets marked
//! format 2; the reader fills them with NaN/empty.
//! Every dataset is chunked and extendable along its first axis; the integer ones are
//! shuffle+deflate compressed, the 2-D ones deflate compressed, the 1-D float64 ones not
//! (noisy floats barely compress and inflating them dominated the time to open a long
//! session). `seq` is the position of each event in the stream a live run produced, so the
//! reader can merge steps, evals and logged events back into exactly that stream.

use crate::{Phase, StepMetrics};

/// Bump on any incompatible change; readers refuse newer versions.
pub const FORMAT_VERSION: u32 = 3;

/// The root attribute `created`: UTC, to the second, `YYYY-MM-DDTHH:MM:SSZ`.
pub const CREATED_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

pub const EVENTS: &str = "events";
pub const RUNS: &str = "runs";
pub const EVAL: &str = "eval";

/// Per-step scalar metrics stored as float64: the `StepMetrics` fields in order, then the
/// step geometry (NaN where a step has none).
pub const F64_METRICS: [&str; 11] = [
    "loss",
    "lr",
    "grad_norm",
    "update_norm",
    "param_norm",
    "tokens_per_s",
    "step_ms",
    "grad_cos",
    "d1",
    "d2",
    "curvature",
];

/// How many of [`F64_METRICS`] every format-1 file has; the rest came with format 2.
pub const F64_METRICS_V1: usize = 7;

/// A step's values of [`F64_METRICS`], in order (NaN geometry at a step without any).
pub fn f64_metrics(m: &StepMetrics) -> [f64; F64_METRICS.len()] {
    let g = m.geometry;
    [
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
    ]
}

/// A step's rows of the [`WIDE`] datasets, in order.
pub fn wide_rows(m: &StepMetrics) -> [&[f64]; WIDE.len()] {
    [
        &m.grad_norm_per_layer,
        &m.grad_norm_per_group,
        &m.max_update,
    ]
}

/// A phase's code in the `phase` column: 0 warmup, 1 stable, 2 decay.
pub fn phase_code(p: Phase) -> u8 {
    match p {
        Phase::Warmup => 0,
        Phase::Stable => 1,
        Phase::Decay => 2,
    }
}

/// Per-step uint64 columns.
pub const U64_COLUMNS: [&str; 3] = ["seq", "step", "tokens"];

pub const PHASE: &str = "phase";
pub const GRAD_NORM_PER_LAYER: &str = "grad_norm_per_layer";
pub const GRAD_NORM_PER_GROUP: &str = "grad_norm_per_group";
pub const MAX_UPDATE: &str = "max_update";
/// The per-step 2-D datasets, in the order the writer keeps them.
pub const WIDE: [&str; 3] = [GRAD_NORM_PER_LAYER, GRAD_NORM_PER_GROUP, MAX_UPDATE];
pub const PROBES: &str = "probes";
/// Per-run dataset holding the run's `run_start` event as JSON (format 3).
pub const RUN_INFO: &str = "info";
/// Root dataset of the ids of the runs that have started (format 3).
pub const RUN_IDS: &str = "run_ids";
/// Root attribute: how many run slots the file has (format 3).
pub const RUN_SLOTS: &str = "run_slots";

/// Rows per chunk of 1-D datasets (32 KiB of float64).
pub const CHUNK: usize = 4096;
/// Rows per chunk of per-layer 2-D datasets: 512, fewer for very wide rows so that no chunk
/// exceeds [`MAX_CHUNK_BYTES`].
pub const CHUNK_2D: usize = 512;
/// The largest chunk of any dataset (the event log's; the 1-D columns' are 32 KiB).
pub const MAX_CHUNK_BYTES: usize = 1 << 16;
/// Deflate level of the integer columns (after byte shuffling; they compress very well).
/// Float64 columns are stored uncompressed (see the recorder).
pub const DEFLATE: u8 = 1;

/// Rows per chunk of a 2-D float64 dataset of `width` columns.
pub fn chunk_rows_2d(width: usize) -> usize {
    (MAX_CHUNK_BYTES / (8 * width.max(1))).clamp(1, CHUNK_2D)
}

/// Metric names a reader can query per run: the float64 step metrics and `val_loss`.
pub fn metric_names() -> Vec<&'static str> {
    let mut v = F64_METRICS.to_vec();
    v.push("val_loss");
    v
}

pub fn run_group(id: u32) -> String {
    format!("{RUNS}/{id}")
}

/// A probe kind's table: `probes/<probe>` (format 3).
pub fn probe_table(probe: &str) -> String {
    format!("{PROBES}/{probe}")
}
