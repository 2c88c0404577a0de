//! Input → intent. Keys and mouse events change UI-only state and may return an [`Action`]
//! for the main loop to carry out (pause the engine, fork, quit); nothing here has side
//! effects outside the state.

use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::{Position, Rect};
use wsdscope_trainer::schedule::parse_floor;
use wsdscope_trainer::{DecayLength, DecayShape, ForkLength, ForkRequest, LengthForm, Schedule};

use crate::cli::XAxis;
use crate::settings::fork_length;

use super::layout;
use super::state::{ForkField, ForkForm, Level, Overlay, TuiState, View};

/// What the user asked for that the main loop must carry out.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Pause,
    Resume,
    /// Fork a decay branch at the step the form showed (`at_step`; the run is paused there).
    Fork(ForkRequest),
    /// Fork a run into one that resumes the stable learning rate (WSD-S).
    ForkResume(wsdscope_sessions::RunId),
    /// Run every periodic probe on a run now.
    Probe(wsdscope_sessions::RunId),
    /// Stop training (if it runs), wait for the run to end, and leave.
    Quit,
    /// Leave now, without waiting for the engine to finish its step.
    ForceQuit,
    /// Attached to another process's run: stop that run, wait for its end, and leave.
    StopRun,
    /// Replay: play or pause the time cursor.
    PlayPause,
    /// Replay: one speed faster (`+1`) or slower (`-1`): ×1, ×10, ×100, max.
    Speed(i32),
    /// Replay: move the time cursor.
    Seek(Seek),
}

/// Where a replay's time cursor goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    /// By this many step events (any run), negative: back.
    Steps(i64),
    /// By this many twentieths of the session's steps (a larger jump).
    Twentieths(i64),
    Start,
    End,
    /// The next / previous phase change or fork.
    NextMark,
    PrevMark,
}

/// The keys that differ in a run reached with `wsdscope attach` (for the README).
pub const ATTACH_KEYS: &[(&str, &str)] = &[
    ("q / Ctrl-C", "detach: leave the TUI, the run goes on"),
    ("X", "stop the run (asks first), then leave"),
];

/// Every key of a live run (`wsdscope run`), for the help overlay and the README:
/// (keys, what they do).
pub const KEYS: &[(&str, &str)] = &[
    ("space", "pause / resume training"),
    ("+ / -", "zoom the step axis in / out"),
    ("← → / h l", "pan the step axis"),
    ("0", "reset zoom (whole run)"),
    ("tab / shift-tab", "select next / previous run"),
    ("↑ ↓ / k j", "select previous / next run"),
    (
        "g / y",
        "toggle log-y (loss, norms, K) and log colours (landscape)",
    ),
    ("s", "toggle EMA smoothing (raw curve faint behind)"),
    (
        "o",
        "loss and norms: clip outliers (the warmup) / show every point",
    ),
    (
        "x",
        "x axis: steps → tokens (each run's batch × seq) → time → steps",
    ),
    ("c", "compare branches: table, endpoint fit, memory"),
    ("v", "views: main → probes → landscape → main"),
    (
        "p",
        "probe the selected run now (sharpness, noise, slices, landscape)",
    ),
    (
        "f",
        "fork a decay branch from the selected run (pauses while you choose)",
    ),
    (
        "R",
        "WSD-S: fork the selected (decayed) run to resume the stable lr",
    ),
    ("q", "quit (asks first while training runs)"),
    ("ctrl-c", "stop and quit without asking"),
    ("?", "show / hide this help"),
    (
        "mouse",
        "click a run to select it; scroll over a chart to zoom",
    ),
];

