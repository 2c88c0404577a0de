//! Human progress on stderr for headless runs. On a terminal: one live bar per running run
//! (trunk, branches, siblings: its steps, ETA, loss), drawn by `indicatif`, with every other
//! line printed above the bars. Otherwise the bars are hidden and plain lines are printed, the
//! trunk's every ~2% of its steps. A pure consumer of `RunEvent`s.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Stderr, Write};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use wsdscope_sessions::{EndReason, RunEvent, RunId, RunStart, StepMetrics};

pub use crate::tui::format::duration;

pub struct Progress<W: Write> {
    /// Plain mode: where every line goes (the bars stay hidden). `None`: live bars, the lines
    /// printed above them.
    plain: Option<W>,
    bars: MultiProgress,
    /// The bar of each run that has started and not yet ended, and the step it started after.
    runs: BTreeMap<RunId, (ProgressBar, u64)>,
    total: u64,
    start_step: u64,
    every: u64,
    floor: Option<f64>,
    started: Instant,
}

impl Progress<Stderr> {
    /// On stderr: live bars when it is a terminal, plain lines otherwise. Nothing holds the
    /// stderr lock between lines, so other threads (and indicatif's drawing) can write.
    pub fn stderr() -> Self {
        let stderr = std::io::stderr();
        if stderr.is_terminal() {
            Progress::live(ProgressDrawTarget::stderr())
        } else {
            Progress::plain(stderr)
        }
    }
}

impl<W: Write> Progress<W> {
    /// Plain lines into `out`: every run's steps at an interval of ~2% of the trunk's; no bars
    /// and no terminal control codes.
    pub fn plain(out: W) -> Self {
        Progress::with(Some(out), ProgressDrawTarget::hidden())
    }

    /// Live bars drawn on `target` (a terminal), every line printed above them.
    pub fn live(target: ProgressDrawTarget) -> Self {
        Progress::with(None, target)
    }

    fn with(plain: Option<W>, target: ProgressDrawTarget) -> Self {
        Progress {
            plain,
            bars: MultiProgress::with_draw_target(target),
            runs: BTreeMap::new(),
            total: 0,
            start_step: 0,
            every: 1,
            floor: None,
            started: Instant::now(),
        }
    }

    /// The runs that have a bar now (started, not yet ended), in id order.
    pub fn live_runs(&self) -> Vec<RunId> {
        self.runs.keys().copied().collect()
    }

