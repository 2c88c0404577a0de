//! One run ([`Trainer`]): its model, optimiser, data and position, and what can be done with
//! it — a training step, a periodic probe, an evaluation, a checkpoint, a fork. A step reads
//! top to bottom: batch of this global step → forward → backward → finiteness check → AdamW
//! → metrics. Under several ranks each computes its rows of the batch and the gradients are
//! all-reduced before the check (`reduce.rs`), so every rank applies the same update.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use wsdscope_events::vocabulary::{common, interp, noise};
use wsdscope_events::{EVENT_SCHEMA_VERSION, ProbeResult, RunEvent, RunId, RunStart, StepMetrics};

use super::device::device;
use super::reduce;
use super::step_noise::{self, NoiseSums};
use crate::checkpoint::{self, CHECKPOINT_FORMAT, TrainerState};
use crate::collective::{self, Collective, Solo};
use crate::config::{Precision, RunConfig};
use crate::data::rng::{SplitMix64, hash};
use crate::data::{Batch, Dataset};
use crate::error::{Error, Result};
use crate::model::{MiniCpm, Ops, ParamGroup};
use crate::optim::AdamW;
use crate::probe::{self, Measurement, ProbeInput, ProbeKind, StepTracker};

/// One run's model, optimiser, data and position. The trunk is run 0; a branch is a
/// [`Trainer::fork`] of another run with its own schedule.
pub struct Trainer {
    pub(super) cfg: RunConfig,
    pub(super) run: RunId,
    pub(super) name: String,
    pub(super) parent: Option<RunId>,
    fork_step: Option<u64>,
    pub(super) model: MiniCpm,
    opt: AdamW,
    /// Shared by every run of a session: batches are pure functions of the global step.
    pub(super) data: Arc<Dataset>,
    pub(super) device: Device,
    /// Steps completed.
    pub(super) step: u64,
    pub(super) tokens: u64,
    rng: SplitMix64,
    pub(super) last_val: Option<f64>,
    /// Previous gradient and update, for the per-step geometry.
    tracker: StepTracker,
    /// Running mean of step wall time, to state probe costs in steps.
    pub(super) mean_step_s: f64,
    /// The noise-scale estimates: the steps' own since the last report, and the run's
    /// average (McCandlish et al. average numerator and denominator apart).
    noise: NoiseSums,
    /// A fault for the next step to meet ([`Trainer::inject_fault`], a test hook).
    fault: Option<Fault>,
    /// The ranks this run is split across ([`Solo`] for one process).
    pub(super) comm: Arc<dyn Collective>,
    /// Wall seconds this run's steps spent in the gradient all-reduce (0 in one process).
    reduce_s: f64,
}

/// What [`Trainer::inject_fault`] makes the next training step meet. A test hook: it lets
/// tests check that a non-finite step applies nothing, on the path real runs take.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// One element of a gradient is NaN, before the gradient norm is checked.
    NonFiniteGradient,
    /// The optimiser gets an infinite learning rate, so its update is not finite.
    NonFiniteUpdate,
}

/// Indices (in parameter order) of the tracked tensors of `cfg`.
fn tracked_indices(model: &MiniCpm, cfg: &RunConfig) -> Vec<usize> {
    let names = cfg.probes.tracked(cfg.model.layers);
    names
        .iter()
        .filter_map(|t| model.named_vars().iter().position(|(n, _)| n == t))
        .collect()
}

impl Trainer {
    /// A fresh run: μP init (or `init_from` weights) at step 0.
    pub fn new(cfg: RunConfig) -> Result<Self> {
        cfg.validate()?;
        let device = device(&cfg.device)?;
        let data = Arc::new(Dataset::open(&cfg)?);
        let model = match &cfg.init_from {
            None => MiniCpm::init(&cfg.model, cfg.seq, cfg.seed, &device, DType::F32)?,
            Some(p) => MiniCpm::from_tensors(
                &cfg.model,
                cfg.seq,
                checkpoint::load_weights(p)?,
                &device,
                DType::F32,
            )
            .map_err(|e| Error::Checkpoint {
                path: p.clone(),
                message: e.to_string(),
            })?,
        };
        Self::trunk(cfg, model, data, device)
    }

