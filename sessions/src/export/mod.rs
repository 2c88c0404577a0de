//! Exporting a session for other tools: TensorBoard event files ([`tensorboard`]) and one tidy
//! CSV per run ([`csv`]).
//!
//! Both formats are written from one [`Export`]: the session's event stream cut to what is
//! certainly complete, split into runs, each run with its columns (every per-step quantity,
//! the validation loss and every probe scalar it recorded) under stable names, and its records
//! (one per step, eval and probe result) in the order they happened. The names are listed here
//! once ([`STEP_TAGS`], [`WIDE_TAGS`], [`VAL_LOSS`], [`probe_column`]); `docs/session-format.md`
//! documents them, and a test checks that page against [`tag_table`].
//!
//! A session still being written is read as far as its writer has flushed: the export stops
//! before the first event whose position in the stream (`seq`) is missing, so a flush in
//! progress never leaves a step without the events that preceded it.

pub mod csv;
pub mod tensorboard;
pub mod tfrecord;

use std::path::Path;

use crate::error::{Error, Result};
use crate::layout::{f64_metrics, wide_rows};
use crate::vocabulary::{self, common};
use crate::{Phase, RunEvent, RunId, Session};

/// The per-step float64 metrics (in [`F64_METRICS`](crate::layout::F64_METRICS) order): (CSV column and dataset name,
/// TensorBoard tag).
pub const STEP_TAGS: [(&str, &str); 11] = [
    ("loss", "loss/train"),
    ("lr", "lr"),
    ("grad_norm", "norm/grad"),
    ("update_norm", "norm/update"),
    ("param_norm", "norm/param"),
    ("tokens_per_s", "perf/tokens_per_s"),
    ("step_ms", "perf/step_ms"),
    ("grad_cos", "geometry/grad_cos"),
    ("d1", "geometry/d1"),
    ("d2", "geometry/d2"),
    ("curvature", "geometry/curvature"),
];

/// The per-step 2-D datasets (in [`WIDE`](crate::layout::WIDE) order): (dataset, CSV column prefix, tag prefix).
/// A column is named by the prefix and the layer index, the parameter group or the tracked
/// tensor: `grad_norm_per_layer.0`, `norm/grad_layer/0`.
pub const WIDE_TAGS: [(&str, &str, &str); 3] = [
    (
        "grad_norm_per_layer",
        "grad_norm_per_layer.",
        "norm/grad_layer/",
    ),
    (
        "grad_norm_per_group",
        "grad_norm_per_group.",
        "norm/grad_group/",
    ),
    ("max_update", "max_update.", "max_update/"),
];

/// The validation loss: (CSV column, tag).
pub const VAL_LOSS: (&str, &str) = ("val_loss", "loss/val");

/// TensorBoard tags of a step's tokens and phase (0 warmup, 1 stable, 2 decay); the CSV has
/// them as its leading `tokens` and `phase` columns.
pub const TOKENS_TAG: &str = "tokens";
pub const PHASE_TAG: &str = "phase";

/// A probe scalar's (CSV column, tag): `probe.<probe>.<scalar>` (as `plot --metric` names
/// it) and `probe/<probe>/<scalar>`.
pub fn probe_column(probe: &str, scalar: &str) -> Column {
    Column {
        name: format!("probe.{probe}.{scalar}"),
        tag: format!("probe/{probe}/{scalar}"),
    }
}

/// One quantity of a run: its CSV column name and its TensorBoard tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub tag: String,
}

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Step { tokens: u64, phase: Phase },
    Eval { tokens: u64 },
    Probe,
}

/// One event of a run that carries numbers: a step, an eval or a probe result.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub step: u64,
    /// Unix seconds at which it happened (see [`Export::start`]).
    pub wall_time: f64,
    pub kind: Kind,
    /// (index into the run's columns, value); NaN values (undefined) are left out.
    pub values: Vec<(usize, f64)>,
}

