//! `export --format csv`: one tidy CSV per run, `<run dir>.csv`, with a header
//! `step,tokens,phase,<column>...` and one row per step.
//!
//! A step's row holds its per-step quantities, and the validation loss and probe scalars
//! measured at that step; a cell is empty where the run has no such value at that step (an
//! eval or probe that did not run then, a NaN: an undefined quantity). A step with an eval or
//! a probe result but no training step of its own (none in practice) has a row with an empty
//! phase. Numbers are written in the shortest form that reads back to the same float64;
//! infinities as `inf` and `-inf`. Should a step hold two results of one quantity, the later
//! one is written.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use super::{Export, Kind, RunTable, Written, export_err};
use crate::Phase;
use crate::error::Result;

/// One step's row.
#[derive(Default)]
struct Row {
    tokens: Option<u64>,
    phase: Option<Phase>,
    values: Vec<Option<f64>>,
}

/// Writes `export` under `out` (an existing directory): `out/<run dir>.csv` per run.
pub fn write(export: &Export, out: &Path) -> Result<Written> {
    let mut written = Written {
        runs: export.runs.len(),
        ..Written::default()
    };
    for run in &export.runs {
        let path = out.join(format!("{}.csv", run.dir));
        let (text, rows, values) = render(run);
        let mut f = std::fs::File::create(&path).map_err(|e| export_err(&path, e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| export_err(&path, e))?;
        f.sync_all().map_err(|e| export_err(&path, e))?;
        written.files += 1;
        written.records += rows;
        written.values += values;
    }
    Ok(written)
}

/// A run's CSV text, its number of rows and of values.
fn render(run: &RunTable) -> (String, usize, usize) {
    let mut rows: BTreeMap<u64, Row> = BTreeMap::new();
    for r in &run.records {
        let row = rows.entry(r.step).or_insert_with(|| Row {
            values: vec![None; run.columns.len()],
            ..Row::default()
        });
        match r.kind {
            Kind::Step { tokens, phase } => {
                row.tokens = Some(tokens);
                row.phase = Some(phase);
            }
            Kind::Eval { tokens } => {
                row.tokens.get_or_insert(tokens);
            }
            Kind::Probe => {}
        }
        for &(i, v) in &r.values {
            row.values[i] = Some(v);
        }
    }
    let mut text = String::from("step,tokens,phase");
    for c in &run.columns {
        text.push(',');
        text.push_str(&field(&c.name));
    }
    text.push('\n');
    let mut values = 0;
    for (step, row) in &rows {
        text.push_str(&step.to_string());
        text.push(',');
        if let Some(t) = row.tokens {
            text.push_str(&t.to_string());
        }
        text.push(',');
        if let Some(p) = row.phase {
            text.push_str(p.as_str());
        }
        for v in &row.values {
            text.push(',');
            if let Some(v) = v {
                text.push_str(&number(*v));
                values += 1;
            }
        }
        text.push('\n');
    }
    (text, rows.len(), values)
}

/// A float64 as the shortest decimal that reads back to it (`inf`, `-inf` for infinities).
fn number(v: f64) -> String {
    format!("{v}")
}

/// A CSV field, quoted where it holds a comma, a quote or a line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Column, Record};
    use super::*;

    fn col(n: &str) -> Column {
        Column {
            name: n.into(),
            tag: String::new(),
        }
    }

    #[test]
    fn one_row_per_step_with_evals_and_probes_in_their_columns() {
        let step = |s: u64, loss: f64| Record {
            step: s,
            wall_time: 0.0,
            kind: Kind::Step {
                tokens: s * 64,
                phase: if s < 3 { Phase::Warmup } else { Phase::Decay },
            },
            values: vec![(0, loss)],
        };
        let run = RunTable {
            id: 2,
            name: "exp 60 @540".into(),
            dir: "run2-exp-60-@540".into(),
            columns: vec![
                col("loss"),
                col("val_loss"),
                col("probe.noise.b_simple"),
                col("a,\"b\""),
            ],
            records: vec![
                step(1, 0.1),
                step(2, 1.0 / 3.0),
                Record {
                    step: 2,
                    wall_time: 0.0,
                    kind: Kind::Eval { tokens: 128 },
                    values: vec![(1, 2.5)],
                },
                step(3, f64::INFINITY),
                Record {
                    step: 3,
                    wall_time: 0.0,
                    kind: Kind::Probe,
                    values: vec![(2, 1e-300)],
                },
            ],
        };
        let (text, rows, values) = render(&run);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "step,tokens,phase,loss,val_loss,probe.noise.b_simple,\"a,\"\"b\"\"\"",
                "1,64,warmup,0.1,,,",
                "2,128,warmup,0.3333333333333333,2.5,,",
                &format!("3,192,decay,inf,,{},", 1e-300),
            ]
        );
        assert_eq!((rows, values), (3, 5));
        // Full precision: every number reads back to the same float64.
        let back: f64 = lines[2].split(',').nth(3).unwrap().parse().unwrap();
        assert_eq!(back, 1.0 / 3.0);
        let back: f64 = lines[3].split(',').nth(5).unwrap().parse().unwrap();
        assert_eq!(back, 1e-300);
        assert_eq!("inf".parse::<f64>().unwrap(), f64::INFINITY);

        let dir = tempfile::tempdir().unwrap();
        let export = Export {
            start: 0.0,
            runs: vec![run],
            events: 5,
            cut_at: None,
        };
        let w = write(&export, dir.path()).unwrap();
        assert_eq!((w.files, w.records), (1, 3));
        let on_disk = std::fs::read_to_string(dir.path().join("run2-exp-60-@540.csv")).unwrap();
        assert_eq!(on_disk, text);
    }
}
