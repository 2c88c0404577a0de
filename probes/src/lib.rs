//! Measurements and analyses of a run's dynamics, as algorithms independent of the model, so
//! each is testable on closed-form functions.
//!
//! Today: [`fit`], the loss-versus-data power law that decay-branch endpoints trace, [`mpl`],
//! the multi-power law that predicts a whole loss curve from its lr schedule, and
//! [`landscape`], the landscape estimators over an [`Objective`] trait (tested on closed-form
//! quadratics; the trainer implements the trait for its model), with [`lanczos`] for the
//! extreme eigenvalues behind the sharpness. The per-step norms the engine reports
//! (gradient, update, parameter) are computed by the optimiser in `trainer::optim`.

pub mod fit;
pub mod lanczos;
pub mod landscape;
pub mod mpl;

pub use fit::{FitError, PowerLawFit, fit_power_law};
pub use lanczos::{Extremes, lanczos_extremes};
pub use landscape::{
    Differences, NoiseScale, Objective, StepDots, StepGeometry, filter_normalize, hvp, hvp_by,
    interpolate, minicpm_batch_rule, preconditioned_sharpness, sharpness, slice_1d, slice_2d,
    step_geometry, top_eigenvalue,
};
pub use mpl::{Curve, MplError, MplFit, MultiPowerLaw, fit_multi_power_law};
