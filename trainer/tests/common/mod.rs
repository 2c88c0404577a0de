//! Small run configurations shared by the trainer's integration tests.

use wsdscope_trainer::{DataSpec, DecayShape, ModelConfig, OptimConfig, RunConfig, Schedule};

/// A very small MiniCPM (GQA, 2 layers) on the synthetic language: a step takes milliseconds.
pub fn small_run(steps: u64) -> RunConfig {
    let mut model = ModelConfig::minicpm(32, 64, 2, 1, 2, 64);
    model.dim_model_base = 16;
    RunConfig {
        preset: "test".into(),
        model,
        data: DataSpec::Synthetic,
        val_fraction: 0.1,
        steps,
        batch: 4,
        seq: 16,
        seed: 7,
        schedule: Schedule::wsd(0.01, steps, steps / 10, steps / 5, DecayShape::Exp, 0.1).unwrap(),
        optim: OptimConfig::default(),
        eval_every: 4,
        eval_batches: 2,
        device: "cpu".into(),
        threads: 1,
        checkpoint_every: 0,
        checkpoint_dir: None,
        init_from: None,
        forks: Vec::new(),
        policy: Default::default(),
        memory_budget_mb: None,
        keep_branch_checkpoints: false,
        probes: Default::default(),
        reference_ops: false,
        precision: Default::default(),
        max_runs: None,
        siblings: Vec::new(),
    }
}
