//! Replaying a recorded session: the time cursor opens at the end, scrubs and jumps to
//! phase changes and forks, plays at the recorded pace and faster, follows a growing
//! session, and has its own keys and help.

use insta::assert_snapshot;
use wsdscope_sessions::{EndReason, RunEvent};
use wsdscope_trainer::DecayShape;

use super::*;
use crate::tui::replay::{Reload, ReplaySource};

/// A recorded-looking session: a 1000-step trunk (evals every 100) with a decay branch forked
/// at step 500 that runs beside it for 100 steps, then both end.
fn session_events() -> Vec<RunEvent> {
    let syn = syn();
    let sched = syn.schedule();
    let bsched = syn.branch_schedule(500, 100, DecayShape::Exp);
    let mut evs = syn.trunk(500, 100);
    evs.push(RunEvent::Forked {
        run: 1,
        parent: 0,
        step: 500,
        schedule: serde_json::to_value(&bsched).unwrap(),
    });
    evs.push(syn.run_start(1, &bsched, 500));
    for s in 501..=1000 {
        evs.push(syn.step(0, &sched, s));
        if s % 100 == 0 {
            evs.push(syn.eval(0, &sched, s));
        }
        if s <= 600 {
            evs.push(syn.step(1, &bsched, s));
        }
        if s == 600 {
            evs.push(Synthetic::end(1, 600, EndReason::Completed, None));
        }
    }
    evs.push(Synthetic::end(0, 1000, EndReason::Completed, None));
    evs
}

fn replay(events: Vec<RunEvent>, reload: Option<Box<dyn Reload>>) -> (TuiState, ReplaySource) {
    let follow = reload.is_some();
    let mut state = TuiState::replay(Some("runs/session.h5".into()), follow);
    let mut source = ReplaySource::new(events, reload);
    source.start(&mut state);
    (state, source)
}

/// Presses `c` and carries out the intent, as the loop does.
fn act(state: &mut TuiState, source: &mut ReplaySource, c: char) {
    if let Some(a) = press(state, c) {
        source.act(a, state);
    }
}

fn shown(state: &TuiState) -> u64 {
    state.ui.replay.as_ref().unwrap().steps_shown
}

#[test]
fn replay_opens_at_the_end_paused() {
    let (state, _) = replay(session_events(), None);
    let r = state.ui.replay.as_ref().unwrap();
    assert_eq!((r.steps_shown, r.steps_total), (1100, 1100));
    assert!(!r.playing && !r.following);
    assert!(!state.ui.live);
    assert_eq!(state.runs.len(), 2);
    let text = screen(&state, 120, 36);
    assert!(text.contains("replay paused ×1"), "{text}");
    assert!(text.contains("cursor 1,100/1,100 steps 100%"));
    assert!(text.contains("space play"), "replay keys in the footer");
    assert_snapshot!("replay_end", text);
}

#[test]
fn replay_cursor_scrubs_and_jumps_to_phase_changes_and_forks() {
    let (mut s, mut src) = replay(session_events(), None);
    act(&mut s, &mut src, 'b');
    assert_eq!(shown(&s), 0);
    assert!(
        s.runs[&0].steps.is_empty(),
        "start: the run's start, no steps"
    );
    assert!(s.runs[&0].start.is_some());
    act(&mut s, &mut src, ']');
    assert_eq!(s.runs[&0].last_step(), 1);
    act(&mut s, &mut src, '}');
    assert_eq!(shown(&s), 1 + 55, "a twentieth of 1100 steps");
    act(&mut s, &mut src, '{');
    act(&mut s, &mut src, '[');
    assert_eq!(shown(&s), 0);
    // Next marks: warmup → stable at step 51, the fork at 500, stable → decay at 851.
    act(&mut s, &mut src, 'n');
    assert_eq!(s.runs[&0].last_step(), 51);
    assert_eq!(
        s.runs[&0].phase.last(),
        Some(&wsdscope_sessions::Phase::Stable)
    );
    act(&mut s, &mut src, 'n');
    assert_eq!(s.runs[&0].last_step(), 500);
    assert_eq!(s.runs[&1].fork_step, Some(500));
    assert!(s.runs[&1].steps.is_empty());
    let at_fork = screen(&s, 120, 36);
    assert!(at_fork.contains("run 1 forked from run 0 at step 500"));
    assert_snapshot!("replay_at_fork", at_fork);
    act(&mut s, &mut src, 'n');
    assert_eq!(s.runs[&0].last_step(), 851);
    assert_eq!(
        s.runs[&0].phase.last(),
        Some(&wsdscope_sessions::Phase::Decay)
    );
    assert_eq!(s.runs[&1].last_step(), 600);
    act(&mut s, &mut src, 'n');
    assert!(s.ui.status.as_ref().unwrap().text.contains("no later"));
    // Back: rebuilds the state up to the earlier mark.
    act(&mut s, &mut src, 'p');
    assert_eq!(s.runs[&0].last_step(), 500);
    assert!(s.runs[&1].steps.is_empty());
    handle_key(&mut s, key(KeyCode::End)).map(|a| src.act(a, &mut s));
    assert_eq!(shown(&s), 1100);
    assert!(s.runs[&0].end.is_some());
    handle_key(&mut s, key(KeyCode::Home)).map(|a| src.act(a, &mut s));
    assert_eq!(shown(&s), 0);
}

