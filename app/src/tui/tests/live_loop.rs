//! The live loop against a scripted engine on a thread: quitting stops the engine and waits
//! for the run's end, or quits at once when the run has ended; and a manual check of the
//! real terminal path.

use std::sync::mpsc;

use wsdscope_sessions::{EndReason, NoteKind, RunEvent};
use wsdscope_trainer::Command;

use super::*;

/// A scripted engine on a thread: sends a run, notes Pause and Resume as the engine does, obeys
/// Stop by ending the run.
fn fake_engine(
    steps: u64,
    end_by_itself: bool,
) -> (
    mpsc::Receiver<RunEvent>,
    mpsc::Sender<Command>,
    std::thread::JoinHandle<Vec<Command>>,
) {
    let (etx, erx) = mpsc::sync_channel(16_384);
    let (ctx, crx) = mpsc::channel::<Command>();
    let handle = std::thread::spawn(move || {
        let syn = syn();
        let sched = syn.schedule();
        let _ = etx.send(syn.run_start(0, &sched, 0));
        for s in 1..=steps {
            let _ = etx.send(syn.step(0, &sched, s));
        }
        if end_by_itself {
            let _ = etx.send(Synthetic::end(0, steps, EndReason::Completed, None));
        }
        let mut seen = Vec::new();
        while let Ok(c) = crx.recv_timeout(Duration::from_secs(10)) {
            let kind = match c {
                Command::Pause => Some(NoteKind::Paused),
                Command::Resume => Some(NoteKind::Resumed),
                _ => None,
            };
            if let Some(kind) = kind {
                let message = format!("{kind:?}");
                let _ = etx.send(RunEvent::Note {
                    run: 0,
                    step: steps,
                    kind,
                    message,
                });
            }
            let stop = c == Command::Stop;
            seen.push(c);
            if stop {
                let _ = etx.send(Synthetic::end(0, steps, EndReason::Stopped, None));
                break;
            }
        }
        seen
    });
    (erx, ctx, handle)
}

#[test]
fn live_loop_stops_the_engine_and_waits_for_the_end() {
    let (events, commands, engine) = fake_engine(50, false);
    let mut state = TuiState::live(None);
    let mut source = LiveSource::new(events, commands, Default::default());
    let mut term = Terminal::new(TestBackend::new(100, 30)).unwrap();
    let keys = vec![
        Event::Key(key(KeyCode::Char(' '))),
        Event::Key(key(KeyCode::Char('q'))),
        Event::Key(key(KeyCode::Char('y'))),
    ];
    run_loop(&mut term, &mut state, &mut source, scripted(keys)).unwrap();
    let seen = engine.join().unwrap();
    assert_eq!(seen, vec![Command::Pause, Command::Stop]);
    assert_eq!(
        state.runs[&0].end.as_ref().map(|e| e.reason),
        Some(EndReason::Stopped)
    );
    assert_eq!(state.runs[&0].steps.len(), 50);
}

#[test]
fn live_loop_quits_at_once_when_the_run_has_ended() {
    let (events, commands, engine) = fake_engine(20, true);
    let mut state = TuiState::live(None);
    let mut source = LiveSource::new(events, commands, Default::default());
    let mut term = Terminal::new(TestBackend::new(100, 30)).unwrap();
    // Give the events time to arrive before q.
    let mut n = 0;
    let input = move |timeout: Duration| -> anyhow::Result<Option<Event>> {
        std::thread::sleep(timeout.min(Duration::from_millis(20)));
        n += 1;
        Ok((n == 10).then(|| Event::Key(key(KeyCode::Char('q')))))
    };
    run_loop(&mut term, &mut state, &mut source, input).unwrap();
    drop(source); // closes the command channel, so the fake engine returns
    let seen = engine.join().unwrap();
    assert!(seen.is_empty(), "no Stop after the end: {seen:?}");
    assert!(term.backend().to_string().contains("completed"));
}

