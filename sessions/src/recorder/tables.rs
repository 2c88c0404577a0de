//! The per-run slots and the probe tables: every dataset a run or a probe kind appends to,
//! created with the file, and the open columns of those in use.

use hdf5::{File, Group};

use super::columns::{Col, new_1d, new_f64, put};
use crate::layout::{
    DEFLATE, EVAL, F64_METRICS, PHASE, RUN_INFO, U64_COLUMNS, WIDE, chunk_rows_2d, run_group,
};
use crate::vocabulary::{ProbeSpec, probe_columns};
use crate::{ProbeResult, RunId};

/// Creates run slot `id`: its group and every dataset a run appends to.
pub(super) fn create_slot(
    runs: &Group,
    id: RunId,
    widths: [usize; WIDE.len()],
) -> hdf5::Result<()> {
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
pub(super) struct RunSlot {
    /// The run's own widths of the [`WIDE`] rows.
    pub(super) widths: [usize; WIDE.len()],
    pub(super) info: Col<u8>,
    pub(super) u64s: [Col<u64>; 3], // seq, step, tokens
    pub(super) phase: Col<u8>,
    pub(super) f64s: Vec<Col<f64>>,
    pub(super) wide: Vec<Col<f64>>,
    pub(super) eval_u64s: [Col<u64>; 3], // seq, step, tokens
    pub(super) eval_loss: Col<f64>,
}

impl RunSlot {
    /// Opens the datasets of slot `id` for a run of `widths`.
    pub(super) fn open(file: &File, id: RunId, widths: [usize; WIDE.len()]) -> hdf5::Result<Self> {
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

    pub(super) fn pending_rows(&self) -> usize {
        self.phase.rows().max(self.eval_loss.rows())
    }

    pub(super) fn flush(&mut self) -> hdf5::Result<()> {
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
pub(super) struct ProbeTable {
    pub(super) spec: &'static ProbeSpec,
    pub(super) run: Col<u32>,
    pub(super) seq: Col<u64>,
    pub(super) step: Col<u64>,
    pub(super) scalars: Vec<(&'static str, Col<f64>)>,
}

impl ProbeTable {
    pub(super) fn create(probes: &Group, spec: &'static ProbeSpec) -> hdf5::Result<Self> {
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

    pub(super) fn push(&mut self, seq: u64, p: &ProbeResult) {
        self.run.buf.push(p.run);
        self.seq.buf.push(seq);
        self.step.buf.push(p.step);
        for (name, col) in &mut self.scalars {
            col.buf
                .push(p.scalars.get(*name).copied().unwrap_or(f64::NAN));
        }
    }

    pub(super) fn flush(&mut self) -> hdf5::Result<()> {
        self.run.flush()?;
        self.seq.flush()?;
        self.step.flush()?;
        for (_, c) in &mut self.scalars {
            c.flush()?;
        }
        Ok(())
    }
}
