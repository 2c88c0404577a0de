//! What each screen draws: the main screen at a few sizes, every view and overlay at every
//! size without panicking, the branches view with its endpoint fit, the probes and
//! landscape views, and the probes panel.

use insta::assert_snapshot;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::Rect;
use ratatui::widgets::Widget;
use wsdscope_trainer::DecayShape;

use super::*;
use crate::tui::state::{Overlay, View};

#[test]
fn initial_screen_after_a_few_hundred_steps() {
    assert_snapshot!("initial", screen(&state_at(300), 120, 36));
}

#[test]
fn narrow_terminal_stacks_the_panels() {
    assert_snapshot!("narrow_80x24", screen(&state_at(300), 80, 24));
}

#[test]
fn tiny_terminal_says_so() {
    let text = screen(&state_at(300), 20, 6);
    assert!(text.contains("terminal too small"));
    assert_snapshot!("tiny_20x6", text);
}

#[test]
fn every_size_and_overlay_renders_without_panicking() {
    let mut states = vec![TuiState::live(None), state_at(1), state_at(300)];
    let mut help = state_at(300);
    help.ui.overlay = Overlay::Help;
    states.push(help);
    let mut fork = state_at(300);
    press(&mut fork, 'f');
    states.push(fork);
    let mut quit = state_at(300);
    press(&mut quit, 'q');
    states.push(quit);
    let mut logy = state_at(3);
    logy.ui.log_y = true;
    states.push(logy);
    for view in [View::Probes, View::Landscape] {
        for mut s in [
            TuiState::live(None),
            state_at(1),
            state_at(300),
            probed_state(),
        ] {
            s.ui.view = view;
            states.push(s.clone());
            s.ui.log_y = true;
            s.ui.smooth = false;
            states.push(s);
        }
    }
    for s in &states {
        for w in [0, 1, 5, 20, 40, 59, 60, 61, 80, 109, 110, 150, 250] {
            for h in [0, 1, 3, 6, 15, 16, 17, 24, 40, 80] {
                let area = Rect::new(0, 0, w, h);
                let mut buf = Buffer::empty(area);
                App(s).render(area, &mut buf);
            }
        }
    }
}

/// A trunk at step 900 with four completed decay branches (the trunk evaluated where each
/// ends) and one still running.
fn state_with_branches(completed: usize) -> TuiState {
    use wsdscope_trainer::DecayShape::*;
    let syn = syn();
    let all = [
        (1, 200, 100, Exp),
        (2, 300, 120, Linear),
        (3, 400, 200, Cosine),
        (4, 600, 100, OneSqrt),
    ];
    let done = &all[..completed];
    let ends: Vec<u64> = done.iter().map(|b| b.1 + b.2).collect();
    let mut s = TuiState::live(Some("runs/session.h5".into()));
    for ev in syn.trunk_with_evals_at(900, 100, &ends) {
        s.apply(&ev);
    }
    for &(run, fork, decay, shape) in done {
        for ev in syn.forked_branch(run, fork, decay, shape, fork + decay) {
            s.apply(&ev);
        }
    }
    let running = completed as u32 + 1;
    for ev in syn.forked_branch(running, 800, 150, Exp, 870) {
        s.apply(&ev);
    }
    s
}

#[test]
fn c_toggles_the_branches_view_with_the_endpoint_fit() {
    let mut s = state_with_branches(4);
    assert_eq!(press(&mut s, 'c'), None);
    assert!(s.ui.compare);
    let text = screen(&s, 120, 40);
    for what in [
        "branches vs trunk",
        "tok@fork",
        "linear 120 → 0.1×",
        "1-sqrt 100 → 0.1×",
        "running",
        "freed",
        "over 4 endpoints",
        "at 2× the last endpoint",
        "extrapolated",
        "mem ≈ 130MB in 2 runs",
        "c panels",
    ] {
        assert!(
            text.contains(what),
            "branches view misses {what:?}:\n{text}"
        );
    }
    assert_snapshot!("branches_fit", text);
    press(&mut s, 'c');
    assert!(!s.ui.compare);
}

#[test]
fn the_branches_view_says_what_the_fit_needs() {
    let mut s = state_with_branches(1);
    press(&mut s, 'c');
    let text = screen(&s, 100, 30);
    assert!(
        text.contains("fit needs 3 completed branches, have 1"),
        "{text}"
    );
    assert_snapshot!("branches_too_few", text);
}

#[test]
fn the_branches_view_works_in_replay_too() {
    let mut s = TuiState::replay(Some("runs/session.h5".into()), false);
    for ev in syn().trunk(300, 100) {
        s.apply(&ev);
    }
    assert!(keys::REPLAY_KEYS.iter().any(|(k, _)| *k == "c"));
    press(&mut s, 'c');
    assert!(s.ui.compare);
    let text = screen(&s, 120, 36);
    assert!(
        text.contains("fit needs 3 completed branches, have 0"),
        "{text}"
    );
    // Clicking a row of the table selects that run.
    s.ui.area = ratatui::layout::Rect::new(0, 0, 120, 36);
    s.ui.selected = 1;
    let click = MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: 5,
        row: 2 + 2,
        modifiers: KeyModifiers::NONE,
    };
    handle_mouse(&mut s, click);
    assert_eq!(s.ui.selected, 0);
}

