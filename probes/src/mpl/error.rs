//! Why a fit could not be made.

/// Why a fit could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MplError {
    #[error("no curves to fit")]
    NoCurves,
    #[error("curve {curve} has no observed points")]
    EmptyCurve { curve: usize },
    #[error("curve {curve}: the loss at step {step} is {loss}, not a finite number")]
    NonFiniteLoss { curve: usize, step: u64, loss: f64 },
    #[error("curve {curve}: the learning rate at step {step} is {lr}, not a finite number ≥ 0")]
    BadLr { curve: usize, step: u64, lr: f64 },
    #[error("curve {curve}: warmup of {warmup} steps is longer than its {len}-step schedule")]
    WarmupTooLong {
        curve: usize,
        warmup: usize,
        len: usize,
    },
    #[error("curve {curve}: point at step {step} lies past the end of its {len}-step schedule")]
    StepBeyondSchedule { curve: usize, step: u64, len: usize },
    #[error("curve {curve}: point at step {step} is not a 1-based step after the previous point's")]
    BadStep { curve: usize, step: u64 },
    #[error("prior parameter {name} is {value}, not a finite number ≥ 0")]
    BadPrior { name: &'static str, value: f64 },
    #[error("{got} usable points (after warmup) but the fit needs at least {need}")]
    TooFewPoints { got: usize, need: usize },
    #[error("no convergence: {0}")]
    NoConvergence(&'static str),
}
