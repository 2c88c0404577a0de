//! `wsdscope record`: train headless. Every event is recorded to an HDF5 session file (unless
//! `--no-record`); progress goes to stderr; with `--jsonl` every event also goes to stdout as
//! one JSON object per line (the public contract documented in the README).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver};

use anyhow::{Context, Result, bail};
use wsdscope_sessions::{EndReason, RecordSummary, Recorder, RunEvent};
use wsdscope_trainer::{Command, Engine, RunConfig, Trainer};

use crate::cli::{RecordArgs, TrainArgs};
use crate::progress::Progress;
use crate::settings::{self, default_threads};
use crate::threads;

/// Events the engine may run ahead of the printer before it waits (nothing is dropped).
const EVENT_BUFFER: usize = 4096;

/// A fresh `sessions/<UTC timestamp>.h5` in the current directory.
pub fn default_session_path() -> Result<PathBuf> {
    let dir = Path::new("sessions");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stamp: String = wsdscope_sessions::recorder::iso_now()
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .map(|c| if c == 'T' { '-' } else { c })
        .collect();
    let mut path = dir.join(format!("{stamp}.h5"));
    let mut k = 1;
    while path.exists() {
        path = dir.join(format!("{stamp}-{k}.h5"));
        k += 1;
    }
    Ok(path)
}

