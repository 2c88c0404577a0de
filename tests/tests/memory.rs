//! End-to-end: the memory a run needs is known before anything is allocated. `record
//! --dry-run` prints the estimate, which must be within 30% of the peak resident memory a
//! real run of the same flags reaches (measured by the kernel for the child process), and a
//! run that cannot fit is refused at once with one line naming the flag to lower.

use std::process::Stdio;
use std::time::{Duration, Instant};

use wsdscope_tests::wsdscope;

/// The estimate `record --dry-run --no-record FLAGS` prints as `estimated peak memory: N
/// MiB`, in MiB (`--no-record` as in the measured run: no session writer to count).
fn estimate_mib(flags: &[&str]) -> u64 {
    let out = wsdscope()
        .args(["record", "--dry-run", "--no-record"])
        .args(flags)
        .output()
        .expect("wsdscope runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "--dry-run {flags:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| {
            l.split_once("estimated peak memory: ")
                .map(|(_, rest)| rest)
        })
        .unwrap_or_else(|| panic!("no `estimated peak memory: N MiB` line in:\n{stdout}"));
    let mut words = line.split_whitespace();
    let n = words.next().and_then(|w| w.parse().ok());
    assert_eq!(words.next(), Some("MiB"), "{line}");
    n.unwrap_or_else(|| panic!("not an integer number of MiB: {line}"))
}

/// Runs `record --no-record FLAGS` to its end and returns its peak resident set, in MiB.
fn measured_peak_mib(flags: &[&str]) -> f64 {
    let log = tempfile::NamedTempFile::new().expect("temp file");
    // Reaped by `wait4` below, which also reports the child's peak memory.
    #[allow(clippy::zombie_processes)]
    let child = wsdscope()
        .args(["record", "--no-record"])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log.reopen().expect("reopen")))
        .spawn()
        .expect("wsdscope starts");
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of that plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not waited for yet (std's `Child` reaps only in its
    // `wait` methods, which are not called); both pointers are valid for writes.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let stderr = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "record {flags:?} failed (status {status}):\n{stderr}"
    );
    usage.ru_maxrss as f64 / 1024.0 // KiB on Linux
}

#[test]
fn the_estimate_is_within_30_percent_of_the_measured_peak() {
    let shapes: [(&str, &[&str]); 3] = [
        (
            "tiny with probes (sharpness, noise scale)",
            &["--threads", "1", "--steps", "3", "--probe-every", "1"],
        ),
        (
            "tiny, activations dominate",
            &[
                "--threads",
                "1",
                "--steps",
                "2",
                "--batch",
                "32",
                "--seq",
                "128",
                "--probe-budget",
                "0",
            ],
        ),
        (
            "wider, parameters and probes dominate",
            &[
                "--threads",
                "1",
                "--steps",
                "2",
                "--hidden",
                "256",
                "--heads",
                "4",
                "--kv-heads",
                "4",
                "--ffn",
                "768",
                "--batch",
                "4",
                "--seq",
                "64",
                "--probe-every",
                "1",
            ],
        ),
    ];
    let mut worst = 0.0f64;
    let mut failures = Vec::new();
    for (name, flags) in shapes {
        let estimate = estimate_mib(flags) as f64;
        let measured = measured_peak_mib(flags);
        let ratio = estimate / measured;
        eprintln!(
            "{name}: estimate {estimate:.0} MiB, measured peak {measured:.0} MiB, ratio {ratio:.3}"
        );
        worst = worst.max((ratio - 1.0).abs());
        if (ratio - 1.0).abs() > 0.30 {
            failures.push(format!("{name}: ratio {ratio:.3}"));
        }
    }
    eprintln!("worst |estimate/measured − 1| = {worst:.3}");
    assert!(failures.is_empty(), "off by more than 30%: {failures:?}");
}

#[test]
fn a_batch_that_cannot_fit_is_refused_at_once() {
    let t0 = Instant::now();
    let out = wsdscope()
        .args(["record", "--no-record", "--batch", "100000000"])
        .output()
        .expect("wsdscope runs");
    let took = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, not:\n{stderr}");
    let line = lines[0];
    assert!(line.starts_with("error: "), "{line}");
    assert!(
        line.contains("--batch") && line.contains("MemAvailable"),
        "{line}"
    );
}
