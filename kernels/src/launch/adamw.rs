//! The launches of the AdamW step: the fused in-place step with its statistics, and the
//! read-only check that it would stay finite.

use super::desc::{
    AdamWParams, Arg, BLOCK, DevPtr, Elem, Gpu, Launch, REDUCE_BLOCKS, name, stride_blocks,
};
use crate::error::Error;

/// One fused AdamW step over n elements (θ and its gradient in `e`, moments f32), in place;
/// its three statistics (Σ(Δθ)², Σθ², max|Δθ|, f64) go to `stats`.
#[allow(clippy::too_many_arguments)]
pub fn adamw_step(
    g: &mut impl Gpu,
    e: Elem,
    [theta, grad, m, v]: [DevPtr; 4],
    n: usize,
    hp: AdamWParams,
    stats: DevPtr,
) -> Result<(), Error> {
    let blocks = if n > 0 {
        stride_blocks(n, REDUCE_BLOCKS)
    } else {
        0
    };
    let partial = g.scratch(8 * 3 * (blocks as usize).max(1))?;
    if n > 0 {
        g.launch(
            &Launch::new("adamw.cu", name("adamw_step", e), (blocks, 1), BLOCK)
                .ptrs(&[theta, grad, m, v])
                .arg(Arg::Size(n as u64))
                .arg(Arg::AdamW(hp))
                .arg(Arg::Ptr(partial)),
        )?;
    }
    g.launch(
        &Launch::new("adamw.cu", "adamw_stats_finish".into(), (1, 1), 1)
            .arg(Arg::Ptr(partial))
            .arg(Arg::Int(blocks as i32))
            .arg(Arg::Ptr(stats)),
    )
}

/// Raises the int at `flag` if the AdamW step over n elements would leave any θ, m or v
/// non-finite; writes nothing else. The caller zeroes the flag.
pub fn adamw_check(
    g: &mut impl Gpu,
    e: Elem,
    [theta, grad, m, v]: [DevPtr; 4],
    n: usize,
    hp: AdamWParams,
    flag: DevPtr,
) -> Result<(), Error> {
    if n == 0 {
        return Ok(());
    }
    g.launch(
        &Launch::new(
            "adamw.cu",
            name("adamw_check", e),
            (stride_blocks(n, REDUCE_BLOCKS), 1),
            BLOCK,
        )
        .ptrs(&[theta, grad, m, v])
        .arg(Arg::Size(n as u64))
        .arg(Arg::AdamW(hp))
        .arg(Arg::Ptr(flag)),
    )
}
