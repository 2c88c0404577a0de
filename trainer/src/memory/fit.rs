//! Whether a run fits: the memory the host has available, and the one-line refusal of an
//! estimate that does not fit in it.

use super::breakdown::MemoryEstimate;
use super::units::human;

/// MemAvailable from /proc/meminfo, in bytes (`None` where there is no such file).
pub fn available_host() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// `Ok` when the estimate fits in `available` bytes; otherwise one line saying what the run
/// needs, what is available (`what`: e.g. `MemAvailable`) and which flag to lower.
pub fn check_fits(est: &MemoryEstimate, available: u64, what: &str) -> Result<(), String> {
    if est.total() <= available {
        return Ok(());
    }
    Err(format!(
        "the run needs {} but {} is available ({what}); {}",
        est.summary(),
        human(available),
        est.advice()
    ))
}