    /// The trunk (run 0) at step 0 with fresh AdamW moments.
    pub(super) fn trunk(
        cfg: RunConfig,
        mut model: MiniCpm,
        data: Arc<Dataset>,
        device: Device,
    ) -> Result<Self> {
        model.set_ops(if cfg.reference_ops {
            Ops::Reference
        } else {
            Ops::Fused
        });
        model.set_compute_dtype(match cfg.precision {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        })?;
        let mut opt = AdamW::new(
            model.named_vars(),
            cfg.optim.clone(),
            cfg.model.width_mult(),
        )?;
        opt.set_fused(!cfg.reference_ops);
        Ok(Trainer {
            rng: SplitMix64::new(hash(&[cfg.seed, 0x7261_6e64])),
            tracker: StepTracker::new(tracked_indices(&model, &cfg)),
            mean_step_s: 0.0,
            noise: NoiseSums::default(),
            cfg,
            run: 0,
            name: "trunk".into(),
            parent: None,
            fork_step: None,
            model,
            opt,
            data,
            device,
            step: 0,
            tokens: 0,
            last_val: None,
            fault: None,
            comm: Arc::new(Solo),
            reduce_s: 0.0,
        })
    }

    /// Continues a run from a checkpoint. `threads`/`device`/checkpointing may differ from the
    /// saved run; everything that shapes the losses comes from the checkpoint.
    pub fn resume(path: &Path, adjust: impl FnOnce(&mut RunConfig)) -> Result<Self> {
        let ck = checkpoint::load(path)?;
        let mut cfg = ck.state.config.clone();
        adjust(&mut cfg);
        cfg.validate()?;
        let device = device(&cfg.device)?;
        let data = Arc::new(Dataset::open(&cfg)?);
        let model = MiniCpm::from_tensors(&cfg.model, cfg.seq, ck.model, &device, DType::F32)?;
        let mut tr = Self::trunk(cfg, model, data, device)?;
        tr.opt.load_state(ck.optimizer, ck.state.adam_t)?;
        tr.step = ck.state.step;
        tr.tokens = ck.state.tokens;
        tr.rng = ck.state.rng;
        tr.last_val = ck.state.last_val_loss;
        tr.noise.average = ck.state.noise_average;
        Ok(tr)
    }

    pub fn config(&self) -> &RunConfig {
        &self.cfg
    }

    /// This run's id (the trunk is 0).
    pub fn id(&self) -> RunId {
        self.run
    }

    /// A copy of this run at its current step — parameters, AdamW moments and step count,
    /// token count, RNG — that continues under `schedule` as run `id`. Nothing touches disk;
    /// the data are shared, so the branch sees the batches its parent would see.
    pub fn fork(
        &self,
        id: RunId,
        schedule: crate::schedule::Schedule,
        name: String,
    ) -> Result<Trainer> {
        schedule.validate()?;
        let tensors = self
            .model
            .named_vars()
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        // from_tensors copies, so the branch never aliases its parent's storage.
        let mut model = MiniCpm::from_tensors(
            &self.cfg.model,
            self.cfg.seq,
            tensors,
            &self.device,
            self.model.dtype(),
        )?;
        model.set_ops(self.model.ops());
        model.set_compute_dtype(self.model.compute_dtype())?;
        let mut opt = AdamW::new(
            model.named_vars(),
            self.cfg.optim.clone(),
            self.cfg.model.width_mult(),
        )?;
        opt.set_fused(!self.cfg.reference_ops);
        let moments = self
            .opt
            .state_tensors()
            .into_iter()
            .map(|(n, t)| Ok((n, t.copy()?)))
            .collect::<Result<_>>()?;
        opt.load_state(moments, self.opt.steps_taken())?;
        let mut cfg = self.cfg.clone();
        cfg.steps = schedule.total();
        cfg.schedule = schedule;
        cfg.forks.clear();
        cfg.siblings.clear();
        cfg.checkpoint_every = 0;
        Ok(Trainer {
            tracker: StepTracker::new(tracked_indices(&model, &cfg)),
            mean_step_s: self.mean_step_s,
            noise: NoiseSums::default(),
            cfg,
            run: id,
            name,
            parent: Some(self.run),
            fork_step: Some(self.step),
            model,
            opt,
            data: Arc::clone(&self.data),
            device: self.device.clone(),
            step: self.step,
            tokens: self.tokens,
            rng: self.rng,
            last_val: self.last_val,
            fault: None,
            comm: Arc::clone(&self.comm),
            reduce_s: 0.0,
        })
    }

