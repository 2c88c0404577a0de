//! The gradient noise scale from the CPU step's own leaves: it is the two-batch-size
//! estimate an independent computation gives from the same small batches, and a run reports
//! it over windows of steps ending at the planner's anchors, instead of a separate probe.

mod common;

use std::sync::mpsc;

use candle_core::Tensor;
use wsdscope_events::vocabulary::noise;
use wsdscope_events::{ProbeResult, RunEvent};
use wsdscope_probes::{NoiseScale, Objective};
use wsdscope_trainer::objective::ModelObjective;
use wsdscope_trainer::{Engine, Trainer};

/// A run whose step has two leaves of 4 sequences of 128 tokens (512 tokens each).
fn two_leaves(steps: u64) -> wsdscope_trainer::RunConfig {
    let mut cfg = common::small_run(steps);
    cfg.batch = 8;
    cfg.seq = 128;
    cfg
}

/// The `noise` results of a run driven by the engine to its end, every run's.
fn noise_results(tr: Trainer) -> Vec<ProbeResult> {
    let (tx, rx) = mpsc::channel();
    let outcome = Engine::spawn(tr, move |e| {
        let _ = tx.send(e);
    })
    .unwrap()
    .join();
    assert!(outcome.final_val_loss.is_some(), "{outcome:?}");
    rx.try_iter()
        .filter_map(|e| match e {
            RunEvent::Probe(p) if p.probe == "noise" => Some(p),
            _ => None,
        })
        .collect()
}

#[test]
fn a_steps_leaves_give_the_estimate_of_two_independent_micro_batch_gradients() {
    let mut cfg = two_leaves(20);
    cfg.probes.noise_window = 1;
    let mut tr = Trainer::new(cfg).unwrap();
    tr.train_step().unwrap();
    assert!(tr.step_noise_report().is_some(), "step 1 has an estimate");
    // Independently: the gradients of batch 2's two halves at θ(1), in f64, from a fresh
    // copy of the model (no optimiser, no reduction tree).
    let b = tr.data().train_batch_of(2, 8);
    let grads: Vec<Vec<f64>> = [0..4, 4..8]
        .into_iter()
        .map(|rows| {
            let h = b.rows(rows);
            let dev = tr.model().device();
            let x = Tensor::from_slice(&h.inputs, (h.batch, h.seq), dev).unwrap();
            let y = Tensor::from_slice(&h.targets, (h.batch, h.seq), dev).unwrap();
            let mut f = ModelObjective::new(tr.model(), x, y).unwrap();
            let theta = f.params().unwrap();
            f.loss_and_grad(&theta).1
        })
        .collect();
    let want = NoiseScale::from_micro_batches(&grads, 512.0);
    tr.train_step().unwrap();
    let got = tr
        .step_noise_report()
        .expect("step 2 has an estimate")
        .scalars;
    eprintln!("leaves: {got:?}\nindependent: {want:?}");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * b.abs();
    assert!(close(got[noise::G_SQ], want.g_sq), "|G|²");
    assert!(close(got[noise::TRACE], want.trace), "tr Σ");
    assert!(close(got[noise::B_SIMPLE], want.b_simple()), "B_simple");
    assert_eq!(got[noise::STEPS], 1.0);
    assert_eq!(got[noise::MICRO_BATCHES], 2.0);
    assert_eq!(got[noise::BATCH_TOKENS], 1024.0);
    assert!(tr.step_noise_report().is_none(), "reported once");
}

#[test]
fn a_run_reports_its_steps_noise_scale_every_window_and_at_every_anchor() {
    // 40 steps: warmup to 4, stable to 32, decay to 40; the anchors are 4, 18, 32, 35, 38
    // (rounded up) and 40.
    let mut cfg = two_leaves(40);
    cfg.probes.noise_window = 8;
    let noise_reports = noise_results(Trainer::new(cfg).unwrap());
    let steps: Vec<u64> = noise_reports.iter().map(|p| p.step).collect();
    let anchors =
        wsdscope_trainer::engine::probe_anchors(two_leaves(40).schedule.bounds(), 0, false, 3);
    eprintln!("reports at {steps:?}; anchors {anchors:?}");
    for s in anchors.iter().chain(&[8, 16, 24, 40]) {
        assert!(steps.contains(s), "a report at step {s}");
    }
    // Each report averages the steps since the one before, and took no pass of its own.
    let mut prev = 0;
    for p in &noise_reports {
        assert_eq!(
            p.scalars[noise::STEPS],
            (p.step - prev) as f64,
            "at {}",
            p.step
        );
        assert!(p.scalars[noise::B_SIMPLE].is_finite());
        assert!(p.scalars[noise::G_SQ] > 0.0 && p.scalars[noise::TRACE] > 0.0);
        assert!(p.scalars["seconds"] < 0.01, "no pass of its own");
        prev = p.step;
    }
}