/// Every key of a replay (`wsdscope replay`): the time cursor's, then the view keys.
pub const REPLAY_KEYS: &[(&str, &str)] = &[
    ("space", "play / pause (at the end: play from the start)"),
    (
        "< / >",
        "slower / faster: ×1 (recorded pace), ×10, ×100, max",
    ),
    ("[ / ]", "cursor back / forward one step"),
    ("{ / }", "cursor back / forward 1/20 of the session"),
    ("b / home", "jump to the start"),
    ("e / end", "jump to the end (and follow, with --follow)"),
    ("p / n", "jump to the previous / next phase change or fork"),
    ("+ / -", "zoom the step axis in / out"),
    ("← → / h l", "pan the step axis"),
    ("0", "reset zoom (whole run)"),
    ("tab / shift-tab", "select next / previous run"),
    ("↑ ↓ / k j", "select previous / next run"),
    (
        "g / y",
        "toggle log-y (loss, norms, K) and log colours (landscape)",
    ),
    ("s", "toggle EMA smoothing (raw curve faint behind)"),
    (
        "o",
        "loss and norms: clip outliers (the warmup) / show every point",
    ),
    (
        "x",
        "x axis: steps → tokens (each run's batch × seq) → time → steps",
    ),
    ("c", "compare branches: table, endpoint fit, memory"),
    ("v", "views: main → probes → landscape → main"),
    ("q / ctrl-c", "quit"),
    ("?", "show / hide this help"),
    (
        "mouse",
        "click a run to select it; scroll over a chart to zoom",
    ),
];

/// The keys of the mode `state` is in.
pub fn keys_for(state: &TuiState) -> &'static [(&'static str, &'static str)] {
    if state.ui.live { KEYS } else { REPLAY_KEYS }
}

/// Keys of the fork form.
pub const FORK_KEYS: &str = "tab/↑↓ field · ←→ shape · enter fork · esc cancel";

/// Handles one key. Returns the intent, if any, for the main loop.
pub fn handle_key(state: &mut TuiState, key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c')) {
        state.ui.overlay = Overlay::None;
        return Some(if state.ui.stopping {
            Action::ForceQuit
        } else {
            Action::Quit
        });
    }
    match std::mem::take(&mut state.ui.overlay) {
        Overlay::None => main_key(state, key),
        Overlay::Help => {
            if !matches!(key.code, KeyCode::Char('?' | 'q') | KeyCode::Esc) {
                state.ui.overlay = Overlay::Help;
            }
            None
        }
        Overlay::ConfirmQuit => {
            if matches!(key.code, KeyCode::Char('y' | 'Y')) {
                Some(if state.ui.attached {
                    Action::StopRun
                } else {
                    Action::Quit
                })
            } else {
                state.set_status(Level::Info, "quit cancelled; training goes on");
                None
            }
        }
        Overlay::Fork(form) => fork_key(state, form, key),
    }
}

