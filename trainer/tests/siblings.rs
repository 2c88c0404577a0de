//! Sibling runs: they start from the trunk's initial weights where the shape is the same and
//! read the trunk's batches, so a sibling with the trunk's settings repeats the trunk's loss
//! curve bit for bit; a sibling of another shape trains as a run of its own configuration
//! would; siblings interleave with the trunk without disturbing it; one over the memory budget
//! is refused with a note.

mod common;

use std::sync::mpsc;

use wsdscope_events::{EndReason, NoteKind, RunEvent};
use wsdscope_trainer::{Engine, ModelConfig, Policy, RunConfig, SiblingPlan, Trainer};

fn events_of(cfg: RunConfig) -> Vec<RunEvent> {
    let (tx, rx) = mpsc::channel();
    let engine = Engine::spawn(Trainer::new(cfg).unwrap(), move |e| tx.send(e).unwrap()).unwrap();
    engine.join();
    rx.iter().collect()
}

fn losses(ev: &[RunEvent], run: u32) -> Vec<f64> {
    ev.iter()
        .filter_map(|e| match e {
            RunEvent::Step(m) if m.run == run => Some(m.loss),
            _ => None,
        })
        .collect()
}

fn sibling(label: &str, change: impl FnOnce(&mut RunConfig), steps: u64) -> SiblingPlan {
    let mut config = common::small_run(steps);
    change(&mut config);
    SiblingPlan {
        label: label.into(),
        config,
    }
}

/// The losses of a run of `cfg` alone.
fn alone(cfg: RunConfig) -> Vec<f64> {
    let mut t = Trainer::new(cfg).unwrap();
    (0..t.config().steps)
        .map(|_| t.train_step().unwrap().loss)
        .collect()
}

