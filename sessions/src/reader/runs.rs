//! The run table: one [`RunInfo`] per `run_start` in the event log, with how far the run's
//! datasets have grown.

use super::session::{RunInfo, Session};
use crate::error::{Error, Result};
use crate::layout::EVAL;
use crate::{RunEvent, RunId, RunStart};

impl Session {
    pub(super) fn run_info(&self, s: &RunStart) -> Result<RunInfo> {
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

    /// The `run_start` event of a run, from the event log.
    pub(super) fn run_start(&self, run: RunId) -> Option<&RunStart> {
        self.log.iter().find_map(|(_, e)| match e {
            RunEvent::RunStart(s) if s.run == run => Some(s.as_ref()),
            _ => None,
        })
    }
}
