//! What both session benchmarks record: the `run_start` of a `tiny`-shaped run and a
//! deterministic noise source for its metrics.

use wsdscope_sessions::{DataSummary, EVENT_SCHEMA_VERSION, ModelSummary, PhaseBounds, RunStart};

/// Decoder layers of the benchmarked model (columns of `grad_norm_per_layer`).
pub const LAYERS: usize = 4;
/// Tensors whose max |Δθ| each step reports (columns of `max_update`).
pub const TRACKED: usize = 3;

/// The `run_start` of run `run` over `total` steps: the trunk, or a branch forked at
/// `fork_step`.
pub fn run_start(run: u32, fork_step: Option<u64>, total: u64) -> RunStart {
    RunStart {
        run,
        schema_version: EVENT_SCHEMA_VERSION,
        name: fork_step.map_or("trunk".into(), |s| format!("exp @{s}")),
        parent: fork_step.map(|_| 0),
        fork_step,
        model: ModelSummary {
            preset: "tiny".into(),
            params: 853_120,
            non_embedding_params: 787_584,
            hidden: 128,
            layers: LAYERS,
            heads: 2,
            kv_heads: 1,
            ffn: 384,
            vocab: 512,
        },
        data: DataSummary {
            description: "synthetic".into(),
            entropy_floor: Some(0.99),
            train_tokens: None,
            val_tokens: None,
        },
        phases: PhaseBounds {
            warmup_end: total / 10,
            decay_start: total - total / 10,
            total,
        },
        start_step: fork_step.unwrap_or(0),
        batch: 16,
        seq: 128,
        device: "cpu".into(),
        threads: 2,
        config: serde_json::json!({"steps": total}),
        param_groups: vec!["embedding".into(), "hidden".into(), "norm".into()],
        tracked_tensors: (0..TRACKED).map(|i| format!("t{i}")).collect(),
    }
}

/// xorshift64: uniform noise in [−0.5, 0.5), the same sequence on every run.
pub struct Noise(pub u64);

impl Noise {
    pub fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }
}
