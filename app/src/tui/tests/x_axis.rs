//! The step charts' x axis (key `x`): steps, tokens at each run's own batch × seq, and
//! training time from each run's own step times (a branch continuing its parent's clock);
//! what the axis says after the key, and the zoom window kept on the same steps.

use insta::assert_snapshot;
use wsdscope_sessions::RunEvent;

use super::*;
use crate::cli::XAxis;
use crate::tui::synthetic::TOKENS_PER_STEP;

/// The trunk (batch 8 × seq 256) after `upto` steps, and a sibling (run 1) with batch 16
/// beside it for as many steps, each of its steps taking `sibling_ms`.
fn with_batch_16_sibling(upto: u64, sibling_ms: f64) -> TuiState {
    let mut s = state_at(upto);
    let sched = syn().schedule();
    let mut start = syn().run_start(1, &sched, 0);
    if let RunEvent::RunStart(st) = &mut start {
        st.name = "batch=16".into();
        st.parent = None;
        st.fork_step = None;
        st.batch = 16;
    }
    s.apply(&start);
    for step in 1..=upto {
        let mut ev = syn().step(1, &sched, step);
        if let RunEvent::Step(m) = &mut ev {
            m.tokens = step * 2 * TOKENS_PER_STEP;
            m.step_ms = sibling_ms;
        }
        s.apply(&ev);
    }
    s
}

#[test]
fn tokens_come_from_each_runs_own_batch_so_equal_data_lies_at_different_steps() {
    let mut s = with_batch_16_sibling(400, 1113.0);
    s.set_x_axis(XAxis::Tokens);
    let (trunk, sibling) = (s.run_axis(&s.runs[&0]), s.run_axis(&s.runs[&1]));
    assert_eq!(trunk.per_step(), 2048.0, "batch 8 × seq 256");
    assert_eq!(sibling.per_step(), 4096.0, "batch 16 × seq 256");
    // 409,600 tokens: step 200 of the trunk, step 100 of the sibling.
    assert_eq!(trunk.x(200.0), 409_600.0);
    assert_eq!(sibling.x(100.0), 409_600.0);
    assert_eq!(trunk.step(409_600.0), 200.0);
    assert_eq!(sibling.step(409_600.0), 100.0);
    // The charts' range runs to the furthest planned end: the sibling's 1000 steps of 4096.
    assert_eq!(s.x_full(), (0.0, 1000.0 * 4096.0));
    // On the steps axis the same runs meet at equal steps.
    s.set_x_axis(XAxis::Steps);
    assert_eq!(s.run_axis(&s.runs[&1]).x(100.0), 100.0);
}

#[test]
fn time_is_each_runs_own_clock_and_a_branch_continues_its_parents() {
    // The trunk takes 1.113 s a step, the sibling 0.5 s.
    let mut s = with_batch_16_sibling(300, 500.0);
    // A branch forked from the trunk at 200 whose steps take 2 s.
    for mut ev in syn().branch(2, 200, 50, 230) {
        if let RunEvent::Step(m) = &mut ev {
            m.step_ms = 2000.0;
        }
        s.apply(&ev);
    }
    s.set_x_axis(XAxis::Time);
    let x = |run, step: f64| s.run_axis(&s.runs[&run]).x(step);
    assert!((x(0, 300.0) - 300.0 * 1.113).abs() < 1e-9);
    assert!(
        (x(1, 300.0) - 150.0).abs() < 1e-9,
        "the sibling starts at 0"
    );
    let fork = 200.0 * 1.113;
    assert!(
        (x(2, 200.0) - fork).abs() < 1e-9,
        "the branch starts at the fork"
    );
    assert!((x(2, 230.0) - (fork + 60.0)).abs() < 1e-9);
    // Half a step interpolates; steps not taken yet go on at the run's mean step time.
    assert!((x(2, 210.5) - (fork + 21.0)).abs() < 1e-9);
    assert!((x(1, 400.0) - 200.0).abs() < 1e-9);
    // The inverse maps back.
    let b = s.run_axis(&s.runs[&2]);
    assert!((b.step(fork + 20.0) - 210.0).abs() < 1e-9);
    // The fork marker and the branch's first point stand at the parent's clock.
    let markers = views::fork_markers(&s);
    assert!((markers[0].x - fork).abs() < 1e-9, "{:?}", markers[0].x);
}

