//! `wsdscope bench --kernels --device cuda-emu` as a user runs it: every CUDA kernel on the
//! CPU executor, the summary as the last line, exit 0; and with an edited source folder
//! (`WSDSCOPE_CUDA_SOURCES`) holding a broken kernel, failing rows, the same summary line
//! counting them, and exit 1. Needs a C++ compiler (scripts/test installs one).

use wsdscope_tests::wsdscope;

fn summary(stdout: &str) -> (usize, usize) {
    let last = stdout.lines().last().unwrap_or_default();
    let rest = last
        .strip_prefix("kernels: ")
        .unwrap_or_else(|| panic!("last line {last:?}"));
    let nums: Vec<usize> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(rest, format!("{} passed, {} failed", nums[0], nums[1]));
    (nums[0], nums[1])
}

/// Whether a C++ compiler is here; without one the test skips saying why, unless
/// `WSDSCOPE_REQUIRE_EMU` is set (scripts/test sets it), when it fails.
fn compiler_present() -> bool {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    if std::process::Command::new(&cxx)
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    let required = std::env::var("WSDSCOPE_REQUIRE_EMU").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "no C++ compiler {cxx:?} for the CUDA executor (WSDSCOPE_REQUIRE_EMU is set)"
    );
    eprintln!(
        "SKIPPED: no C++ compiler {cxx:?}: the CUDA executor needs one (install g++ or set CXX)"
    );
    false
}

#[test]
fn every_cuda_kernel_passes_on_the_executor_and_a_broken_one_fails() {
    if !compiler_present() {
        return;
    }
    let out = wsdscope()
        .args(["bench", "--kernels", "--device", "cuda-emu"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (passed, failed) = summary(&stdout);
    assert!(
        passed > 150 && failed == 0,
        "{passed} passed, {failed} failed"
    );

    // The same sources, with one shuffle step of warp_sum dropped.
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/src/cuda");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let common = dir.path().join("common.cuh");
    let text = std::fs::read_to_string(&common).unwrap();
    let find = "float warp_sum(float v) {\n    for (int o = 16; o > 0; o >>= 1)";
    assert!(text.contains(find));
    std::fs::write(&common, text.replace(find, &find.replace("o > 0", "o > 1"))).unwrap();
    let out = wsdscope()
        .args(["bench", "--kernels", "--device", "cuda-emu"])
        .env("WSDSCOPE_CUDA_SOURCES", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let (_, failed) = summary(&stdout);
    assert!(failed > 0, "{stdout}");
    assert!(stdout.contains("FAIL"));
}
