//! The headless progress in both modes: live bars drawn on a recorded terminal (one per
//! running run, taken down at its end, every other line above them) and plain lines.

use std::sync::{Arc, Mutex};

use indicatif::TermLike;
use wsdscope_trainer::DecayShape;

use super::*;
use crate::tui::synthetic::Synthetic;

const WIDTH: usize = 110;

/// A terminal as indicatif drives it: a grid of rows, a cursor that wraps at the right
/// edge only when the next character comes (as xterm does), and everything written.
#[derive(Debug, Clone, Default)]
struct Screen(Arc<Mutex<Grid>>);

#[derive(Debug, Default)]
struct Grid {
    rows: Vec<Vec<char>>,
    row: usize,
    col: usize,
    wrap_pending: bool,
    written: String,
}

impl Grid {
    fn moved(&mut self, n: usize, by: impl FnOnce(&mut Grid)) {
        if n > 0 {
            by(self);
            self.wrap_pending = false;
        }
    }

    fn put(&mut self, c: char) {
        self.written.push(c);
        match c {
            '\r' => (self.col, self.wrap_pending) = (0, false),
            '\n' => (self.row, self.col, self.wrap_pending) = (self.row + 1, 0, false),
            c => {
                if self.wrap_pending {
                    (self.row, self.col, self.wrap_pending) = (self.row + 1, 0, false);
                }
                while self.rows.len() <= self.row {
                    self.rows.push(vec![' '; WIDTH]);
                }
                self.rows[self.row][self.col] = c;
                if self.col + 1 == WIDTH {
                    self.wrap_pending = true;
                } else {
                    self.col += 1;
                }
            }
        }
    }
}

impl Screen {
    fn with<R>(&self, f: impl FnOnce(&mut Grid) -> R) -> R {
        f(&mut self.0.lock().unwrap())
    }

    /// The rows as text, trailing blanks and blank rows at the bottom dropped.
    fn rows(&self) -> Vec<String> {
        let mut rows: Vec<String> = self.with(|g| {
            g.rows
                .iter()
                .map(|r| r.iter().collect::<String>().trim_end().to_string())
                .collect()
        });
        while rows.last().is_some_and(|r| r.is_empty()) {
            rows.pop();
        }
        rows
    }

    /// The rows that show a bar.
    fn bars(&self) -> Vec<String> {
        self.rows()
            .into_iter()
            .filter(|r| r.contains('█') || r.contains('░'))
            .collect()
    }
}

