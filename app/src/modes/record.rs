//! `wsdscope record`: train headless. Every event is recorded to an HDF5 session file (unless
//! `--no-record`); progress goes to stderr; with `--jsonl` every event also goes to stdout as
//! one JSON object per line (the public contract documented in the README). Under
//! `mpirun -n N` (the `mpi` feature) rank 0 does all this while every rank trains on its rows
//! of each batch.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use wsdscope_sessions::{EndReason, Recorder, RunEvent, SessionPlan};
use wsdscope_trainer::collective::Lifeline;
use wsdscope_trainer::{Command, Engine, RunConfig, Trainer, World, checkpoint};

use crate::attach::Server;
use crate::cli::{RecordArgs, TrainArgs};
use crate::live::{Breaker, EVENT_BUFFER, Finished, Live, Printed, Viewer, finish_recording};
use crate::memory;
use crate::progress::Progress;
use crate::settings::{self, Settings};
use crate::signals::{self, Stop};
use crate::threads;
use crate::tui::format::grouped;

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

/// Where the session of a `record`/`run` invocation goes: `--out`, checked before any
/// training starts (`None`: `--no-record`, or a default `sessions/<timestamp>.h5` picked when
/// the file is created). A resumed run whose `--out` already exists (the command that
/// recorded it, re-run with `--resume`) records next to it as `NAME.resume-STEP.h5`.
pub(crate) fn session_path(args: &TrainArgs, resumed_at: Option<u64>) -> Result<Option<PathBuf>> {
    if args.no_record {
        return Ok(None);
    }
    let Some(p) = args.out.as_deref() else {
        return Ok(None);
    };
    if p.extension().and_then(|e| e.to_str()) != Some("h5") {
        bail!("--out {}: a session file must end in .h5", p.display());
    }
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        bail!(
            "--out {}: directory {} does not exist",
            p.display(),
            dir.display()
        );
    }
    match resumed_at {
        Some(step) if p.exists() => {
            let stem = p.file_stem().unwrap_or_default().to_string_lossy();
            let mut k = 1;
            loop {
                let name = if k == 1 {
                    format!("{stem}.resume-{step}.h5")
                } else {
                    format!("{stem}.resume-{step}-{k}.h5")
                };
                let next = p.with_file_name(name);
                if !next.exists() {
                    return Ok(Some(next));
                }
                k += 1;
            }
        }
        _ if p.exists() => bail!(
            "--out {}: the file exists; choose a new path (nothing is overwritten)",
            p.display()
        ),
        _ => Ok(Some(p.to_path_buf())),
    }
}

