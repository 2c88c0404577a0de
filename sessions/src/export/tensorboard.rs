//! `export --format tensorboard`: one directory per run, holding one event file that
//! TensorBoard (and so `wandb sync --sync-tensorboard`) reads.
//!
//! Each step, eval and probe result of a run becomes one event at its step and wall time,
//! with one scalar summary value per number it carries (tags in [`super::tag_table`]); a step
//! also carries its `tokens` and `phase`. Values are float32, as TensorBoard stores scalars.

use std::io::Write;
use std::path::Path;

use super::tfrecord::{put_record, scalars_event, version_event};
use super::{Export, Kind, PHASE_TAG, TOKENS_TAG, Written, export_err};
use crate::error::Result;
use crate::layout::phase_code;

/// The name of a run's event file: `events.out.tfevents.<start secs>.<host>.<pid>.0`, the
/// form TensorBoard's own writers use (readers look for `tfevents` in the name).
pub fn file_name(start: f64) -> String {
    format!(
        "events.out.tfevents.{}.{}.{}.0",
        start.max(0.0) as u64,
        hostname(),
        std::process::id()
    )
}

/// Writes `export` under `out` (an existing, empty directory): `out/<run dir>/<event file>`.
pub fn write(export: &Export, out: &Path) -> Result<Written> {
    let mut written = Written {
        runs: export.runs.len(),
        ..Written::default()
    };
    let name = file_name(export.start);
    for run in &export.runs {
        let dir = out.join(&run.dir);
        std::fs::create_dir(&dir).map_err(|e| export_err(&dir, e))?;
        let mut bytes = Vec::new();
        put_record(&mut bytes, &version_event(export.start));
        let mut tags: Vec<(&str, f32)> = Vec::new();
        for r in &run.records {
            tags.clear();
            if let Kind::Step { tokens, phase } = r.kind {
                tags.push((TOKENS_TAG, tokens as f32));
                tags.push((PHASE_TAG, f32::from(phase_code(phase))));
            }
            tags.extend(
                r.values
                    .iter()
                    .map(|&(i, v)| (run.columns[i].tag.as_str(), v as f32)),
            );
            if tags.is_empty() {
                continue;
            }
            put_record(
                &mut bytes,
                &scalars_event(r.wall_time, r.step, tags.iter().copied()),
            );
            written.records += 1;
            written.values += tags.len();
        }
        let path = dir.join(&name);
        let mut f = std::fs::File::create(&path).map_err(|e| export_err(&path, e))?;
        f.write_all(&bytes).map_err(|e| export_err(&path, e))?;
        f.sync_all().map_err(|e| export_err(&path, e))?;
        written.files += 1;
    }
    Ok(written)
}

/// This machine's host name, reduced to characters that are safe in a file name.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let safe: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if safe.is_empty() {
        "localhost".into()
    } else {
        safe
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Column, Record, RunTable};
    use super::*;
    use crate::Phase;

    /// Reads back the records of an event file, checking each one's framing and checksums.
    fn records(bytes: &[u8]) -> Vec<Vec<u8>> {
        use super::super::tfrecord::masked_crc32c;
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let len_bytes = &bytes[i..i + 8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[i + 8..i + 12].try_into().unwrap());
            assert_eq!(crc, masked_crc32c(len_bytes));
            let data = &bytes[i + 12..i + 12 + len];
            let crc = u32::from_le_bytes(bytes[i + 12 + len..i + 16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc32c(data));
            out.push(data.to_vec());
            i += 16 + len;
        }
        out
    }

    #[test]
    fn one_event_file_per_run_with_a_record_per_step_eval_and_probe() {
        let col = |n: &str, t: &str| Column {
            name: n.into(),
            tag: t.into(),
        };
        let run = RunTable {
            id: 0,
            name: "trunk".into(),
            dir: "run0-trunk".into(),
            columns: vec![col("loss", "loss/train"), col("val_loss", "loss/val")],
            records: vec![
                Record {
                    step: 1,
                    wall_time: 10.5,
                    kind: Kind::Step {
                        tokens: 64,
                        phase: Phase::Warmup,
                    },
                    values: vec![(0, 3.5)],
                },
                Record {
                    step: 1,
                    wall_time: 10.5,
                    kind: Kind::Eval { tokens: 64 },
                    values: vec![(1, 3.25)],
                },
                // A probe result with nothing left to write (all NaN) is skipped.
                Record {
                    step: 1,
                    wall_time: 10.5,
                    kind: Kind::Probe,
                    values: vec![],
                },
            ],
        };
        let export = Export {
            start: 10.0,
            runs: vec![run],
            events: 4,
            cut_at: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let w = write(&export, dir.path()).unwrap();
        assert_eq!(
            w,
            Written {
                runs: 1,
                files: 1,
                records: 2,
                values: 4
            }
        );
        let files: Vec<_> = std::fs::read_dir(dir.path().join("run0-trunk"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1);
        let name = files[0].file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("events.out.tfevents.10."), "{name}");
        let recs = records(&std::fs::read(&files[0]).unwrap());
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0], version_event(10.0));
        assert_eq!(
            recs[1],
            scalars_event(
                10.5,
                1,
                [("tokens", 64.0), ("phase", 0.0), ("loss/train", 3.5)]
            )
        );
        assert_eq!(recs[2], scalars_event(10.5, 1, [("loss/val", 3.25)]));
    }
}
