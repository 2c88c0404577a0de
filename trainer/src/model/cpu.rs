//! The model's training step on the CPU: the fused step of `step.rs` over the CPU kernel
//! backend, reading the parameters and RoPE tables in place, one leaf of the canonical
//! reduction tree (`tree.rs`) at a time.

use candle_core::{CpuStorage, Device, Layout, Storage, Tensor};
use wsdscope_kernels::backend::cpu::Cpu;

use super::{MiniCpm, step, tree};
use crate::config::Precision;
use crate::error::{Error, Result};

impl MiniCpm {
    /// The step on the CPU backend, reading the parameters and RoPE tables in place; with
    /// `leaves` (and `grad`) also each leaf's gradient's squared norm, in no particular order.
    pub(super) fn cpu_step(
        &self,
        batch: step::Batch<'_>,
        precision: Precision,
        grad: bool,
        leaves: bool,
    ) -> Result<(f32, Option<Vec<Tensor>>, super::Leaves)> {
        // Read access to every parameter for the whole step (the optimiser writes after it).
        let guards: Vec<_> = self
            .named
            .iter()
            .map(|(_, p)| p.storage_and_layout())
            .chain([
                self.rope_cos.storage_and_layout(),
                self.rope_sin.storage_and_layout(),
            ])
            .collect();
        let bufs = guards
            .iter()
            .map(|(s, l)| Ok(Cpu::borrow(f32s(s, l)?)))
            .collect::<Result<Vec<_>>>()?;
        let np = self.named.len();
        let be = Cpu::new(&self.pool);
        // One fused step per leaf of the canonical tree (see `tree`), combined in its order.
        let mut leaf = |sub: step::Batch<'_>| -> Result<tree::Partial> {
            let w = step::Weights {
                params: &bufs[..np],
                cos: &bufs[np],
                sin: &bufs[np + 1],
            };
            let (loss, grads) = step::run(&be, &self.cfg, w, sub, precision, grad)?;
            let grads = grads
                .map(|gs| {
                    gs.into_iter()
                        .zip(&self.named)
                        .map(|(g, (name, _))| {
                            g.into_f32_vec().ok_or_else(|| {
                                Error::Config(format!(
                                    "the CPU step's gradient of {name} is not f32"
                                ))
                            })
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?;
            Ok((loss, grads))
        };
        let leaf_seqs = tree::leaf_sequences(batch.t);
        let mut norms = Vec::new();
        let wanted = (leaves && grad).then_some(&mut norms);
        let (loss, grads) = tree::reduce(batch, leaf_seqs, &mut leaf, wanted)?;
        let grads = grads
            .map(|g| self.as_tensors(g, |g, dims| Ok(Tensor::from_vec(g, dims, &Device::Cpu)?)))
            .transpose()?;
        let norms = (leaves && grad).then_some(norms);
        Ok((loss, grads, norms))
    }
}

/// The elements of a contiguous f32 CPU tensor behind a read guard.
fn f32s<'a>(s: &'a Storage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => Ok(&v[a..b]),
        _ => Err(Error::Config(
            "the CPU step reads its weights as contiguous f32 CPU tensors".into(),
        )),
    }
}
