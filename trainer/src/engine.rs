//! The training loop ([`Trainer`]) and the engine thread that drives it ([`Engine`]).
//!
//! The engine runs on its own named thread, emits [`RunEvent`]s into a sink, and takes
//! [`Command`]s between steps. Each step reads top to bottom: batch of this global step →
//! forward → backward → finiteness check → AdamW → metrics → eval/checkpoint when due.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use wsdscope_events::{
    EVENT_SCHEMA_VERSION, EndReason, NoteKind, ProbeResult, RunEvent, RunId, RunStart, StepMetrics,
};

use crate::checkpoint::{self, CHECKPOINT_FORMAT, TrainerState};
use crate::config::{ForkLength, ForkPlan, Policy, Precision, RunConfig};
use crate::data::rng::{SplitMix64, hash};
use crate::data::{Batch, Dataset};
use crate::error::{Error, Result};
use crate::model::{MiniCpm, Ops, ParamGroup};
use crate::optim::AdamW;
use crate::probe::{self, Measurement, ProbeInput, ProbeKind, StepTracker};
use crate::schedule::{DecayShape, Schedule};

/// Resolves a `--device` value. CUDA needs a build with the `cuda` feature and a working
/// driver; asking for CUDA never falls back to the CPU.
pub fn device(spec: &str) -> Result<Device> {
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    if let Some(n) = spec.strip_prefix("cuda:") {
        let Ok(ordinal) = n.parse::<usize>() else {
            return Err(Error::Config(format!(
                "--device {spec:?} is not allowed; use cpu or cuda:N"
            )));
        };
        return cuda_device(spec, ordinal);
    }
    if spec == "cuda-emu" {
        return Err(Error::Config(
            "--device cuda-emu runs the CUDA kernels on the CPU executor to check them; it is \
             only for `wsdscope bench --kernels --device cuda-emu`. To train, use cpu or cuda:N"
                .into(),
        ));
    }
    Err(Error::Config(format!(
        "--device {spec:?} is not allowed; use cpu or cuda:N"
    )))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(spec: &str, _ordinal: usize) -> Result<Device> {
    Err(Error::Config(format!(
        "--device {spec}: CUDA is unavailable in this build (it has no cuda feature); use --device cpu"
    )))
}

/// CUDA device `ordinal`: one candle device per ordinal for the whole process (tensors of two
/// separately created devices would count as being on different devices), on a stream of its
/// own. The driver is asked first, through error codes, so a missing driver or device gives
/// an error saying why rather than a panic.
#[cfg(feature = "cuda")]
fn cuda_device(spec: &str, ordinal: usize) -> Result<Device> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static DEVICES: OnceLock<Mutex<HashMap<usize, Device>>> = OnceLock::new();
    let mut devices = DEVICES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(d) = devices.get(&ordinal) {
        return Ok(d.clone());
    }
    let unavailable = |why: String| {
        Error::Config(format!(
            "--device {spec}: CUDA is unavailable: {why}; use --device cpu"
        ))
    };
    wsdscope_kernels::cuda_device_name(ordinal).map_err(unavailable)?;
    let dev = Device::new_cuda_with_stream(ordinal).map_err(|e| unavailable(e.to_string()))?;
    if let Device::Cuda(c) = &dev {
        // SAFETY: every kernel, copy and cuBLAS call of this device goes to its one stream
        // (candle's ops, and the fused kernels, which launch on `cuda_stream()`), so stream
        // order alone sequences all uses of its tensors; cross-stream events are not needed.
        unsafe { c.disable_event_tracking() };
    }
    devices.insert(ordinal, dev.clone());
    Ok(dev)
}

