//! Events applied to the state: resumes and repeated steps, the engine's notes, failed and
//! forked runs, the recording alert, and the branch predictions, with what the main screen
//! shows of them.

use insta::assert_snapshot;
use wsdscope_sessions::{EndReason, NoteKind, RunEvent};

use super::*;
use crate::tui::state::Overlay;

#[test]
fn resume_truncates_and_unknown_runs_are_created() {
    let mut s = state_at(300);
    // A resume from a checkpoint at step 200 replaces steps after 200.
    let sched = syn().schedule();
    s.apply(&syn().run_start(0, &sched, 200));
    assert_eq!(s.runs[&0].steps.len(), 200);
    assert_eq!(s.runs[&0].eval_steps, vec![100, 200]);
    s.apply(&syn().step(0, &sched, 201));
    assert_eq!(s.runs[&0].last_step(), 201);
    // A repeated step replaces the tail too.
    s.apply(&syn().step(0, &sched, 150));
    assert_eq!(s.runs[&0].steps.len(), 150);
    // A step for a run never started still shows.
    s.apply(&syn().step(7, &sched, 5));
    assert_eq!(s.runs[&7].steps, vec![5]);
}

#[test]
fn pause_and_resume_follow_the_engine() {
    let mut s = state_at(30);
    assert_eq!(press(&mut s, ' '), Some(Action::Pause));
    // A second press before the engine confirms means resume.
    assert_eq!(press(&mut s, ' '), Some(Action::Resume));
    assert_eq!(press(&mut s, ' '), Some(Action::Pause));
    s.apply(&RunEvent::Note {
        run: 0,
        step: 30,
        kind: NoteKind::Paused,
        message: "paused".into(),
    });
    assert!(s.paused());
    assert!(screen(&s, 120, 36).contains("❚❚ paused"));
    assert_eq!(press(&mut s, ' '), Some(Action::Resume));
}

#[test]
fn a_failed_run_shows_its_message() {
    let mut s = state_at(57);
    s.apply(&Synthetic::end(
        0,
        57,
        EndReason::Failed,
        Some("non-finite loss (NaN) at step 57: training stopped; lower the learning rate or enable clipping"),
    ));
    let text = screen(&s, 120, 36);
    assert!(text.contains("failed"));
    assert!(text.contains("non-finite loss (NaN) at step 57"));
    assert_snapshot!("failed_run", text);
    // Pause and fork are refused with a message, not an action.
    assert_eq!(press(&mut s, ' '), None);
    assert_eq!(press(&mut s, 'f'), None);
    assert_eq!(s.ui.overlay, Overlay::None);
}

#[test]
fn a_branch_is_overlaid_and_listed() {
    let mut s = state_at(700);
    for ev in syn().branch(1, 500, 100, 580) {
        s.apply(&ev);
    }
    s.apply(&RunEvent::Eval {
        run: 1,
        step: 550,
        val_loss: 3.0,
        tokens: 550 * 2048,
    });
    assert_eq!(s.runs.len(), 2);
    assert_eq!(s.runs[&1].fork_step, Some(500));
    assert_eq!(s.runs[&1].parent, Some(0));
    handle_key(&mut s, key(KeyCode::Tab));
    assert_eq!(s.ui.selected, 1);
    assert_snapshot!("branch", screen(&s, 120, 36));
    handle_key(&mut s, key(KeyCode::Tab));
    assert_eq!(s.ui.selected, 0);
}

#[test]
fn notes_and_dropped_samples_reach_the_status_line() {
    let mut s = state_at(300);
    s.ui.dropped_display = 1234;
    s.apply(&RunEvent::Note {
        run: 0,
        step: 300,
        kind: NoteKind::Refused,
        message: "fork of run 0 at step 300 not supported yet: decay branches arrive with the branching feature".into(),
    });
    let text = screen(&s, 160, 36);
    assert!(text.contains("1,234 display samples dropped"));
    assert!(text.contains("not supported yet"));
    assert_snapshot!("status_note_dropped", text);
}

#[test]
fn live_header_shows_a_recording_alert() {
    let mut s = state_at(30);
    s.ui.alert = Some("recording failed: disk full; training stopped".into());
    s.apply(&Synthetic::end(0, 30, EndReason::Stopped, None));
    let text = screen(&s, 160, 36);
    assert!(text.contains("✖ recording failed: disk full"), "{text}");
    assert!(text.contains("run 0 stopped at step 30"));
}

/// A branch's prediction is made from what came before its fork (not from its own steps),
/// refitted while it runs in a live session, and compared with its end once it completes.
#[test]
fn forecasts_are_made_at_the_fork_refitted_live_and_scored_at_the_end() {
    let syn = syn();
    let mut live = state_at(400);
    for ev in syn.branch(1, 400, 150, 400) {
        live.apply(&ev);
    }
    live.refresh_forecasts();
    let at_fork = live.forecasts[&1].clone();
    assert_eq!((at_fork.fork_step, at_fork.end_step), (400, 550));
    assert!(at_fork.now.is_none() && at_fork.actual.is_none());
    // A replay that already holds the branch's steps predicts the same (the fit only sees
    // the curves as they were at the fork).
    let mut replay = TuiState::replay(None, false);
    for ev in syn
        .trunk(400, 100)
        .into_iter()
        .chain(syn.branch(1, 400, 150, 500))
    {
        replay.apply(&ev);
    }
    replay.refresh_forecasts();
    assert_eq!(replay.forecasts[&1].before, at_fork.before);
    assert!(replay.forecasts[&1].now.is_none(), "no refits in a replay");
    // Live: the branch's steps arrive; a refit follows.
    for ev in syn.branch(1, 400, 150, 550).into_iter().skip(1) {
        live.apply(&ev);
    }
    live.refresh_forecasts();
    assert!(live.forecasts[&1].now.is_some(), "refitted while running");
    live.apply(&Synthetic::end(1, 550, EndReason::Completed, None));
    live.refresh_forecasts();
    let f = &live.forecasts[&1];
    let actual = f.actual.expect("scored at the end");
    let last: Vec<f64> = live.runs[&1]
        .loss
        .values()
        .iter()
        .rev()
        .take(30)
        .copied()
        .collect();
    assert!(
        (actual - last.iter().sum::<f64>() / 30.0).abs() < 1e-12,
        "mean of the last fifth (30 steps)"
    );
    let predicted = f.before_tail.expect("a predicted tail");
    let (lo, hi) = f
        .before
        .iter()
        .filter(|p| p.0 >= 520.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    assert!(
        predicted >= lo - 1e-9 && predicted <= hi + 1e-9,
        "the predicted tail mean lies within the predicted curve over the tail: {predicted} in [{lo}, {hi}]"
    );
}
