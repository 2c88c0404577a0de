//! The event contract of a wsdscope run: the versioned [`RunEvent`] vocabulary, its payload
//! types, and the closed vocabulary of probe names and scalars ([`vocabulary`]).
//!
//! A training run (live) and a recorded session (replayed) both produce the same stream of
//! [`RunEvent`]s, so every consumer — the progress line, `--jsonl`, the recorder, the TUI —
//! is written once against this vocabulary. The vocabulary is closed and versioned
//! ([`EVENT_SCHEMA_VERSION`]); a consumer that sees a newer version should refuse it rather
//! than guess.
//!
//! On the wire (`wsdscope record --jsonl`) each event is one JSON object per line with a
//! `"type"` field (`"run_start"`, `"step"`, `"eval"`, `"forked"`, `"probe"`, `"checkpoint"`,
//! `"note"`, `"end"`) and the id of the run it belongs to (`"run"`; the trunk is run 0).
//!
//! Serde only: the trainer, the probes, the session files and the app import it without
//! pulling in candle or HDF5. The full run configuration travels as an opaque JSON value.

pub mod vocabulary;

pub use vocabulary::{ProbeKind, ProbeSpec};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the event vocabulary. Bump on any incompatible change.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// Identifier of a run inside a session. The trunk is run 0.
pub type RunId = u32;

/// The phase of a Warmup-Stable-Decay schedule that a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Warmup,
    Stable,
    Decay,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Warmup => "warmup",
            Phase::Stable => "stable",
            Phase::Decay => "decay",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the phases of a run's schedule begin and end, in 1-based steps.
/// Steps `1..=warmup_end` are warmup, `warmup_end+1..=decay_start` stable, the rest decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseBounds {
    pub warmup_end: u64,
    pub decay_start: u64,
    pub total: u64,
}

/// A short description of the model, enough for a header line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub preset: String,
    /// All parameters (the tied head counted once).
    pub params: u64,
    /// Parameters outside the embedding (the count the MiniCPM paper reports).
    pub non_embedding_params: u64,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub vocab: usize,
}

/// What a run's data is, and the best loss it admits where that is known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSummary {
    /// Human description, e.g. `synthetic (seed 0)` or `text corpus.txt (bytes)`.
    pub description: String,
    /// Entropy floor in nats/token on the validation batches, if the source knows it.
    pub entropy_floor: Option<f64>,
    pub train_tokens: Option<u64>,
    pub val_tokens: Option<u64>,
}

/// Per-step metrics of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub run: RunId,
    /// 1-based global step.
    pub step: u64,
    pub phase: Phase,
    /// Mean token cross-entropy of this step's batch, in nats.
    pub loss: f64,
    /// Learning rate multiplier times the peak: the lr of non-hidden tensors.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// ‖θ(t+1) − θ(t)‖ over all parameters.
    pub update_norm: f64,
    /// ‖θ(t+1)‖ over all parameters.
    pub param_norm: f64,
    /// Tokens processed so far by this run (including the fork's history).
    pub tokens: u64,
    pub tokens_per_s: f64,
    pub step_ms: f64,
    /// Gradient norm (before clipping) of each decoder layer's tensors, index = layer.
    #[serde(default)]
    pub grad_norm_per_layer: Vec<f64>,
    /// Gradient norm (before clipping) of each parameter group, in the order of the run's
    /// [`RunStart::param_groups`].
    #[serde(default)]
    pub grad_norm_per_group: Vec<f64>,
    /// The geometry of the previous update measured with this step's gradient (MiniCPM
    /// §4.4); `None` at a run's first step, where there is no previous update.
    #[serde(default)]
    pub geometry: Option<StepGeometry>,
    /// max |Δθ| of this step's update for each of the run's [`RunStart::tracked_tensors`].
    #[serde(default)]
    pub max_update: Vec<f64>,
}

/// The geometry of one optimiser step (MiniCPM §4.4, Fig. 8). With g(t) the gradient at
/// θ(t) and v(t) = θ(t+1) − θ(t) the update that followed it, measured at step t+1:
/// cos = cos(g(t+1), g(t)); d1 = g(t+1)·v(t)/‖v(t)‖, the slope along the update after it;
/// d2 = (g(t+1) − g(t))·v(t)/‖v(t)‖², the curvature along it; curvature = |d2|/(1+d1²)^1.5.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepGeometry {
    #[serde(deserialize_with = "nan::value")]
    pub cos: f64,
    #[serde(deserialize_with = "nan::value")]
    pub d1: f64,
    #[serde(deserialize_with = "nan::value")]
    pub d2: f64,
    #[serde(deserialize_with = "nan::value")]
    pub curvature: f64,
}

