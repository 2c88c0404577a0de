//! The gradient all-reduce of a data-parallel step. Each rank's gradients are those of the
//! mean loss over its own rows; weighted by its share of the global batch and summed over the
//! ranks, they are the gradients of the global batch's mean loss, on every rank. They travel
//! in a few flat f32 buckets (one call per bucket, not one per tensor), in parameter order.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::collective::Collective;
use crate::error::{Error, Result};

/// Elements per bucket: 4 Mi f32 (16 MiB of copies at a time); the small presets fit one.
const BUCKET: usize = 1 << 22;

/// Replaces every gradient of `vars` in `grads` with the weighted sum over the ranks, and
/// returns the weighted sum of `loss` (the global batch's mean loss). `weight` is this rank's
/// rows over the global batch's rows.
pub(super) fn all_reduce(
    comm: &dyn Collective,
    vars: &[&Var],
    grads: &mut GradStore,
    loss: f64,
    weight: f64,
) -> Result<f64> {
    let mut total = [loss * weight];
    comm.all_reduce_sum_f64(&mut total)?;
    let w = weight as f32;
    let mut bucket: Vec<f32> = Vec::new();
    let mut members: Vec<&Var> = Vec::new();
    for &var in vars {
        let g = grads
            .get(var)
            .ok_or_else(|| Error::Config("a parameter received no gradient".into()))?;
        let g = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        if !bucket.is_empty() && bucket.len() + g.len() > BUCKET {
            flush(comm, &mut bucket, &mut members, grads)?;
        }
        bucket.extend(g.iter().map(|x| x * w));
        members.push(var);
    }
    flush(comm, &mut bucket, &mut members, grads)?;
    Ok(total[0])
}

/// Sums one bucket over the ranks and puts its pieces back as the gradients of `members`.
fn flush(
    comm: &dyn Collective,
    bucket: &mut Vec<f32>,
    members: &mut Vec<&Var>,
    grads: &mut GradStore,
) -> Result<()> {
    if bucket.is_empty() {
        return Ok(());
    }
    comm.all_reduce_sum_f32(bucket)?;
    let mut at = 0;
    for var in members.drain(..) {
        let n = var.elem_count();
        let g = Tensor::from_slice(&bucket[at..at + n], var.shape(), var.device())?;
        grads.insert(var, g);
        at += n;
    }
    bucket.clear();
    Ok(())
}