/// One run's model, optimiser, data and position. The trunk is run 0; a branch is a
/// [`Trainer::fork`] of another run with its own schedule.
pub struct Trainer {
    cfg: RunConfig,
    run: RunId,
    name: String,
    parent: Option<RunId>,
    fork_step: Option<u64>,
    model: MiniCpm,
    opt: AdamW,
    /// Shared by every run of a session: batches are pure functions of the global step.
    data: Arc<Dataset>,
    device: Device,
    /// Steps completed.
    step: u64,
    tokens: u64,
    rng: SplitMix64,
    last_val: Option<f64>,
    /// Previous gradient and update, for the per-step geometry.
    tracker: StepTracker,
    /// Running mean of step wall time, to state probe costs in steps.
    mean_step_s: f64,
    /// Sums of the noise-scale estimates so far (tr Σ, |G|²): their ratio is the run's
    /// averaged B_simple (McCandlish et al. average numerator and denominator apart).
    noise_sums: (f64, f64),
    /// A fault for the next step to meet ([`Trainer::inject_fault`], a test hook).
    fault: Option<Fault>,
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
    fn trunk(
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
            noise_sums: (0.0, 0.0),
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
        cfg.checkpoint_every = 0;
        Ok(Trainer {
            tracker: StepTracker::new(tracked_indices(&model, &cfg)),
            mean_step_s: self.mean_step_s,
            noise_sums: (0.0, 0.0),
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
        })
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
        let (x, y) = self.tensors(&self.data.train_batch(s))?;
        let (loss, mut grads) = self.model.loss_and_grads(&x, &y)?;
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
        let loss_v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
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
        let batch = self.data.train_batch(self.step);
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
            self.noise_sums.0 += m.scalars["trace"];
            self.noise_sums.1 += m.scalars["g_sq"];
            let (t, g) = self.noise_sums;
            m.scalars.insert(
                "b_simple_avg".into(),
                if g > 0.0 { t / g } else { f64::NAN },
            );
        }
        Ok(self.result(kind, m, t0))
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
        let batch = self.data.train_batch(self.step.max(1));
        let mut m = probe::interpolation(&parent.model, &branch.model, &batch, &self.cfg.probes)?;
        m.scalars.insert("from_run".into(), parent.run as f64);
        m.scalars.insert("from_step".into(), parent.step as f64);
        m.scalars.insert("to_run".into(), branch.run as f64);
        m.scalars.insert("to_step".into(), branch.step as f64);
        Ok(self.result(ProbeKind::Interp, m, t0))
    }

    fn result(&self, kind: ProbeKind, mut m: Measurement, t0: Instant) -> ProbeResult {
        let secs = t0.elapsed().as_secs_f64();
        m.scalars.insert("seconds".into(), secs);
        if self.mean_step_s > 0.0 {
            m.scalars
                .insert("cost_steps".into(), secs / self.mean_step_s);
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

    fn checkpoint_due(&self) -> bool {
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

/// A request to fork a decay branch from a run at its current step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForkRequest {
    pub parent: RunId,
    pub length: ForkLength,
    pub shape: crate::schedule::DecayShape,
    pub floor: f64,
}

/// What the engine is asked to do between steps.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Pause,
    Resume,
    Stop,
    /// Stop every run for a reason from outside (SIGINT, SIGTERM, a full disk): each run ends
    /// `stopped` with `reason` as its message (e.g. "interrupted by SIGTERM"); the trunk writes
    /// a final checkpoint into its `--checkpoint-dir`, or into `checkpoint_to` when it has
    /// none (preemption: a job that is about to be killed keeps its progress).
    StopWith {
        reason: String,
        checkpoint_to: Option<PathBuf>,
    },
    /// Fork a decay branch from a run at its current step.
    Fork(ForkRequest),
    /// Fork a run (usually a decayed branch) into one that continues at the trunk's stable
    /// learning rate until the trunk's last step (WSD-S, Wen et al. 2024).
    ForkResume {
        parent: RunId,
    },
    /// Run every periodic probe on a run now (and the interpolation to its parent or its
    /// newest branch, if one is running), outside the budget.
    Probe {
        run: RunId,
    },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub reason: EndReason,
    pub step: u64,
    pub final_val_loss: Option<f64>,
    pub message: Option<String>,
}

/// A running engine thread.
pub struct Engine {
    commands: Sender<Command>,
    thread: JoinHandle<Outcome>,
}

impl Engine {
    /// Starts `trainer` on a thread named `wsdscope-engine`, emitting every event into `sink`.
    pub fn spawn(trainer: Trainer, sink: impl FnMut(RunEvent) + Send + 'static) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wsdscope-engine".into())
            .spawn(move || drive(trainer, rx, sink))
            .map_err(|e| Error::Config(format!("cannot start the engine thread: {e}")))?;
        Ok(Engine {
            commands: tx,
            thread,
        })
    }

    /// A handle for sending commands from elsewhere (e.g. a signal handler or the UI).
    pub fn commands(&self) -> Sender<Command> {
        self.commands.clone()
    }

    pub fn send(&self, c: Command) {
        let _ = self.commands.send(c);
    }

    /// Waits for the run to end.
    pub fn join(self) -> Outcome {
        self.thread.join().unwrap_or_else(|_| Outcome {
            reason: EndReason::Failed,
            step: 0,
            final_val_loss: None,
            message: Some("the engine thread panicked".into()),
        })
    }
}

/// Memory the runs may hold together by default: half of what the OS reports available.
fn default_budget() -> u64 {
    let avail = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    });
    avail.map(|kb| kb * 1024 / 2).unwrap_or(u64::MAX)
}

