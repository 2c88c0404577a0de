//! `wsdscope bench --kernels`: every fused kernel (forward and backward, the AdamW step and
//! the reductions) against its plain-op twin on one device, in each dtype it takes there
//! (f32/f64 on the CPU, f32/bf16 on CUDA). Prints the worst relative error of each output and
//! gradient and fails (non-zero exit) if any is over its tolerance. Nothing is trained.

use anyhow::{Result, bail};
use serde_json::json;
use wsdscope_trainer::parity;

pub fn run(device: &str, json: bool) -> Result<()> {
    let dev = wsdscope_trainer::engine::device(device)?;
    let rows = parity::run(&dev)?;
    let failed: Vec<&parity::Row> = rows.iter().filter(|r| !r.pass()).collect();
    if json {
        let out = json!({
            "device": device,
            "pass": failed.is_empty(),
            "checks": rows.iter().map(|r| json!({
                "op": r.op, "dtype": r.dtype, "what": r.what, "max_abs": r.max_abs,
                "scale": r.scale, "rel": r.rel(), "tol": r.tol, "pass": r.pass(),
            })).collect::<Vec<_>>(),
        });
        println!("{out}");
    } else {
        println!(
            "kernel parity on {device}: fused op vs its plain-op twin, worst |Δ| / max |reference|"
        );
        for r in &rows {
            println!(
                "  {:<14} {:<5} {:<15} {:>9.2e}  (|Δ| {:.2e}, scale {:.2e})  tol {:.0e}  {}",
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
    }
    if !failed.is_empty() {
        let names: Vec<String> = failed
            .iter()
            .map(|r| format!("{} {} {}", r.op, r.dtype, r.what))
            .collect();
        bail!(
            "kernel parity failed on {device}: {} of {} checks over tolerance ({})",
            failed.len(),
            rows.len(),
            names.join(", ")
        );
    }
    if !json {
        println!("  all {} checks within tolerance", rows.len());
    }
    Ok(())
}
