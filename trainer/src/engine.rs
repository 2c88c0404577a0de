//! The training loop ([`Trainer`]) and the engine thread that drives it ([`Engine`]).
//!
//! The engine runs on its own named thread, emits [`RunEvent`]s into a sink, and takes
//! [`Command`]s between steps. Each step reads top to bottom: batch of this global step →
//! forward → backward → finiteness check → AdamW → metrics → eval/checkpoint when due.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use wsdscope_sessions::{EVENT_SCHEMA_VERSION, EndReason, RunEvent, RunId, RunStart, StepMetrics};

use crate::checkpoint::{self, CHECKPOINT_FORMAT, TrainerState};
use crate::config::RunConfig;
use crate::data::rng::{SplitMix64, hash};
use crate::data::{Batch, Dataset};
use crate::error::{Error, Result};
use crate::model::MiniCpm;
use crate::optim::AdamW;

/// Resolves a `--device` value. CUDA needs a build with the `cuda` feature.
pub fn device(spec: &str) -> Result<Device> {
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    if let Some(n) = spec.strip_prefix("cuda:") {
        if n.parse::<usize>().is_err() {
            return Err(Error::Config(format!(
                "--device {spec:?} is not allowed; use cpu or cuda:N"
            )));
        }
        return Err(Error::Config(format!(
            "--device {spec}: CUDA is unavailable in this build (it has no cuda feature); use --device cpu"
        )));
    }
    Err(Error::Config(format!(
        "--device {spec:?} is not allowed; use cpu or cuda:N"
    )))
}

/// One run's model, optimiser, data and position.
pub struct Trainer {
    cfg: RunConfig,
    run: RunId,
    model: MiniCpm,
    opt: AdamW,
    data: Dataset,
    device: Device,
    /// Steps completed.
    step: u64,
    tokens: u64,
    rng: SplitMix64,
    last_val: Option<f64>,
}

impl Trainer {
    /// A fresh run: μP init (or `init_from` weights) at step 0.
    pub fn new(cfg: RunConfig) -> Result<Self> {
        cfg.validate()?;
        let device = device(&cfg.device)?;
        let data = Dataset::open(&cfg)?;
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
        let opt = AdamW::new(
            model.named_vars(),
            cfg.optim.clone(),
            cfg.model.width_mult(),
        )?;
        Ok(Trainer {
            rng: SplitMix64::new(hash(&[cfg.seed, 0x7261_6e64])),
            cfg,
            run: 0,
            model,
            opt,
            data,
            device,
            step: 0,
            tokens: 0,
            last_val: None,
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
        let data = Dataset::open(&cfg)?;
        let model = MiniCpm::from_tensors(&cfg.model, cfg.seq, ck.model, &device, DType::F32)?;
        let mut opt = AdamW::new(
            model.named_vars(),
            cfg.optim.clone(),
            cfg.model.width_mult(),
        )?;
        opt.load_state(ck.optimizer, ck.state.adam_t)?;
        Ok(Trainer {
            cfg,
            run: 0,
            model,
            opt,
            data,
            device,
            step: ck.state.step,
            tokens: ck.state.tokens,
            rng: ck.state.rng,
            last_val: ck.state.last_val_loss,
        })
    }

    pub fn config(&self) -> &RunConfig {
        &self.cfg
    }

    pub fn model(&self) -> &MiniCpm {
        &self.model
    }

    pub fn data(&self) -> &Dataset {
        &self.data
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

    /// Runs the next training step. On a non-finite loss or gradient nothing is applied and
    /// an error naming the step is returned.
    pub fn train_step(&mut self) -> Result<StepMetrics> {
        let t0 = Instant::now();
        let s = self.step + 1;
        let lr = self.cfg.schedule.lr(s);
        let (x, y) = self.tensors(&self.data.train_batch(s))?;
        let loss = self.model.loss(&x, &y, true)?;
        let loss_v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let non_finite = |what| Error::NonFinite {
            run: self.run,
            step: s,
            what,
        };
        if !loss_v.is_finite() {
            return Err(non_finite("loss"));
        }
        let grads = loss.backward()?;
        let (grad_norm, grad_norm_per_layer) =
            self.opt.grad_norms(&grads, self.cfg.model.layers)?;
        if !grad_norm.is_finite() {
            return Err(non_finite("gradient"));
        }
        let Some(stats) = self.opt.step(&grads, lr, grad_norm)? else {
            return Err(non_finite("parameters after the update"));
        };
        self.step = s;
        self.tokens += self.cfg.tokens_per_step();
        let secs = t0.elapsed().as_secs_f64();
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
            grad_norm_per_layer,
        })
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
            name: "trunk".into(),
            parent: None,
            fork_step: None,
            model: self.cfg.model.summary(&self.cfg.preset),
            data: self.data.summary().clone(),
            phases: self.cfg.schedule.bounds(),
            start_step: self.step,
            batch: self.cfg.batch,
            seq: self.cfg.seq,
            device: self.cfg.device.clone(),
            threads: self.cfg.threads,
            config: serde_json::to_value(&self.cfg).expect("config serialises"),
        }))
    }
}

