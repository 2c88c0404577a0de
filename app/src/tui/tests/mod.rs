//! Whole-app tests: synthetic events and key presses drive the state, the app renders into a
//! `TestBackend`, and insta compares the screen text. Nothing rendered depends on the clock or
//! on paths outside the test.
//!
//! By area: `apply` (events applied to the state and what the main screen shows of them),
//! `input` (keys, mouse, the fork form, zoom), `screens` (each view and overlay at every
//! size), `live_loop` (the loop against a scripted engine) and `replay_mode` (the time
//! cursor over a recorded session). The helpers here serve them all.

mod apply;
mod input;
mod live_loop;
mod outliers;
mod replay_mode;
mod screens;
mod siblings;
mod x_axis;

use std::time::Duration;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};

use super::synthetic::Synthetic;
use super::*;

fn syn() -> Synthetic {
    Synthetic::new(1000, 50, 150)
}

/// A live state after `upto` trunk steps (evals every 100).
fn state_at(upto: u64) -> TuiState {
    let mut s = TuiState::live(Some("runs/session.h5".into()));
    for ev in syn().trunk(upto, 100) {
        s.apply(&ev);
    }
    s
}

fn screen(state: &TuiState, w: u16, h: u16) -> String {
    // As the UI loop does after its first frame: make the queued branch predictions.
    let mut state = state.clone();
    state.refresh_forecasts();
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| draw(f, &state)).unwrap();
    t.backend().to_string()
}

fn key(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

fn press(state: &mut TuiState, c: char) -> Option<Action> {
    handle_key(state, key(KeyCode::Char(c)))
}

/// Input that replays `keys` once the state has seen `after` events, then idles.
fn scripted(keys: Vec<Event>) -> impl FnMut(Duration) -> anyhow::Result<Option<Event>> {
    let mut keys = keys.into_iter();
    move |timeout| {
        std::thread::sleep(timeout.min(Duration::from_millis(20)));
        Ok(keys.next())
    }
}