    /// A line of its own (e.g. the session path), above the bars.
    pub fn note(&mut self, line: &str) {
        match &mut self.plain {
            Some(out) => {
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            None => {
                let _ = self.bars.println(line);
            }
        }
    }

    /// Runs `f`, which writes to the same terminal by itself, with the bars taken down, and
    /// draws them again after it.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match self.plain {
            Some(_) => f(),
            None => self.bars.suspend(f),
        }
    }

    /// A bar for run `start.run`: its steps from its start step to its total.
    fn add_bar(&mut self, start: &RunStart) {
        let (from, total) = (start.start_step, start.phases.total);
        let label = match start.run {
            0 => "trunk".to_string(),
            r => format!("run {r}"),
        };
        let bar = ProgressBar::new(total.saturating_sub(from))
            .with_style(bar_style(from, total))
            .with_prefix(label);
        let bar = self.bars.add(bar);
        if let Some((old, _)) = self.runs.insert(start.run, (bar, from)) {
            self.end_bar_of(old);
        }
    }

    fn step_bar(&self, m: &StepMetrics) {
        let Some((bar, from)) = self.runs.get(&m.run) else {
            return;
        };
        bar.set_position(m.step.saturating_sub(*from));
        if self.plain.is_none() {
            bar.set_message(metrics(m, true));
        }
    }

    fn end_bar(&mut self, run: RunId) {
        if let Some((bar, _)) = self.runs.remove(&run) {
            self.end_bar_of(bar);
        }
    }

    fn end_bar_of(&self, bar: ProgressBar) {
        bar.finish_and_clear();
        self.bars.remove(&bar);
    }

    pub fn on_event(&mut self, ev: &RunEvent) {
        match ev {
            RunEvent::RunStart(start) if start.run != 0 => {
                let line = match start.parent {
                    Some(parent) => format!(
                        "branch run {} \"{}\" from run {parent} at step {}: runs to step {}",
                        start.run,
                        start.name,
                        start.fork_step.unwrap_or(0),
                        start.phases.total
                    ),
                    None => format!(
                        "sibling run {} \"{}\": runs to step {}",
                        start.run, start.name, start.phases.total
                    ),
                };
                self.note(&line);
                self.add_bar(start);
            }
            RunEvent::RunStart(start) => {
                self.trunk_header(start);
                self.add_bar(start);
            }
            RunEvent::Step(m) if m.run != 0 => {
                self.step_bar(m);
                // Plain output samples branches too.
                if self.plain.is_some() && m.step % self.every == 0 {
                    self.note(&format!(
                        "run {} step {} {}",
                        m.run,
                        m.step,
                        metrics(m, false)
                    ));
                }
            }
            RunEvent::Step(m) => {
                self.step_bar(m);
                let done = m.step - self.start_step;
                if self.plain.is_some()
                    && (m.step % self.every == 0 || m.step == self.total || done == 1)
                {
                    let left = self.total.saturating_sub(m.step);
                    let eta =
                        self.started.elapsed().as_secs_f64() / done.max(1) as f64 * left as f64;
                    self.note(&format!(
                        "step {}/{} {}  ETA {}",
                        m.step,
                        self.total,
                        metrics(m, true),
                        duration(eta)
                    ));
                }
            }
            RunEvent::Eval {
                run,
                step,
                val_loss,
                ..
            } => {
                let who = if *run == 0 {
                    String::new()
                } else {
                    format!("run {run} ")
                };
                let gap = match self.floor {
                    Some(f) => format!(" (floor {f:.4}, gap {:.4})", val_loss - f),
                    None => String::new(),
                };
                self.note(&format!(
                    "eval  {who}step {step}: val loss {val_loss:.4}{gap}"
                ));
            }
            RunEvent::Checkpoint { step, path, .. } => {
                self.note(&format!("checkpoint step {step}: {path}"));
            }
            RunEvent::Forked {
                run, parent, step, ..
            } => {
                self.note(&format!("fork  run {run} from run {parent} at step {step}"));
            }
            RunEvent::Probe(p) => {
                let who = if p.run == 0 {
                    String::new()
                } else {
                    format!("run {} ", p.run)
                };
                self.note(&format!("probe {who}step {}: {}", p.step, probe_summary(p)));
            }
            RunEvent::Note { step, message, .. } => {
                self.note(&format!("note  step {step}: {message}"));
            }
            RunEvent::End {
                run,
                step,
                reason,
                message,
                final_val_loss,
                wall_s,
            } => {
                self.end_bar(*run);
                let who = if *run == 0 {
                    String::new()
                } else {
                    format!("run {run} ")
                };
                let val = final_val_loss
                    .map(|v| format!(", final val loss {v:.4}"))
                    .unwrap_or_default();
                let what = match reason {
                    EndReason::Completed => {
                        format!("done: {step} steps in {}{val}", duration(*wall_s))
                    }
                    EndReason::Stopped => {
                        format!("stopped after step {step} ({}){val}", duration(*wall_s))
                    }
                    EndReason::Failed => format!(
                        "failed after step {step}: {}",
                        message.as_deref().unwrap_or("unknown error")
                    ),
                };
                self.note(&format!("{who}{what}"));
            }
        }
    }

    /// The trunk's start: what is trained, on what, for how long.
    fn trunk_header(&mut self, start: &RunStart) {
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
        } = start;
        self.total = phases.total;
        self.start_step = *start_step;
        self.every = (phases.total / 50).max(1);
        self.floor = data.entropy_floor;
        self.started = Instant::now();
        self.note(&format!(
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
        ));
        let floor = match data.entropy_floor {
            Some(f) => format!("; entropy floor {f:.4} nats/token"),
            None => String::new(),
        };
        self.note(&format!("data: {}{floor}", data.description));
        let resuming = if *start_step > 0 {
            format!("; resuming after step {start_step}")
        } else {
            String::new()
        };
        self.note(&format!(
            "{} steps of {batch}×{seq} tokens: warmup to {}, stable to {}, decay to {}; device {device}, {threads} threads{resuming}",
            phases.total, phases.warmup_end, phases.decay_start, phases.total,
        ));
    }
}

/// `stable  loss 2.3039  lr 1.00e-2`, then (`full`) `  |g| 0.405  14779 tok/s`.
fn metrics(m: &StepMetrics, full: bool) -> String {
    let mut s = format!(
        "{:<7} loss {:.4}  lr {:.2e}",
        m.phase.as_str(),
        m.loss,
        m.lr
    );
    if full {
        s += &format!("  |g| {:.3}  {:.0} tok/s", m.grad_norm, m.tokens_per_s);
    }
    s
}

/// A run's bar, `trunk   ███░░░ 125/200  ETA 16s    stable  loss 2.3039  lr …`: it counts the
/// run's own steps (so its pace and ETA are its own) and shows the global step, from after
/// `from` to `total`.
fn bar_style(from: u64, total: u64) -> ProgressStyle {
    type Out<'a> = &'a mut dyn std::fmt::Write;
    ProgressStyle::with_template("{prefix:<7} {bar:24} {steps}  ETA {left:<6} {wide_msg}")
        .expect("the progress template is valid")
        .progress_chars("█░")
        .with_key("steps", move |s: &ProgressState, w: Out| {
            let _ = write!(w, "{}/{total}", from + s.pos());
        })
        // No estimate yet (no step seen, or no time between steps): `…`, not `0s`.
        .with_key("left", |s: &ProgressState, w: Out| {
            let _ = match s.eta() {
                eta if eta.is_zero() => write!(w, "…"),
                eta => write!(w, "{}", duration(eta.as_secs_f64())),
            };
        })
}

impl<W: Write> Drop for Progress<W> {
    /// Takes down the bars of runs that never reported an end (an error stopped the mode), so
    /// the message that follows starts on a clean line.
    fn drop(&mut self) {
        for (_, (bar, _)) in std::mem::take(&mut self.runs) {
            self.end_bar_of(bar);
        }
        let _ = self.bars.clear();
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

#[cfg(test)]
mod tests;