/// The runs an engine drives, and how it decides which steps next.
struct Runs {
    active: Vec<Trainer>,
    next_id: RunId,
    /// Runs the session holds in all (`RunConfig::run_slots`): ids stay below it.
    slots: u32,
    budget: u64,
    policy: Policy,
    rr: usize,
    /// Steps at which the trunk also evaluates: where branches end, for the comparison.
    trunk_evals: BTreeSet<u64>,
    started: BTreeMap<RunId, Instant>,
    probes: ProbeClock,
    /// Runs asked to be probed before their first step: probed right after it.
    probe_pending: BTreeSet<RunId>,
}

/// Keeps periodic probes within their share of training time.
#[derive(Default)]
struct ProbeClock {
    /// Wall time of training steps and of periodic probes so far, in seconds.
    train_s: f64,
    probe_s: f64,
    /// Next entry of [`ProbeKind::PERIODIC`] for each run (each run cycles through all).
    next: BTreeMap<RunId, usize>,
    /// Last measured cost of each kind, in seconds.
    cost: BTreeMap<ProbeKind, f64>,
}

impl ProbeClock {
    /// The periodic probe due after run `tr` completed a step, if any, and its position in
    /// the rotation.
    fn due(&self, tr: &Trainer) -> Option<(ProbeKind, usize)> {
        let cfg = &tr.cfg.probes;
        if !cfg.periodic() || tr.step == 0 {
            return None;
        }
        if cfg.every > 0 && !tr.step.is_multiple_of(cfg.every) {
            return None;
        }
        let mut next = self.next.get(&tr.run).copied().unwrap_or(0);
        if ProbeKind::PERIODIC[next % ProbeKind::PERIODIC.len()] == ProbeKind::Noise
            && tr.cfg.batch < 2
        {
            next += 1; // no noise scale from a single sequence
        }
        let kind = ProbeKind::PERIODIC[next % ProbeKind::PERIODIC.len()];
        if let Some(pct) = cfg.budget() {
            // Spend only what the budget has accrued, counting the probe about to run at its
            // last measured cost (or a few steps' worth before it was ever measured).
            let expected = self
                .cost
                .get(&kind)
                .copied()
                .unwrap_or(5.0 * tr.mean_step_s);
            if self.probe_s + expected > pct / 100.0 * self.train_s {
                return None;
            }
        }
        Some((kind, next))
    }
}

