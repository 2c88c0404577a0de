//! The crate's error type. Ops return candle's `Result`; their failures wrap an [`Error`]
//! (through `candle_core::Error::wrap`) so messages name the op and the offending value.

use candle_core::DType;

/// What went wrong in a fused op, with the op's name for context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: dtype {dtype:?} is not supported (the CPU kernels take f32 or f64)")]
    UnsupportedDType { op: &'static str, dtype: DType },

    #[error("{op}: dtype {dtype:?} is not supported on CUDA (the CUDA kernels take f32 or bf16)")]
    UnsupportedCudaDType { op: &'static str, dtype: DType },

    #[error("{op}: {what} is on {device}, which this build's kernels do not run on ({supported})")]
    UnsupportedDevice {
        op: &'static str,
        what: &'static str,
        device: String,
        /// The devices this build supports, for the message.
        supported: &'static str,
    },

    #[error("{op}: {msg}")]
    Cuda { op: &'static str, msg: String },

    /// The CPU executor of the CUDA sources could not build or run a kernel (a compile
    /// error, a deadlock at a barrier, a divergent shuffle, a bad argument list).
    #[error("CUDA executor: {0}")]
    Executor(String),

    #[error("{op}: {what} must be contiguous")]
    NonContiguous {
        op: &'static str,
        what: &'static str,
    },

    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },

    #[error("{op}: dtypes differ ({what}: {got:?}, expected {expected:?})")]
    DTypeMismatch {
        op: &'static str,
        what: &'static str,
        got: DType,
        expected: DType,
    },

    #[error("{op}: target {target} of row {row} is out of range for {vocab} classes")]
    TargetOutOfRange {
        op: &'static str,
        row: usize,
        target: u32,
        vocab: usize,
    },

    /// A kernel backend's buffer does not fit the op (length, element type, a read-only
    /// buffer written), or the backend cannot hold that element type.
    #[error("{op}: {msg}")]
    Backend { op: &'static str, msg: String },

    #[error("{op}: internal state missing ({what}); was the forward pass run?")]
    MissingState {
        op: &'static str,
        what: &'static str,
    },
}

impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        candle_core::Error::wrap(e)
    }
}

/// Shorthand for a shape error.
pub(crate) fn shape_err(op: &'static str, msg: impl Into<String>) -> candle_core::Error {
    Error::Shape {
        op,
        msg: msg.into(),
    }
    .into()
}

/// Shorthand for a CUDA error.
#[cfg(feature = "cuda")]
pub(crate) fn cuda_err(op: &'static str, msg: impl Into<String>) -> candle_core::Error {
    Error::Cuda {
        op,
        msg: msg.into(),
    }
    .into()
}
