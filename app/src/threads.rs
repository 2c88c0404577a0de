//! Thread-count setup. candle's CPU kernels size their pools from `RAYON_NUM_THREADS`, and
//! its element-wise pool spin-waits, so the count must be set once, before any tensor work.

use anyhow::{Result, bail};

pub fn init(n: usize) -> Result<()> {
    if n == 0 {
        bail!("--threads 0 is not allowed; it must be at least 1");
    }
    // SAFETY: called from main before the engine or any other thread is started, so no other
    // thread can be reading the environment concurrently.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    // A second call (tests) finds the pool built already; the variable above still applies.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("wsdscope-worker-{i}"))
        .build_global();
    Ok(())
}
