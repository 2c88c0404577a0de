//! Human progress on stderr for headless runs: a live line on a terminal, plain lines
//! otherwise. A pure consumer of `RunEvent`s.

use std::io::Write;
use std::time::Instant;

use wsdscope_sessions::{EndReason, RunEvent, RunStart};

pub struct Progress<W: Write> {
    out: W,
    live: bool,
    total: u64,
    start_step: u64,
    every: u64,
    floor: Option<f64>,
    started: Instant,
    /// Whether the live line is currently drawn (and must be cleared before other output).
    drawn: bool,
}

/// `1h02m`, `3m20s`, `12s`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

impl<W: Write> Progress<W> {
    /// `live`: redraw one line in place (a terminal); otherwise print a line every ~2% of steps.
    pub fn new(out: W, live: bool) -> Self {
        Progress {
            out,
            live,
            total: 0,
            start_step: 0,
            every: 1,
            floor: None,
            started: Instant::now(),
            drawn: false,
        }
    }

    fn clear(&mut self) {
        if self.drawn {
            let _ = write!(self.out, "\r\x1b[2K");
            self.drawn = false;
        }
    }

    /// A line of its own (e.g. the session path).
    pub fn note(&mut self, line: &str) {
        self.clear();
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    pub fn on_event(&mut self, ev: &RunEvent) {
        match ev {
            RunEvent::RunStart(start) if start.run != 0 => {
                self.clear();
                let _ = writeln!(
                    self.out,
                    "branch run {} \"{}\" from run {} at step {}: runs to step {}",
                    start.run,
                    start.name,
                    start.parent.unwrap_or(0),
                    start.fork_step.unwrap_or(0),
                    start.phases.total
                );
            }
            RunEvent::RunStart(start) => {
                let RunStart {
                    model,
                    data,
                    phases,
                    start_step,
                    batch,
                    seq,
                    device,
                    threads,
                    ..
                } = start.as_ref();
                self.total = phases.total;
                self.start_step = *start_step;
                self.every = (phases.total / 50).max(1);
                self.floor = data.entropy_floor;
                self.started = Instant::now();
                let _ = writeln!(
                    self.out,
                    "wsdscope: {} — {} params ({} non-embedding), h{} L{} heads {}/{} ffn {} vocab {}",
                    model.preset,
                    model.params,
                    model.non_embedding_params,
                    model.hidden,
                    model.layers,
                    model.heads,
                    model.kv_heads,
                    model.ffn,
                    model.vocab
                );
                let floor = match data.entropy_floor {
                    Some(f) => format!("; entropy floor {f:.4} nats/token"),
                    None => String::new(),
                };
                let _ = writeln!(self.out, "data: {}{floor}", data.description);
                let _ = writeln!(
                    self.out,
                    "{} steps of {batch}×{seq} tokens: warmup to {}, stable to {}, decay to {}; device {device}, {threads} threads{}",
                    phases.total,
                    phases.warmup_end,
                    phases.decay_start,
                    phases.total,
                    if *start_step > 0 {
                        format!("; resuming after step {start_step}")
                    } else {
                        String::new()
                    }
                );
            }
            RunEvent::Step(m) if m.run != 0 => {
                // The live line follows the trunk; plain output samples branches too.
                if !self.live && m.step % self.every == 0 {
                    let _ = writeln!(
                        self.out,
                        "run {} step {} {:<7} loss {:.4}  lr {:.2e}",
                        m.run,
                        m.step,
                        m.phase.as_str(),
                        m.loss,
                        m.lr
                    );
                }
            }
            RunEvent::Step(m) => {
                let done = m.step - self.start_step;
                let left = self.total.saturating_sub(m.step);
                let eta = self.started.elapsed().as_secs_f64() / done.max(1) as f64 * left as f64;
                let line = format!(
                    "step {}/{} {:<7} loss {:.4}  lr {:.2e}  |g| {:.3}  {:.0} tok/s  ETA {}",
                    m.step,
                    self.total,
                    m.phase.as_str(),
                    m.loss,
                    m.lr,
                    m.grad_norm,
                    m.tokens_per_s,
                    duration(eta)
                );
                if self.live {
                    let width = 24usize;
                    let filled = (width as u64 * m.step / self.total.max(1)) as usize;
                    let bar: String = (0..width)
                        .map(|i| if i < filled { '█' } else { '░' })
                        .collect();
                    let _ = write!(self.out, "\r\x1b[2K{bar} {line}");
                    self.drawn = true;
                } else if m.step % self.every == 0 || m.step == self.total || done == 1 {
                    let _ = writeln!(self.out, "{line}");
                }
            }
            RunEvent::Eval {
                run,
                step,
                val_loss,
                ..
            } => {
                self.clear();
                let who = if *run == 0 {
                    String::new()
                } else {
                    format!("run {run} ")
                };
                let gap = match self.floor {
                    Some(f) => format!(" (floor {f:.4}, gap {:.4})", val_loss - f),
                    None => String::new(),
                };
                let _ = writeln!(
                    self.out,
                    "eval  {who}step {step}: val loss {val_loss:.4}{gap}"
                );
            }
            RunEvent::Checkpoint { step, path, .. } => {
                self.clear();
                let _ = writeln!(self.out, "checkpoint step {step}: {path}");
            }
            RunEvent::Forked {
                run, parent, step, ..
            } => {
                self.clear();
                let _ = writeln!(self.out, "fork  run {run} from run {parent} at step {step}");
            }
            RunEvent::Probe(p) => {
                self.clear();
                let who = if p.run == 0 {
                    String::new()
                } else {
                    format!("run {} ", p.run)
                };
                let _ = writeln!(self.out, "probe {who}step {}: {}", p.step, probe_summary(p));
            }
            RunEvent::Note { step, message, .. } => {
                self.clear();
                let _ = writeln!(self.out, "note  step {step}: {message}");
            }
            RunEvent::End {
                run,
                step,
                reason,
                message,
                final_val_loss,
                wall_s,
            } => {
                self.clear();
                if *run != 0 {
                    let _ = write!(self.out, "run {run} ");
                }
                let val = final_val_loss
                    .map(|v| format!(", final val loss {v:.4}"))
                    .unwrap_or_default();
                match reason {
                    EndReason::Completed => {
                        let _ =
                            writeln!(self.out, "done: {step} steps in {}{val}", duration(*wall_s));
                    }
                    EndReason::Stopped => {
                        let _ = writeln!(
                            self.out,
                            "stopped after step {step} ({}){val}",
                            duration(*wall_s)
                        );
                    }
                    EndReason::Failed => {
                        let _ = writeln!(
                            self.out,
                            "failed after step {step}: {}",
                            message.as_deref().unwrap_or("unknown error")
                        );
                    }
                }
            }
        }
        let _ = self.out.flush();
    }
}

/// One line about a probe result: its headline numbers (its kind's summary template) and
/// what it cost.
pub fn probe_summary(p: &wsdscope_sessions::ProbeResult) -> String {
    use wsdscope_sessions::vocabulary::common::{COST_STEPS, SECONDS};
    let v = |k: &str| p.scalars.get(k).copied().unwrap_or(f64::NAN);
    let head = p.summary();
    format!("{head} ({:.2} s = {:.1} steps)", v(SECONDS), v(COST_STEPS))
}