/// What a [`RunEvent::Note`] says, typed: consumers decide by this, never by the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteKind {
    /// Information only.
    #[default]
    Info,
    /// The engine paused every run.
    Paused,
    /// The engine resumed.
    Resumed,
    /// A request (a fork, a probe) was refused; the text says why.
    Refused,
    /// Something failed without ending the run (a probe, a final checkpoint).
    Failed,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// All scheduled steps ran.
    Completed,
    /// The user asked to stop.
    Stopped,
    /// Training could not go on (non-finite loss, data error, …); see the message.
    Failed,
}

/// The start of a run: what it is, on what data, with which phases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStart {
    pub run: RunId,
    pub schema_version: u32,
    pub name: String,
    /// The run this one was forked from (None for the trunk).
    #[serde(default)]
    pub parent: Option<RunId>,
    /// The parent's step at which it was forked.
    #[serde(default)]
    pub fork_step: Option<u64>,
    pub model: ModelSummary,
    pub data: DataSummary,
    pub phases: PhaseBounds,
    /// The step the run starts after (0 for a fresh run, the checkpoint step on resume).
    pub start_step: u64,
    pub batch: usize,
    pub seq: usize,
    pub device: String,
    pub threads: usize,
    /// The full run configuration as the trainer serialises it.
    pub config: serde_json::Value,
    /// Names of the parameter groups whose gradient norms each step reports.
    #[serde(default)]
    pub param_groups: Vec<String>,
    /// Names of the tensors whose max |Δθ| each step reports.
    #[serde(default)]
    pub tracked_tensors: Vec<String>,
}

/// The result of one probe: named scalars and named series (e.g. a 1-D loss slice). A value
/// that is not a number (NaN, ±∞: a loss far out on a slice, an undefined estimate) is
/// written as JSON `null` and reads back as NaN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub run: RunId,
    pub step: u64,
    pub probe: String,
    #[serde(default, deserialize_with = "nan::map")]
    pub scalars: BTreeMap<String, f64>,
    #[serde(default, deserialize_with = "nan::series")]
    pub series: BTreeMap<String, Vec<f64>>,
}

impl ProbeResult {
    /// Its kind, if it is in the vocabulary (a newer writer may report kinds this one lacks).
    pub fn kind(&self) -> Option<ProbeKind> {
        ProbeKind::parse(&self.probe)
    }

    /// One line about it, from its kind's summary template (just the name for an unknown
    /// kind).
    pub fn summary(&self) -> String {
        match vocabulary::probe_spec(&self.probe) {
            Some(spec) => spec.summarize(&self.scalars, &self.series),
            None => self.probe.clone(),
        }
    }
}

/// Reading JSON `null` (how serde_json writes NaN and ±∞) back as NaN.
mod nan {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer};

    pub fn value<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }

    pub fn map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
        let m = BTreeMap::<String, Option<f64>>::deserialize(d)?;
        Ok(m.into_iter()
            .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
            .collect())
    }

    pub fn series<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<f64>>, D::Error> {
        let m = BTreeMap::<String, Vec<Option<f64>>>::deserialize(d)?;
        Ok(m.into_iter()
            .map(|(k, v)| (k, v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect()))
            .collect())
    }
}

/// One event of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunEvent {
    /// A run begins (or resumes from a checkpoint at `start_step`). Boxed: it is large and
    /// rare, while every step event travels through the same channels.
    RunStart(Box<RunStart>),
    Step(StepMetrics),
    /// Loss on the held-out validation batches.
    Eval {
        run: RunId,
        step: u64,
        val_loss: f64,
        tokens: u64,
    },
    /// A new run was forked from `parent` after its step `step`; its `run_start` follows.
    Forked {
        run: RunId,
        parent: RunId,
        step: u64,
        /// The new run's schedule as the trainer serialises it.
        schedule: serde_json::Value,
    },
    /// A probe measured something about a run's loss landscape.
    Probe(ProbeResult),
    /// A checkpoint was written.
    Checkpoint {
        run: RunId,
        step: u64,
        path: String,
    },
    /// A message from the engine: its kind for consumers that act on it, its text for
    /// people. (Sessions before `kind` existed read as [`NoteKind::Info`].)
    Note {
        run: RunId,
        step: u64,
        #[serde(default)]
        kind: NoteKind,
        message: String,
    },
    /// The run ended.
    End {
        run: RunId,
        step: u64,
        reason: EndReason,
        message: Option<String>,
        /// Last validation loss, if any eval ran.
        final_val_loss: Option<f64>,
        wall_s: f64,
    },
}

