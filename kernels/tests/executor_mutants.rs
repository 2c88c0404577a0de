//! The CPU executor is not vacuous: deliberately broken variants of the real CUDA sources
//! (made by text substitution here, compiled like the real ones) and of the real launches
//! must fail the executor parity check, either as a row over tolerance or as an executor
//! error (a deadlock, a divergent shuffle, a refused argument list). Each mutant is a bug of
//! the kind unexecuted GPU code has: a skipped shuffle step, a missing barrier, an
//! off-by-one bound, a wrong shared-memory index, truncating bf16 rounding, a wrong grid,
//! swapped or mistyped arguments.

mod common;

use wsdscope_kernels::Error;
use wsdscope_kernels::emu::{Executor, Sources};
use wsdscope_kernels::launch::{Arg, DevPtr, Gpu, Launch};
use wsdscope_kernels::parity::{self, executor::run};

/// The project's sources with the `nth` occurrence of `find` in `file` (or in the common
/// header for `common.cuh`) replaced by `replace`; panics if there is no such occurrence,
/// so a mutant never silently stops applying when the sources change.
fn mutant(file: &str, find: &str, nth: usize, replace: &str) -> Sources {
    let mut s = Sources::default();
    let text = if file == "common.cuh" {
        &mut s.common
    } else {
        &mut s
            .files
            .iter_mut()
            .find(|(f, _)| *f == file)
            .unwrap_or_else(|| panic!("no source {file}"))
            .1
    };
    let at = text
        .match_indices(find)
        .nth(nth)
        .unwrap_or_else(|| panic!("{file}: occurrence {nth} of {find:?} not found"))
        .0;
    text.replace_range(at..at + find.len(), replace);
    s
}

