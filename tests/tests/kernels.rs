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

#[test]
fn every_cuda_kernel_passes_on_the_executor_and_a_broken_one_fails() {
    if !wsdscope_kernels::emu::available_or_required() {
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
