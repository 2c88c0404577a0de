//! The multi-power law (MPL) of Luo et al. 2025, "A Multi-Power Law for Loss Curve Prediction
//! Across Learning Rate Schedules" (arXiv:2503.12811): the loss curve of a run predicted from its
//! learning-rate schedule alone, and a fit of the law's seven parameters to observed curves (a
//! WSD trunk and its decay branches share one law), so an unseen schedule can be extrapolated.
//!
//! With t ≥ 1 counting the steps after warmup, η_1..η_t their learning rates and η_0 the peak
//! (the lr of the last warmup step):
//!
//! ```text
//! L(t)  = L0 + A·(S1(t) + S_W)^(−α) − LD(t)
//! LD(t) = B·Σ_{k=1..t} (η_{k−1} − η_k)·G(η_k^(−γ)·S_k(t)),   G(x) = 1 − (C·x + 1)^(−β)
//! S1(t) = Σ_{τ=1..t} η_τ,   S_k(t) = Σ_{τ=k..t} η_τ,   S_W = Σ of the warmup lrs.
//! ```
//!
//! Evaluation uses prefix sums of the lrs (each S is O(1)) and visits only the steps at which
//! the lr changes (constant stretches add nothing to LD), so a point costs O(lr changes before
//! it). Where the lr is exactly 0, η^(−γ) is +∞: G is 1 once any lr has been spent since the
//! drop, and 0 while none has (the limit of a vanishing lr, under which nothing is learnt).
//!
//! Fitting ([`fit_multi_power_law`]): each curve is subsampled to at most 256 points after warmup
//! (its last point always kept, the decay region given at least half of them). So that long
//! decays stay cheap, the fit merges the lr changes of the far past of each point into blocks
//! within which S_k(t) and η_k vary by at most 5%, summed at their mean (O(log(S range)/0.05)
//! terms per point instead of one per decay step; error ~1e-6 in loss on 20k-step decays);
//! [`MultiPowerLaw::predict`] stays exact.
//!
//! The objective is least squares on loss values, then refined under a Huber loss whose
//! threshold is 1.345 robust standard deviations (1.4826 × the median absolute deviation of the
//! least-squares residuals), so isolated loss spikes of a per-step curve do not pull the fit
//! while Gaussian-like noise is treated as plain least squares. The minimiser is
//! Levenberg–Marquardt with an analytic Jacobian on transformed parameters: L0 = m·sigmoid(z)
//! keeps L0 in [0, m]; the other six are optimised by their logarithms (kept positive, within
//! wide bounds). The bound m is the lowest loss observed *before any lr decrease*, where the law
//! is L0 plus a positive term; later losses may lie below L0, since LD subtracts (without such
//! points m is the highest observed loss). Starting points come from a grid over (α, C, β, γ) on
//! which (L0, A, B) — linear in the law — are solved exactly by bound-constrained least squares;
//! the prior's exponents and the best three grid points each get a few iterations, and the best
//! of those is followed to convergence.
//!
//! The law and its exact evaluation are in `law.rs`; `prepare.rs` checks a curve and turns it
//! into the points a fit uses, each with its merged terms of LD; `optimise.rs` is the
//! problem the minimiser solves (the transformed parameters and their Jacobian,
//! Levenberg–Marquardt, the grid of starts); `fit.rs` runs a fit from curves to an
//! [`MplFit`].

mod error;
mod fit;
mod law;
mod optimise;
mod prepare;
#[cfg(test)]
mod tests;

pub use error::MplError;
pub use fit::{MplFit, fit_multi_power_law};
pub use law::MultiPowerLaw;
pub use prepare::Curve;