/// The noise reports an engine run emits, as (step, steps averaged, B_simple, the run's
/// average).
fn reports(tr: Trainer) -> Vec<(u64, f64, f64, f64)> {
    noise_results(tr)
        .into_iter()
        .map(|p| {
            (
                p.step,
                p.scalars[noise::STEPS],
                p.scalars[noise::B_SIMPLE],
                p.scalars[noise::B_SIMPLE_AVG],
            )
        })
        .collect()
}

#[test]
fn a_resumed_run_keeps_its_windows_and_reports_what_the_run_straight_through_does() {
    let mut cfg = two_leaves(40);
    cfg.probes.noise_window = 8;
    let straight = reports(Trainer::new(cfg.clone()).unwrap());
    // Stopped after step 13 and resumed from its checkpoint there.
    let dir = tempfile::tempdir().unwrap();
    let mut first = Trainer::new(cfg).unwrap();
    for _ in 0..13 {
        first.train_step().unwrap();
        if [4, 8].contains(&first.step_count()) {
            // Where the engine reports: the end of warmup, a window's end.
            first.step_noise_report().unwrap();
        }
    }
    first.save_checkpoint(dir.path()).unwrap();
    drop(first);
    let resumed = reports(Trainer::resume(dir.path(), |_| {}).unwrap());
    eprintln!("straight {straight:?}\nresumed {resumed:?}");
    // The first window after the resume is cut short (its steps before 13 are gone); from
    // then on the same boundaries, the same windows and the same values, bit for bit; the
    // run's average came back from the checkpoint, so only the short window moves it (a
    // fresh average would start at that window's value: 621 against 320 at step 16 here).
    let after = |r: &[(u64, f64, f64, f64)], avg: bool| -> Vec<(u64, f64, f64, f64)> {
        r.iter()
            .map(|&(s, n, b, a)| (s, n, b, if avg { a } else { 0.0 }))
            .filter(|p| p.0 > 16)
            .collect()
    };
    assert_eq!(resumed.first().map(|p| (p.0, p.1)), Some((16, 3.0)));
    assert_eq!(after(&resumed, false), after(&straight, false));
    let (r, s) = (after(&resumed, true), after(&straight, true));
    for (a, b) in r.iter().zip(&s) {
        assert!(
            (a.3 - b.3).abs() < 0.2 * b.3,
            "averages far apart: {a:?} vs {b:?}"
        );
    }
    let fresh = reports(Trainer::resume(dir.path(), |_| {}).unwrap());
    assert_eq!(
        fresh, resumed,
        "resuming twice from one checkpoint reports the same"
    );
}

#[test]
fn a_sibling_whose_step_is_one_leaf_gets_the_separate_noise_probe_beside_a_trunk_that_does_not() {
    // The trunk's 8 sequences make two leaves; a sibling of 2 sequences (256 tokens) is one
    // leaf, so only a pass of its own gives its noise scale (where the planner puts it: that
    // each run is planned for its own kinds is `probe_plan`'s test).
    let mut cfg = two_leaves(40);
    cfg.probes.budget_pct = Some(60.0);
    let mut half = cfg.clone();
    half.batch = 2;
    cfg.siblings = vec![wsdscope_trainer::config::SiblingPlan {
        label: "batch=2".into(),
        config: half,
    }];
    let noise = noise_results(Trainer::new(cfg).unwrap());
    let of = |run: u32| -> Vec<&ProbeResult> { noise.iter().filter(|p| p.run == run).collect() };
    eprintln!(
        "trunk {:?}\nsibling {:?}",
        of(0).iter().map(|p| p.step).collect::<Vec<_>>(),
        of(1).iter().map(|p| p.step).collect::<Vec<_>>()
    );
    assert!(
        of(0).iter().all(|p| p.scalars.contains_key(noise::STEPS)),
        "from the steps"
    );
    let separate = of(1);
    assert!(
        !separate.is_empty(),
        "the sibling's noise scale was never measured"
    );
    assert!(
        separate
            .iter()
            .all(|p| !p.scalars.contains_key(noise::STEPS)),
        "a pass of its own"
    );
    assert!(
        separate
            .iter()
            .all(|p| p.scalars[noise::B_SIMPLE].is_finite())
    );
}
