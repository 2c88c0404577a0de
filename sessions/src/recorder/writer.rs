//! The writer's state, and how each event is buffered into it: step and eval rows into their
//! run's slot, probe results into their kind's table, everything else into the event log.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hdf5::File;

use super::columns::Col;
use super::hooks::{PausePoint, TestHooks};
use super::plan::run_widths;
use super::report::Notice;
use super::tables::{ProbeTable, RunSlot};
use crate::error::{Result, write_err};
use crate::layout::{WIDE, f64_metrics, phase_code, wide_rows};
use crate::liveness::WriterLock;
use crate::{RunEvent, RunId, RunStart, StepMetrics};

pub(super) struct SessionWriter {
    pub(super) path: PathBuf,
    pub(super) file: Option<File>,
    pub(super) events: Col<u8>,
    pub(super) run_ids: Col<u32>,
    /// One entry per run slot of the file: the open datasets of runs that have started.
    pub(super) slots: Vec<Option<RunSlot>>,
    /// The widths of the run that took each slot (a slot is never reused).
    pub(super) taken: Vec<Option<[usize; WIDE.len()]>>,
    /// Runs that have ended: their datasets are closed after the next flush writes their
    /// last rows, so a long session with many branches holds only its live runs open.
    pub(super) ended: Vec<RunId>,
    /// Columns of the slots' [`WIDE`] datasets.
    pub(super) slot_widths: [usize; WIDE.len()],
    pub(super) probes: Vec<ProbeTable>,
    pub(super) seq: u64,
    /// Events before this seq are in the file (as of the last completed flush).
    pub(super) durable_seq: u64,
    pub(super) identity: Option<(u64, u64)>,
    /// How much the file grew in recent flushes (a decaying maximum), to keep a margin of
    /// free space.
    pub(super) max_growth: u64,
    /// Set when the run must stop (the disk is nearly full): the message the writer ends with.
    pub(super) stopping: Option<String>,
    pub(super) hooks: TestHooks,
    /// Pause in the middle of the next flush (a test asked to).
    pub(super) pause_in_flush: Option<PausePoint>,
    pub(super) notices: Arc<Mutex<Vec<Notice>>>,
    pub(super) _lock: Option<WriterLock>,
}

impl SessionWriter {
    pub(super) fn notice(&self, message: Notice) {
        self.notices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message);
    }

    /// Rows waiting for the file (log bytes counted per KiB).
    pub(super) fn pending_rows(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .map(RunSlot::pending_rows)
            .sum::<usize>()
            + self.probes.iter().map(|t| t.run.rows()).sum::<usize>()
            + self.events.buf.len() / 1024
    }

    /// Buffers one event. Returns whether it should reach the file at once (starts and ends,
    /// which readers key on).
    pub(super) fn handle(&mut self, ev: RunEvent) -> Result<bool> {
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
        let rows = wide_rows(m);
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
        slot.phase.buf.push(phase_code(m.phase));
        for (col, v) in slot.f64s.iter_mut().zip(f64_metrics(m)) {
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
}
