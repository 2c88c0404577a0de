//! `wsdscope bench`: training throughput and peak memory of one model shape, measured the way
//! the PyTorch reference trainer measures itself (median step time after warm-up steps), so
//! the two can be run side by side.

use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use wsdscope_trainer::Trainer;

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

pub fn run(a: BenchArgs) -> Result<()> {
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
        steps: Some(a.warmup_steps + a.steps),
        schedule: Some("constant".into()),
        eval_every: Some(u64::MAX),
        ..Default::default()
    };
    let cfg = settings.to_run_config()?;
    threads::init(threads)?;
    let mut trainer = Trainer::new(cfg.clone())?;
    let tokens = cfg.tokens_per_step() as f64;
    let mut ms = Vec::new();
    let (mut first_ms, mut loss_first, mut loss_last) = (0.0, 0.0, 0.0);
    for i in 0..a.warmup_steps + a.steps {
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
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    let (min, max) = ms
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let med = median(&mut ms);
    let m = &cfg.model;
    let flops = m.flops_per_token(cfg.seq) * tokens / (med / 1e3);
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
        "loss_first": loss_first,
        "loss_last": loss_last,
        "config": {
            "preset": cfg.preset, "hidden": m.hidden, "layers": m.layers, "heads": m.heads,
            "kv_heads": m.kv_heads, "ffn": m.ffn, "vocab": m.vocab, "seq": cfg.seq,
            "batch": cfg.batch, "threads": threads, "device": cfg.device, "dtype": "f32",
        },
    });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "{}: h{} L{} heads {}/{} ffn {} vocab {}, {}×{} tokens/step, {threads} threads",
            cfg.preset, m.hidden, m.layers, m.heads, m.kv_heads, m.ffn, m.vocab, cfg.batch, cfg.seq
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
    }
    Ok(())
}