/// The fork form pauses the engine, shows the step it paused at, and forks there: the engine
/// sees Pause, then a fork at that step, then Resume.
#[test]
fn live_loop_fork_form_pauses_forks_at_the_shown_step_and_resumes() {
    let (events, commands, engine) = fake_engine(40, false);
    let mut state = TuiState::live(None);
    let mut source = LiveSource::new(events, commands, Default::default());
    let mut term = Terminal::new(TestBackend::new(120, 40)).unwrap();
    let mut n = 0;
    let input = |timeout: Duration| -> anyhow::Result<Option<Event>> {
        std::thread::sleep(timeout.min(Duration::from_millis(20)));
        n += 1;
        let c = match n {
            5 => KeyCode::Char('f'),
            25 => KeyCode::Enter,
            30 => KeyCode::Char('q'),
            32 => KeyCode::Char('y'),
            _ => return Ok(None),
        };
        Ok(Some(Event::Key(key(c))))
    };
    run_loop(&mut term, &mut state, &mut source, input).unwrap();
    drop(source);
    let seen = engine.join().unwrap();
    let Some(Command::Fork(req)) = seen.get(1) else {
        panic!("no fork second: {seen:?}")
    };
    assert_eq!(req.at_step, Some(40));
    assert_eq!(seen[0], Command::Pause);
    assert_eq!(seen[2], Command::Resume);
    assert_eq!(seen.last(), Some(&Command::Stop));
}

/// Manual check of the real terminal path (raw mode, alternate screen, mouse, resize, panic
/// restore) against a fake engine that steps every 10 ms. Run it in a terminal:
/// `cargo test --release -p wsdscope manual_live_demo -- --ignored --nocapture`;
/// with `SMOKE_PANIC=150` the fake engine panics at step 150 and the terminal must come back.
#[test]
#[ignore = "needs a terminal; run by hand"]
fn manual_live_demo() {
    let (etx, events) = mpsc::sync_channel(1024);
    let (commands, crx) = mpsc::channel::<Command>();
    let panic_at = std::env::var("SMOKE_PANIC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let engine = std::thread::spawn(move || {
        let syn = syn();
        let sched = syn.schedule();
        let _ = etx.send(syn.run_start(0, &sched, 0));
        let mut paused = false;
        let mut seen = Vec::new();
        let mut s = 0;
        loop {
            while let Ok(c) = crx.try_recv() {
                seen.push(format!("{c:?}"));
                match c {
                    Command::Pause => {
                        paused = true;
                        let _ = etx.send(RunEvent::Note {
                            run: 0,
                            step: s,
                            kind: NoteKind::Paused,
                            message: "paused".into(),
                        });
                    }
                    Command::Resume => {
                        paused = false;
                        let _ = etx.send(RunEvent::Note {
                            run: 0,
                            step: s,
                            kind: NoteKind::Resumed,
                            message: "resumed".into(),
                        });
                    }
                    Command::Stop => {
                        let _ = etx.send(Synthetic::end(0, s, EndReason::Stopped, None));
                        return seen;
                    }
                    Command::Fork(r) => {
                        let _ = etx.send(RunEvent::Note {
                            run: r.parent,
                            step: s,
                            kind: NoteKind::Refused,
                            message: format!("fork {r:?} not supported yet"),
                        });
                    }
                    other => seen.push(format!("ignored {other:?}")),
                }
            }
            if !paused && s < 1000 {
                s += 1;
                if Some(s) == panic_at {
                    panic!("engine panicked on purpose at step {s}");
                }
                let _ = etx.send(syn.step(0, &sched, s));
                if s % 100 == 0 {
                    let _ = etx.send(syn.eval(0, &sched, s));
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let info = LiveInfo {
        session_path: Some("smoke.h5".into()),
        ..Default::default()
    };
    let r = run_live(events, commands, info);
    eprintln!("run_live returned {r:?}");
    if panic_at.is_none() {
        eprintln!("engine saw {:?}", engine.join());
    }
}