/// What the parity check made of a variant: the failing rows, or the executor's error.
fn verdict(ex: &Executor, op: &str) -> Result<Vec<String>, String> {
    match run(ex, &|o| o == op) {
        Ok(rows) => {
            assert!(!rows.is_empty(), "no checks for {op}");
            Ok(rows
                .iter()
                .filter(|r| !r.pass())
                .map(|r| format!("{} {} {}", r.op, r.dtype, r.what))
                .collect())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn assert_caught(name: &str, ex: &Executor, op: &str) {
    match verdict(ex, op) {
        Ok(failed) => assert!(
            !failed.is_empty(),
            "mutant '{name}' passed every {op} check: the executor would miss this bug"
        ),
        Err(e) => eprintln!("mutant '{name}': executor error: {e}"),
    }
}

#[test]
fn the_unmutated_sources_pass_the_checks_the_mutants_fail() {
    if !common::executor_available() {
        return;
    }
    // The baseline for every op the mutants below touch.
    let ex = Executor::new();
    for op in ["rms_norm", "attention", "swiglu"] {
        assert_eq!(verdict(&ex, op), Ok(vec![]), "{op}");
    }
}

#[test]
fn a_warp_sum_that_skips_a_shuffle_step_is_caught() {
    if !common::executor_available() {
        return;
    }
    let s = mutant(
        "common.cuh",
        "float warp_sum(float v) {\n    for (int o = 16; o > 0; o >>= 1)",
        0,
        "float warp_sum(float v) {\n    for (int o = 16; o > 1; o >>= 1)",
    );
    assert_caught(
        "warp_sum skips offset 1",
        &Executor::with_sources(s),
        "rms_norm",
    );
}

#[test]
fn a_block_reduction_without_its_barrier_is_caught() {
    if !common::executor_available() {
        return;
    }
    let s = mutant(
        "common.cuh",
        "    if (lane == 0) s[wid] = v;\n    __syncthreads();\n    v = (threadIdx.x < nw) ? s[threadIdx.x] : 0.0f;",
        0,
        "    if (lane == 0) s[wid] = v;\n    v = (threadIdx.x < nw) ? s[threadIdx.x] : 0.0f;",
    );
    assert_caught(
        "block_sum without __syncthreads",
        &Executor::with_sources(s),
        "rms_norm",
    );
}

#[test]
fn an_off_by_one_key_tile_bound_in_attention_is_caught() {
    if !common::executor_available() {
        return;
    }
    let s = mutant(
        "attention.cu",
        "for (int j0 = 0; j0 <= last; j0 += ATT_BC)",
        0,
        "for (int j0 = 0; j0 < last; j0 += ATT_BC)",
    );
    assert_caught(
        "attn_fwd skips a last tile",
        &Executor::with_sources(s),
        "attention",
    );
}

#[test]
fn an_off_by_one_causal_bound_in_attention_is_caught() {
    if !common::executor_available() {
        return;
    }
    let s = mutant(
        "attention.cu",
        "const bool vis = j <= i;",
        0,
        "const bool vis = j < i;",
    );
    assert_caught(
        "attn_fwd hides the diagonal",
        &Executor::with_sources(s),
        "attention",
    );
}

#[test]
fn a_wrong_shared_memory_index_in_attention_is_caught() {
    if !common::executor_available() {
        return;
    }
    let s = mutant(
        "attention.cu",
        "dot_sh(qs[w], ks[lane], s.d)",
        0,
        "dot_sh(qs[0], ks[lane], s.d)",
    );
    assert_caught(
        "attn_fwd reads warp 0's query",
        &Executor::with_sources(s),
        "attention",
    );
}

#[test]
fn a_shared_tile_reused_without_a_barrier_is_caught() {
    if !common::executor_available() {
        return;
    }
    // attn_bwd_dkdv's barrier before it overwrites the query tile the previous iteration read.
    let s = mutant(
        "attention.cu",
        "            __syncthreads();\n            load_tile(qs, qh, i0, s.t, s.d);",
        0,
        "            load_tile(qs, qh, i0, s.t, s.d);",
    );
    assert_caught(
        "dkdv overwrites a tile in use",
        &Executor::with_sources(s),
        "attention",
    );
}

#[test]
fn truncating_bf16_rounding_is_caught() {
    if !common::executor_available() {
        return;
    }
    let s = mutant("common.cuh", "u += 0x7fffu + ((u >> 16) & 1u);", 0, "");
    assert_caught("bf16 truncation", &Executor::with_sources(s), "swiglu");
}

#[test]
fn a_divergent_shuffle_is_an_error_not_a_hang() {
    if !common::executor_available() {
        return;
    }
    // Half the warp skips a shuffle the other half waits at.
    let s = mutant(
        "common.cuh",
        "float warp_max(float v) {\n    for (int o = 16; o > 0; o >>= 1)",
        0,
        "float warp_max(float v) {\n    if ((threadIdx.x & 31) < 16) return v;\n    for (int o = 16; o > 0; o >>= 1)",
    );
    let err = verdict(&Executor::with_sources(s), "attention");
    let e = err.expect_err("a shuffle half the warp never reaches must be an executor error");
    eprintln!("divergent shuffle: {e}");
    assert!(
        e.contains("warp") && e.contains("common.cuh:"),
        "the error names the warp intrinsic and its line: {e}"
    );
}

/// Runs the real launches with one changed first.
struct Tamper<'a, F: Fn(&mut Launch)> {
    inner: wsdscope_kernels::emu::Ctx<'a>,
    change: F,
}

impl<F: Fn(&mut Launch)> Gpu for Tamper<'_, F> {
    fn scratch(&mut self, bytes: usize) -> Result<DevPtr, Error> {
        self.inner.scratch(bytes)
    }
    fn launch(&mut self, l: &Launch) -> Result<(), Error> {
        let mut l = l.clone();
        (self.change)(&mut l);
        self.inner.launch(&l)
    }
}

/// rms_norm 37×768 through a tampered launcher: the worst relative error of y and dw, or
/// the executor's error.
fn rms_norm_through(change: impl Fn(&mut Launch)) -> Result<(f64, f64), String> {
    use wsdscope_kernels::emu::HostBuf;
    use wsdscope_kernels::launch::{Elem, rms_norm_bwd, rms_norm_fwd};
    use wsdscope_kernels::slices;
    let (n, h) = (37, 768);
    let x: Vec<f32> = (0..n * h)
        .map(|i| ((i * 7919) % 1999) as f32 / 999.5 - 1.0)
        .collect();
    let w: Vec<f32> = (0..h).map(|i| 1.0 + (i % 13) as f32 / 20.0).collect();
    let dy: Vec<f32> = (0..n * h)
        .map(|i| ((i * 104729) % 997) as f32 / 498.5 - 1.0)
        .collect();
    let (mut y_ref, mut dx_ref) = (vec![0f32; n * h], vec![0f32; n * h]);
    slices::rms_norm_forward(&x, &w, 1e-5, &mut y_ref);
    let dw_ref = slices::rms_norm_backward(&x, &w, &dy, 1e-5, &mut dx_ref);
    let ex = Executor::new();
    let mut g = Tamper {
        inner: ex.context(),
        change,
    };
    let (mut xb, mut wb, mut db) = (
        HostBuf::from_f32(&x, Elem::F32),
        HostBuf::from_f32(&w, Elem::F32),
        HostBuf::from_f32(&dy, Elem::F32),
    );
    let (mut yb, mut rb, mut dxb, mut dwb) = (
        HostBuf::zeros(4 * n * h),
        HostBuf::zeros(4 * n),
        HostBuf::zeros(4 * n * h),
        HostBuf::zeros(4 * h),
    );
    let e = |x: Error| x.to_string();
    rms_norm_fwd(
        &mut g,
        Elem::F32,
        xb.ptr(),
        wb.ptr(),
        yb.ptr(),
        rb.ptr(),
        n,
        h,
        1e-5,
    )
    .map_err(e)?;
    rms_norm_bwd(
        &mut g,
        Elem::F32,
        xb.ptr(),
        wb.ptr(),
        db.ptr(),
        rb.ptr(),
        dxb.ptr(),
        dwb.ptr(),
        n,
        h,
    )
    .map_err(e)?;
    let rel = |got: Vec<f32>, want: &[f32]| {
        let s = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        got.iter().zip(want).fold(0f64, |m, (a, b)| {
            let d = ((a - b).abs() / s) as f64;
            if d.is_nan() { f64::INFINITY } else { m.max(d) }
        })
    };
    Ok((
        rel(yb.to_f32(Elem::F32), &y_ref),
        rel(dwb.to_f32(Elem::F32), &dw_ref),
    ))
}

#[test]
fn the_launches_themselves_are_checked() {
    if !common::executor_available() {
        return;
    }
    // Untouched: the real launches are right.
    let (y, dw) = rms_norm_through(|_| {}).unwrap();
    assert!(y < 2e-4 && dw < 2e-4, "baseline: y {y:.2e}, dw {dw:.2e}");
    // A grid one block short leaves the last row unnormalised.
    let (y, _) = rms_norm_through(|l| {
        if l.kernel == "rms_norm_fwd_f32" {
            l.grid.0 -= 1;
        }
    })
    .unwrap();
    assert!(y > 1e-2, "a short grid went unnoticed (y {y:.2e})");
    // Swapped int arguments (n and h) of the dw partial sums give a wrong dw.
    let (_, dw) = rms_norm_through(|l| {
        if l.kernel == "rms_norm_bwd_dw_partial_f32" {
            l.args.swap(4, 5);
        }
    })
    .unwrap();
    assert!(dw > 1e-2, "swapped arguments went unnoticed (dw {dw:.2e})");
    // An int where the kernel takes a size_t is refused before anything runs.
    let err = rms_norm_through(|l| {
        if let (true, Arg::Int(h)) = (l.kernel == "rms_norm_fwd_f32", l.args[4]) {
            l.args[4] = Arg::Size(h as u64);
        }
    })
    .unwrap_err();
    assert!(err.contains("the kernel takes"), "{err}");
    // A block the hardware cannot run is refused too.
    let err = rms_norm_through(|l| l.block.0 = 2048).unwrap_err();
    assert!(err.contains("1024 threads"), "{err}");
}

#[test]
fn the_report_counts_rows() {
    if !common::executor_available() {
        return;
    }
    // The rows the mutants fail are the rows `bench --kernels --device cuda-emu` prints.
    let ex = Executor::new();
    let rows = run(&ex, &|o| o == "swiglu").unwrap();
    assert!(rows.iter().all(parity::Row::pass));
    assert!(rows.iter().any(|r| r.what == "rounding"));
}
