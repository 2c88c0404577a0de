//! `wsdscope bench`: training throughput and peak memory of one model shape, measured the way
//! the PyTorch reference trainer measures itself (median step time after warm-up steps), so
//! the two can be run side by side.

use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use wsdscope_trainer::engine::decay_branch;
use wsdscope_trainer::probe::ProbeKind;
use wsdscope_trainer::{DecayShape, Trainer, World};

use crate::cli::BenchArgs;
use crate::settings::{Settings, default_threads};
use crate::threads;

/// Peak resident set size of this process in MiB (VmHWM), where the OS reports it.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        0.5 * (xs[n / 2 - 1] + xs[n / 2])
    }
}

/// Total throughput of the trunk with `n` decay branches beside it (round-robin, one step each
/// per round), for each `n`, and how long a fork takes against a step.
fn bench_branches(
    cfg: &wsdscope_trainer::RunConfig,
    counts: &[usize],
    rounds: u64,
    warmup: u64,
    step_ms: f64,
    json: bool,
) -> Result<serde_json::Value> {
    let tokens = cfg.tokens_per_step() as f64;
    let mut rows = Vec::new();
    let mut fork_ms = Vec::new();
    let mut base = None;
    for &n in counts {
        let mut trunk = Trainer::new(cfg.clone())?;
        for _ in 0..warmup.max(1) {
            trunk.train_step()?;
        }
        let at = trunk.step_count();
        let lr = cfg.schedule.lr(at);
        let mut branches = Vec::new();
        for k in 0..n {
            let t = Instant::now();
            let sched = decay_branch(lr, at, 1_000_000, DecayShape::Exp, 0.1);
            branches.push(trunk.fork(k as u32 + 1, sched, format!("bench {k}"))?);
            fork_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let t = Instant::now();
        let mut steps = 0u64;
        for _ in 0..rounds {
            trunk.train_step()?;
            steps += 1;
            for b in &mut branches {
                b.train_step()?;
                steps += 1;
            }
        }
        let tps = steps as f64 * tokens / t.elapsed().as_secs_f64();
        let base_tps = *base.get_or_insert(tps);
        if !json {
            println!(
                "  {n} branch(es): {tps:.0} tokens/s over all runs ({:.1}% of the first row)",
                100.0 * tps / base_tps
            );
        }
        rows.push(json!({"branches": n, "tokens_per_s": tps, "ratio": tps / base_tps}));
    }
    let fork_median = if fork_ms.is_empty() {
        None
    } else {
        Some(median(&mut fork_ms))
    };
    if let (Some(f), false) = (fork_median, json) {
        println!(
            "  fork latency: median {f:.2} ms = {:.3} of a step ({step_ms:.1} ms)",
            f / step_ms
        );
    }
    Ok(json!({
        "throughput": rows,
        "fork_ms_median": fork_median,
        "fork_over_step": fork_median.map(|f| f / step_ms),
    }))
}

/// The probes' costs: per-step tracking as the ratio of paired step times with and without
/// it (two identical runs stepped in alternation, so machine noise hits both), and each
/// periodic probe's wall time in median training steps.
fn bench_probes(
    cfg: &wsdscope_trainer::RunConfig,
    steps: u64,
    warmup: u64,
    json: bool,
) -> Result<serde_json::Value> {
    let mut with = Trainer::new(cfg.clone())?;
    let mut off = cfg.clone();
    off.probes.per_step = false;
    let mut without = Trainer::new(off)?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..warmup + steps {
        // Alternate which goes first, so neither always follows the other's cache state.
        let order = [i % 2 == 0, i % 2 == 1];
        for first in order {
            let tr = if first { &mut with } else { &mut without };
            let t = Instant::now();
            tr.train_step()?;
            let dt = t.elapsed().as_secs_f64() * 1e3;
            if i >= warmup {
                if first { &mut a } else { &mut b }.push(dt);
            }
        }
    }
    let mut ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y).collect();
    let overhead = median(&mut ratios) - 1.0;
    let step_ms = median(&mut b);
    // On the CPU step with two leaves or more, the noise scale comes from the steps.
    let leaf_noise = with.leaf_noise();
    if !json {
        println!(
            "  per-step probes (cos, D1, D2, K, max|Δθ|{}): {:+.2}% step time (median of {} paired steps; {:.1} ms without)",
            if leaf_noise {
                ", noise scale from the step's leaves"
            } else {
                ""
            },
            100.0 * overhead,
            a.len(),
            step_ms
        );
    }
    let p = &cfg.probes;
    let mut kinds = Vec::new();
    for kind in ProbeKind::PERIODIC {
        let mut secs = Vec::new();
        let mut products = Vec::new();
        for _ in 0..3 {
            let r = with.probe(kind)?;
            secs.push(r.scalars["seconds"]);
            products.extend(r.scalars.get("products").copied());
        }
        let s = median(&mut secs);
        let what = match kind {
            ProbeKind::Sharpness => format!(
                "{} Lanczos products (H and P⁻¹H, each to a residual of {}% or {} products), {} sequences",
                median(&mut products),
                p.sharpness_tol * 100.0,
                p.power_iters,
                p.batch_for(cfg.batch)
            ),
            ProbeKind::Noise if leaf_noise => format!(
                "{} micro-batch gradients; these runs take it from their steps instead",
                p.micro_batches
            ),
            ProbeKind::Noise => format!("{} micro-batch gradients", p.micro_batches),
            ProbeKind::Slice => format!(
                "2 × {} losses, {} sequences",
                p.points,
                p.batch_for(cfg.batch)
            ),
            ProbeKind::Landscape => format!(
                "{0}×{0} grid = {1} losses, {2} sequences",
                p.grid,
                p.grid * p.grid,
                p.batch_for(cfg.batch)
            ),
            ProbeKind::Interp => String::new(),
        };
        if !json {
            println!(
                "  {:>9}: {:.0} ms = {:.1} training steps ({what})",
                kind.name(),
                s * 1e3,
                s * 1e3 / step_ms
            );
        }
        kinds.push(
            json!({"probe": kind.name(), "ms": s * 1e3, "steps": s * 1e3 / step_ms, "what": what}),
        );
    }
    Ok(
        json!({"per_step_overhead": overhead, "step_ms": step_ms, "noise_from_steps": leaf_noise, "periodic": kinds}),
    )
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.kernels {
        threads::init(a.threads.unwrap_or_else(default_threads))?;
        return super::kernels::run(a.device.as_deref().unwrap_or("cpu"), a.json);
    }
    if a.steps == 0 {
        anyhow::bail!("--steps 0 is not allowed; bench needs at least 1 measured step");
    }
    let threads = a.threads.unwrap_or_else(default_threads);
    let settings = Settings {
        preset: Some(a.preset.clone()),
        hidden: a.hidden,
        layers: a.layers,
        heads: a.heads,
        kv_heads: a.kv_heads,
        ffn: a.ffn,
        vocab: a.vocab,
        seq: a.seq,
        batch: a.batch,
        threads: Some(threads),
        device: a.device.clone(),
        precision: a.precision.clone(),
        steps: Some(a.warmup_steps + a.steps),
        schedule: Some("constant".into()),
        eval_every: Some(u64::MAX),
        ..Default::default()
    };
    let cfg = settings.to_run_config()?;
    // Under `mpirun -n N` (built with `mpi`) the ranks split every batch, as `record` does;
    // rank 0 reports the job's throughput and the share of the step in the all-reduce.
    let world = World::join()?;
    if world.size() > 1 && (a.branches.is_some() || a.probes) {
        anyhow::bail!(
            "--branches and --probes measure one process; run them without mpirun ({} ranks)",
            world.size()
        );
    }
    threads::init(threads)?;
    let mut trainer = Trainer::new(cfg.clone())?;
    if world.size() > 1 {
        trainer.set_collective(world.collective())?;
    }
    let tokens = cfg.tokens_per_step() as f64;
    let mut ms = Vec::new();
    let (mut first_ms, mut loss_first, mut loss_last) = (0.0, 0.0, 0.0);
    let mut reduce_before = 0.0;
    for i in 0..a.warmup_steps + a.steps {
        if i == a.warmup_steps {
            reduce_before = trainer.all_reduce_seconds();
        }
        let t = Instant::now();
        let m = trainer.train_step()?;
        let dt = t.elapsed().as_secs_f64() * 1e3;
        if i == 0 {
            first_ms = dt;
            loss_first = m.loss;
        }
        loss_last = m.loss;
        if i >= a.warmup_steps {
            ms.push(dt);
        }
    }
    if !world.is_root() {
        return Ok(());
    }
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    let reduce_ms = (trainer.all_reduce_seconds() - reduce_before) * 1e3 / a.steps as f64;
    let (min, max) = ms
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let med = median(&mut ms);
    let m = &cfg.model;
    let flops = m.flops_per_token(cfg.seq) * tokens / (med / 1e3);
    // Model FLOP utilisation: 6·N per token for the matmuls plus the attention scores.
    let mfu = a.peak_tflops.map(|p| flops / (p * 1e12));
    let out = json!({
        "tokens_per_s": (tokens / med * 1e3 * 10.0).round() / 10.0,
        "tokens_per_s_mean": (tokens / mean * 1e3 * 10.0).round() / 10.0,
        "step_ms_median": med,
        "step_ms_min": min,
        "step_ms_max": max,
        "measured_steps": a.steps,
        "first_step_ms": first_ms,
        "peak_rss_mb": peak_rss_mb(),
        "params": m.total_params(),
        "gflop_per_s": flops / 1e9,
        "peak_tflops": a.peak_tflops,
        "mfu": mfu,
        "loss_first": loss_first,
        "loss_last": loss_last,
        "ranks": world.size(),
        "all_reduce_ms_mean": reduce_ms,
        "all_reduce_share": reduce_ms / mean,
        "config": {
            "preset": cfg.preset, "hidden": m.hidden, "layers": m.layers, "heads": m.heads,
            "kv_heads": m.kv_heads, "ffn": m.ffn, "vocab": m.vocab, "seq": cfg.seq,
            "batch": cfg.batch, "threads": threads, "device": cfg.device,
            "dtype": cfg.precision.name(),
        },
    });
    let mut out = out;
    if a.json {
        if let Some(counts) = &a.branches {
            out["branches"] = bench_branches(&cfg, counts, a.steps, a.warmup_steps, med, true)?;
        }
        if a.probes {
            out["probes"] = bench_probes(&cfg, a.steps, a.warmup_steps, true)?;
        }
        println!("{out}");
    } else {
        println!(
            "{}: h{} L{} heads {}/{} ffn {} vocab {}, {}×{} tokens/step, {} {}, {threads} threads",
            cfg.preset,
            m.hidden,
            m.layers,
            m.heads,
            m.kv_heads,
            m.ffn,
            m.vocab,
            cfg.batch,
            cfg.seq,
            cfg.device,
            cfg.precision.name()
        );
        println!(
            "  {:.0} tokens/s (median step {:.1} ms, min {:.1}, max {:.1}, {} steps after {} warm-up)",
            tokens / med * 1e3,
            med,
            min,
            max,
            a.steps,
            a.warmup_steps
        );
        println!(
            "  {:.2} GFLOP/s, peak RSS {} MiB, {} params",
            flops / 1e9,
            peak_rss_mb()
                .map(|x| format!("{x:.0}"))
                .unwrap_or_else(|| "?".into()),
            m.total_params()
        );
        if world.size() > 1 {
            println!(
                "  {} ranks: the gradient all-reduce took {reduce_ms:.2} ms of a mean step of \
                 {mean:.1} ms ({:.1}%)",
                world.size(),
                100.0 * reduce_ms / mean
            );
        }
        if let (Some(p), Some(u)) = (a.peak_tflops, mfu) {
            println!(
                "  model FLOP utilisation {:.1}% of {p} TFLOP/s ({:.1} TFLOP/s; 6·N + attention FLOPs per token)",
                100.0 * u,
                flops / 1e12
            );
        }
        if let Some(counts) = &a.branches {
            println!(
                "  engine with decay branches beside the trunk (round-robin, {} rounds):",
                a.steps
            );
            bench_branches(&cfg, counts, a.steps, a.warmup_steps, med, false)?;
        }
        if a.probes {
            println!("  probes:");
            bench_probes(&cfg, a.steps, a.warmup_steps, false)?;
        }
    }
    Ok(())
}