fn main_key(state: &mut TuiState, key: KeyEvent) -> Option<Action> {
    if !state.ui.live
        && let Some(a) = replay_key(key.code)
    {
        return Some(a);
    }
    match key.code {
        KeyCode::Char(' ') => return toggle_pause(state),
        KeyCode::Char('+' | '=') => state.zoom_in(None),
        KeyCode::Char('-' | '_') => state.zoom_out(None),
        KeyCode::Left | KeyCode::Char('h') => state.pan(-0.25),
        KeyCode::Right | KeyCode::Char('l') => state.pan(0.25),
        KeyCode::Char('0') => state.ui.zoom = None,
        KeyCode::Tab | KeyCode::Down | KeyCode::Char('j') => state.cycle_run(1),
        KeyCode::BackTab | KeyCode::Up | KeyCode::Char('k') => state.cycle_run(-1),
        KeyCode::Char('g' | 'y') => state.ui.log_y = !state.ui.log_y,
        KeyCode::Char('o') => state.ui.clip_outliers = !state.ui.clip_outliers,
        KeyCode::Char('s') => state.ui.smooth = !state.ui.smooth,
        KeyCode::Char('x') => {
            state.cycle_x_axis();
            let text = match state.ui.x_axis {
                XAxis::Steps => "x axis: steps",
                XAxis::Tokens => "x axis: tokens (each run's own batch × seq)",
                XAxis::Time => {
                    "x axis: training time (each run's step times; a branch continues its parent's)"
                }
            };
            state.set_status(Level::Info, text);
        }
        KeyCode::Char('c') => state.ui.compare = !state.ui.compare,
        KeyCode::Char('v') => {
            state.ui.compare = false;
            state.ui.view = state.ui.view.next();
        }
        KeyCode::Char('f') => return open_fork_form(state),
        KeyCode::Char('R') => {
            if !state.ui.live {
                state.set_status(Level::Warn, "forking needs a live run");
            } else if let Some(run) = state.selected_run().filter(|r| r.is_active()) {
                return Some(Action::ForkResume(run.id));
            } else {
                state.set_status(
                    Level::Warn,
                    "the selected run is not training: select a live run to resume from",
                );
            }
        }
        KeyCode::Char('p') => {
            if !state.ui.live {
                state.set_status(Level::Warn, "probing needs a live run");
            } else if let Some(run) = state.selected_run().filter(|r| r.is_active()) {
                let id = run.id;
                state.ui.probing = Some(id);
                state.set_status(
                    Level::Info,
                    format!("probing run {id}: sharpness, noise scale, slices, landscape…"),
                );
                return Some(Action::Probe(id));
            } else {
                state.set_status(
                    Level::Warn,
                    "the selected run is not training: select a live run to probe",
                );
            }
        }
        KeyCode::Char('?') => state.ui.overlay = Overlay::Help,
        KeyCode::Char('q') => {
            if state.ui.stopping {
                return Some(Action::ForceQuit);
            }
            if state.ui.live && state.training_active() && !state.ui.attached {
                state.ui.overlay = Overlay::ConfirmQuit;
            } else {
                return Some(Action::Quit);
            }
        }
        KeyCode::Char('X') if state.ui.attached && state.training_active() => {
            state.ui.overlay = Overlay::ConfirmQuit;
        }
        _ => {}
    }
    None
}

/// The time-cursor keys of a replay.
fn replay_key(code: KeyCode) -> Option<Action> {
    Some(match code {
        KeyCode::Char(' ') => Action::PlayPause,
        KeyCode::Char('<' | ',') => Action::Speed(-1),
        KeyCode::Char('>' | '.') => Action::Speed(1),
        KeyCode::Char('[') => Action::Seek(Seek::Steps(-1)),
        KeyCode::Char(']') => Action::Seek(Seek::Steps(1)),
        KeyCode::Char('{') => Action::Seek(Seek::Twentieths(-1)),
        KeyCode::Char('}') => Action::Seek(Seek::Twentieths(1)),
        KeyCode::Char('b') | KeyCode::Home => Action::Seek(Seek::Start),
        KeyCode::Char('e') | KeyCode::End => Action::Seek(Seek::End),
        KeyCode::Char('n') => Action::Seek(Seek::NextMark),
        KeyCode::Char('p') => Action::Seek(Seek::PrevMark),
        _ => return None,
    })
}

fn toggle_pause(state: &mut TuiState) -> Option<Action> {
    if !state.ui.live {
        return None;
    }
    if !state.training_active() {
        state.set_status(Level::Warn, "the run has ended; nothing to pause");
        return None;
    }
    let pause = !state.ui.pause_intent.unwrap_or_else(|| state.paused());
    state.ui.pause_intent = Some(pause);
    Some(if pause { Action::Pause } else { Action::Resume })
}

