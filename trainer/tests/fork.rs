//! Forking runs: a fork that keeps its parent's schedule continues bit-identically (so it sees
//! the same batches and state), decay branches run beside the trunk under each policy, and
//! forks over the memory budget are refused with a note; a fork asked for at a step starts there
//! or is refused.

mod common;

use std::sync::mpsc;

use wsdscope_events::{EndReason, NoteKind, RunEvent};
use wsdscope_trainer::engine::decay_branch;
use wsdscope_trainer::{
    Command, DecayShape, Engine, ForkLength, ForkPlan, ForkRequest, Policy, Trainer,
};

#[test]
fn a_fork_with_the_parents_schedule_continues_bit_identically() {
    let steps = 16;
    let mut straight = Trainer::new(common::small_run(steps)).unwrap();
    let a: Vec<f64> = (0..steps)
        .map(|_| straight.train_step().unwrap().loss)
        .collect();

    let mut parent = Trainer::new(common::small_run(steps)).unwrap();
    for _ in 0..6 {
        parent.train_step().unwrap();
    }
    let mut branch = parent
        .fork(1, parent.config().schedule.clone(), "same".into())
        .unwrap();
    // The parent moves on; the branch must not share its storage.
    let p7 = parent.train_step().unwrap().loss;
    let b: Vec<f64> = (6..steps)
        .map(|_| branch.train_step().unwrap().loss)
        .collect();
    assert_eq!(b, a[6..].to_vec(), "branch diverged from the straight run");
    assert_eq!(p7, a[6]);
    // Same data object, so the same batch at the same step.
    assert_eq!(branch.data().train_batch(9), parent.data().train_batch(9));
}

fn events_of(cfg: wsdscope_trainer::RunConfig, commands: impl FnOnce(&Engine)) -> Vec<RunEvent> {
    let (tx, rx) = mpsc::channel();
    let engine = Engine::spawn(Trainer::new(cfg).unwrap(), move |e| tx.send(e).unwrap()).unwrap();
    commands(&engine);
    engine.join();
    rx.iter().collect()
}

