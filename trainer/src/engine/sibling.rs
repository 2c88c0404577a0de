//! Sibling runs: runs that start at step 0 beside the trunk from the trunk's initial weights
//! (where the shape is the same; another shape gets its own μP init from its seed) and read
//! the trunk's batches, differing from it only in the settings their plan names — a
//! controlled comparison (WSD against cosine, an lr sweep, a μP width check) in one session.

use std::sync::Arc;

use candle_core::DType;
use wsdscope_events::RunId;

use super::trainer::Trainer;
use crate::collective;
use crate::config::SiblingPlan;
use crate::error::{Error, Result};
use crate::model::MiniCpm;

impl Trainer {
    /// `plan`'s run as run `id`, beside this run (the trunk, before its first step): a copy of
    /// this run's weights when the shape and seed are the same (with `--init-from`, whenever
    /// the shape is the same), else a μP init of its own shape from its seed; fresh AdamW
    /// moments; the same data, read at its own `--batch` rows per step.
    pub fn sibling(&self, id: RunId, plan: &SiblingPlan) -> Result<Trainer> {
        if self.step != 0 {
            return Err(Error::Config(format!(
                "sibling {} starts beside a run at step 0, but run {} is at step {}",
                plan.label, self.run, self.step
            )));
        }
        let cfg = plan.config.clone();
        cfg.validate()?;
        collective::check_batch(cfg.batch, self.comm.size())?;
        let same_shape = cfg.model == self.cfg.model;
        let copy = same_shape && (cfg.seed == self.cfg.seed || cfg.init_from.is_some());
        let model = if copy {
            // from_tensors copies: the sibling never aliases the trunk's storage.
            MiniCpm::from_tensors(
                &cfg.model,
                cfg.seq,
                self.parameters().into_iter().collect(),
                &self.device,
                DType::F32,
            )?
        } else if cfg.init_from.is_some() {
            return Err(Error::Config(format!(
                "sibling {}: its shape differs from the trunk's, so it cannot start from the --init-from weights",
                plan.label
            )));
        } else {
            MiniCpm::init(&cfg.model, cfg.seq, cfg.seed, &self.device, DType::F32)?
        };
        let mut tr = Trainer::trunk(cfg, model, Arc::clone(&self.data), self.device.clone())?;
        tr.run = id;
        tr.name.clone_from(&plan.label);
        tr.comm = Arc::clone(&self.comm);
        Ok(tr)
    }
}