/// Opens the fork form for the selected run, prefilled from its schedule, and pauses the run
/// (unless it is paused already) so that the step the form shows is the one it forks at.
pub fn open_fork_form(state: &mut TuiState) -> Option<Action> {
    if !state.ui.live {
        state.set_status(Level::Warn, "forking needs a live run");
        return None;
    }
    let Some(run) = state.selected_run() else {
        state.set_status(Level::Warn, "no run yet: wait for the first step to fork");
        return None;
    };
    if !run.is_active() {
        let id = run.id;
        state.set_status(
            Level::Warn,
            format!("run {id} has ended; fork from a run that is still training"),
        );
        return None;
    }
    let schedule = run
        .schedule
        .as_ref()
        .or_else(|| state.trunk().and_then(|t| t.schedule.as_ref()));
    let (length, shape, floor) = match schedule {
        Some(&Schedule::Wsd {
            decay_steps,
            shape,
            floor,
            ..
        }) if decay_steps > 0 => (decay_steps.to_string(), shape, floor),
        Some(&Schedule::Wsd { shape, floor, .. }) => ("10%".to_string(), shape, floor),
        Some(&Schedule::Cosine { floor, .. }) => ("10%".to_string(), DecayShape::Exp, floor),
        _ => ("10%".to_string(), DecayShape::Exp, 0.1),
    };
    let floor = if shape == DecayShape::Exp && floor <= 0.0 {
        0.1
    } else {
        floor
    };
    let parent = run.id;
    let resume = !state.ui.pause_intent.unwrap_or_else(|| state.paused());
    state.ui.overlay = Overlay::Fork(ForkForm {
        parent,
        resume,
        field: ForkField::Length,
        length,
        shape,
        floor: super::format::value(floor),
        error: None,
    });
    resume.then(|| {
        state.ui.pause_intent = Some(true);
        Action::Pause
    })
}

fn fork_key(state: &mut TuiState, mut form: ForkForm, key: KeyEvent) -> Option<Action> {
    use ForkField::*;
    match key.code {
        KeyCode::Esc => {
            if form.resume {
                state.set_status(Level::Info, "fork cancelled; training resumes");
                state.ui.pause_intent = Some(false);
                return Some(Action::Resume);
            }
            state.set_status(Level::Info, "fork cancelled");
            return None;
        }
        KeyCode::Enter => match parse_fork(&form).and_then(|r| at_shown_step(state, r)) {
            Ok(req) => {
                let length = match req.length {
                    ForkLength::Steps(n) => format!("{n} steps"),
                    ForkLength::FractionOfStep(f) => format!("{}% of the fork step", f * 100.0),
                };
                state.set_status(
                    Level::Info,
                    format!(
                        "asked to fork run {} at step {}: {length}, {} to {}×peak",
                        req.parent,
                        req.at_step.unwrap_or_default(),
                        req.shape,
                        super::format::value(req.floor)
                    ),
                );
                if form.resume {
                    state.ui.pause_intent = Some(false);
                    state.ui.resume_after_fork = true;
                }
                return Some(Action::Fork(req));
            }
            Err(e) => form.error = Some(e),
        },
        KeyCode::Tab | KeyCode::Down => {
            form.field = match form.field {
                Length => Shape,
                Shape => Floor,
                Floor => Length,
            }
        }
        KeyCode::BackTab | KeyCode::Up => {
            form.field = match form.field {
                Length => Floor,
                Shape => Length,
                Floor => Shape,
            }
        }
        KeyCode::Left | KeyCode::Right | KeyCode::Char(' ') if form.field == Shape => {
            let all = DecayShape::ALL;
            let i = all.iter().position(|&s| s == form.shape).unwrap_or(0);
            let j = if key.code == KeyCode::Left {
                (i + all.len() - 1) % all.len()
            } else {
                (i + 1) % all.len()
            };
            form.shape = all[j];
            form.error = None;
        }
        KeyCode::Backspace => {
            match form.field {
                Length => form.length.pop(),
                Floor => form.floor.pop(),
                Shape => None,
            };
            form.error = None;
        }
        KeyCode::Char(c) if c.is_ascii_digit() || c == '.' || c == '%' => {
            let text = match form.field {
                Length => Some(&mut form.length),
                Floor => Some(&mut form.floor),
                Shape => None,
            };
            if let Some(t) = text
                && t.len() < 12
            {
                t.push(c);
            }
            form.error = None;
        }
        _ => {}
    }
    state.ui.overlay = Overlay::Fork(form);
    None
}

