//! A training step is all or nothing: a step whose gradient or update is not finite returns
//! an error naming the step and what was not finite, leaves every part of the run's state
//! bit-identical (parameters, AdamW's moments and t, step and token counts, RNG, last
//! validation loss, the per-step tracker), and the run then goes on exactly as a twin that
//! never met the fault. Faults come from `Trainer::inject_fault`, on the default path
//! (fused kernels on the CPU, f32) and on the reference path.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use wsdscope_events::StepMetrics;
use wsdscope_trainer::checkpoint::{self, TrainerState};
use wsdscope_trainer::engine::Fault;
use wsdscope_trainer::{Error, RunConfig, Trainer};

/// Steps taken before the fault; the faulty step is K.
const K: u64 = 5;

/// Everything a checkpoint holds, tensors as raw bits, and the files' bytes.
#[derive(Debug, PartialEq)]
struct Snapshot {
    state: TrainerState,
    tensors: BTreeMap<String, Vec<u32>>,
    files: BTreeMap<String, Vec<u8>>,
}

fn snapshot(tr: &Trainer, root: &Path) -> Snapshot {
    let dir = tr.save_checkpoint(root).unwrap();
    let ck = checkpoint::load(&dir).unwrap();
    let tensors = ck
        .model
        .iter()
        .chain(&ck.optimizer)
        .map(|(name, t)| {
            let bits = t
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect();
            (name.clone(), bits)
        })
        .collect();
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    Snapshot {
        state: ck.state,
        tensors,
        files,
    }
}

/// A step's metrics without its wall-time fields, printed: `{:?}` prints each float so
/// that it reads back to the same bits, so equal strings mean bit-identical metrics.
fn metrics(mut m: StepMetrics) -> String {
    m.step_ms = 0.0;
    m.tokens_per_s = 0.0;
    format!("{m:?}")
}

fn config(reference_ops: bool) -> RunConfig {
    let mut cfg = common::small_run(16);
    cfg.reference_ops = reference_ops;
    assert!(cfg.probes.per_step, "the per-step tracker should be on");
    cfg
}

/// Takes K − 1 steps and an eval, then meets each of `faults` at step K (the run is
/// unchanged after each), then takes step K for real; compares with a twin at every point.
fn check(reference_ops: bool, faults: &[(Fault, &str)]) {
    let tmp = tempfile::tempdir().unwrap();
    let mut run = Trainer::new(config(reference_ops)).unwrap();
    let mut twin = Trainer::new(config(reference_ops)).unwrap();
    for _ in 1..K {
        run.train_step().unwrap();
        twin.train_step().unwrap();
    }
    run.evaluate().unwrap();
    twin.evaluate().unwrap();
    assert!(run.last_val_loss().is_some());
    let before = snapshot(&run, &tmp.path().join("before"));
    assert_eq!(before.state.step, K - 1);
    assert_eq!(before.state.adam_t, K - 1);
    let mean_step_s = run.mean_step_s().to_bits();

    for (i, &(fault, what)) in faults.iter().enumerate() {
        run.inject_fault(fault);
        let err = run.train_step().unwrap_err();
        eprintln!("reference ops {reference_ops}, {fault:?}: {err}");
        assert!(
            matches!(err, Error::NonFinite { run: 0, step: K, what: w } if w == what),
            "{fault:?}: {err:?}"
        );
        assert!(
            err.to_string()
                .contains(&format!("non-finite {what} at step {K}"))
        );
        assert_eq!(run.step_count(), K - 1);
        assert_eq!(run.mean_step_s().to_bits(), mean_step_s);
        let after = snapshot(&run, &tmp.path().join(format!("after-{i}")));
        assert!(
            after == before,
            "{fault:?} changed the run's state: {:?}",
            after.state
        );
    }

    // Step K for real: the same as the twin's, metrics (including the geometry the tracker
    // derives from the previous step) and the state it leaves.
    let got = run.train_step().unwrap();
    let want = twin.train_step().unwrap();
    assert_eq!(got.loss.to_bits(), want.loss.to_bits());
    assert!(got.geometry.is_some() && !got.max_update.is_empty());
    assert_eq!(metrics(got), metrics(want));
    let a = snapshot(&run, &tmp.path().join("run"));
    let b = snapshot(&twin, &tmp.path().join("twin"));
    assert!(a == b, "the run and its twin differ after step {K}");
    assert_eq!(a.state.step, K);
    assert_eq!(a.state.adam_t, K);
    // And the step after it.
    assert_eq!(
        metrics(run.train_step().unwrap()),
        metrics(twin.train_step().unwrap())
    );
}

#[test]
fn a_non_finite_gradient_changes_nothing() {
    check(false, &[(Fault::NonFiniteGradient, "gradient")]);
}

#[test]
fn a_non_finite_update_changes_nothing() {
    check(false, &[(Fault::NonFiniteUpdate, "update")]);
}

/// Both faults at the same step, one after the other, then the step.
#[test]
fn repeated_faults_at_one_step_change_nothing() {
    check(
        false,
        &[
            (Fault::NonFiniteUpdate, "update"),
            (Fault::NonFiniteGradient, "gradient"),
            (Fault::NonFiniteUpdate, "update"),
        ],
    );
}

/// The reference path (plain ops, staged update) keeps the same promise.
#[test]
fn a_non_finite_update_changes_nothing_on_the_reference_path() {
    check(
        true,
        &[
            (Fault::NonFiniteUpdate, "update"),
            (Fault::NonFiniteGradient, "gradient"),
        ],
    );
}