/// The x-axis rows of the charts on a screen (`└` then the ticks and the title).
fn axis_rows(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .filter(|l| {
            l.split('└')
                .skip(1)
                .any(|p| p.starts_with(|c: char| c.is_ascii_digit()))
        })
        .collect()
}

#[test]
fn the_x_key_cycles_the_axis_and_the_charts_say_which() {
    let mut s = state_at(1000);
    let steps = screen(&s, 120, 36);
    let rows = axis_rows(&steps);
    assert_eq!(rows.len(), 3, "loss, lr, norms: {steps}");
    for row in &rows {
        assert!(row.contains("steps") && row.contains("1000"), "{row}");
    }
    press(&mut s, 'x');
    assert_eq!(s.ui.x_axis, XAxis::Tokens);
    let tokens = screen(&s, 120, 36);
    // 1000 steps of 2048 tokens end at 2.05M; every axis is titled and ticked in tokens.
    for row in axis_rows(&tokens) {
        assert!(row.contains("tokens") && row.contains("2.05M"), "{row}");
        assert!(!row.contains("steps"), "{row}");
    }
    assert_snapshot!("x_axis_tokens", tokens);
    press(&mut s, 'x');
    assert_eq!(s.ui.x_axis, XAxis::Time);
    // 1000 steps of 1.113 s: 18m33s.
    let time = screen(&s, 120, 36);
    for row in axis_rows(&time) {
        assert!(row.contains("time") && row.contains("18m33s"), "{row}");
    }
    assert!(
        time.contains("x axis: training time"),
        "the status line says so"
    );
    assert_snapshot!("x_axis_time", time);
    press(&mut s, 'x');
    assert_eq!(s.ui.x_axis, XAxis::Steps);
    s.ui.status = None;
    assert_eq!(screen(&s, 120, 36), steps, "back to steps: the same screen");
}

#[test]
fn the_probes_view_follows_the_axis_too() {
    let mut s = TuiState::live(None);
    for ev in syn().trunk_with_probes(600, 100, 150) {
        s.apply(&ev);
    }
    press(&mut s, 'v');
    press(&mut s, 'x');
    let text = screen(&s, 120, 40);
    assert!(text.contains("tokens"), "{text}");
    assert!(text.contains("2.05M"), "{text}");
}

#[test]
fn a_zoom_window_stays_on_the_same_steps_when_the_axis_changes() {
    let mut s = state_at(600);
    press(&mut s, '+');
    let (a, b) = s.x_view();
    press(&mut s, 'x');
    let (ta, tb) = s.x_view();
    assert_eq!((ta, tb), (a * 2048.0, b * 2048.0));
    press(&mut s, 'x');
    let (sa, sb) = s.x_view();
    assert!((sa - a * 1.113).abs() < 1e-6 && (sb - b * 1.113).abs() < 1e-6);
    let zoomed = screen(&s, 120, 36);
    assert!(
        zoomed.contains("[time "),
        "the loss title names the window: {zoomed}"
    );
    press(&mut s, 'x');
    let (a2, b2) = s.x_view();
    assert!((a2 - a).abs() < 1e-6 && (b2 - b).abs() < 1e-6);
}

#[test]
fn every_mode_lists_the_key() {
    for keys in [keys::KEYS, keys::REPLAY_KEYS] {
        assert!(
            keys.iter()
                .any(|(k, what)| *k == "x" && what.contains("tokens"))
        );
    }
    let mut s = state_at(300);
    press(&mut s, '?');
    let help = screen(&s, 120, 36);
    assert!(help.contains("x axis: steps → tokens"), "{help}");
}