impl TermLike for Screen {
    fn width(&self) -> u16 {
        WIDTH as u16
    }
    fn height(&self) -> u16 {
        40
    }
    // A move by 0 sends nothing (as console's `Term`), so it keeps a pending wrap.
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.with(|g| g.moved(n, |g| g.row = g.row.saturating_sub(n)));
        Ok(())
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.with(|g| g.moved(n, |g| g.row += n));
        Ok(())
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.with(|g| g.moved(n, |g| g.col = (g.col + n).min(WIDTH - 1)));
        Ok(())
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.with(|g| g.moved(n, |g| g.col = g.col.saturating_sub(n)));
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.with(|g| s.chars().chain(['\n']).for_each(|c| g.put(c)));
        Ok(())
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.with(|g| s.chars().for_each(|c| g.put(c)));
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.with(|g| {
            if let Some(r) = g.rows.get_mut(g.row) {
                r.fill(' ');
            }
            (g.col, g.wrap_pending) = (0, false);
        });
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A 200-step trunk evaluated every 50 steps and a branch forked at 120 that decays to
/// 150, interleaved as the engine reports them: the trunk to `trunk_to`, the branch's
/// first `branch_events` events, then the rest of the branch.
fn session(trunk_to: u64, branch_events: usize) -> (Vec<RunEvent>, Vec<RunEvent>) {
    let syn = Synthetic::new(200, 20, 40);
    let mut before = syn.trunk(trunk_to, 50);
    let mut branch = syn.forked_branch(1, 120, 30, DecayShape::Exp, 150);
    let after = branch.split_off(branch_events);
    before.extend(branch);
    (before, after)
}

fn end(run: RunId, step: u64, reason: EndReason) -> RunEvent {
    RunEvent::End {
        run,
        step,
        reason,
        message: None,
        final_val_loss: None,
        wall_s: 3.0,
    }
}

#[test]
fn live_mode_draws_one_bar_per_running_run_and_takes_it_down_at_its_end() {
    let screen = Screen::default();
    let mut p: Progress<std::io::Sink> =
        Progress::live(ProgressDrawTarget::term_like(Box::new(screen.clone())));
    p.note("session: s.h5");
    // The trunk at 125, the branch's Forked, start and first five steps (121..=125).
    let (before, after) = session(125, 7);
    for ev in &before {
        p.on_event(ev);
    }
    assert_eq!(p.live_runs(), [0, 1]);
    let rows = screen.rows();
    let bars = screen.bars();
    assert_eq!(bars.len(), 2, "{rows:#?}");
    // The bars are the last two rows, every other line above them.
    assert_eq!(rows[rows.len() - 2..], bars[..], "{rows:#?}");
    assert!(bars[0].starts_with("trunk ") && bars[0].contains(" 125/200  ETA "));
    assert!(bars[0].contains("stable  loss "), "{}", bars[0]);
    assert!(bars[1].starts_with("run 1 ") && bars[1].contains(" 125/150  ETA "));
    assert!(bars[1].contains("decay   loss "), "{}", bars[1]);
    // A sixth of the branch's 30 steps is done: 4 of its 24 cells are filled.
    assert_eq!(bars[1].matches('█').count(), 4, "{}", bars[1]);
    for want in [
        "session: s.h5",
        "wsdscope: tiny — 4070000 params (3020000 non-embedding), h256 L4 heads 4/4 ffn 640 vocab 4096",
        "eval  step 100: val loss",
        "fork  run 1 from run 0 at step 120",
        "branch run 1 \"branch 1\" from run 0 at step 120: runs to step 150",
    ] {
        assert!(
            rows.iter().any(|r| r.starts_with(want)),
            "{want}: {rows:#?}"
        );
    }

    // The branch ends: its bar goes, its end is a line above the trunk's bar.
    for ev in &after {
        p.on_event(ev);
    }
    assert_eq!(p.live_runs(), [0]);
    let rows = screen.rows();
    assert_eq!(screen.bars().len(), 1, "{rows:#?}");
    assert!(rows.last().unwrap().starts_with("trunk "), "{rows:#?}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with("run 1 done: 150 steps in 1s, final val loss ")),
        "{rows:#?}"
    );

    // The trunk stops: no bar is left, its end is the last line.
    p.on_event(&end(0, 125, EndReason::Stopped));
    assert!(p.live_runs().is_empty());
    let rows = screen.rows();
    assert!(screen.bars().is_empty(), "{rows:#?}");
    assert_eq!(rows.last().unwrap(), "stopped after step 125 (3s)");
    // Cursor moves go through the terminal's calls, never as escape codes in the text.
    assert!(!screen.with(|g| g.written.contains('\x1b')));
}

#[test]
fn live_bars_are_taken_down_when_the_mode_stops_without_an_end() {
    let screen = Screen::default();
    let mut p: Progress<std::io::Sink> =
        Progress::live(ProgressDrawTarget::term_like(Box::new(screen.clone())));
    for ev in &session(125, 7).0 {
        p.on_event(ev);
    }
    assert_eq!(screen.bars().len(), 2);
    drop(p);
    assert!(screen.bars().is_empty(), "{:#?}", screen.rows());
}

#[test]
fn plain_mode_prints_sampled_lines_and_no_control_codes() {
    let mut p = Progress::plain(Vec::new());
    assert!(p.bars.is_hidden());
    p.note("session: s.h5");
    let (before, after) = session(125, 7);
    for ev in before.iter().chain(&after) {
        p.on_event(ev);
    }
    // The bars are kept (hidden) for the runs that are running.
    assert_eq!(p.live_runs(), [0]);
    p.on_event(&end(0, 125, EndReason::Completed));
    assert!(p.live_runs().is_empty());
    let text = String::from_utf8(p.plain.take().unwrap()).unwrap();
    assert!(!text.contains('\x1b') && !text.contains('\r'), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "session: s.h5");
    assert!(lines[1].starts_with("wsdscope: tiny — 4070000 params"));
    assert_eq!(
        lines[2],
        "data: synthetic (seed 0); entropy floor 2.2000 nats/token"
    );
    assert_eq!(
        lines[3],
        "200 steps of 8×256 tokens: warmup to 20, stable to 160, decay to 200; device cpu, 2 threads"
    );
    // The trunk's first step, then every 4th (200 / 50), with an ETA.
    let steps: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("step "))
        .collect();
    assert!(
        steps[0].starts_with("step 1/200 warmup  loss "),
        "{}",
        steps[0]
    );
    assert!(
        steps[1].starts_with("step 4/200 warmup  loss "),
        "{}",
        steps[1]
    );
    assert!(steps.iter().all(|l| l.contains(" tok/s  ETA ")));
    assert_eq!(steps.len(), 1 + 125 / 4);
    // The branch's steps are sampled too, its start and end said once each.
    let branch: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("run 1 step "))
        .collect();
    assert_eq!(branch.len(), (121..=150).filter(|s| s % 4 == 0).count());
    assert!(
        branch[0].starts_with("run 1 step 124 decay   loss "),
        "{}",
        branch[0]
    );
    let once = |want: &str| lines.iter().filter(|l| l.starts_with(want)).count() == 1;
    assert!(once(
        "branch run 1 \"branch 1\" from run 0 at step 120: runs to step 150"
    ));
    assert!(once("run 1 done: 150 steps in 1s, final val loss "));
    assert!(
        once("eval  step 50: val loss ") && lines.iter().any(|l| l.contains("(floor 2.2000, gap "))
    );
    assert_eq!(*lines.last().unwrap(), "done: 125 steps in 3s");
}

#[test]
fn a_sibling_is_announced_as_one() {
    let syn = Synthetic::new(200, 20, 40);
    let RunEvent::RunStart(mut start) = syn.run_start(2, &syn.schedule(), 0) else {
        unreachable!()
    };
    (start.parent, start.fork_step, start.name) = (None, None, "lr=0.02".into());
    let mut p = Progress::plain(Vec::new());
    p.on_event(&RunEvent::RunStart(start));
    assert_eq!(p.live_runs(), [2]);
    let text = String::from_utf8(p.plain.take().unwrap()).unwrap();
    assert_eq!(text, "sibling run 2 \"lr=0.02\": runs to step 200\n");
}
