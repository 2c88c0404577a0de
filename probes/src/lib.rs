//! Measurements and analyses of a run's dynamics, as algorithms independent of the model, so
//! each is testable on closed-form functions.
//!
//! Today: [`fit`], the loss-versus-data power law that decay-branch endpoints trace, and
//! [`landscape`], the estimators of the probes feature over an [`Objective`] trait (tested on
//! quadratics, not yet wired into the engine). The per-step norms the engine reports
//! (gradient, update, parameter) are computed by the optimiser in `trainer::optim`.

pub mod fit;
pub mod landscape;

pub use fit::{FitError, PowerLawFit, fit_power_law};
pub use landscape::{
    Objective, StepGeometry, filter_normalize, hvp, step_geometry, top_eigenvalue,
};
