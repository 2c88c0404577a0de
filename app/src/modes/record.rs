//! `wsdscope record`: train headless. Progress goes to stderr; with `--jsonl` every event goes
//! to stdout as one JSON object per line (the public contract documented in the README).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::mpsc;

use anyhow::{Result, bail};
use wsdscope_sessions::{EndReason, RunEvent};
use wsdscope_trainer::{Engine, RunConfig, Trainer};

use crate::cli::RecordArgs;
use crate::progress::Progress;
use crate::settings::{self, default_threads};
use crate::threads;

/// Events the engine may run ahead of the printer before it waits (nothing is dropped).
const EVENT_BUFFER: usize = 4096;

pub fn run(args: RecordArgs) -> Result<ExitCode> {
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
        Trainer::resume(dir, |c| {
            c.threads = s.threads.unwrap_or_else(default_threads);
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
        let cfg = settings::resolve(args.settings.clone(), args.config.as_deref())?;
        if args.dry_run {
            print_dry_run(&cfg);
            return Ok(ExitCode::SUCCESS);
        }
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

    let (tx, rx) = mpsc::sync_channel::<RunEvent>(EVENT_BUFFER);
    let engine = Engine::spawn(trainer, move |ev| {
        let _ = tx.send(ev);
    })?;
    let stderr = std::io::stderr();
    let mut progress = Progress::new(stderr.lock(), stderr.is_terminal());
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = false;
    for ev in rx {
        if args.jsonl {
            writeln!(out, "{}", ev.to_json_line())?;
            out.flush()?;
        }
        progress.on_event(&ev);
        if let RunEvent::End { reason, .. } = &ev {
            failed = *reason == EndReason::Failed;
        }
    }
    engine.join();
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
