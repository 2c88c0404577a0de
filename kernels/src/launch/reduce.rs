//! The launches of the f64 reductions (Σx², ⟨a, b⟩, ⟨g, a − b⟩): per-block partials, then
//! one block that sums them in a fixed order.

use super::desc::{Arg, BLOCK, DevPtr, Elem, Gpu, Launch, REDUCE_BLOCKS, name, stride_blocks};
use crate::error::Error;

/// An f64 reduction of one, two or three tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// Σx² of one tensor.
    SumSq,
    /// ⟨a, b⟩.
    Dot,
    /// ⟨g, a − b⟩.
    DotDiff,
}

impl Reduction {
    fn kernel(self) -> &'static str {
        match self {
            Reduction::SumSq => "sum_sq",
            Reduction::Dot => "dot",
            Reduction::DotDiff => "dot_diff",
        }
    }

    /// How many tensors it reads.
    pub fn inputs(self) -> usize {
        match self {
            Reduction::SumSq => 1,
            Reduction::Dot => 2,
            Reduction::DotDiff => 3,
        }
    }
}

/// The reduction `r` of `inputs` (n elements each) into the f64 at `out`, two deterministic
/// stages (a partial per block, then the partials in block order).
pub fn reduce(
    g: &mut impl Gpu,
    r: Reduction,
    e: Elem,
    inputs: &[DevPtr],
    n: usize,
    out: DevPtr,
) -> Result<(), Error> {
    if inputs.len() != r.inputs() {
        return Err(Error::Cuda {
            op: "reduce",
            msg: format!(
                "{} reads {} tensors, got {}",
                r.kernel(),
                r.inputs(),
                inputs.len()
            ),
        });
    }
    let blocks = if n > 0 {
        stride_blocks(n, REDUCE_BLOCKS)
    } else {
        0
    };
    let partial = g.scratch(8 * (blocks as usize).max(1))?;
    if blocks > 0 {
        g.launch(
            &Launch::new("reduce.cu", name(r.kernel(), e), (blocks, 1), BLOCK)
                .ptrs(inputs)
                .arg(Arg::Size(n as u64))
                .arg(Arg::Ptr(partial)),
        )?;
    }
    g.launch(
        &Launch::new("reduce.cu", "reduce_finish".into(), (1, 1), 1)
            .arg(Arg::Ptr(partial))
            .arg(Arg::Int(blocks as i32))
            .arg(Arg::Ptr(out)),
    )
}
