//! Loss-landscape measurements for wsdscope, as algorithms over a small `Objective` trait
//! (parameters as flat views, loss, loss and gradient), so each is testable on closed-form
//! functions and independent of the model.
//!
//! Nothing is here yet: the per-step norms the engine reports today (gradient, update,
//! parameter) are computed by the optimiser in `trainer::optim`.