    /// Splits this run (and the runs forked from it) across the ranks of `comm`: each computes
    /// its rows of every batch and all apply the same update. Every rank must build the same
    /// run (same settings, or the same checkpoint) before this, and call it at the same point
    /// (on a GPU it starts NCCL: see [`collective::for_device`]).
    pub fn set_collective(&mut self, comm: Arc<dyn Collective>) -> Result<()> {
        collective::check_batch(self.cfg.batch, comm.size())?;
        // On a GPU the ranks sum through NCCL (made here, once, on this run's device).
        self.comm = collective::for_device(comm, &self.device)?;
        Ok(())
    }

    /// The ranks this run is split across.
    pub fn collective(&self) -> &dyn Collective {
        &*self.comm
    }

    /// Wall seconds this run's steps have spent in the gradient all-reduce (flattening,
    /// the collective calls and the waits for slower ranks; 0 in one process).
    pub fn all_reduce_seconds(&self) -> f64 {
        self.reduce_s
    }

    /// Whether this process records and checkpoints (rank 0, or the only process).
    pub fn is_root(&self) -> bool {
        self.comm.is_root()
    }

    /// Bytes this run keeps while it lives: f32 parameters, two AdamW moments, the
    /// gradient and update of the last step (kept for the per-step geometry) and the CPU
    /// step's scratch pool (see [`crate::memory`]).
    pub fn resident_bytes(&self) -> u64 {
        crate::memory::run_bytes(&self.cfg)
    }

    /// Transient bytes of one training step on top of what the runs keep (shared: runs step
    /// one at a time).
    pub fn activation_bytes(&self) -> u64 {
        crate::memory::step_bytes(&self.cfg)
    }

    pub fn model(&self) -> &MiniCpm {
        &self.model
    }

    /// The run's optimiser (its moments give Adam's preconditioner; for measurements).
    pub fn optimizer(&self) -> &AdamW {
        &self.opt
    }

    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// Parameters of this run by HF name (for tests and probes).
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        self.model
            .named_vars()
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// The parameter tensors in optimiser (checkpoint) order, sharing the run's storage.
    fn param_tensors(&self) -> Vec<Tensor> {
        self.opt
            .params()
            .iter()
            .map(|p| p.var.as_tensor().clone())
            .collect()
    }

