//! The engine loop: commands between steps, then one step of the run the policy picks, its
//! eval and checkpoint when due, the periodic probes, and the trunk's scripted forks, until
//! every run has ended. Under several ranks every rank runs this loop in step: the same
//! commands at the same boundaries ([`Feed`]), the same policy and budget; only rank 0
//! writes checkpoints and probes (the other ranks' events go nowhere).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use wsdscope_events::{EndReason, NoteKind, RunEvent, RunId};

use super::branch::{decay_of, resume_of};
use super::command::{Command, Outcome};
use super::feed::{Feed, Next};
use super::probe_clock::ProbeClock;
use super::scheduler::{Runs, default_budget};
use super::trainer::Trainer;
use crate::config::ForkPlan;
use crate::probe::ProbeKind;

/// The engine loop: steps every active run under the policy until all have ended; one `end`
/// event per run in every case.
pub(super) fn drive(
    trunk: Trainer,
    rx: Receiver<Command>,
    mut emit: impl FnMut(RunEvent),
) -> Outcome {
    let mut plan: Vec<ForkPlan> = trunk
        .cfg
        .forks
        .iter()
        .filter(|f| f.at > trunk.step)
        .cloned()
        .collect();
    plan.sort_by_key(|f| f.at);
    plan.reverse(); // pop() yields the earliest
    emit(trunk.run_start_event());
    let feed = Feed::new(rx, Arc::clone(&trunk.comm));
    // Rank 0's budget on every rank, so that all accept or refuse the same forks.
    let mut budget = trunk
        .cfg
        .memory_budget_mb
        .map(|mb| mb << 20)
        .unwrap_or_else(default_budget)
        .to_le_bytes()
        .to_vec();
    let budget = match trunk.comm.broadcast_bytes(&mut budget) {
        Ok(()) => u64::from_le_bytes(budget.try_into().unwrap_or([0xff; 8])),
        Err(_) => default_budget(),
    };
    let mut runs = Runs {
        budget,
        policy: trunk.cfg.policy,
        slots: trunk.cfg.run_slots(),
        active: vec![trunk],
        next_id: 1,
        rr: 0,
        trunk_evals: BTreeSet::new(),
        started: BTreeMap::from([(0, Instant::now())]),
        probes: ProbeClock::default(),
        probe_pending: BTreeSet::new(),
    };
    runs.probes.start(&runs.active[0]);
    let mut trunk_outcome: Option<Outcome> = None;
    let mut paused = false;
    let note =
        |emit: &mut dyn FnMut(RunEvent), run: RunId, step: u64, kind: NoteKind, message: String| {
            emit(RunEvent::Note {
                run,
                step,
                kind,
                message,
            })
        };
    // Siblings start beside the trunk before its first step, within the slots and budget.
    let siblings = runs.active[0].cfg.siblings.clone();
    for s in &siblings {
        if let Err(m) = runs.sibling(s, &mut emit) {
            note(&mut emit, 0, 0, NoteKind::Refused, m);
        }
    }
    'steps: loop {
        // Commands between steps; a paused engine blocks here.
        loop {
            let c = match feed.next(paused) {
                Next::Command(c) => Some(c),
                Next::Closed if paused => None,
                Next::Closed | Next::Empty => break,
            };
            let step0 = runs.active.first().map(|r| r.step).unwrap_or(0);
            match c {
                Some(Command::Pause) if !paused => {
                    paused = true;
                    note(&mut emit, 0, step0, NoteKind::Paused, "paused".into());
                }
                Some(Command::Resume) if paused => {
                    paused = false;
                    note(&mut emit, 0, step0, NoteKind::Resumed, "resumed".into());
                }
                Some(Command::Stop) | None => {
                    runs.stop_all(None, None, &mut trunk_outcome, &mut emit);
                    break 'steps;
                }
                Some(Command::StopWith {
                    reason,
                    checkpoint_to,
                }) => {
                    runs.stop_all(
                        Some(reason),
                        checkpoint_to.as_deref(),
                        &mut trunk_outcome,
                        &mut emit,
                    );
                    break 'steps;
                }
                Some(Command::Fork(req)) => {
                    let branch = decay_of(req.length, req.shape, req.floor);
                    // A fork asked for at the step the requester showed happens there or
                    // not at all.
                    let now = runs
                        .active
                        .iter()
                        .find(|r| r.run == req.parent)
                        .map(|r| r.step);
                    if let (Some(shown), Some(now)) = (req.at_step, now)
                        && shown != now
                    {
                        let m = format!(
                            "fork refused: run {} is at step {now}, not at step {shown} the fork was asked for",
                            req.parent
                        );
                        note(&mut emit, req.parent, now, NoteKind::Refused, m);
                    } else if let Err(m) = runs.fork(req.parent, branch, &mut emit) {
                        note(&mut emit, req.parent, step0, NoteKind::Refused, m);
                    }
                }
                Some(Command::ForkResume { parent }) => {
                    if let Err(m) = runs.fork(parent, resume_of, &mut emit) {
                        note(&mut emit, parent, step0, NoteKind::Refused, m);
                    }
                }
                Some(Command::Probe { run }) => {
                    if let Err(m) = runs.probe_all(run, &mut emit) {
                        note(&mut emit, run, step0, NoteKind::Refused, m);
                    }
                }
                Some(_) => {}
            }
            if !paused {
                break;
            }
        }
        if runs.active.is_empty() {
            break;
        }
        let i = runs.pick();
        let step_result = runs.active[i].train_step();
        let tr = &mut runs.active[i];
        let run = tr.run;
        let outcome = match step_result {
            Err(e) => Some((EndReason::Failed, Some(e.to_string()))),
            Ok(m) => {
                runs.probes.train_s += m.step_ms / 1e3;
                emit(RunEvent::Step(m));
                let extra_eval = run == 0 && runs.trunk_evals.remove(&tr.step);
                let mut failed = None;
                if tr.eval_due() || extra_eval {
                    match tr.evaluate() {
                        Ok(val_loss) => emit(RunEvent::Eval {
                            run,
                            step: tr.step,
                            val_loss,
                            tokens: tr.tokens,
                        }),
                        Err(e) => failed = Some((EndReason::Failed, Some(e.to_string()))),
                    }
                }
                if failed.is_none() && tr.checkpoint_due() && tr.is_root() {
                    let dir = tr.cfg.checkpoint_dir.clone().expect("validated");
                    match tr.save_checkpoint(&dir) {
                        Ok(path) => emit(RunEvent::Checkpoint {
                            run,
                            step: tr.step,
                            path: path.display().to_string(),
                        }),
                        Err(e) => failed = Some((EndReason::Failed, Some(e.to_string()))),
                    }
                }
                if failed.is_none() && tr.is_done() {
                    Some((EndReason::Completed, None))
                } else {
                    failed
                }
            }
        };
        // Periodic probes where the plan puts them (or every --probe-every steps), within
        // their budget; a branch that completes is also compared with its parent along the
        // straight line between them.
        if let Some(i) = runs.active.iter().position(|r| r.run == run) {
            let done = outcome
                .as_ref()
                .is_some_and(|(r, _)| *r == EndReason::Completed);
            // The noise scale of the steps since the last report (no pass of its own).
            if runs
                .probes
                .noise_report_due(&runs.active[i], done || outcome.is_some())
                && let Some(r) = runs.active[i].step_noise_report()
                && runs.active[i].is_root()
            {
                emit(RunEvent::Probe(r));
            }
            if runs.probe_pending.remove(&run) {
                let _ = runs.probe_all(run, &mut emit);
            }
            if outcome.is_none() || done {
                while let Some((kind, at)) = runs.probes.due(&runs.active[i], done) {
                    let secs = runs.probe(i, kind, &mut emit);
                    runs.probes.ran(&runs.active[i], kind, at, secs);
                }
            }
            if done && run != 0 && runs.active[i].cfg.probes.periodic() {
                let secs = runs.probe(i, ProbeKind::Interp, &mut emit);
                runs.probes.spent(secs);
            }
        }
        // Scripted forks from the trunk once it has completed their step.
        if run == 0
            && outcome
                .as_ref()
                .is_none_or(|(r, _)| *r == EndReason::Completed)
        {
            let at = runs.active[i].step;
            while plan.last().is_some_and(|f| f.at <= at) {
                let f = plan.pop().expect("checked");
                if let Err(m) = runs.fork(0, decay_of(f.length, f.shape, f.floor), &mut emit) {
                    note(&mut emit, 0, at, NoteKind::Refused, m);
                }
            }
        }
        if let Some((reason, message)) = outcome {
            let i = runs
                .active
                .iter()
                .position(|r| r.run == run)
                .expect("active");
            let o = runs.finish(i, reason, message, None, &mut emit);
            if run == 0 {
                trunk_outcome = Some(o.clone());
                if reason == EndReason::Failed {
                    // Without its trunk a session has nothing to compare branches against.
                    while !runs.active.is_empty() {
                        runs.finish(
                            runs.active.len() - 1,
                            EndReason::Stopped,
                            Some("stopped because the trunk failed".into()),
                            None,
                            &mut emit,
                        );
                    }
                }
            }
        }
    }
    trunk_outcome.unwrap_or(Outcome {
        reason: EndReason::Stopped,
        step: 0,
        final_val_loss: None,
        message: None,
    })
}