/// One run of the session.
#[derive(Debug, Clone, PartialEq)]
pub struct RunTable {
    pub id: RunId,
    pub name: String,
    /// Its directory (TensorBoard) or file stem (CSV): [`run_dir`].
    pub dir: String,
    pub columns: Vec<Column>,
    pub records: Vec<Record>,
}

/// A session, ready to be written in any format.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    /// Unix seconds the session started (its `created` attribute). Record times are this plus
    /// the training and probe time before them: the step times (`step_ms`) and probe times
    /// (`seconds`) of every run, summed in the order the events happened.
    pub start: f64,
    pub runs: Vec<RunTable>,
    /// Events of the stream that were exported.
    pub events: u64,
    /// `Some(n)`: the file holds events after position `n` that are not exported, because
    /// event `n` has not reached it yet (its writer was flushing).
    pub cut_at: Option<u64>,
}

/// What a writer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Written {
    pub runs: usize,
    pub files: usize,
    /// TensorBoard events or CSV rows.
    pub records: usize,
    /// Scalar values written.
    pub values: usize,
}

/// A run's directory (TensorBoard) and file stem (CSV): `run<id>-<name>`, where every stretch
/// of characters other than ASCII letters, digits and `. _ @ +` in the name becomes one `-`
/// (`run0-trunk`, `run2-exp-60-@540`), at most 64 bytes of the name; `run<id>` alone when
/// nothing of the name is left.
pub fn run_dir(id: RunId, name: &str) -> String {
    let mut safe = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || "._@+".contains(c) {
            safe.push(c);
        } else if !safe.ends_with('-') {
            safe.push('-');
        }
    }
    let mut safe = safe.trim_matches('-').to_string();
    safe.truncate(64);
    let safe = safe.trim_end_matches('-');
    if safe.is_empty() {
        format!("run{id}")
    } else {
        format!("run{id}-{safe}")
    }
}

/// Opens the session file at `path` (a live one as far as it is written) and reads it into an
/// [`Export`].
pub fn read(path: &Path) -> Result<Export> {
    collect(&Session::open(path)?)
}

/// Reads `session` into an [`Export`].
pub fn collect(session: &Session) -> Result<Export> {
    let stream = session.events_with_seq()?;
    let complete = stream
        .iter()
        .enumerate()
        .take_while(|(i, (seq, _))| *seq == *i as u64)
        .count();
    // A gap in a live file is a flush in progress; in a file no writer holds, it is final
    // (an event the writer could not record) and everything after it is kept.
    let live = session.writer_alive() != Some(false);
    let (take, cut_at) = if complete < stream.len() && live {
        (complete, Some(complete as u64))
    } else {
        (stream.len(), None)
    };
    let start = start_time(session);
    let mut runs: Vec<RunTable> = Vec::new();
    let mut elapsed = 0.0;
    for (_, ev) in &stream[..take] {
        match ev {
            RunEvent::RunStart(s) if !runs.iter().any(|r| r.id == s.run) => {
                let columns = columns(session, s)?;
                runs.push(RunTable {
                    id: s.run,
                    name: s.name.clone(),
                    dir: run_dir(s.run, &s.name),
                    columns,
                    records: Vec::new(),
                });
            }
            RunEvent::Step(m) => {
                if m.step_ms.is_finite() && m.step_ms > 0.0 {
                    elapsed += m.step_ms / 1e3;
                }
                let Some(r) = runs.iter_mut().find(|r| r.id == m.run) else {
                    continue;
                };
                let mut values: Vec<(usize, f64)> =
                    f64_metrics(m).into_iter().enumerate().collect();
                let mut at = STEP_TAGS.len();
                for (k, row) in wide_rows(m).into_iter().enumerate() {
                    let width = r.wide_width(k);
                    values.extend(
                        row.iter()
                            .take(width)
                            .enumerate()
                            .map(|(j, v)| (at + j, *v)),
                    );
                    at += width;
                }
                values.retain(|(_, v)| !v.is_nan());
                r.records.push(Record {
                    step: m.step,
                    wall_time: start + elapsed,
                    kind: Kind::Step {
                        tokens: m.tokens,
                        phase: m.phase,
                    },
                    values,
                });
            }
            RunEvent::Eval {
                run,
                step,
                val_loss,
                tokens,
            } => {
                let Some(r) = runs.iter_mut().find(|r| r.id == *run) else {
                    continue;
                };
                let col = r.column(VAL_LOSS.0);
                r.records.push(Record {
                    step: *step,
                    wall_time: start + elapsed,
                    kind: Kind::Eval { tokens: *tokens },
                    values: col
                        .into_iter()
                        .zip([*val_loss])
                        .filter(|(_, v)| !v.is_nan())
                        .collect(),
                });
            }
            RunEvent::Probe(p) => {
                if let Some(s) = p.scalars.get(common::SECONDS)
                    && s.is_finite()
                    && *s > 0.0
                {
                    elapsed += s;
                }
                let Some(r) = runs.iter_mut().find(|r| r.id == p.run) else {
                    continue;
                };
                let values = p
                    .scalars
                    .iter()
                    .filter(|(_, v)| !v.is_nan())
                    .filter_map(|(k, v)| r.column(&probe_column(&p.probe, k).name).map(|i| (i, *v)))
                    .collect();
                r.records.push(Record {
                    step: p.step,
                    wall_time: start + elapsed,
                    kind: Kind::Probe,
                    values,
                });
            }
            _ => {}
        }
    }
    Ok(Export {
        start,
        runs,
        events: take as u64,
        cut_at,
    })
}

