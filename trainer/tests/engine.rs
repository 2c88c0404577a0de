//! The engine thread: its event stream, its commands, and how it stops on non-finite values.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use wsdscope_events::{EndReason, Phase, RunEvent};
use wsdscope_trainer::{Command, Engine, Trainer};

fn collect(rx: mpsc::Receiver<RunEvent>) -> Vec<RunEvent> {
    rx.iter().collect()
}

#[test]
fn emits_start_steps_evals_and_end_in_order() {
    let (tx, rx) = mpsc::channel();
    let engine = Engine::spawn(Trainer::new(common::small_run(10)).unwrap(), move |e| {
        tx.send(e).unwrap()
    })
    .unwrap();
    let out = engine.join();
    let ev = collect(rx);
    assert!(matches!(ev.first(), Some(RunEvent::RunStart(s)) if s.config["steps"] == 10));
    assert!(matches!(
        ev.last(),
        Some(RunEvent::End {
            reason: EndReason::Completed,
            step: 10,
            ..
        })
    ));
    let steps: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            RunEvent::Step(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps.iter().map(|m| m.step).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(steps[0].phase, Phase::Warmup);
    assert_eq!(steps[5].phase, Phase::Stable);
    assert_eq!(steps[9].phase, Phase::Decay);
    for m in &steps {
        assert!(
            m.loss.is_finite() && m.grad_norm > 0.0 && m.update_norm > 0.0 && m.param_norm > 0.0
        );
        assert!(m.tokens_per_s > 0.0 && m.tokens == m.step * 64);
    }
    // Evals every 4 steps, at the end of stable (step 8) and at the end.
    let evals: Vec<u64> = ev
        .iter()
        .filter_map(|e| match e {
            RunEvent::Eval { step, .. } => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(evals, vec![4, 8, 10]);
    assert!(out.final_val_loss.unwrap().is_finite());
}

#[test]
fn pause_resume_and_stop_between_steps() {
    let (tx, rx) = mpsc::channel();
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let engine = Engine::spawn(Trainer::new(common::small_run(1000)).unwrap(), move |e| {
        if matches!(e, RunEvent::Step(ref m) if m.step == 2) {
            let _ = gate_tx.send(());
        }
        tx.send(e).unwrap();
    })
    .unwrap();
    gate_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    engine.send(Command::Pause);
    std::thread::sleep(Duration::from_millis(300));
    engine.send(Command::Resume);
    engine.send(Command::Stop);
    let out = engine.join();
    assert_eq!(out.reason, EndReason::Stopped);
    assert!(out.step < 1000);
    let notes: Vec<String> = collect(rx)
        .into_iter()
        .filter_map(|e| match e {
            RunEvent::Note { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(notes, vec!["paused", "resumed"]);
}

#[test]
fn non_finite_loss_stops_the_run_and_names_the_step() {
    // Adam moves every weight by about lr per step: lr 1e30 overflows the next forward pass.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::small_run(10);
    cfg.schedule = wsdscope_trainer::Schedule::Constant {
        peak: 1e30,
        warmup: 0,
        total: 10,
    };
    cfg.checkpoint_every = 1;
    cfg.checkpoint_dir = Some(dir.path().to_path_buf());
    let (tx, rx) = mpsc::channel();
    let out = Engine::spawn(Trainer::new(cfg).unwrap(), move |e| tx.send(e).unwrap())
        .unwrap()
        .join();
    assert_eq!(out.reason, EndReason::Failed);
    let msg = out.message.unwrap();
    assert!(
        msg.contains("non-finite") && msg.contains("at step 2"),
        "{msg}"
    );
    let ev = collect(rx);
    assert!(matches!(
        ev.last(),
        Some(RunEvent::End {
            reason: EndReason::Failed,
            step: 1,
            ..
        })
    ));
    // Step 1 was finite and checkpointed; nothing after it was written.
    let dirs: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs, vec!["step-00000001".to_string()]);
}