impl Runs {
    /// Runs `kind` on active run `i` and emits its result (or a note saying why it failed);
    /// returns the seconds it took.
    fn probe(&mut self, i: usize, kind: ProbeKind, emit: &mut impl FnMut(RunEvent)) -> f64 {
        let t0 = Instant::now();
        let result = if kind == ProbeKind::Interp {
            let tr = &self.active[i];
            // A branch against its parent, or the trunk against its newest branch.
            let other = match tr.parent {
                Some(p) => self.active.iter().find(|r| r.run == p),
                None => self.active.iter().rev().find(|r| r.parent == Some(tr.run)),
            };
            other.map(|o| tr.interpolate_with(o))
        } else {
            Some(self.active[i].probe(kind))
        };
        let tr = &self.active[i];
        match result {
            Some(Ok(r)) => emit(RunEvent::Probe(r)),
            Some(Err(e)) => emit(RunEvent::Note {
                run: tr.run,
                step: tr.step,
                kind: NoteKind::Failed,
                message: format!("probe {} failed: {e}", kind.name()),
            }),
            None => {}
        }
        t0.elapsed().as_secs_f64()
    }

    /// Every probe on run `id` now, outside the budget (after its first step if it has
    /// not taken one yet).
    fn probe_all(
        &mut self,
        id: RunId,
        emit: &mut impl FnMut(RunEvent),
    ) -> std::result::Result<(), String> {
        let Some(i) = self.active.iter().position(|r| r.run == id) else {
            return Err(format!("probe refused: run {id} is not running"));
        };
        if self.active[i].step == 0 {
            self.probe_pending.insert(id);
            return Ok(());
        }
        let single = self.active[i].cfg.batch < 2;
        for kind in ProbeKind::PERIODIC.into_iter().chain([ProbeKind::Interp]) {
            if single && kind == ProbeKind::Noise {
                continue;
            }
            let secs = self.probe(i, kind, emit);
            self.probes.cost.insert(kind, secs);
        }
        Ok(())
    }
    fn pick(&mut self) -> usize {
        let branches: Vec<usize> = (0..self.active.len())
            .filter(|&i| self.active[i].run != 0)
            .collect();
        match self.policy {
            Policy::RoundRobin => {
                self.rr = (self.rr + 1) % self.active.len();
                self.rr
            }
            Policy::BranchesFirst => *branches.last().unwrap_or(&0),
            Policy::TrunkPaused if !branches.is_empty() => {
                self.rr = (self.rr + 1) % branches.len();
                branches[self.rr]
            }
            Policy::TrunkPaused => 0,
        }
    }

    /// Forks `parent` at its current step into a new run with `schedule`; returns the new id,
    /// or why the fork was refused.
    fn fork(
        &mut self,
        parent: RunId,
        branch: impl FnOnce(&Trainer, Option<&Trainer>) -> (Schedule, String),
        emit: &mut impl FnMut(RunEvent),
    ) -> std::result::Result<RunId, String> {
        let Some(p) = self.active.iter().find(|r| r.run == parent) else {
            return Err(format!("fork refused: run {parent} is not running"));
        };
        let (schedule, name) = branch(p, self.active.iter().find(|r| r.run == 0));
        if p.step == 0 {
            return Err(format!(
                "fork refused: run {parent} has not taken a step yet"
            ));
        }
        if self.next_id >= self.slots {
            return Err(format!(
                "fork refused: the session has room for {} runs and all are taken (--max-runs N raises it for the next session)",
                self.slots
            ));
        }
        let resident: u64 = self.active.iter().map(Trainer::resident_bytes).sum();
        let need = resident + p.resident_bytes() + p.activation_bytes();
        if need > self.budget {
            return Err(format!(
                "fork refused: {} runs would need about {} MiB, over the memory budget of {} MiB (--memory-budget MB)",
                self.active.len() + 1,
                need >> 20,
                self.budget >> 20
            ));
        }
        let id = self.next_id;
        let at = p.step;
        let branch = p
            .fork(id, schedule, name)
            .map_err(|e| format!("fork refused: {e}"))?;
        self.next_id += 1;
        emit(RunEvent::Forked {
            run: id,
            parent,
            step: at,
            schedule: serde_json::to_value(&branch.cfg.schedule).expect("schedule serialises"),
        });
        emit(branch.run_start_event());
        if let Some(trunk) = self.active.iter().find(|r| r.run == 0)
            && branch.cfg.steps <= trunk.cfg.steps
        {
            self.trunk_evals.insert(branch.cfg.steps);
        }
        self.started.insert(id, Instant::now());
        self.active.push(branch);
        Ok(id)
    }