impl RunTable {
    fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// How many columns the run has for 2-D dataset `k` ([`WIDE_TAGS`]).
    fn wide_width(&self, k: usize) -> usize {
        let prefix = WIDE_TAGS[k].1;
        self.columns
            .iter()
            .filter(|c| c.name.starts_with(prefix))
            .count()
    }
}

/// A run's columns: the step metrics, its per-layer, per-group and per-tensor columns, the
/// validation loss, and the probe scalars it recorded (as `plot --metric` lists them).
fn columns(session: &Session, s: &crate::RunStart) -> Result<Vec<Column>> {
    let mut cols: Vec<Column> = STEP_TAGS
        .iter()
        .map(|(name, tag)| Column {
            name: (*name).into(),
            tag: (*tag).into(),
        })
        .collect();
    let layers: Vec<String> = (0..s.model.layers).map(|i| i.to_string()).collect();
    for ((_, csv, tag), names) in
        WIDE_TAGS
            .iter()
            .zip([&layers, &s.param_groups, &s.tracked_tensors])
    {
        cols.extend(names.iter().map(|n| Column {
            name: format!("{csv}{n}"),
            tag: format!("{tag}{n}"),
        }));
    }
    cols.push(Column {
        name: VAL_LOSS.0.into(),
        tag: VAL_LOSS.1.into(),
    });
    for (probe, scalars) in session.probe_scalars(s.run)? {
        cols.extend(scalars.iter().map(|k| probe_column(&probe, k)));
    }
    Ok(cols)
}