#[test]
fn scripted_forks_run_beside_the_trunk_and_end_on_their_own() {
    let mut cfg = common::small_run(40);
    cfg.forks = vec![
        ForkPlan {
            at: 10,
            length: ForkLength::Steps(5),
            shape: DecayShape::Exp,
            floor: 0.1,
        },
        ForkPlan {
            at: 20,
            length: ForkLength::FractionOfStep(0.5),
            shape: DecayShape::Linear,
            floor: 0.0,
        },
    ];
    let ev = events_of(cfg, |_| {});
    let forked: Vec<(u32, u32, u64)> = ev
        .iter()
        .filter_map(|e| match e {
            RunEvent::Forked {
                run, parent, step, ..
            } => Some((*run, *parent, *step)),
            _ => None,
        })
        .collect();
    assert_eq!(forked, vec![(1, 0, 10), (2, 0, 20)]);
    let steps_of = |run: u32| -> Vec<(u64, f64)> {
        ev.iter()
            .filter_map(|e| match e {
                RunEvent::Step(m) if m.run == run => Some((m.step, m.lr)),
                _ => None,
            })
            .collect()
    };
    let b1 = steps_of(1);
    assert_eq!(
        b1.iter().map(|s| s.0).collect::<Vec<_>>(),
        (11..=15).collect::<Vec<_>>()
    );
    assert!(
        (b1.last().unwrap().1 - 0.001).abs() < 1e-12,
        "exp decay to 0.1 × 0.01"
    );
    let b2 = steps_of(2);
    assert_eq!(b2.len(), 10, "0.5 × fork step 20");
    assert_eq!(b2.last().unwrap().1, 0.0);
    assert_eq!(steps_of(0).len(), 40);
    // Every run ends, completed; the trunk is evaluated where each branch ends, for comparison.
    let ends: Vec<(u32, EndReason)> = ev
        .iter()
        .filter_map(|e| match e {
            RunEvent::End { run, reason, .. } => Some((*run, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(ends.len(), 3);
    assert!(ends.iter().all(|(_, r)| *r == EndReason::Completed));
    let trunk_evals: Vec<u64> = ev
        .iter()
        .filter_map(|e| match e {
            RunEvent::Eval { run: 0, step, .. } => Some(*step),
            _ => None,
        })
        .collect();
    assert!(
        trunk_evals.contains(&15) && trunk_evals.contains(&30),
        "{trunk_evals:?}"
    );
}

#[test]
fn the_trunk_waits_while_branches_run_under_trunk_paused() {
    let mut cfg = common::small_run(20);
    cfg.policy = Policy::TrunkPaused;
    cfg.forks = vec![ForkPlan {
        at: 5,
        length: ForkLength::Steps(4),
        shape: DecayShape::Cosine,
        floor: 0.1,
    }];
    let ev = events_of(cfg, |_| {});
    let order: Vec<(u32, u64)> = ev
        .iter()
        .filter_map(|e| match e {
            RunEvent::Step(m) => Some((m.run, m.step)),
            _ => None,
        })
        .collect();
    assert_eq!(
        &order[4..10],
        &[(0, 5), (1, 6), (1, 7), (1, 8), (1, 9), (0, 6)]
    );
}

#[test]
fn live_forks_and_refusals() {
    let mut cfg = common::small_run(400);
    cfg.memory_budget_mb = Some(1_000);
    let (tx, rx) = mpsc::channel();
    let (at_tx, at_rx) = mpsc::channel::<()>();
    let engine = Engine::spawn(Trainer::new(cfg).unwrap(), move |e| {
        if matches!(e, RunEvent::Step(ref m) if m.step == 3 && m.run == 0) {
            let _ = at_tx.send(());
        }
        tx.send(e).unwrap();
    })
    .unwrap();
    at_rx.recv().unwrap();
    engine.send(Command::Fork(ForkRequest {
        parent: 0,
        length: ForkLength::Steps(3),
        shape: DecayShape::OneSqrt,
        floor: 0.0,
        at_step: None,
    }));
    engine.send(Command::Fork(ForkRequest {
        parent: 7,
        length: ForkLength::Steps(3),
        shape: DecayShape::Exp,
        floor: 0.1,
        at_step: None,
    }));
    engine.send(Command::ForkResume { parent: 0 });
    std::thread::sleep(std::time::Duration::from_millis(300));
    engine.send(Command::Stop);
    engine.join();
    let ev: Vec<RunEvent> = rx.iter().collect();
    let notes: Vec<&str> = ev
        .iter()
        .filter_map(|e| match e {
            RunEvent::Note { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        notes.iter().any(|n| n.contains("run 7 is not running")),
        "{notes:?}"
    );
    let forks = ev
        .iter()
        .filter(|e| matches!(e, RunEvent::Forked { .. }))
        .count();
    assert_eq!(forks, 2);

    // A budget too small for another run refuses the fork and says why.
    let mut cfg = common::small_run(30);
    cfg.memory_budget_mb = Some(0);
    cfg.forks = vec![ForkPlan {
        at: 5,
        length: ForkLength::Steps(3),
        shape: DecayShape::Exp,
        floor: 0.1,
    }];
    let ev = events_of(cfg, |_| {});
    let refused = ev
        .iter()
        .any(|e| matches!(e, RunEvent::Note { message, .. } if message.contains("memory budget")));
    assert!(refused);
    assert!(!ev.iter().any(|e| matches!(e, RunEvent::Forked { .. })));
}

/// A fork asked for at a step (the TUI's form, which pauses the run to show it) starts there,
/// and one whose parent has moved on is refused with both steps named, not made elsewhere.
#[test]
fn a_fork_at_a_shown_step_starts_there_or_is_refused() {
    let (tx, rx) = mpsc::channel();
    let (paused_tx, paused_rx) = mpsc::channel::<u64>();
    let (at_tx, at_rx) = mpsc::channel::<()>();
    let engine = Engine::spawn(Trainer::new(common::small_run(40)).unwrap(), move |e| {
        match &e {
            RunEvent::Step(m) if m.step == 3 && m.run == 0 => {
                let _ = at_tx.send(());
            }
            RunEvent::Note {
                kind: NoteKind::Paused,
                step,
                ..
            } => {
                let _ = paused_tx.send(*step);
            }
            _ => {}
        }
        tx.send(e).unwrap();
    })
    .unwrap();
    at_rx.recv().unwrap();
    engine.send(Command::Pause);
    let shown = paused_rx.recv().unwrap();
    let request = |at_step| {
        Command::Fork(ForkRequest {
            parent: 0,
            length: ForkLength::Steps(3),
            shape: DecayShape::Linear,
            floor: 0.0,
            at_step: Some(at_step),
        })
    };
    engine.send(request(shown - 1));
    engine.send(request(shown));
    engine.send(Command::Resume);
    engine.send(Command::Stop);
    engine.join();
    let ev: Vec<RunEvent> = rx.iter().collect();
    let forks: Vec<u64> = ev
        .iter()
        .filter_map(|e| match e {
            RunEvent::Forked { step, .. } => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(forks, vec![shown]);
    let want = format!(
        "fork refused: run 0 is at step {shown}, not at step {} the fork was asked for",
        shown - 1
    );
    assert!(
        ev.iter()
            .any(|e| matches!(e, RunEvent::Note { message, .. } if *message == want)),
        "no note {want:?}"
    );
}

#[test]
fn decay_branch_schedule_starts_from_the_parents_lr() {
    let s = decay_branch(0.004, 100, 10, DecayShape::Linear, 0.0);
    assert_eq!(s.lr(100), 0.004);
    assert!((s.lr(105) - 0.002).abs() < 1e-15);
    assert_eq!(s.lr(110), 0.0);
    assert_eq!(s.total(), 110);
}