    /// Ends every run as `stopped` (branches first, the trunk last), with `message` and the
    /// trunk's fallback checkpoint directory; the trunk's outcome goes to `trunk_outcome`.
    fn stop_all(
        &mut self,
        message: Option<String>,
        checkpoint_to: Option<&Path>,
        trunk_outcome: &mut Option<Outcome>,
        emit: &mut impl FnMut(RunEvent),
    ) {
        while !self.active.is_empty() {
            let i = self.active.len() - 1;
            let o = self.finish(i, EndReason::Stopped, message.clone(), checkpoint_to, emit);
            if self.active.is_empty() {
                trunk_outcome.get_or_insert(o);
            }
        }
    }

    /// Ends run `i` with `reason`: its last checkpoint if asked for, its `end` event, and its
    /// memory freed.
    /// `checkpoint_to`: where the trunk's final checkpoint goes when it has no
    /// `--checkpoint-dir` (an interrupted run keeps its progress).
    fn finish(
        &mut self,
        i: usize,
        reason: EndReason,
        message: Option<String>,
        checkpoint_to: Option<&Path>,
        emit: &mut impl FnMut(RunEvent),
    ) -> Outcome {
        let tr = self.active.remove(i);
        if self.rr >= i && self.rr > 0 {
            self.rr -= 1;
        }
        let run = tr.run;
        let dir = tr
            .cfg
            .checkpoint_dir
            .clone()
            .or_else(|| checkpoint_to.filter(|_| run == 0).map(Path::to_path_buf));
        let keep = if run == 0 {
            !tr.checkpoint_due()
        } else {
            tr.cfg.keep_branch_checkpoints
        };
        if reason != EndReason::Failed
            && tr.step > 0
            && keep
            && let Some(dir) = dir
        {
            let root = if run == 0 {
                dir
            } else {
                dir.join(format!("run-{run}"))
            };
            match tr.save_checkpoint(&root) {
                Ok(path) => emit(RunEvent::Checkpoint {
                    run,
                    step: tr.step,
                    path: path.display().to_string(),
                }),
                Err(e) => emit(RunEvent::Note {
                    run,
                    step: tr.step,
                    kind: NoteKind::Failed,
                    message: format!("final checkpoint failed: {e}"),
                }),
            }
        }
        let wall_s = self
            .started
            .get(&run)
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        emit(RunEvent::End {
            run,
            step: tr.step,
            reason,
            message: message.clone(),
            final_val_loss: tr.last_val,
            wall_s,
        });
        Outcome {
            reason,
            step: tr.step,
            final_val_loss: tr.last_val,
            message,
        }
    }
}

/// The schedule of a decay branch forked after step `at` of a run whose lr there is `lr`:
/// that lr until the fork, then `shape` over `d` steps down to `floor`×lr.
pub fn decay_branch(lr: f64, at: u64, d: u64, shape: DecayShape, floor: f64) -> Schedule {
    Schedule::Wsd {
        peak: lr,
        warmup: 0,
        stable_end: at,
        decay_steps: d,
        shape,
        floor,
    }
}