/// Opens the session file a `record`/`run` invocation asks for, before any training starts.
pub fn open_recorder(out: Option<&Path>, no_record: bool) -> Result<Option<Recorder>> {
    if no_record {
        return Ok(None);
    }
    match out {
        Some(p) => {
            if p.extension().and_then(|e| e.to_str()) != Some("h5") {
                bail!("--out {}: a session file must end in .h5", p.display());
            }
            Ok(Some(Recorder::create(p)?))
        }
        None => {
            // Another process may take the same timestamped name first: pick the next one.
            for _ in 0..100 {
                let path = default_session_path()?;
                match Recorder::create(&path) {
                    Ok(r) => return Ok(Some(r)),
                    Err(_) if path.exists() => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            bail!("cannot find a free session file name under sessions/")
        }
    }
}

/// Forgets a session file that never received a run (training failed to start).
pub fn discard_recorder(rec: Option<Recorder>) {
    if let Some(r) = rec {
        let path = r.path().to_path_buf();
        let _ = r.finish();
        let _ = std::fs::remove_file(path);
    }
}

pub fn run(args: RecordArgs) -> Result<ExitCode> {
    match prepare(&args.train)? {
        None => Ok(ExitCode::SUCCESS),
        Some((trainer, recorder)) => train(trainer, recorder, args.jsonl),
    }
}

/// Everything before training, shared by `record` and `run`: resolves the settings (or prints
/// them and returns `None` for `--dry-run`), opens the session file, builds the trainer. A
/// session file is never left behind when the trainer cannot start.
pub(crate) fn prepare(args: &TrainArgs) -> Result<Option<(Trainer, Option<Recorder>)>> {
    let cfg = if args.resume.is_none() {
        let cfg = settings::resolve(args.settings.clone(), args.config.as_deref())?;
        if args.dry_run {
            print_dry_run(&cfg);
            return Ok(None);
        }
        Some(cfg)
    } else {
        None
    };
    let recorder = open_recorder(args.out.as_deref(), args.no_record)?;
    match start_trainer(args, cfg) {
        Ok(t) => Ok(Some((t, recorder))),
        Err(e) => {
            discard_recorder(recorder);
            Err(e)
        }
    }
}

pub(crate) fn start_trainer(args: &TrainArgs, cfg: Option<RunConfig>) -> Result<Trainer> {
    let trainer = if let Some(dir) = &args.resume {
        let given = args.settings.shaping_given();
        if !given.is_empty() {
            bail!(
                "--resume continues the saved run unchanged; drop --{} (only --threads, --device and checkpoint flags may change)",
                given.join(", --")
            );
        }
        if args.config.is_some() {
            bail!("--resume continues the saved run unchanged; drop --config");
        }
        let s = args.settings.clone();
        settings::check_checkpoint_dir(&s.checkpoint_dir)?;
        threads::init(s.threads.unwrap_or_else(default_threads))?;
        let forks = s.fork_plans()?;
        let policy = s.policy_or_default()?;
        Trainer::resume(dir, |c| {
            c.threads = s.threads.unwrap_or_else(default_threads);
            // Forks do not change the trunk's losses, so a resumed run may script new ones.
            if !forks.is_empty() {
                c.forks = forks;
            }
            c.policy = policy;
            if s.memory_budget.is_some() {
                c.memory_budget_mb = s.memory_budget;
            }
            if let Some(k) = s.keep_branch_checkpoints {
                c.keep_branch_checkpoints = k;
            }
            if let Some(d) = s.device {
                c.device = d;
            }
            if let Some(n) = s.checkpoint_every {
                c.checkpoint_every = n;
            }
            if s.checkpoint_dir.is_some() {
                c.checkpoint_dir = s.checkpoint_dir;
            }
        })?
    } else {
        let cfg = cfg.expect("resolved above");
        settings::check_checkpoint_dir(&cfg.checkpoint_dir)?;
        threads::init(cfg.threads)?;
        Trainer::new(cfg)?
    };
    if trainer.is_done() {
        bail!(
            "the checkpoint is at step {} of {}: the run is already complete",
            trainer.step_count(),
            trainer.config().steps
        );
    }
    Ok(trainer)
}

/// Starts the engine with a sink that never drops an event: it waits for room in a channel
/// of [`EVENT_BUFFER`] events, which [`fan_out`] empties.
pub(crate) fn spawn_engine(trainer: Trainer) -> Result<(Engine, Receiver<RunEvent>)> {
    let (tx, rx) = mpsc::sync_channel::<RunEvent>(EVENT_BUFFER);
    let engine = Engine::spawn(trainer, move |ev| {
        let _ = tx.send(ev);
    })?;
    Ok((engine, rx))
}

/// Hands every engine event to the session file first (the recorder never drops one), then to
/// `each`, until the engine closes its sink. The first recording failure is passed to
/// `on_record_error` (which stops training); nothing more is recorded after it, and what was
/// written stays readable.
pub(crate) fn fan_out(
    events: Receiver<RunEvent>,
    recorder: Option<&Recorder>,
    mut on_record_error: impl FnMut(&wsdscope_sessions::Error),
    mut each: impl FnMut(&RunEvent) -> Result<()>,
) -> Result<()> {
    let mut recording_failed = false;
    for ev in events {
        if let Some(r) = recorder
            && !recording_failed
            && let Err(e) = r.record(ev.clone())
        {
            recording_failed = true;
            on_record_error(&e);
        }
        each(&ev)?;
    }
    Ok(())
}

/// Completes the session file. Its error says what failed and that the file keeps everything
/// written before the failure.
pub(crate) fn finish_recording(
    recorder: Option<Recorder>,
    step: u64,
) -> Result<Option<RecordSummary>> {
    let Some(r) = recorder else { return Ok(None) };
    match r.finish() {
        Ok(s) => Ok(Some(s)),
        Err(e) => bail!(
            "{e}; training stopped after step {step}; the session keeps everything written before the failure"
        ),
    }
}

/// Runs the engine to its end, fanning every event out to the session file, `--jsonl` and the
/// progress line. A recording failure stops training; what was written stays readable.
fn train(trainer: Trainer, recorder: Option<Recorder>, jsonl: bool) -> Result<ExitCode> {
    let (engine, events) = spawn_engine(trainer)?;
    let stderr = std::io::stderr();
    let mut progress = Progress::new(stderr.lock(), stderr.is_terminal());
    if let Some(r) = &recorder {
        progress.note(&format!("session: {}", r.path().display()));
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = false;
    fan_out(
        events,
        recorder.as_ref(),
        |_| engine.send(Command::Stop),
        |ev| {
            if jsonl {
                writeln!(out, "{}", ev.to_json_line())?;
                out.flush()?;
            }
            progress.on_event(ev);
            // The trunk's end decides the exit status; a failed branch is reported, not fatal.
            if let RunEvent::End { reason, run: 0, .. } = ev {
                failed = *reason == EndReason::Failed;
            }
            Ok(())
        },
    )?;
    let outcome = engine.join();
    let path = recorder.as_ref().map(|r| r.path().display().to_string());
    if let (Some(path), Some(s)) = (path, finish_recording(recorder, outcome.step)?) {
        progress.note(&format!(
            "session: {path} ({} events, {} bytes)",
            s.events, s.bytes
        ));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_dry_run(cfg: &RunConfig) {
    let m = &cfg.model;
    println!(
        "model {}: {} parameters, {} non-embedding ({} embedding, tied head)",
        cfg.preset,
        group(m.total_params()),
        group(m.non_embedding_params()),
        group(m.embedding_params())
    );
    println!(
        "shape: hidden {} layers {} heads {} kv-heads {} ffn {} vocab {} head-dim {}",
        m.hidden,
        m.layers,
        m.heads,
        m.kv_heads,
        m.ffn,
        m.vocab,
        m.head_dim()
    );
    println!(
        "run: {} steps × {} sequences × {} tokens; {}; peak lr {}",
        cfg.steps,
        cfg.batch,
        cfg.seq,
        cfg.schedule.describe(),
        cfg.schedule.peak()
    );
    println!(
        "{}",
        serde_json::to_string_pretty(cfg).expect("config serialises")
    );
}

/// 1247442432 → "1,247,442,432".
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
