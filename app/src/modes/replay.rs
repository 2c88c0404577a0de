//! `wsdscope replay FILE.h5 [--follow] [--x steps|tokens|time]`: the TUI over a recorded
//! session with a time cursor, its step charts on the x axis `--x` names (`x` cycles it);
//! `replay A.h5 B.h5 …` replays several sessions side by side (see [`merge`]).
//! The session is opened and read before the terminal is touched, so a bad file gives the
//! reader's one-line error on a normal terminal. `--follow` re-reads a session that a headless
//! `record` is still writing (see [`crate::tui::replay`]).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use wsdscope_sessions::{RunEvent, Session};

use crate::cli::ReplayArgs;
use crate::tui::{self, replay::Reload};

/// A followed session is read whole at least this often even when its run table looks
/// unchanged (notes and checkpoints do not change it).
const FULL_RELOAD: Duration = Duration::from_secs(5);

pub fn run(args: ReplayArgs) -> Result<ExitCode> {
    if !args.more.is_empty() {
        let files: Vec<_> = std::iter::once(&args.file).chain(&args.more).collect();
        let names = super::compare_sessions::names(&files);
        let mut sessions = Vec::new();
        for (f, name) in files.iter().zip(&names) {
            sessions.push((name.clone(), Session::open(f)?.events()?));
        }
        tui::run_replay(merge(sessions), None, names.join(" + "), args.x)?;
        return Ok(ExitCode::SUCCESS);
    }
    let session = Session::open(&args.file)?;
    let events = session.events()?;
    let path = args.file.display().to_string();
    let reload: Option<Box<dyn Reload>> = if args.follow {
        Some(Box::new(Follow::new(session)))
    } else {
        None
    };
    tui::run_replay(events, reload, path, args.x)?;
    Ok(ExitCode::SUCCESS)
}

/// A growing session, re-read when its run table (step and eval counts, ends) changes.
struct Follow {
    session: Session,
    seen: Vec<(u32, u64, u64, bool)>,
    last_full: Instant,
}

impl Follow {
    fn new(session: Session) -> Self {
        let seen = signature(&session);
        Follow {
            session,
            seen,
            last_full: Instant::now(),
        }
    }
}

fn signature(s: &Session) -> Vec<(u32, u64, u64, bool)> {
    s.runs()
        .iter()
        .map(|r| (r.id, r.steps, r.evals, r.end.is_some()))
        .collect()
}

impl Reload for Follow {
    fn reload(&mut self) -> Result<Option<Vec<RunEvent>>> {
        self.session.refresh()?;
        let sig = signature(&self.session);
        if sig == self.seen && self.last_full.elapsed() < FULL_RELOAD {
            return Ok(None);
        }
        self.seen = sig;
        self.last_full = Instant::now();
        Ok(Some(self.session.events()?))
    }

    fn writer_alive(&self) -> Option<bool> {
        self.session.writer_alive()
    }
}

/// How far apart the run ids of consecutive files are in a merged replay: run `r` of the
/// `k`-th file is run `k·RUN_ID_STRIDE + r`.
pub const RUN_ID_STRIDE: u32 = 1000;

/// Several sessions' events as one stream the TUI replays: every run renamed `FILE:RUN name`,
/// the `k`-th file's run ids (and parents) moved up by `k·`[`RUN_ID_STRIDE`] so they stay
/// apart, and the events ordered by step (each file's own order kept among equal steps), so
/// the cursor moves through all of them at once. The first file's trunk stays run 0 (its
/// phases shade the charts); the others' trunks have no parent, so they show as siblings.
pub fn merge(sessions: Vec<(String, Vec<RunEvent>)>) -> Vec<RunEvent> {
    let mut all: Vec<(u64, usize, RunEvent)> = Vec::new();
    for (k, (name, events)) in sessions.into_iter().enumerate() {
        let shift = k as u32 * RUN_ID_STRIDE;
        let id = |r: u32| r + shift;
        for mut ev in events {
            match &mut ev {
                RunEvent::RunStart(s) => {
                    s.name = format!("{name}:{} {}", s.run, s.name);
                    s.run = id(s.run);
                    s.parent = s.parent.map(id);
                }
                RunEvent::Step(m) => m.run = id(m.run),
                RunEvent::Probe(p) => p.run = id(p.run),
                RunEvent::Forked { run, parent, .. } => {
                    *run = id(*run);
                    *parent = id(*parent);
                }
                RunEvent::Eval { run, .. }
                | RunEvent::Checkpoint { run, .. }
                | RunEvent::Note { run, .. }
                | RunEvent::End { run, .. } => *run = id(*run),
            }
            let at = ev.step();
            all.push((at, k, ev));
        }
    }
    all.sort_by_key(|e| e.0); // stable: each file's order stays among equal steps
    all.into_iter().map(|e| e.2).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::TuiState;
    use crate::tui::synthetic::Synthetic;

    #[test]
    fn two_sessions_replay_side_by_side_with_their_runs_apart() {
        let syn = Synthetic::new(200, 20, 20);
        let a = syn.trunk(200, 50);
        let mut b = syn.trunk(120, 50);
        b.extend(syn.branch(1, 60, 20, 120));
        let merged = merge(vec![("a.h5".into(), a.clone()), ("b.h5".into(), b.clone())]);
        assert_eq!(merged.len(), a.len() + b.len());
        let steps: Vec<u64> = merged
            .iter()
            .filter_map(|e| match e {
                RunEvent::Step(m) => Some(m.step),
                _ => None,
            })
            .collect();
        assert!(steps.windows(2).all(|w| w[0] <= w[1]), "ordered by step");
        let mut s = TuiState::live(None);
        for ev in &merged {
            s.apply(ev);
        }
        let ids: Vec<u32> = s.runs.keys().copied().collect();
        assert_eq!(ids, [0, 1000, 1001]);
        assert_eq!(s.runs[&0].name, "a.h5:0 trunk");
        assert!(s.runs[&1000].name.starts_with("b.h5:0 "));
        assert!(
            s.runs[&1000].is_sibling(),
            "another file's trunk shows as a sibling"
        );
        assert_eq!(
            s.runs[&1001].parent,
            Some(1000),
            "a branch keeps its own trunk"
        );
        assert_eq!(s.runs[&1000].steps.len(), 120);
        assert_eq!(s.runs[&0].steps.len(), 200);
    }
}