/// A trunk at step 700 probed every 100 steps, with a completed decay branch forked at 500
/// (probed at its end, plus the interpolation from the trunk's fork point to it).
fn probed_state() -> TuiState {
    let syn = syn();
    let mut s = TuiState::live(Some("runs/session.h5".into()));
    for ev in syn.trunk_with_probes(700, 100, 100) {
        s.apply(&ev);
    }
    let bsched = syn.branch_schedule(500, 80, DecayShape::Exp);
    for ev in syn.forked_branch(1, 500, 80, DecayShape::Exp, 580) {
        s.apply(&ev);
    }
    for ev in syn.probes(1, &bsched, 580) {
        s.apply(&ev);
    }
    s.apply(&syn.interp(0, 500, 1, 580, &bsched));
    s
}

#[test]
fn the_probes_view_charts_geometry_sharpness_and_noise() {
    let mut s = probed_state();
    assert_eq!(press(&mut s, 'v'), None);
    assert_eq!(s.ui.view, View::Probes);
    let text = screen(&s, 120, 36);
    for what in [
        "cos(g(t+1), g(t))",
        "D1",
        "D2",
        "K = |D2|/(1+D1²)^1.5",
        "sharpness",
        "38/η",
        "noise scale",
        "⑂1",
        "stable",
        "v landscape",
        "where the probes ran",
    ] {
        assert!(text.contains(what), "probes view misses {what:?}:\n{text}");
    }
    // The strip: a row per periodic kind, each with a mark where it ran.
    let strip: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("where the probes ran"))
        .collect();
    for kind in ["sharpness", "noise", "slice", "landscape"] {
        let row = strip.iter().find(|l| l.contains(&format!("│{kind}")));
        assert!(
            row.is_some_and(|r| r.contains('●')),
            "no {kind} row with a mark in the strip:\n{text}"
        );
    }
    assert_snapshot!("probes_view", text);
}

#[test]
fn the_landscape_view_shows_the_latest_results() {
    let mut s = probed_state();
    press(&mut s, 'v');
    press(&mut s, 'v');
    assert_eq!(s.ui.view, View::Landscape);
    let text = screen(&s, 120, 36);
    for what in [
        "loss landscape",
        "@700 (latest)",
        "▀",
        "θ now",
        "grid min",
        "random-direction slice",
        "update-direction slice",
        "interpolation @580 (120 steps ago)",
        "α=0 run 0@500",
        "α=1 run 1@580",
        "v main",
    ] {
        assert!(
            text.contains(what),
            "landscape view misses {what:?}:\n{text}"
        );
    }
    assert_snapshot!("landscape_view", text);
    // The centre of the map (the current parameters) is marked on a ramp colour.
    let area = Rect::new(0, 0, 120, 36);
    let mut buf = Buffer::empty(area);
    App(&s).render(area, &mut buf);
    let plus = buf
        .content()
        .iter()
        .find(|c| c.symbol() == "+")
        .expect("a centre marker");
    assert!(matches!(plus.bg, ratatui::style::Color::Rgb(..)));
    // The branch's own view: its probes, measured at its end.
    handle_key(&mut s, key(KeyCode::Tab));
    let text = screen(&s, 120, 36);
    assert!(text.contains("run 1 @580 (latest)"), "{text}");
}

#[test]
fn the_landscape_view_says_how_to_get_a_result() {
    let mut s = state_at(300);
    press(&mut s, 'v');
    press(&mut s, 'v');
    let text = screen(&s, 120, 36);
    assert!(text.contains("press p to probe now"), "{text}");
    assert!(!text.contains('▀'));
    assert_snapshot!("landscape_empty", text);
    // A replay cannot probe.
    let mut r = TuiState::replay(Some("runs/session.h5".into()), false);
    for ev in syn().trunk(300, 100) {
        r.apply(&ev);
    }
    press(&mut r, 'v');
    press(&mut r, 'v');
    let text = screen(&r, 120, 36);
    assert!(text.contains("no probe recorded"), "{text}");
    assert!(!text.contains("press p"), "{text}");
}

#[test]
fn v_cycles_main_probes_landscape_and_leaves_the_branches_view() {
    let mut s = probed_state();
    let main = screen(&s, 120, 36);
    assert_eq!(s.ui.view, View::Main);
    press(&mut s, 'v');
    assert_eq!(s.ui.view, View::Probes);
    assert_snapshot!("probes_view_80x24", screen(&s, 80, 24));
    press(&mut s, 'v');
    assert_eq!(s.ui.view, View::Landscape);
    press(&mut s, 'v');
    assert_eq!(s.ui.view, View::Main);
    assert_eq!(screen(&s, 120, 36), main, "back to the same main view");
    // From the branches view, v goes to the probes view.
    press(&mut s, 'c');
    assert!(s.ui.compare);
    press(&mut s, 'v');
    assert!(!s.ui.compare);
    assert_eq!(s.ui.view, View::Probes);
    // Scrolling over a probes chart zooms the step axis.
    s.ui.area = Rect::new(0, 0, 120, 36);
    let l = layout::probes(s.ui.area).unwrap();
    let scroll = MouseEvent {
        kind: MouseEventKind::ScrollUp,
        column: l.charts[4].x + l.charts[4].width / 2,
        row: l.charts[4].y + 2,
        modifiers: KeyModifiers::NONE,
    };
    handle_mouse(&mut s, scroll);
    assert!(s.ui.zoom.is_some());
}

#[test]
fn the_probes_panel_shows_the_latest_readings() {
    let s = probed_state();
    let text = screen(&s, 120, 36);
    for what in [
        "cos ",
        "sharpness ",
        "38/η",
        "⚠ edge of stability",
        "noise B",
        "embedding",
        "L0.q_proj",
        "@700 sharpness, noise, slice, landscape",
        "@580",
        "interp",
    ] {
        assert!(text.contains(what), "probes panel misses {what:?}:\n{text}");
    }
    assert!(!text.contains("probes feature"));
    assert_snapshot!("probes_panel", text);
}
