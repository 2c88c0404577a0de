//! Every CUDA kernel, forward and backward, in f32 and bf16, run on the CPU executor (the
//! real sources, the real launch descriptions) against the CPU ops, on the edge-case shapes
//! of `parity::executor`. This is what `wsdscope bench --kernels --device cuda-emu` prints.

mod common;

use wsdscope_kernels::emu::Executor;
use wsdscope_kernels::{CUDA_SOURCES, cuda_kernel_names, parity};

#[test]
fn every_kernel_matches_the_cpu_ops_on_the_executor() {
    if !common::executor_available() {
        return;
    }
    let ex = Executor::new();
    let rows = parity::executor::run(&ex, &|_| true).unwrap_or_else(|e| panic!("{e}"));
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| !r.pass())
        .map(|r| {
            format!(
                "{} {} {}: {:.2e} > {:.0e}",
                r.op,
                r.dtype,
                r.what,
                r.rel(),
                r.tol
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} checks failed:\n{}",
        failed.len(),
        rows.len(),
        failed.join("\n")
    );
    // Every kernel of every source ran at least once.
    let launched = ex.launched();
    let mut missing = Vec::new();
    for (file, src) in CUDA_SOURCES {
        for k in cuda_kernel_names(src) {
            if !launched.contains_key(k) {
                missing.push(format!("{file}: {k}"));
            }
        }
    }
    assert!(missing.is_empty(), "kernels never launched: {missing:?}");
    assert!(rows.len() > 100, "{} rows", rows.len());
}