#[test]
fn a_sibling_with_the_trunks_settings_repeats_its_curve_bit_for_bit() {
    let steps = 12;
    let trunk_alone = alone(common::small_run(steps));
    for policy in [Policy::RoundRobin, Policy::BranchesFirst] {
        let mut cfg = common::small_run(steps);
        cfg.policy = policy;
        cfg.siblings = vec![
            sibling("clip=1", |_| {}, steps),
            sibling("lr=0.003", |c| c.schedule = scaled(c, 0.3), steps),
        ];
        let ev = events_of(cfg);
        // Started as runs of their own (no parent), named by what differs.
        let starts: Vec<(u32, String, Option<u32>)> = ev
            .iter()
            .filter_map(|e| match e {
                RunEvent::RunStart(s) => Some((s.run, s.name.clone(), s.parent)),
                _ => None,
            })
            .collect();
        assert_eq!(
            starts,
            [
                (0, "trunk".into(), None),
                (1, "clip=1".into(), None),
                (2, "lr=0.003".into(), None)
            ]
        );
        let trunk = losses(&ev, 0);
        assert_eq!(
            trunk, trunk_alone,
            "siblings disturbed the trunk ({policy:?})"
        );
        assert_eq!(
            losses(&ev, 1),
            trunk,
            "identical sibling diverged ({policy:?})"
        );
        // Same initial weights and batch: the first loss (before any update) is the trunk's.
        let lr = losses(&ev, 2);
        assert_eq!(lr[0], trunk[0], "first loss of the lr sibling");
        assert_ne!(lr[steps as usize - 1], trunk[steps as usize - 1]);
        let ends = ev
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    RunEvent::End {
                        reason: EndReason::Completed,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(ends, 3);
    }
}

/// The trunk's schedule with its peak lr scaled by `f`.
fn scaled(c: &RunConfig, f: f64) -> wsdscope_trainer::Schedule {
    let b = c.schedule.bounds();
    wsdscope_trainer::Schedule::wsd(
        c.schedule.peak() * f,
        c.steps,
        b.warmup_end,
        b.total - b.decay_start,
        wsdscope_trainer::DecayShape::Exp,
        0.1,
    )
    .unwrap()
}

#[test]
fn siblings_of_another_shape_or_batch_train_as_their_own_runs_would() {
    let steps = 8;
    let wide = |c: &mut RunConfig| {
        c.model = ModelConfig::minicpm(64, 128, 2, 1, 2, 64);
        c.model.dim_model_base = 16;
    };
    let half = |c: &mut RunConfig| c.batch = 2;
    let mut cfg = common::small_run(steps);
    cfg.siblings = vec![
        sibling("hidden=64", wide, steps),
        sibling("batch=2", half, steps),
    ];
    let ev = events_of(cfg);
    let mut c = common::small_run(steps);
    wide(&mut c);
    // Its own μP init from the same seed, on the same batches: exactly a run of its own.
    assert_eq!(losses(&ev, 1), alone(c));
    let mut c = common::small_run(steps);
    half(&mut c);
    assert_eq!(losses(&ev, 2), alone(c));
    assert_ne!(losses(&ev, 1)[0], losses(&ev, 0)[0]);
    let params: Vec<u64> = ev
        .iter()
        .filter_map(|e| match e {
            RunEvent::RunStart(s) => Some(s.model.params),
            _ => None,
        })
        .collect();
    assert!(params[1] > params[0], "{params:?}");
}

#[test]
fn a_smaller_batch_reads_the_same_stream() {
    let t = Trainer::new(common::small_run(4)).unwrap();
    let d = t.data();
    let four = d.train_batch(1);
    assert_eq!(d.train_batch_of(1, 4), four);
    assert_eq!(d.train_batch_of(1, 2), four.rows(0..2));
    assert_eq!(d.train_batch_of(2, 2), four.rows(2..4));
    assert_eq!(d.train_batch_of(1, 8).rows(4..8), d.train_batch(2));
}

#[test]
fn a_sibling_over_the_memory_budget_is_refused_and_the_trunk_goes_on() {
    let steps = 6;
    let mut cfg = common::small_run(steps);
    cfg.memory_budget_mb = Some(0);
    cfg.siblings = vec![sibling("seed=1", |c| c.seed = 1, steps)];
    let ev = events_of(cfg);
    let refused: Vec<&str> = ev
        .iter()
        .filter_map(|e| match e {
            RunEvent::Note {
                kind: NoteKind::Refused,
                message,
                ..
            } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].contains("sibling seed=1 refused") && refused[0].contains("memory budget"),
        "{}",
        refused[0]
    );
    assert_eq!(losses(&ev, 0).len(), steps as usize);
    assert!(losses(&ev, 1).is_empty());
}

#[test]
fn a_sibling_seed_changes_the_initial_weights_only() {
    let steps = 3;
    let mut cfg = common::small_run(steps);
    cfg.siblings = vec![sibling("seed=1", |c| c.seed = 1, steps)];
    let t = Trainer::new(cfg.clone()).unwrap();
    let s = t.sibling(1, &cfg.siblings[0]).unwrap();
    // Other weights, the same batches.
    assert_ne!(
        t.parameters()[0]
            .1
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        s.parameters()[0]
            .1
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    );
    assert_eq!(t.data().train_batch(2), s.data().train_batch(2));
    // And a sibling with the trunk's seed and shape starts from the very same tensors.
    let same = t
        .sibling(
            1,
            &sibling("lr=0.003", |c| c.schedule = scaled(c, 0.3), steps),
        )
        .unwrap();
    for ((n, a), (_, b)) in t.parameters().iter().zip(same.parameters()) {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b, "{n}");
    }
}

#[test]
fn the_memory_estimate_counts_every_sibling() {
    let steps = 4;
    let base = common::small_run(steps);
    let mut cfg = base.clone();
    let wide = sibling(
        "hidden=64",
        |c| {
            c.model = ModelConfig::minicpm(64, 128, 2, 1, 2, 64);
            c.model.dim_model_base = 16;
            c.batch = 16;
        },
        steps,
    );
    let extra = wsdscope_trainer::memory::run_bytes(&wide.config);
    cfg.siblings = vec![wide];
    let (a, b) = (
        wsdscope_trainer::estimate(&base).total(),
        wsdscope_trainer::estimate(&cfg).total(),
    );
    assert!(b >= a + extra, "{a} + {extra} > {b}");
}