#[test]
fn replay_plays_at_the_recorded_pace_and_faster() {
    let (mut s, mut src) = replay(session_events(), None);
    // At the end, space plays from the start.
    act(&mut s, &mut src, ' ');
    assert_eq!(shown(&s), 0);
    assert!(s.ui.replay.as_ref().unwrap().playing);
    // ×1: the synthetic steps took 1113 ms each.
    src.tick(&mut s, Duration::from_secs(10));
    assert_eq!(s.runs[&0].last_step(), 8);
    act(&mut s, &mut src, '>');
    src.tick(&mut s, Duration::from_secs(10));
    assert_eq!(s.runs[&0].last_step(), 8 + 89, "×10: 100 s of steps");
    act(&mut s, &mut src, '>');
    act(&mut s, &mut src, '>');
    act(&mut s, &mut src, '>');
    src.tick(&mut s, Duration::ZERO);
    src.pump(&mut s);
    let r = s.ui.replay.as_ref().unwrap();
    assert_eq!(r.speed, "max");
    assert_eq!(r.steps_shown, 1100, "max plays to the end");
    assert!(!r.playing);
    assert!(
        s.ui.status
            .as_ref()
            .unwrap()
            .text
            .contains("end of the session")
    );
    act(&mut s, &mut src, '<');
    assert_eq!(s.ui.replay.as_ref().unwrap().speed, "×100");
    // Pause stops the cursor.
    act(&mut s, &mut src, 'b');
    act(&mut s, &mut src, ' ');
    act(&mut s, &mut src, ' ');
    src.tick(&mut s, Duration::from_secs(100));
    assert_eq!(shown(&s), 0);
    let text = screen(&s, 120, 36);
    assert!(text.contains("replay paused ×100"));
}

/// A session that grows by 100 trunk steps per reload.
struct Growing {
    events: Vec<RunEvent>,
    upto: usize,
}

impl Reload for Growing {
    fn reload(&mut self) -> anyhow::Result<Option<Vec<RunEvent>>> {
        self.upto = (self.upto + 100).min(self.events.len());
        Ok(Some(self.events[..self.upto].to_vec()))
    }
}

#[test]
fn replay_follows_a_growing_session() {
    let all = syn().trunk(1000, 100);
    let first = all[..=300].to_vec();
    let grow = Growing {
        events: all.clone(),
        upto: first.len(),
    };
    let (mut s, mut src) = replay(first, Some(Box::new(grow)));
    assert!(s.ui.replay.as_ref().unwrap().following);
    assert_eq!(s.runs[&0].last_step(), 298);
    src.pump(&mut s); // the first pump re-reads at once
    assert_eq!(s.events as usize, 401);
    assert!(s.ui.replay.as_ref().unwrap().following);
    let text = screen(&s, 120, 36);
    assert!(text.contains("⟳ following"), "{text}");
    assert_snapshot!("replay_following", text);
    // Scrubbing back stops following; new data arrives but the cursor stays.
    act(&mut s, &mut src, '[');
    assert!(!s.ui.replay.as_ref().unwrap().following);
    let at = s.events;
    src.replace(&mut s, all[..600].to_vec());
    assert_eq!(s.events, at);
    // `e` goes back to the end and follows again.
    act(&mut s, &mut src, 'e');
    assert!(s.ui.replay.as_ref().unwrap().following);
    assert_eq!(s.events, 600);
    src.replace(&mut s, all.clone());
    assert_eq!(s.events as usize, all.len());
    // A stream that changed under the cursor (not a prefix) is rebuilt, not appended.
    let mut changed = all.clone();
    changed.truncate(50);
    src.replace(&mut s, changed);
    assert_eq!(s.events, 50);
    assert_eq!(s.runs[&0].last_step(), 49);
}

#[test]
fn replay_help_lists_its_keys_and_live_keys_ignore_them() {
    let (mut s, _) = replay(session_events(), None);
    press(&mut s, '?');
    let text = screen(&s, 120, 40);
    for (k, what) in keys::REPLAY_KEYS {
        assert!(text.contains(k), "help misses {k}");
        assert!(text.contains(what), "help misses {what}");
    }
    assert!(!text.contains("fork form"));
    assert_snapshot!("replay_help", text);
    // In a live run the replay keys do nothing; `p` probes the selected run instead.
    let mut live = state_at(300);
    for c in ['[', ']', '{', '}', 'b', 'e', 'n', '<', '>'] {
        assert_eq!(press(&mut live, c), None, "{c}");
    }
    assert_eq!(live.runs[&0].last_step(), 300);
    assert_eq!(press(&mut live, 'p'), Some(Action::Probe(0)));
}

#[test]
fn replay_loop_quits_on_q() {
    let (mut state, mut source) = replay(session_events(), None);
    let mut term = Terminal::new(TestBackend::new(100, 30)).unwrap();
    let keys = vec![
        Event::Key(key(KeyCode::Char('b'))),
        Event::Key(key(KeyCode::Char(' '))),
        Event::Key(key(KeyCode::Char('q'))),
    ];
    run_loop(&mut term, &mut state, &mut source, scripted(keys)).unwrap();
    assert!(state.ui.replay.as_ref().unwrap().playing);
    assert!(term.backend().to_string().contains("replay"));
}
