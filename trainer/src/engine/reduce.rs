//! The gradient all-reduce of a data-parallel step. Each rank's gradients are those of the
//! mean loss over its own rows; weighted by its share of the global batch and summed over the
//! ranks, they are the gradients of the global batch's mean loss, on every rank. They travel
//! in a few flat f32 buckets (one call per bucket, not one per tensor), in parameter order:
//! through host buffers ([`all_reduce`], MPI), or as device buffers that never leave the GPU
//! ([`all_reduce_on_device`], NCCL).

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::collective::{Collective, DeviceSum};
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

/// [`all_reduce`] on the device: each bucket is one flat f32 tensor (the gradients
/// concatenated and weighted on the GPU), summed in place by `sums` and handed back as views
/// of it; the weighted loss is summed in f64 there too. Only the summed loss comes back to
/// the host. `loss` is this rank's mean loss, a scalar tensor on the device.
pub(super) fn all_reduce_on_device(
    sums: &dyn DeviceSum,
    vars: &[&Var],
    grads: &mut GradStore,
    loss: &Tensor,
    weight: f64,
) -> Result<f64> {
    let mut parts: Vec<Tensor> = Vec::new();
    let mut members: Vec<&Var> = Vec::new();
    let mut len = 0;
    for &var in vars {
        let g = grads
            .get(var)
            .ok_or_else(|| Error::Config("a parameter received no gradient".into()))?;
        let g = g.to_dtype(DType::F32)?.flatten_all()?;
        if !parts.is_empty() && len + g.elem_count() > BUCKET {
            flush_on_device(sums, &mut parts, &mut members, grads, weight)?;
            len = 0;
        }
        len += g.elem_count();
        parts.push(g);
        members.push(var);
    }
    flush_on_device(sums, &mut parts, &mut members, grads, weight)?;
    // A tensor of its own: the sum runs in place.
    let total = loss.to_dtype(DType::F64)?.reshape(1)?.affine(weight, 0.0)?;
    sums.all_reduce_sum_in_place(&total)?;
    Ok(total.to_vec1::<f64>()?[0])
}

/// Sums one device bucket over the ranks and puts its pieces back as the gradients of
/// `members`.
fn flush_on_device(
    sums: &dyn DeviceSum,
    parts: &mut Vec<Tensor>,
    members: &mut Vec<&Var>,
    grads: &mut GradStore,
    weight: f64,
) -> Result<()> {
    if parts.is_empty() {
        return Ok(());
    }
    let flat = Tensor::cat(parts, 0)?;
    // The sum runs in place, so the bucket needs storage of its own; `cat` of one part is
    // that part, and a weight of 1 (one rank) is left out rather than multiplied.
    let bucket = if weight != 1.0 {
        flat.affine(weight, 0.0)?
    } else if parts.len() == 1 {
        flat.copy()?
    } else {
        flat
    };
    sums.all_reduce_sum_in_place(&bucket)?;
    let mut at = 0;
    for var in members.drain(..) {
        let n = var.elem_count();
        grads.insert(var, bucket.narrow(0, at, n)?.reshape(var.shape())?);
        at += n;
    }
    parts.clear();
    Ok(())
}
