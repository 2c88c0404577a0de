//! `wsdscope bench --kernels`: every fused kernel (forward and backward, the AdamW step and
//! the reductions) against its plain-op twin, in each dtype it takes on the device (f32/f64
//! on the CPU, f32/bf16 on CUDA). With `--device cuda-emu` the CUDA kernels run on the CPU
//! executor (the real CUDA sources built by the host C++ compiler, launched as on a GPU) in
//! f32 and bf16 on edge-case shapes, against the CPU ops. Prints the worst relative error of
//! each output and gradient, ends with `kernels: N passed, M failed`, and fails (non-zero
//! exit) if any check is over its tolerance. Nothing is trained. `WSDSCOPE_CUDA_SOURCES=DIR`
//! runs the executor on the CUDA sources in DIR instead of the built-in ones.

use anyhow::{Context, Result};
use serde_json::json;
use wsdscope_trainer::emu::{Executor, Sources};
use wsdscope_trainer::parity::{self, Row};

/// The device name that selects the CPU executor of the CUDA kernels.
pub const EXECUTOR: &str = "cuda-emu";

pub fn run(device: &str, json: bool) -> Result<()> {
    let (rows, what) = if device == EXECUTOR {
        // WSDSCOPE_CUDA_SOURCES=DIR checks the sources in DIR (edited kernels, no rebuild).
        let ex = match std::env::var_os("WSDSCOPE_CUDA_SOURCES") {
            Some(dir) => {
                let dir = std::path::PathBuf::from(dir);
                eprintln!(
                    "CUDA sources from {} (WSDSCOPE_CUDA_SOURCES)",
                    dir.display()
                );
                Executor::with_sources(Sources::from_dir(&dir)?)
            }
            None => Executor::new(),
        };
        eprintln!("building the CUDA kernels for the CPU executor (cached after the first run)…");
        ex.prepare()
            .context("the CPU executor could not build the CUDA kernels")?;
        let rows = parity::executor::run(&ex, &|_| true)
            .context("a CUDA kernel failed to run on the CPU executor")?;
        (rows, "CUDA kernel on the CPU executor vs the CPU ops")
    } else {
        let dev = wsdscope_trainer::engine::device(device)?;
        (parity::run(&dev)?, "fused op vs its plain-op twin")
    };
    let failed: Vec<&Row> = rows.iter().filter(|r| !r.pass()).collect();
    if json {
        let out = json!({
            "device": device,
            "pass": failed.is_empty(),
            "passed": rows.len() - failed.len(),
            "failed": failed.len(),
            "checks": rows.iter().map(|r| json!({
                "op": r.op, "dtype": r.dtype, "what": r.what, "max_abs": r.max_abs,
                "scale": r.scale, "rel": r.rel(), "tol": r.tol, "pass": r.pass(),
            })).collect::<Vec<_>>(),
        });
        println!("{out}");
    } else {
        println!("kernel parity on {device}: {what}, worst |Δ| / max |reference|");
        for r in &rows {
            println!(
                "  {:<28} {:<5} {:<20} {:>9.2e}  (|Δ| {:.2e}, scale {:.2e})  tol {:.0e}  {}",
                r.op,
                r.dtype,
                r.what,
                r.rel(),
                r.max_abs,
                r.scale,
                r.tol,
                if r.pass() { "ok" } else { "FAIL" }
            );
        }
        if !failed.is_empty() {
            let names: Vec<String> = failed
                .iter()
                .map(|r| format!("{} {} {}", r.op, r.dtype, r.what))
                .collect();
            println!("over tolerance: {}", names.join(", "));
        }
        println!(
            "kernels: {} passed, {} failed",
            rows.len() - failed.len(),
            failed.len()
        );
    }
    if !failed.is_empty() {
        // The summary above is the last line; the exit status says it failed.
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::process::exit(1);
    }
    Ok(())
}