/// A decay branch of a parent at its current step: its schedule and name (`exp 60 @540`).
fn decay_of(
    length: ForkLength,
    shape: DecayShape,
    floor: f64,
) -> impl FnOnce(&Trainer, Option<&Trainer>) -> (Schedule, String) {
    move |p, _| {
        let at = p.step;
        let d = length.steps_at(at);
        let lr = p.cfg.schedule.lr(at.max(1));
        (
            decay_branch(lr, at, d, shape, floor),
            format!("{shape} {d} @{at}"),
        )
    }
}

/// WSD-S: continue from a (decayed) run's state at the trunk's stable lr until the trunk's
/// last step.
fn resume_of(p: &Trainer, trunk: Option<&Trainer>) -> (Schedule, String) {
    let t = trunk.unwrap_or(p);
    let schedule = Schedule::Constant {
        peak: t.cfg.schedule.peak(),
        warmup: 0,
        total: t.cfg.steps.max(p.step + 1),
    };
    (schedule, format!("resume @{}", p.step))
}

/// The engine loop: steps every active run under the policy until all have ended; one `end`
/// event per run in every case.
fn drive(trunk: Trainer, rx: Receiver<Command>, mut emit: impl FnMut(RunEvent)) -> Outcome {
    let mut plan: Vec<ForkPlan> = trunk
        .cfg
        .forks
        .iter()
        .filter(|f| f.at > trunk.step)
        .cloned()
        .collect();
    plan.sort_by_key(|f| f.at);
    plan.reverse(); // pop() yields the earliest
    emit(trunk.run_start_event());
    let mut runs = Runs {
        budget: trunk
            .cfg
            .memory_budget_mb
            .map(|mb| mb << 20)
            .unwrap_or_else(default_budget),
        policy: trunk.cfg.policy,
        slots: trunk.cfg.run_slots(),
        active: vec![trunk],
        next_id: 1,
        rr: 0,
        trunk_evals: BTreeSet::new(),
        started: BTreeMap::from([(0, Instant::now())]),
        probes: ProbeClock::default(),
        probe_pending: BTreeSet::new(),
    };
    let mut trunk_outcome: Option<Outcome> = None;
    let mut paused = false;
    let note =
        |emit: &mut dyn FnMut(RunEvent), run: RunId, step: u64, kind: NoteKind, message: String| {
            emit(RunEvent::Note {
                run,
                step,
                kind,
                message,
            })
        };
    'steps: loop {
        // Commands between steps; a paused engine blocks here.
        loop {
            let c = if paused {
                rx.recv().ok()
            } else {
                match rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                }
            };
            let step0 = runs.active.first().map(|r| r.step).unwrap_or(0);
            match c {
                Some(Command::Pause) if !paused => {
                    paused = true;
                    note(&mut emit, 0, step0, NoteKind::Paused, "paused".into());
                }
                Some(Command::Resume) if paused => {
                    paused = false;
                    note(&mut emit, 0, step0, NoteKind::Resumed, "resumed".into());
                }
                Some(Command::Stop) | None => {
                    runs.stop_all(None, None, &mut trunk_outcome, &mut emit);
                    break 'steps;
                }
                Some(Command::StopWith {
                    reason,
                    checkpoint_to,
                }) => {
                    runs.stop_all(
                        Some(reason),
                        checkpoint_to.as_deref(),
                        &mut trunk_outcome,
                        &mut emit,
                    );
                    break 'steps;
                }
                Some(Command::Fork(req)) => {
                    let branch = decay_of(req.length, req.shape, req.floor);
                    if let Err(m) = runs.fork(req.parent, branch, &mut emit) {
                        note(&mut emit, req.parent, step0, NoteKind::Refused, m);
                    }
                }
                Some(Command::ForkResume { parent }) => {
                    if let Err(m) = runs.fork(parent, resume_of, &mut emit) {
                        note(&mut emit, parent, step0, NoteKind::Refused, m);
                    }
                }
                Some(Command::Probe { run }) => {
                    if let Err(m) = runs.probe_all(run, &mut emit) {
                        note(&mut emit, run, step0, NoteKind::Refused, m);
                    }
                }
                Some(_) => {}
            }
            if !paused {
                break;
            }
        }
        if runs.active.is_empty() {
            break;
        }
        let i = runs.pick();
        let step_result = runs.active[i].train_step();
        let tr = &mut runs.active[i];
        let run = tr.run;
        let outcome = match step_result {
            Err(e) => Some((EndReason::Failed, Some(e.to_string()))),
            Ok(m) => {
                runs.probes.train_s += m.step_ms / 1e3;
                emit(RunEvent::Step(m));
                let extra_eval = run == 0 && runs.trunk_evals.remove(&tr.step);
                let mut failed = None;
                if tr.eval_due() || extra_eval {
                    match tr.evaluate() {
                        Ok(val_loss) => emit(RunEvent::Eval {
                            run,
                            step: tr.step,
                            val_loss,
                            tokens: tr.tokens,
                        }),
                        Err(e) => failed = Some((EndReason::Failed, Some(e.to_string()))),
                    }
                }
                if failed.is_none() && tr.checkpoint_due() {
                    let dir = tr.cfg.checkpoint_dir.clone().expect("validated");
                    match tr.save_checkpoint(&dir) {
                        Ok(path) => emit(RunEvent::Checkpoint {
                            run,
                            step: tr.step,
                            path: path.display().to_string(),
                        }),
                        Err(e) => failed = Some((EndReason::Failed, Some(e.to_string()))),
                    }
                }
                if failed.is_none() && tr.is_done() {
                    Some((EndReason::Completed, None))
                } else {
                    failed
                }
            }
        };
        // Periodic probes within their budget; a branch that completes is also compared with
        // its parent along the straight line between them.
        if let Some(i) = runs.active.iter().position(|r| r.run == run) {
            let done = outcome
                .as_ref()
                .is_some_and(|(r, _)| *r == EndReason::Completed);
            if runs.probe_pending.remove(&run) {
                let _ = runs.probe_all(run, &mut emit);
            }
            if outcome.is_none()
                && let Some((kind, at)) = runs.probes.due(&runs.active[i])
            {
                let secs = runs.probe(i, kind, &mut emit);
                runs.probes.probe_s += secs;
                runs.probes.cost.insert(kind, secs);
                runs.probes.next.insert(run, at + 1);
            } else if done && run != 0 && runs.active[i].cfg.probes.periodic() {
                let secs = runs.probe(i, ProbeKind::Interp, &mut emit);
                runs.probes.probe_s += secs;
            }
        }
        // Scripted forks from the trunk once it has completed their step.
        if run == 0
            && outcome
                .as_ref()
                .is_none_or(|(r, _)| *r == EndReason::Completed)
        {
            let at = runs.active[i].step;
            while plan.last().is_some_and(|f| f.at <= at) {
                let f = plan.pop().expect("checked");
                if let Err(m) = runs.fork(0, decay_of(f.length, f.shape, f.floor), &mut emit) {
                    note(&mut emit, 0, at, NoteKind::Refused, m);
                }
            }
        }
        if let Some((reason, message)) = outcome {
            let i = runs
                .active
                .iter()
                .position(|r| r.run == run)
                .expect("active");
            let o = runs.finish(i, reason, message, None, &mut emit);
            if run == 0 {
                trunk_outcome = Some(o.clone());
                if reason == EndReason::Failed {
                    // Without its trunk a session has nothing to compare branches against.
                    while !runs.active.is_empty() {
                        runs.finish(
                            runs.active.len() - 1,
                            EndReason::Stopped,
                            Some("stopped because the trunk failed".into()),
                            None,
                            &mut emit,
                        );
                    }
                }
            }
        }
    }
    trunk_outcome.unwrap_or(Outcome {
        reason: EndReason::Stopped,
        step: 0,
        final_val_loss: None,
        message: None,
    })
}
