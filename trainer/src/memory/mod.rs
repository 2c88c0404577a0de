//! How much memory a run needs, estimated from its configuration before anything is
//! allocated, so that a run that cannot fit is refused with one line that says why (instead
//! of growing towards the OOM killer).
//!
//! Each part below is counted from the code that allocates it, with a comment saying what it
//! counts. The peak is what persists (the process, every live run's parameters, AdamW state,
//! step tracker and CPU-step scratch pool, the data) plus the larger of two transients: a
//! training step (its gradients and the copy of θ before the update) and a periodic probe
//! (a copy of the model and the f64 vectors of its estimator; `probe.rs`, `objective.rs`,
//! `wsdscope_probes::landscape`). Scripted forks add one full run per branch alive at the
//! same time.
//!
//! The CPU step (`model/step.rs` on the CPU backend) keeps every buffer it ever took in its
//! model's pool, so the pool's size is what one pass takes at once; `cpu_step_pool` replays
//! the pass's takes and gives on lengths alone (a test checks it against the real pool).
//!
//! Nothing here allocates in proportion to the batch or the sequence, and the arithmetic is
//! u128, saturated to u64 at the end, so absurd flags give absurd numbers, not overflows.
//!
//! - `breakdown.rs`: [`MemoryEstimate`], its [`Part`]s, the peak, the summary and the
//!   breakdown.
//! - `estimate.rs`: [`estimate()`], the parts of a configuration, with the bytes one run holds
//!   ([`run_bytes`]) and the scripted branches alive at once ([`branches_alive`]).
//! - `transients.rs`: the training step's and the periodic probe's transient parts.
//! - `pool.rs`: the CPU step's scratch pool replayed on lengths, and the allocator's
//!   huge-page tails.
//! - `dims.rs`: a model's dimensions in u128.
//! - `fit.rs`: [`available_host`] and [`check_fits`], the refusal in one line.
//! - `units.rs`: KiB, MiB, saturation, and [`human`] bytes.

mod breakdown;
mod dims;
mod estimate;
mod fit;
mod pool;
#[cfg(test)]
mod tests;
mod transients;
mod units;

pub use breakdown::{Lever, MemoryEstimate, Part, Phase, Place};
pub use estimate::{branches_alive, estimate, run_bytes, step_bytes};
pub use fit::{available_host, check_fits};
pub use units::human;