/// Unix seconds of the session's `created` attribute; the file's modification time if it has
/// none.
fn start_time(session: &Session) -> f64 {
    if let Some(t) = session.root_attr("created").as_deref().and_then(parse_utc) {
        return t as f64;
    }
    std::fs::metadata(session.path())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Unix seconds of a `YYYY-MM-DDTHH:MM:SSZ` time (the recorder's `created`).
fn parse_utc(s: &str) -> Option<i64> {
    time::PrimitiveDateTime::parse(s, crate::layout::CREATED_FORMAT)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

/// The TensorBoard tags an export can write, as the Markdown table `docs/session-format.md`
/// shows: the fixed ones, the per-layer/group/tensor families, and every probe scalar of the
/// vocabulary.
pub fn tag_table() -> String {
    let mut t = String::from("| tag | CSV column | what |\n|---|---|---|\n");
    let mut row = |tag: &str, col: &str, what: &str| {
        let what = what.replace('|', "\\|");
        t.push_str(&format!("| `{tag}` | `{col}` | {what} |\n"));
    };
    row(
        TOKENS_TAG,
        "tokens",
        "tokens trained on (float32: exact up to 2²⁴)",
    );
    row(
        PHASE_TAG,
        "phase",
        "0 warmup, 1 stable, 2 decay (CSV: the name)",
    );
    for (name, tag) in STEP_TAGS {
        row(tag, name, &format!("per-step `{name}`"));
    }
    for (ds, csv, tag) in WIDE_TAGS {
        let what = match ds {
            "grad_norm_per_layer" => "layer index",
            "grad_norm_per_group" => "parameter group",
            _ => "tracked tensor",
        };
        row(
            &format!("{tag}<{what}>"),
            &format!("{csv}<{what}>"),
            &format!("per-step `{ds}`, one per {what}"),
        );
    }
    row(VAL_LOSS.1, VAL_LOSS.0, "eval `val_loss`");
    for spec in vocabulary::PROBES {
        for k in vocabulary::probe_columns(spec) {
            let c = probe_column(spec.name, k);
            let what = match (spec.quantity(k), k) {
                (Some(q), _) if q.unit.is_empty() => q.about.to_string(),
                (Some(q), _) => format!("{} ({})", q.about, q.unit),
                (None, common::SECONDS) => "the probe's wall time (s)".into(),
                (None, common::COST_STEPS) => "that time in training steps".into(),
                (None, _) => String::new(),
            };
            row(&c.tag, &c.name, &format!("`{}`: {what}", spec.name));
        }
    }
    t
}

/// An I/O failure while writing `path`.
pub(crate) fn export_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Export {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{F64_METRICS, WIDE};

    #[test]
    fn step_tags_follow_the_layout() {
        let names: Vec<&str> = STEP_TAGS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, F64_METRICS);
        let wide: Vec<&str> = WIDE_TAGS.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(wide, WIDE);
    }

    #[test]
    fn run_dirs_are_filesystem_safe_and_stable() {
        assert_eq!(run_dir(0, "trunk"), "run0-trunk");
        assert_eq!(run_dir(2, "exp 60 @540"), "run2-exp-60-@540");
        assert_eq!(run_dir(3, "a/b\\c:d*e"), "run3-a-b-c-d-e");
        assert_eq!(run_dir(4, " ¡¿ "), "run4");
        assert_eq!(run_dir(5, ""), "run5");
        let long = run_dir(6, &"x".repeat(500));
        assert_eq!(long.len(), "run6-".len() + 64);
    }

    #[test]
    fn utc_times_parse_back() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc("2000-03-01T00:00:01Z"), Some(951_868_801));
        assert_eq!(parse_utc("2026-12-07T01:46:52Z"), Some(1_796_608_012));
        assert_eq!(parse_utc("2026-12-07 01:46:52"), None);
        assert_eq!(parse_utc("2026-13-07T01:46:52Z"), None);
        // What the recorder writes reads back as now.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let written = crate::recorder::iso_now();
        assert_eq!(written.len(), 20, "{written}");
        let back = parse_utc(&written).unwrap();
        assert!((back - now).abs() <= 2, "{written}: {back} vs {now}");
    }

    #[test]
    fn event_log_numbers_read_back_exactly() {
        // Probe scalars come from the event log's JSON: each must parse back to the float64
        // that was written, or an export would differ from the session in the last digit.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x >> 2 | 0x3f00_0000_0000_0000);
            let back: f64 = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{v:e}");
        }
    }

    #[test]
    fn the_documented_tag_table_is_the_one_the_code_writes() {
        let doc = include_str!("../../../docs/session-format.md");
        let table = tag_table();
        assert!(
            doc.contains(&table),
            "docs/session-format.md must hold this table verbatim:\n{table}"
        );
    }
}