impl RunEvent {
    /// The run this event belongs to.
    pub fn run(&self) -> RunId {
        match self {
            RunEvent::RunStart(s) => s.run,
            RunEvent::Probe(p) => p.run,
            RunEvent::Eval { run, .. }
            | RunEvent::Forked { run, .. }
            | RunEvent::Checkpoint { run, .. }
            | RunEvent::Note { run, .. }
            | RunEvent::End { run, .. } => *run,
            RunEvent::Step(m) => m.run,
        }
    }

    /// The step this event is at: a run's start step, a fork's parent step, otherwise the
    /// step it reports on.
    pub fn step(&self) -> u64 {
        match self {
            RunEvent::RunStart(s) => s.start_step,
            RunEvent::Probe(p) => p.step,
            RunEvent::Eval { step, .. }
            | RunEvent::Forked { step, .. }
            | RunEvent::Checkpoint { step, .. }
            | RunEvent::Note { step, .. }
            | RunEvent::End { step, .. } => *step,
            RunEvent::Step(m) => m.step,
        }
    }

    /// The `"type"` tag this event has on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            RunEvent::RunStart { .. } => "run_start",
            RunEvent::Step(_) => "step",
            RunEvent::Eval { .. } => "eval",
            RunEvent::Forked { .. } => "forked",
            RunEvent::Probe(_) => "probe",
            RunEvent::Checkpoint { .. } => "checkpoint",
            RunEvent::Note { .. } => "note",
            RunEvent::End { .. } => "end",
        }
    }

    /// One JSON line (no trailing newline), the `--jsonl` wire form.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("RunEvent serialises to JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> RunEvent {
        RunEvent::Step(StepMetrics {
            run: 0,
            step: 3,
            phase: Phase::Stable,
            loss: 2.5,
            lr: 0.01,
            grad_norm: 1.5,
            update_norm: 0.1,
            param_norm: 40.0,
            tokens: 6144,
            tokens_per_s: 1000.0,
            step_ms: 12.0,
            grad_norm_per_layer: vec![0.5, 0.7],
            grad_norm_per_group: vec![0.1, 1.2, 0.3],
            geometry: Some(StepGeometry {
                cos: 0.5,
                d1: -0.1,
                d2: 2.0,
                curvature: 1.9,
            }),
            max_update: vec![1e-3],
        })
    }

    #[test]
    fn notes_carry_a_kind_and_old_notes_read_as_info() {
        let n = RunEvent::Note {
            run: 0,
            step: 7,
            kind: NoteKind::Paused,
            message: "paused".into(),
        };
        let json = serde_json::to_string(&n).unwrap();
        assert!(json.contains(r#""kind":"paused""#), "{json}");
        assert_eq!(serde_json::from_str::<RunEvent>(&json).unwrap(), n);
        let old = r#"{"type":"note","run":0,"step":7,"message":"paused"}"#;
        let RunEvent::Note { kind, .. } = serde_json::from_str::<RunEvent>(old).unwrap() else {
            panic!("a note");
        };
        assert_eq!(kind, NoteKind::Info);
    }

    #[test]
    fn wire_form_has_type_and_run() {
        let line = step().to_json_line();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "step");
        assert_eq!(v["run"], 0);
        assert_eq!(v["phase"], "stable");
        assert_eq!(v["loss"], 2.5);
    }

    #[test]
    fn non_numbers_in_probes_read_back_as_nan() {
        let p = RunEvent::Probe(ProbeResult {
            run: 0,
            step: 4,
            probe: "noise".into(),
            scalars: BTreeMap::from([("b_simple".into(), f64::NAN), ("x".into(), 1.5)]),
            series: BTreeMap::from([("loss".into(), vec![1.0, f64::INFINITY])]),
        });
        let line = p.to_json_line();
        assert!(line.contains("null"), "{line}");
        let RunEvent::Probe(back) = serde_json::from_str::<RunEvent>(&line).unwrap() else {
            panic!("not a probe")
        };
        assert!(back.scalars["b_simple"].is_nan());
        assert_eq!(back.scalars["x"], 1.5);
        assert_eq!(back.series["loss"][0], 1.0);
        assert!(back.series["loss"][1].is_nan());
    }

    #[test]
    fn round_trips_through_json() {
        let events = vec![
            step(),
            RunEvent::Eval {
                run: 0,
                step: 10,
                val_loss: 2.0,
                tokens: 100,
            },
            RunEvent::End {
                run: 0,
                step: 10,
                reason: EndReason::Failed,
                message: Some("non-finite loss at step 10".into()),
                final_val_loss: None,
                wall_s: 1.0,
            },
        ];
        for e in events {
            let back: RunEvent = serde_json::from_str(&e.to_json_line()).unwrap();
            assert_eq!(back, e);
            assert_eq!(back.kind(), e.kind());
        }
    }
}