    /// Steps completed so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    pub fn is_done(&self) -> bool {
        self.step >= self.cfg.steps
    }

    pub fn last_val_loss(&self) -> Option<f64> {
        self.last_val
    }

    /// This run's batch of global step `s` (a sibling's `--batch` may differ from the trunk's).
    fn batch(&self, s: u64) -> Batch {
        self.data.train_batch_of(s, self.cfg.batch)
    }

    fn tensors(&self, b: &Batch) -> Result<(Tensor, Tensor)> {
        let x = Tensor::from_slice(&b.inputs, (b.batch, b.seq), &self.device)?;
        let y = Tensor::from_slice(&b.targets, (b.batch, b.seq), &self.device)?;
        Ok((x, y))
    }

    /// Runs the next training step. A step whose loss, gradient or update is not finite
    /// applies nothing: it returns an error naming the step and what was not finite, and
    /// parameters, AdamW's moments and t, the step and token counts, the RNG, the last
    /// validation loss and the per-step tracker are as they were before it.
    pub fn train_step(&mut self) -> Result<StepMetrics> {
        let t0 = Instant::now();
        let fault = self.fault.take();
        let s = self.step + 1;
        let lr = self.cfg.schedule.lr(s);
        // This rank's rows of the global batch (all of it in one process).
        let (size, rank) = (self.comm.size(), self.comm.rank());
        let batch = self.batch(s);
        let batch = if size > 1 {
            batch.rows(collective::rows(batch.batch, rank, size))
        } else {
            batch
        };
        let share = batch.batch as f64 / self.cfg.batch as f64;
        let (x, y) = self.tensors(&batch)?;
        let leaf_noise = self.leaf_noise();
        let (loss, mut grads, leaves) = self.model.loss_grads_and_leaves(&x, &y, leaf_noise)?;
        // Test hook (`inject_fault`): one NaN in the first parameter's gradient.
        if fault == Some(Fault::NonFiniteGradient)
            && let Some(p) = self.opt.params().first()
            && let Some(g) = grads.get(&p.var)
        {
            let mut v = g.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            v[0] = f64::NAN;
            let bad = Tensor::from_vec(v, g.dims(), g.device())?.to_dtype(g.dtype())?;
            grads.insert(&p.var, bad);
        }
        // From here every rank holds the global batch's loss and gradients.
        let loss_v = if !collective::exchanges(&*self.comm) {
            loss.to_dtype(DType::F64)?.to_scalar::<f64>()?
        } else {
            let t_reduce = Instant::now();
            let vars: Vec<_> = self.opt.params().iter().map(|p| &p.var).collect();
            let loss_v = match self.comm.on_device() {
                Some(sums) => reduce::all_reduce_on_device(sums, &vars, &mut grads, &loss, share)?,
                None => {
                    let loss_v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    reduce::all_reduce(&*self.comm, &vars, &mut grads, loss_v, share)?
                }
            };
            self.reduce_s += t_reduce.elapsed().as_secs_f64();
            loss_v
        };
        let non_finite = |what| Error::NonFinite {
            run: self.run,
            step: s,
            what,
        };
        if !loss_v.is_finite() {
            return Err(non_finite("loss"));
        }
        let norms = self.opt.grad_norms(&grads, self.cfg.model.layers)?;
        if !norms.total.is_finite() {
            return Err(non_finite("gradient"));
        }
        // The noise scale from this step's leaves (every rank takes part in the sum).
        let tokens = self.cfg.tokens_per_step() as f64;
        let noise = match &leaves {
            Some(l) => step_noise::step_estimate(&*self.comm, l, norms.total, tokens)?,
            None => None,
        };
        // This step's gradients in parameter order: the geometry of the previous update needs
        // them, and they are kept for the next step's.
        let g: Vec<Tensor> = self
            .opt
            .params()
            .iter()
            .map(|p| {
                grads.get(&p.var).cloned().ok_or_else(|| {
                    Error::Config(format!("parameter {} received no gradient", p.name))
                })
            })
            .collect::<Result<_>>()?;
        let per_step = self.cfg.probes.per_step;
        let (geometry, theta_before) = if per_step {
            let theta = self.param_tensors();
            let geometry = self
                .tracker
                .geometry(&g, norms.total * norms.total, &theta)?;
            // The update is about to overwrite the parameters (in place): keep a copy.
            let before = theta
                .iter()
                .map(|t| Ok(t.copy()?))
                .collect::<Result<Vec<_>>>()?;
            (geometry, before)
        } else {
            (None, Vec::new())
        };
        // Everything above only read the run's state; from here the step is applied whole
        // or not at all (the optimiser writes nothing if its update would not be finite).
        // The test hook's update fault is an infinite learning rate.
        let opt_lr = if fault == Some(Fault::NonFiniteUpdate) {
            f64::INFINITY
        } else {
            lr
        };
        let Some((stats, max_abs)) = self.opt.step(&grads, opt_lr, norms.total)? else {
            return Err(non_finite("update"));
        };
        drop(grads);
        let max_update = if per_step {
            self.tracker.record(
                g,
                theta_before,
                norms.total * norms.total,
                stats.update_norm * stats.update_norm,
                &max_abs,
            )
        } else {
            Vec::new()
        };
        if let Some((est, n)) = noise {
            self.noise.add_step(est, loss_v, n);
        }
        self.step = s;
        self.tokens += self.cfg.tokens_per_step();
        let secs = t0.elapsed().as_secs_f64();
        let n = (s - self.fork_step.unwrap_or(0)).min(50) as f64;
        self.mean_step_s += (secs - self.mean_step_s) / n.max(1.0);
        Ok(StepMetrics {
            run: self.run,
            step: s,
            phase: self.cfg.schedule.phase(s),
            loss: loss_v,
            lr,
            grad_norm: stats.grad_norm,
            update_norm: stats.update_norm,
            param_norm: stats.param_norm,
            tokens: self.tokens,
            tokens_per_s: self.cfg.tokens_per_step() as f64 / secs,
            step_ms: secs * 1e3,
            grad_norm_per_layer: norms.per_layer,
            grad_norm_per_group: norms.per_group,
            geometry,
            max_update,
        })
    }

    /// Test hook: the next [`Self::train_step`] (only that one) meets `fault`, so that tests
    /// can check on the path real runs take that a non-finite step applies nothing.
    #[doc(hidden)]
    pub fn inject_fault(&mut self, fault: Fault) {
        self.fault = Some(fault);
    }

    /// Mean wall time of this run's recent steps, in seconds.
    pub fn mean_step_s(&self) -> f64 {
        self.mean_step_s
    }

    /// Runs one periodic measurement at the current step (which must have been taken) and
    /// wraps it as a probe result, with its wall time and its cost in training steps.
    pub fn probe(&mut self, kind: ProbeKind) -> Result<ProbeResult> {
        if self.step == 0 {
            return Err(Error::Config(format!(
                "run {} has not taken a step yet; nothing to probe",
                self.run
            )));
        }
        let t0 = Instant::now();
        let batch = self.batch(self.step);
        let input = ProbeInput {
            model: &self.model,
            opt: &self.opt,
            batch: &batch,
            cfg: &self.cfg.probes,
            lr: self.cfg.schedule.lr(self.step),
            last_update: self.tracker.last_update(&self.param_tensors())?,
            seed: hash(&[self.cfg.seed, self.run as u64, self.step]),
        };
        let mut m = probe::measure(kind, &input)?;
        if kind == ProbeKind::Noise {
            let avg = self
                .noise
                .average_with(m.scalars[noise::TRACE], m.scalars[noise::G_SQ]);
            m.scalars.insert(noise::B_SIMPLE_AVG.into(), avg);
        }
        Ok(self.result(kind, m, t0))
    }

    /// Whether this run takes its noise scale from its steps' leaves (`step_noise.rs`).
    pub fn leaf_noise(&self) -> bool {
        step_noise::from_leaves(&self.cfg, &self.model, self.comm.size())
    }

    /// The noise scale of the steps since the last report, as a `noise` probe result at
    /// this step (`None` if no step since gave one); it took no pass of its own.
    pub fn step_noise_report(&mut self) -> Option<ProbeResult> {
        let t0 = Instant::now();
        let m = self.noise.take_window(self.cfg.tokens_per_step() as f64)?;
        Some(self.result(ProbeKind::Noise, m, t0))
    }

    /// L((1 − α)·θ_parent + α·θ_branch) between this run and `other`, one of which is the
    /// other's parent, on the batch of this run's current step; reported as this run's.
    pub fn interpolate_with(&self, other: &Trainer) -> Result<ProbeResult> {
        let t0 = Instant::now();
        let (parent, branch) = if other.parent == Some(self.run) {
            (self, other)
        } else {
            (other, self)
        };
        let batch = self.batch(self.step.max(1));
        let mut m = probe::interpolation(&parent.model, &branch.model, &batch, &self.cfg.probes)?;
        m.scalars.insert(interp::FROM_RUN.into(), parent.run as f64);
        m.scalars
            .insert(interp::FROM_STEP.into(), parent.step as f64);
        m.scalars.insert(interp::TO_RUN.into(), branch.run as f64);
        m.scalars.insert(interp::TO_STEP.into(), branch.step as f64);
        Ok(self.result(ProbeKind::Interp, m, t0))
    }

    fn result(&self, kind: ProbeKind, mut m: Measurement, t0: Instant) -> ProbeResult {
        let secs = t0.elapsed().as_secs_f64();
        m.scalars.insert(common::SECONDS.into(), secs);
        if self.mean_step_s > 0.0 {
            m.scalars
                .insert(common::COST_STEPS.into(), secs / self.mean_step_s);
        }
        ProbeResult {
            run: self.run,
            step: self.step,
            probe: kind.name().into(),
            scalars: m.scalars,
            series: m.series,
        }
    }

    /// Mean loss over the fixed validation batches.
    pub fn evaluate(&mut self) -> Result<f64> {
        let mut sum = 0.0;
        let n = self.data.val_batches().len();
        for i in 0..n {
            let (x, y) = self.tensors(&self.data.val_batches()[i])?;
            sum += self
                .model
                .loss(&x, &y, false)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
        let v = sum / n as f64;
        self.last_val = Some(v);
        Ok(v)
    }

    /// Whether an eval is due after the step just completed: every `eval_every` steps, at the
    /// end of the stable phase (so its drop in the decay is measured) and at the end.
    pub fn eval_due(&self) -> bool {
        let s = self.step;
        let b = self.cfg.schedule.bounds();
        (self.cfg.eval_every > 0 && s.is_multiple_of(self.cfg.eval_every))
            || (s == b.decay_start && b.decay_start > b.warmup_end && b.decay_start < b.total)
            || s == self.cfg.steps
    }

    pub(super) fn checkpoint_due(&self) -> bool {
        self.cfg.checkpoint_every > 0 && self.step.is_multiple_of(self.cfg.checkpoint_every)
    }

    /// Writes a checkpoint of the current state under `root`.
    pub fn save_checkpoint(&self, root: &Path) -> Result<PathBuf> {
        let state = TrainerState {
            format: CHECKPOINT_FORMAT,
            step: self.step,
            tokens: self.tokens,
            adam_t: self.opt.steps_taken(),
            data_cursor: self.step + 1,
            rng: self.rng,
            last_val_loss: self.last_val,
            config: self.cfg.clone(),
            noise_average: self.noise.average,
        };
        let model: Vec<(String, Tensor)> = self
            .model
            .named_vars()
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        checkpoint::save(root, &state, &model, &self.opt.state_tensors())
    }

    /// The `run_start` event describing this run.
    pub fn run_start_event(&self) -> RunEvent {
        RunEvent::RunStart(Box::new(RunStart {
            run: self.run,
            schema_version: EVENT_SCHEMA_VERSION,
            name: self.name.clone(),
            parent: self.parent,
            fork_step: self.fork_step,
            model: self.cfg.model.summary(&self.cfg.preset),
            data: self.data.summary().clone(),
            phases: self.cfg.schedule.bounds(),
            start_step: self.step,
            batch: self.cfg.batch,
            seq: self.cfg.seq,
            device: self.cfg.device.clone(),
            threads: self.cfg.threads,
            config: serde_json::to_value(&self.cfg).expect("config serialises"),
            param_groups: ParamGroup::ALL.iter().map(|g| g.name().into()).collect(),
            tracked_tensors: self
                .cfg
                .probes
                .tracked(self.cfg.model.layers)
                .into_iter()
                .filter(|_| self.cfg.probes.per_step)
                .filter(|t| self.model.named_vars().iter().any(|(n, _)| n == t))
                .collect(),
        }))
    }
}