/// How long a decay branch runs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForkLength {
    Steps(u64),
    /// A fraction of the fork step (0.1 at step 2000 decays over 200 steps).
    FractionOfStep(f64),
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
    /// Fork a decay branch. Not supported yet: the engine answers with a note.
    Fork(ForkRequest),
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

/// The engine loop: steps until done, stopped, or failed; one `end` event in every case.
fn drive(mut tr: Trainer, rx: Receiver<Command>, mut emit: impl FnMut(RunEvent)) -> Outcome {
    let t0 = Instant::now();
    let run = tr.run;
    emit(tr.run_start_event());
    let mut paused = false;
    let result: Result<EndReason> = (|| {
        loop {
            // Commands between steps; a paused engine blocks here.
            loop {
                let c = if paused {
                    rx.recv().ok()
                } else {
                    match rx.try_recv() {
                        Ok(c) => Some(c),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => break,
                    }
                };
                match c {
                    Some(Command::Pause) if !paused => {
                        paused = true;
                        emit(RunEvent::Note {
                            run,
                            step: tr.step,
                            message: "paused".into(),
                        });
                    }
                    Some(Command::Resume) if paused => {
                        paused = false;
                        emit(RunEvent::Note {
                            run,
                            step: tr.step,
                            message: "resumed".into(),
                        });
                    }
                    Some(Command::Stop) | None => return Ok(EndReason::Stopped),
                    Some(Command::Fork(req)) => emit(RunEvent::Note {
                        run: req.parent,
                        step: tr.step,
                        message: format!(
                            "fork of run {} at step {} not supported yet: decay branches arrive with the branching feature",
                            req.parent, tr.step
                        ),
                    }),
                    Some(_) => {}
                }
                if !paused {
                    break;
                }
            }
            if tr.is_done() {
                return Ok(EndReason::Completed);
            }
            let m = tr.train_step()?;
            emit(RunEvent::Step(m));
            if tr.eval_due() {
                let val_loss = tr.evaluate()?;
                emit(RunEvent::Eval {
                    run,
                    step: tr.step,
                    val_loss,
                    tokens: tr.tokens,
                });
            }
            if tr.checkpoint_due() {
                let dir = tr.cfg.checkpoint_dir.clone().expect("validated");
                let path = tr.save_checkpoint(&dir)?;
                emit(RunEvent::Checkpoint {
                    run,
                    step: tr.step,
                    path: path.display().to_string(),
                });
            }
        }
    })();
    let (reason, message) = match result {
        Ok(r) => (r, None),
        Err(e) => (EndReason::Failed, Some(e.to_string())),
    };
    // A final checkpoint for a clean end, when checkpointing is on and this step has none yet.
    if reason != EndReason::Failed
        && tr.step > 0
        && let Some(dir) = tr.cfg.checkpoint_dir.clone()
        && !tr.checkpoint_due()
    {
        match tr.save_checkpoint(&dir) {
            Ok(path) => emit(RunEvent::Checkpoint {
                run,
                step: tr.step,
                path: path.display().to_string(),
            }),
            Err(e) => emit(RunEvent::Note {
                run,
                step: tr.step,
                message: format!("final checkpoint failed: {e}"),
            }),
        }
    }
    emit(RunEvent::End {
        run,
        step: tr.step,
        reason,
        message: message.clone(),
        final_val_loss: tr.last_val,
        wall_s: t0.elapsed().as_secs_f64(),
    });
    Outcome {
        reason,
        step: tr.step,
        final_val_loss: tr.last_val,
        message,
    }
}
