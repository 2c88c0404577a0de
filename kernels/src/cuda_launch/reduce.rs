//! The reductions on CUDA: Σx², ⟨a, b⟩ and ⟨g, a − b⟩ per tensor (pair, triple), all of a
//! call gathered in one device buffer and copied to the host once.

use candle_core::{CudaDevice, Result, Tensor};
use cudarc::driver::DevicePtr;

use super::buffers::{addr, cuda, elem};
use super::driver::{Driver, lerr};
use crate::launch::{self, Elem, Reduction};

/// The device and element type shared by `ts` if they are all contiguous CUDA tensors of
/// one device and one dtype the kernels take; `None` sends the caller to its fallback.
fn reducible(ts: &[&Tensor]) -> Option<(CudaDevice, Elem)> {
    let first = ts.first()?;
    let dev = first.device().as_cuda_device().ok()?;
    let e = elem("reduce", first.dtype()).ok()?;
    let ok = ts.iter().all(|t| {
        t.device().same_device(first.device()) && t.dtype() == first.dtype() && t.is_contiguous()
    });
    ok.then(|| (dev.clone(), e))
}

/// One reduction per group of tensors, results gathered into one buffer and copied to the
/// host once; every group has `r.inputs()` tensors, read in order.
fn reduce_groups(r: Reduction, groups: &[Vec<&Tensor>]) -> Result<Option<Vec<f64>>> {
    if groups.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let flat: Vec<&Tensor> = groups.iter().flatten().copied().collect();
    let Some((dev, e)) = reducible(&flat) else {
        return Ok(None);
    };
    let out = dev.alloc_zeros::<f64>(groups.len())?;
    let st = dev.cuda_stream();
    {
        let (base, _o) = out.device_ptr(&st);
        let mut d = Driver::new(&dev);
        for (i, group) in groups.iter().enumerate() {
            let guards: Vec<_> = group.iter().map(|t| t.storage_and_layout()).collect();
            let mut ptrs = Vec::with_capacity(group.len());
            let mut syncs = Vec::with_capacity(group.len());
            for (s, l) in &guards {
                let (p, g) = addr(cuda(s, "reduce", "input")?, l, &st, "reduce", "input")?;
                ptrs.push(p);
                syncs.push(g);
            }
            let slot = base + (8 * i) as u64;
            launch::reduce(&mut d, r, e, &ptrs, group[0].elem_count(), slot).map_err(lerr)?;
        }
    }
    Ok(Some(dev.clone_dtoh(&out)?))
}

/// Σx² of each tensor in f64, or `None` unless all are contiguous f32/bf16 CUDA tensors of
/// one device and dtype.
pub(crate) fn sum_sq_many(ts: &[&Tensor]) -> Result<Option<Vec<f64>>> {
    let groups: Vec<Vec<&Tensor>> = ts.iter().map(|t| vec![*t]).collect();
    reduce_groups(Reduction::SumSq, &groups)
}

/// ⟨a, b⟩ of each pair in f64, or `None` as for [`sum_sq_many`] (or on mismatched shapes).
pub(crate) fn dot_many(pairs: &[(&Tensor, &Tensor)]) -> Result<Option<Vec<f64>>> {
    if pairs.iter().any(|(a, b)| a.dims() != b.dims()) {
        return Ok(None); // the caller reports the mismatch
    }
    let groups: Vec<Vec<&Tensor>> = pairs.iter().map(|(a, b)| vec![*a, *b]).collect();
    reduce_groups(Reduction::Dot, &groups)
}

/// ⟨g, a − b⟩ of each triple in f64, or `None` as for [`sum_sq_many`] (or on mismatched
/// shapes).
pub(crate) fn dot_diff_many(triples: &[(&Tensor, &Tensor, &Tensor)]) -> Result<Option<Vec<f64>>> {
    if triples
        .iter()
        .any(|(g, a, b)| g.dims() != a.dims() || a.dims() != b.dims())
    {
        return Ok(None); // the caller reports the mismatch
    }
    let groups: Vec<Vec<&Tensor>> = triples.iter().map(|(g, a, b)| vec![*g, *a, *b]).collect();
    reduce_groups(Reduction::DotDiff, &groups)
}