/// Creates the session file for a trainer that is ready to start: `out`, or a fresh
/// `sessions/<timestamp>.h5`; laid out for the trunk's shape and the runs it may hold.
pub fn open_recorder(
    out: Option<&Path>,
    no_record: bool,
    trainer: &Trainer,
) -> Result<Option<Recorder>> {
    if no_record {
        return Ok(None);
    }
    let RunEvent::RunStart(start) = trainer.run_start_event() else {
        unreachable!("run_start_event is a run_start")
    };
    let mut plan = SessionPlan::for_trunk(&start, trainer.config().run_slots());
    // A sibling of another depth reports more per-layer columns: the widest run sets them.
    for s in &trainer.config().siblings {
        let c = &s.config;
        let tracked = if c.probes.per_step {
            c.probes.tracked(c.model.layers).len()
        } else {
            0
        };
        let w = &mut plan.widths;
        w[0] = w[0].max(c.model.layers);
        w[2] = w[2].max(tracked);
    }
    match out {
        Some(p) => Ok(Some(Recorder::create(p, &plan)?)),
        None => {
            // Another process may take the same timestamped name first: pick the next one.
            for _ in 0..100 {
                let path = default_session_path()?;
                match Recorder::create(&path, &plan) {
                    Ok(r) => return Ok(Some(r)),
                    Err(_) if path.exists() => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            bail!("cannot find a free session file name under sessions/")
        }
    }
}

pub fn run(args: RecordArgs) -> Result<ExitCode> {
    // Under `mpirun -n N` each rank trains on its rows of every batch; rank 0 records.
    let world = World::join()?;
    let interrupts = Interrupts::watch()?;
    // A rank that dies is noticed by the others at once, and named.
    let (lifeline, why) = Lifeline::join(&*world.collective())?;
    if let Some(why) = why {
        eprintln!(
            "note: the ranks have no lifeline ({why}); a rank that dies is noticed by mpirun alone"
        );
    }
    let result = if world.is_root() {
        prepare(&args.train, false).and_then(|p| match p {
            None => Ok(ExitCode::SUCCESS),
            Some(mut p) => {
                p.trainer.set_collective(world.collective())?;
                train(p, args.jsonl, interrupts, lifeline.as_deref())
            }
        })
    } else {
        follow(args.train, &world, interrupts, lifeline.as_deref())
    };
    if world.size() > 1
        && let Err(e) = &result
    {
        // The other ranks would wait for this one forever.
        eprintln!("error: rank {} of {}: {e:#}", world.rank(), world.size());
        world.abort(2);
    }
    result
}

/// A rank other than 0 under `mpirun`: the same run as rank 0 (which records it), trained on
/// this rank's rows of every batch in step with rank 0, its own events dropped; stopped by
/// the commands rank 0 broadcasts (a signal to this rank alone changes nothing).
fn follow(
    mut args: TrainArgs,
    world: &World,
    interrupts: Interrupts,
    lifeline: Option<&Lifeline>,
) -> Result<ExitCode> {
    // Rank 0 alone records and serves the attach endpoint.
    args.no_record = true;
    args.listen = None;
    args.no_socket = true;
    let Some(p) = prepare(&args, false)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let mut trainer = p.trainer;
    trainer.set_collective(world.collective())?;
    let engine = Engine::spawn(trainer, |_| {})?;
    interrupts.attach(engine.commands(), p.checkpoint_to);
    on_lost_rank(lifeline, world.size(), |line| {
        // Rank 0 is gone: nothing is recorded here, and the collective will never return.
        signals::exit_now(&format!("\nerror: {line}\n"), 1)
    });
    let outcome = engine.join();
    if let Some(l) = lifeline {
        l.farewell();
    }
    if let Some(stop) = interrupts.received() {
        return Ok(ExitCode::from(stop.exit_code()));
    }
    Ok(if outcome.reason == EndReason::Failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A trainer ready to run and where its events and checkpoints go.
pub(crate) struct Prepared {
    pub trainer: Trainer,
    pub recorder: Option<Recorder>,
    /// Where an interrupted trunk checkpoints: its `--checkpoint-dir`, or next to the session
    /// file (`NAME.checkpoints/`), or `checkpoints/` without one.
    pub checkpoint_to: PathBuf,
    /// The control endpoint viewers attach to (`wsdscope attach`), bound, not yet serving.
    pub server: Option<Server>,
}

/// Everything before training, shared by `record` and `run` (`tui`): resolves the settings
/// (or, on `--resume`, checks them against the saved run), estimates the memory the run needs
/// and refuses what does not fit, prints and returns `None` for `--dry-run`, builds the
/// trainer, and only then creates the session file, so none is left behind when training
/// cannot start.
pub(crate) fn prepare(args: &TrainArgs, tui: bool) -> Result<Option<Prepared>> {
    let (cfg, resumed_at) = match &args.resume {
        None => (
            settings::resolve(args.settings.clone(), args.config.as_deref())?,
            None,
        ),
        Some(dir) => {
            let (_, state) = checkpoint::read_state(dir)?;
            let given = Settings::merged(args.settings.clone(), args.config.as_deref())?;
            if !state.config.siblings.is_empty() && given.sibling.is_none() {
                eprintln!(
                    "note: the saved run had {} sibling(s); a checkpoint holds the trunk only, so the trunk continues alone",
                    state.config.siblings.len()
                );
            }
            let cfg = settings::resumed(&given, state.config)?;
            if state.step >= cfg.steps {
                bail!(
                    "the checkpoint is at step {} of {}: the run is already complete",
                    state.step,
                    cfg.steps
                );
            }
            (cfg, Some(state.step))
        }
    };
    let estimate = memory::estimate(&cfg, tui, !args.no_record);
    if args.dry_run {
        print_dry_run(&cfg);
        println!("estimated peak memory: {} MiB", estimate.total() >> 20);
        print!("{estimate}");
        return Ok(None);
    }
    memory::check(&estimate)?;
    let out = session_path(args, resumed_at)?;
    settings::check_checkpoint_dir(&cfg.checkpoint_dir)?;
    threads::init(cfg.threads)?;
    let trainer = match &args.resume {
        None => Trainer::new(cfg)?,
        Some(dir) => Trainer::resume(dir, |c| *c = cfg)?,
    };
    let recorder = open_recorder(out.as_deref(), args.no_record, &trainer)?;
    let checkpoint_to = match (&trainer.config().checkpoint_dir, &recorder) {
        (Some(d), _) => d.clone(),
        (None, Some(r)) => {
            let p = r.path();
            let stem = p.file_stem().unwrap_or_default().to_string_lossy();
            p.with_file_name(format!("{stem}.checkpoints"))
        }
        (None, None) => PathBuf::from("checkpoints"),
    };
    let server = Server::open(
        recorder.as_ref().map(|r| r.path()),
        args.listen.as_deref(),
        args.no_socket,
    )?;
    Ok(Some(Prepared {
        trainer,
        recorder,
        checkpoint_to,
        server,
    }))
}

/// SIGINT/SIGTERM for a training mode: watched from the start (a signal during set-up is
/// acted on as soon as the engine runs) and delivered to the engine as
/// [`Command::StopWith`].
pub(crate) struct Interrupts {
    watch: signals::Watch,
    engine: Arc<Mutex<Option<EngineLink>>>,
}

/// Where an interrupt goes: the engine, and where its trunk checkpoints on SIGTERM.
type EngineLink = (Sender<Command>, PathBuf);

impl Interrupts {
    pub(crate) fn watch() -> Result<Self> {
        let engine: Arc<Mutex<Option<EngineLink>>> = Arc::default();
        let target = Arc::clone(&engine);
        let watch = signals::Watch::start(move |stop| {
            if let Some((tx, to)) = &*target.lock().unwrap_or_else(|e| e.into_inner()) {
                let _ = tx.send(interrupt(stop, to));
            }
        })?;
        Ok(Interrupts { watch, engine })
    }

    /// From now on a signal stops the engine behind `commands`; one that came earlier stops
    /// it now.
    pub(crate) fn attach(&self, commands: Sender<Command>, checkpoint_to: PathBuf) {
        let mut link = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stop) = self.watch.received() {
            let _ = commands.send(interrupt(stop, &checkpoint_to));
        }
        *link = Some((commands, checkpoint_to));
    }

    /// The first signal received, if any.
    pub(crate) fn received(&self) -> Option<Stop> {
        self.watch.received()
    }
}

/// The engine command for a signal: SIGTERM (preemption) always checkpoints the trunk.
fn interrupt(stop: Stop, checkpoint_to: &Path) -> Command {
    Command::StopWith {
        reason: format!("interrupted by {}", stop.name()),
        checkpoint_to: (stop == Stop::Term).then(|| checkpoint_to.to_path_buf()),
    }
}

/// What to tell the user after a signal stopped the run: where the session and the last
/// checkpoint are, and the command that resumes it.
pub(crate) fn interrupted_lines(
    stop: Stop,
    step: u64,
    session: Option<&str>,
    checkpoint: Option<&Path>,
) -> Vec<String> {
    let mut lines = vec![format!(
        "interrupted by {}: stopped after step {step}",
        stop.name()
    )];
    if let Some(s) = session {
        lines.push(format!("session: {s}"));
    }
    match checkpoint {
        Some(ck) => {
            let root = ck.parent().unwrap_or(ck);
            lines.push(format!("checkpoint: {}", ck.display()));
            lines.push(format!("resume with: {}", resume_command(root)));
        }
        None => lines.push(
            "no checkpoint was written (give --checkpoint-dir DIR to keep one on Ctrl-C; SIGTERM always writes one)"
                .into(),
        ),
    }
    lines
}

/// The command line that resumes this run from the checkpoints under `root`: the same
/// arguments with `--resume ROOT` instead of any earlier `--resume`, and without `--sibling`
/// (a checkpoint holds the trunk only), quoted for a POSIX shell.
pub(crate) fn resume_command(root: &Path) -> String {
    let mut args: Vec<String> = Vec::new();
    let mut skip = false;
    for a in std::env::args() {
        if std::mem::take(&mut skip) {
            continue;
        }
        if a == "--resume" || a == "--sibling" {
            skip = true;
            continue;
        }
        if !a.starts_with("--resume=") && !a.starts_with("--sibling=") {
            args.push(a);
        }
    }
    if let Some(first) = args.first_mut() {
        *first = "wsdscope".into();
    }
    args.push("--resume".into());
    args.push(root.display().to_string());
    args.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `a` as one POSIX shell word (a NUL, which no shell word holds, is dropped).
fn shell_quote(a: &str) -> String {
    let a = a.replace('\0', "");
    shlex::try_quote(&a).map_or(a.clone(), |q| q.into_owned())
}

/// Runs the engine to its end through the live pipeline ([`crate::live`]): every event to
/// the session file, then to `--jsonl` and the progress line on this thread. A recording
/// failure stops training; what was written stays readable. The first SIGINT/SIGTERM stops
/// it cleanly (exit 130/143), the second at once.
fn train(
    p: Prepared,
    jsonl: bool,
    interrupts: Interrupts,
    lifeline: Option<&Lifeline>,
) -> Result<ExitCode> {
    let Prepared {
        trainer,
        recorder,
        checkpoint_to,
        server,
    } = p;
    let path = recorder.as_ref().map(|r| r.path().display().to_string());
    let ranks = trainer.collective().size();
    let (tx, printed) = mpsc::sync_channel(EVENT_BUFFER);
    let attached = server.as_ref().map(Server::attached).unwrap_or_default();
    let live = Live::start(trainer, recorder, Viewer::Printer(tx), attached)?;
    interrupts.attach(live.commands(), checkpoint_to);
    let breaker = live.breaker();
    let session = path.clone();
    on_lost_rank(lifeline, ranks, move |line| {
        fail_session(&breaker, &line, session.as_deref())
    });
    let mut progress = Progress::stderr();
    if let Some(p) = &path {
        progress.note(&format!("session: {p}"));
    }
    // Served until this function returns (the socket file is removed then).
    let _listening = match server {
        Some(s) => {
            for l in s.lines() {
                progress.note(&l);
            }
            Some(s.start(live.commands())?)
        }
        None => None,
    };
    let stdout = std::io::stdout();
    // JSON lines printed to the terminal the bars are drawn on go in between their redraws.
    let shared_terminal = stdout.is_terminal();
    let mut out = stdout.lock();
    if ranks > 1 && jsonl {
        set_nonblocking_stdout()?;
    }
    // Until the engine ends and the pipeline closes the channel.
    for item in printed {
        match item {
            Printed::Notice(n) => progress.note(&n.to_string()),
            Printed::Event(ev) => {
                if jsonl && ranks > 1 {
                    let line = format!("{}\n", ev.to_json_line());
                    write_unless_interrupted(line.as_bytes(), &interrupts)?;
                } else if jsonl && shared_terminal {
                    progress.suspend(|| writeln!(out, "{}", ev.to_json_line()))?;
                } else if jsonl {
                    writeln!(out, "{}", ev.to_json_line())?;
                    out.flush()?;
                }
                progress.on_event(&ev);
            }
        }
    }
    let Finished {
        outcome,
        recorder,
        trunk,
    } = live.finish()?;
    let summary = finish_recording(recorder, outcome.step)?;
    if let Some(l) = lifeline {
        l.farewell();
    }
    if let (Some(path), Some(s)) = (&path, &summary) {
        for n in &s.notices {
            progress.note(&n.to_string());
        }
        progress.note(&format!(
            "session: {path} ({} events, {} bytes)",
            s.events, s.bytes
        ));
    }
    if let Some(stop) = interrupts.received() {
        for line in interrupted_lines(
            stop,
            outcome.step,
            path.as_deref(),
            trunk.checkpoint.as_deref(),
        ) {
            progress.note(&line);
        }
        return Ok(ExitCode::from(stop.exit_code()));
    }
    // The trunk's end decides the exit status; a failed branch is reported, not fatal.
    Ok(if trunk.reason == Some(EndReason::Failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Calls `act` (on a thread of its own) with a line naming the rank that died, when the
/// lifeline reports one; nothing without a lifeline.
fn on_lost_rank(
    lifeline: Option<&Lifeline>,
    size: usize,
    act: impl FnOnce(String) + Send + 'static,
) {
    let Some(losses) = lifeline.and_then(Lifeline::losses) else {
        return;
    };
    std::thread::Builder::new()
        .name("wsdscope-lost-rank".into())
        .spawn(move || {
            if let Ok(lost) = losses.recv() {
                act(format!(
                    "rank {} of {size} died ({}); the job stops, as the other ranks would wait for it forever",
                    lost.rank, lost.how
                ));
            }
        })
        .expect("cannot start the lost-rank thread");
}

/// Rank 0 after another rank died: the engine waits forever inside a collective, so the
/// session is ended here (every open run `failed`, the file completed) and the process exits
/// with status 1, which makes the launcher stop the rest of the job. Does nothing when the
/// run had already ended (the session is complete; rank 0 finishes normally).
fn fail_session(breaker: &Breaker, line: &str, session: Option<&str>) {
    let Some(finished) = breaker.fail(line) else {
        return;
    };
    let kept = match (finished, session) {
        (Ok(_), Some(p)) => format!("; the session ends failed and stays readable: {p}"),
        (Err(e), _) => format!("; {e:#}"),
        (Ok(_), None) => String::new(),
    };
    signals::exit_now(&format!("\nerror: {line}{kept}\n"), 1)
}

/// Rank 0's stdout under `mpirun` does not block: once a signal has come, mpirun stops
/// reading its ranks' output, and a full pipe must not hold up the clean stop.
fn set_nonblocking_stdout() -> Result<()> {
    // SAFETY: fcntl on this process's standard output descriptor, which stays open.
    let ok = unsafe {
        let flags = libc::fcntl(1, libc::F_GETFL);
        flags >= 0 && libc::fcntl(1, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if !ok {
        bail!(
            "cannot make stdout non-blocking: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Writes `bytes` to the non-blocking stdout, waiting while the pipe is full; after a signal
/// what does not fit is dropped (the session file keeps every event).
fn write_unless_interrupted(mut bytes: &[u8], interrupts: &Interrupts) -> Result<()> {
    while !bytes.is_empty() {
        // SAFETY: write(2) from a live slice of `bytes.len()` bytes.
        let n = unsafe { libc::write(1, bytes.as_ptr().cast(), bytes.len()) };
        if n >= 0 {
            bytes = &bytes[n as usize..];
            continue;
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::WouldBlock if interrupts.received().is_some() => break,
            std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(1))
            }
            std::io::ErrorKind::Interrupted => {}
            _ => return Err(e).context("cannot write to stdout"),
        }
    }
    Ok(())
}

fn print_dry_run(cfg: &RunConfig) {
    let m = &cfg.model;
    println!(
        "model {}: {} parameters, {} non-embedding ({} embedding, tied head)",
        cfg.preset,
        grouped(m.total_params()),
        grouped(m.non_embedding_params()),
        grouped(m.embedding_params())
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
    for (i, s) in cfg.siblings.iter().enumerate() {
        let c = &s.config;
        println!(
            "sibling {}: {}: {} parameters, {} × {} tokens, {}; peak lr {}",
            i + 1,
            s.label,
            grouped(c.model.total_params()),
            c.batch,
            c.seq,
            c.schedule.describe(),
            c.schedule.peak()
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(cfg).expect("config serialises")
    );
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn shell_words_split_back_to_themselves() {
        for word in [
            "plain/path.h5",
            "with space",
            "it's",
            "$HOME",
            "a\"b",
            "",
            "--x=1,2",
        ] {
            let quoted = shell_quote(word);
            assert_eq!(
                shlex::split(&quoted),
                Some(vec![word.to_string()]),
                "{quoted}"
            );
        }
        assert_eq!(shell_quote("plain/path.h5"), "plain/path.h5");
    }
}
