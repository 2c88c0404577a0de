//! Measurements and analyses of a run's dynamics, as algorithms independent of the model, so
//! each is testable on closed-form functions.
//!
//! Today: [`fit`], the loss-versus-data power law that decay-branch endpoints trace. The
//! per-step norms the engine reports (gradient, update, parameter) are computed by the
//! optimiser in `trainer::optim`; landscape probes over an `Objective` trait come later.

pub mod fit;

pub use fit::{FitError, PowerLawFit, fit_power_law};