/// The request to fork at the step the form shows, or why it cannot be sent yet.
fn at_shown_step(state: &TuiState, req: ForkRequest) -> Result<ForkRequest, String> {
    let at_step = state.fork_point(req.parent).ok_or_else(|| {
        "the run is still pausing: the form shows the fork step once it has".to_string()
    })?;
    Ok(ForkRequest {
        at_step: Some(at_step),
        ..req
    })
}

/// Reads the form into a request (the step left to [`at_shown_step`]), or says what is
/// wrong with it.
pub fn parse_fork(form: &ForkForm) -> Result<ForkRequest, String> {
    let text = form.length.trim();
    let length = DecayLength::parse(text, LengthForm::StepsOrPercent).map_err(|_| {
        if text.ends_with('%') {
            format!("length {text:?}: a percentage must be in (0, 100], e.g. 10%")
        } else {
            format!("length {text:?}: type steps (e.g. 200) or a percentage of the step (e.g. 10%)")
        }
    })?;
    let floor = parse_floor(form.floor.trim()).map_err(|_| {
        format!(
            "floor {:?}: a ratio of the peak lr in [0, 1], e.g. 0.1",
            form.floor
        )
    })?;
    if !form.shape.reaches(floor) {
        return Err("an exp decay needs a floor > 0; use linear, cosine or 1-sqrt for 0".into());
    }
    Ok(ForkRequest {
        parent: form.parent,
        length: fork_length(length),
        shape: form.shape,
        floor,
        at_step: None,
    })
}

/// Handles a mouse event against the layout of the last drawn frame.
pub fn handle_mouse(state: &mut TuiState, ev: MouseEvent) -> Option<Action> {
    if state.ui.overlay != Overlay::None {
        return None;
    }
    // The runs list (or branches table, one row per run in the same order) and the charts
    // with a step axis, in the view that is showing.
    let (runs, charts) = if state.ui.compare {
        let l = layout::compare(state.ui.area, state.runs.len())?;
        (Some(l.table), vec![l.loss])
    } else {
        match state.ui.view {
            View::Main => {
                let l = layout::compute(state.ui.area, state.runs.len())?;
                (Some(l.runs), vec![l.loss, l.lr, l.norms])
            }
            View::Probes => (None, layout::probes(state.ui.area)?.charts.to_vec()),
            // The landscape's axes are parameter space, not steps.
            View::Landscape => return None,
        }
    };
    let pos = Position::new(ev.column, ev.row);
    match ev.kind {
        MouseEventKind::Down(MouseButton::Left) if runs.is_some_and(|r| r.contains(pos)) => {
            let runs = runs.unwrap_or_default();
            // Border and header row come before the first run.
            let row = ev.row.saturating_sub(runs.y + 2) as usize;
            if ev.row >= runs.y + 2
                && let Some(&id) = state.runs.keys().nth(row)
            {
                state.ui.selected = id;
            }
        }
        MouseEventKind::ScrollUp | MouseEventKind::ScrollDown => {
            let chart = charts.into_iter().find(|r| r.contains(pos))?;
            let c = step_at(state, chart, ev.column);
            if ev.kind == MouseEventKind::ScrollUp {
                state.zoom_in(Some(c));
            } else {
                state.zoom_out(Some(c));
            }
        }
        _ => {}
    }
    None
}

/// The x (in the axis's unit) under column `x` of a chart panel (approximate: ignores the
/// y-label margin).
fn step_at(state: &TuiState, chart: Rect, x: u16) -> f64 {
    let (a, b) = state.x_view();
    let inner_w = chart.width.saturating_sub(2).max(1) as f64;
    let frac = (x.saturating_sub(chart.x + 1) as f64 / inner_w).clamp(0.0, 1.0);
    a + frac * (b - a)
}
