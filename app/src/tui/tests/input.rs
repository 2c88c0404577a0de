//! Keys and the mouse: the help overlay, the fork form and its checks, the quit
//! confirmation, the toggles, zooming and panning, and selecting runs with a click.

use insta::assert_snapshot;
use ratatui::crossterm::event::{KeyEventKind, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::Rect;
use wsdscope_sessions::{EndReason, NoteKind, RunEvent};
use wsdscope_trainer::{DecayShape, ForkLength, ForkRequest};

use super::*;
use crate::tui::state::{ForkField, Overlay};

#[test]
fn help_overlay_lists_every_key() {
    let mut s = state_at(300);
    assert_eq!(press(&mut s, '?'), None);
    assert_eq!(s.ui.overlay, Overlay::Help);
    let text = screen(&s, 120, 36);
    for (k, what) in keys::KEYS {
        assert!(text.contains(k), "help misses {k}");
        assert!(text.contains(what), "help misses {what}");
    }
    assert_snapshot!("help", text);
    press(&mut s, '?');
    assert_eq!(s.ui.overlay, Overlay::None);
}

/// The engine's note that it has paused (at the trunk's `step`).
fn paused_note(step: u64) -> RunEvent {
    RunEvent::Note {
        run: 0,
        step,
        kind: NoteKind::Paused,
        message: "paused".into(),
    }
}

#[test]
fn fork_form_prefilled_from_the_config_pauses_the_run_and_shows_its_step() {
    let mut s = state_at(300);
    assert_eq!(press(&mut s, 'f'), Some(Action::Pause));
    let Overlay::Fork(form) = &s.ui.overlay else {
        panic!("no fork form: {:?}", s.ui.overlay)
    };
    assert_eq!(form.length, "150");
    assert_eq!(form.shape, DecayShape::Exp);
    assert_eq!(form.floor, "0.1");
    assert!(form.resume);
    // Until the engine says it has paused, the form shows no step.
    let pausing = screen(&s, 120, 36);
    assert!(pausing.contains("(pausing…)"), "{pausing}");
    assert!(!pausing.contains("at step"), "{pausing}");
    s.apply(&paused_note(300));
    assert_eq!(s.fork_point(0), Some(300));
    assert_snapshot!("fork_form", screen(&s, 120, 36));
}

#[test]
fn a_run_paused_by_the_user_stays_paused_after_the_form() {
    let mut s = state_at(300);
    assert_eq!(press(&mut s, ' '), Some(Action::Pause));
    s.apply(&paused_note(300));
    assert_eq!(press(&mut s, 'f'), None, "already paused: nothing to send");
    assert!(screen(&s, 120, 36).contains("it stays paused"));
    let Some(Action::Fork(req)) = handle_key(&mut s, key(KeyCode::Enter)) else {
        panic!("no fork")
    };
    assert_eq!(req.at_step, Some(300));
    assert!(!s.ui.resume_after_fork);
    // Opened by the form, esc resumes.
    s.apply(&RunEvent::Note {
        run: 0,
        step: 300,
        kind: NoteKind::Resumed,
        message: "resumed".into(),
    });
    assert_eq!(press(&mut s, 'f'), Some(Action::Pause));
    assert_eq!(handle_key(&mut s, key(KeyCode::Esc)), Some(Action::Resume));
}

#[test]
fn shift_r_asks_for_a_wsd_s_resume_fork_of_the_selected_run() {
    let mut s = state_at(300);
    assert_eq!(
        handle_key(&mut s, key(KeyCode::Char('R'))),
        Some(Action::ForkResume(0))
    );
}

#[test]
fn fork_form_submits_a_fork_request() {
    let mut s = state_at(300);
    press(&mut s, 'f');
    // Not paused yet: enter waits for the step to be known.
    assert_eq!(handle_key(&mut s, key(KeyCode::Enter)), None);
    let Overlay::Fork(form) = &s.ui.overlay else {
        panic!("form closed")
    };
    assert!(form.error.as_deref().unwrap().contains("still pausing"));
    s.apply(&paused_note(300));
    for _ in 0..3 {
        handle_key(&mut s, key(KeyCode::Backspace));
    }
    for c in "10%".chars() {
        press(&mut s, c);
    }
    handle_key(&mut s, key(KeyCode::Tab));
    handle_key(&mut s, key(KeyCode::Right));
    handle_key(&mut s, key(KeyCode::Down));
    handle_key(&mut s, key(KeyCode::Backspace));
    press(&mut s, '2');
    let a = handle_key(&mut s, key(KeyCode::Enter));
    assert_eq!(
        a,
        Some(Action::Fork(ForkRequest {
            parent: 0,
            length: ForkLength::FractionOfStep(0.1),
            shape: DecayShape::Linear,
            floor: 0.2,
            at_step: Some(300),
        }))
    );
    assert!(
        s.ui.resume_after_fork,
        "the form paused the run: it resumes"
    );
    assert_eq!(s.ui.overlay, Overlay::None);
    assert!(
        s.ui.status
            .as_ref()
            .unwrap()
            .text
            .contains("asked to fork run 0 at step 300")
    );
}

#[test]
fn fork_form_rejects_bad_input_and_esc_cancels() {
    let mut s = state_at(300);
    press(&mut s, 'f');
    for _ in 0..3 {
        handle_key(&mut s, key(KeyCode::Backspace));
    }
    assert_eq!(handle_key(&mut s, key(KeyCode::Enter)), None);
    let Overlay::Fork(form) = &s.ui.overlay else {
        panic!("form closed")
    };
    assert!(form.error.as_deref().unwrap().contains("length"));
    assert_eq!(form.field, ForkField::Length);
    assert_snapshot!("fork_form_error", screen(&s, 100, 30));
    // exp with floor 0 is refused.
    press(&mut s, '9');
    handle_key(&mut s, key(KeyCode::Up));
    handle_key(&mut s, key(KeyCode::Backspace));
    handle_key(&mut s, key(KeyCode::Backspace));
    handle_key(&mut s, key(KeyCode::Backspace));
    press(&mut s, '0');
    assert_eq!(handle_key(&mut s, key(KeyCode::Enter)), None);
    handle_key(&mut s, key(KeyCode::Esc));
    assert_eq!(s.ui.overlay, Overlay::None);
}

#[test]
fn quit_asks_while_training_and_y_confirms() {
    let mut s = state_at(300);
    assert_eq!(press(&mut s, 'q'), None);
    assert_eq!(s.ui.overlay, Overlay::ConfirmQuit);
    assert_snapshot!("quit_confirm", screen(&s, 120, 36));
    assert_eq!(press(&mut s, 'n'), None);
    assert_eq!(s.ui.overlay, Overlay::None);
    press(&mut s, 'q');
    assert_eq!(press(&mut s, 'y'), Some(Action::Quit));
    // After the run ended, q quits at once.
    s.apply(&Synthetic::end(0, 300, EndReason::Stopped, None));
    assert_eq!(press(&mut s, 'q'), Some(Action::Quit));
    // Ctrl-C never asks.
    let mut s = state_at(10);
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(handle_key(&mut s, ctrl_c), Some(Action::Quit));
}

#[test]
fn log_y_toggled() {
    let mut s = state_at(300);
    press(&mut s, 'g');
    assert!(s.ui.log_y);
    assert_snapshot!("log_y", screen(&s, 120, 36));
    press(&mut s, 'y');
    assert!(!s.ui.log_y);
}

#[test]
fn zoom_pan_and_reset() {
    let mut s = state_at(300);
    assert_eq!(s.x_view(), (0.0, 1000.0));
    press(&mut s, '+');
    let (a, b) = s.x_view();
    assert_eq!(b - a, 500.0);
    assert!(a <= 300.0 && 300.0 <= b, "zoom centres on the latest step");
    press(&mut s, '+');
    handle_key(&mut s, key(KeyCode::Left));
    let (a2, b2) = s.x_view();
    assert_eq!(b2 - a2, 250.0);
    for _ in 0..20 {
        press(&mut s, 'h');
    }
    assert_eq!(s.x_view(), (0.0, 250.0), "panning stops at the start");
    for _ in 0..20 {
        press(&mut s, 'l');
    }
    assert_eq!(s.x_view(), (750.0, 1000.0), "and at the end");
    press(&mut s, '-');
    assert_eq!(s.x_view().1 - s.x_view().0, 500.0);
    press(&mut s, '0');
    assert_eq!(s.ui.zoom, None);
    for _ in 0..30 {
        press(&mut s, '+');
    }
    let (a, b) = s.x_view();
    assert!(b - a >= 8.0);
    assert_snapshot!("zoomed_in", screen(&s, 120, 36));
}

#[test]
fn smoothing_toggle_and_release_events() {
    let mut s = state_at(300);
    assert!(s.ui.smooth);
    let mut release = key(KeyCode::Char('s'));
    release.kind = KeyEventKind::Release;
    assert_eq!(handle_key(&mut s, release), None);
    assert!(s.ui.smooth);
    press(&mut s, 's');
    assert!(!s.ui.smooth);
}

#[test]
fn mouse_selects_runs_and_zooms() {
    let mut s = state_at(700);
    for ev in syn().branch(1, 500, 100, 580) {
        s.apply(&ev);
    }
    s.ui.area = Rect::new(0, 0, 120, 36);
    let l = layout::compute(s.ui.area, s.runs.len()).unwrap();
    let click = |row| MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: l.runs.x + 3,
        row,
        modifiers: KeyModifiers::NONE,
    };
    handle_mouse(&mut s, click(l.runs.y + 3));
    assert_eq!(s.ui.selected, 1);
    handle_mouse(&mut s, click(l.runs.y + 2));
    assert_eq!(s.ui.selected, 0);
    let scroll = |kind| MouseEvent {
        kind,
        column: l.loss.x + l.loss.width / 2,
        row: l.loss.y + 2,
        modifiers: KeyModifiers::NONE,
    };
    handle_mouse(&mut s, scroll(MouseEventKind::ScrollUp));
    assert!(s.ui.zoom.is_some());
    handle_mouse(&mut s, scroll(MouseEventKind::ScrollDown));
    assert_eq!(s.ui.zoom, None);
}
