//! Fused AdamW step for all tensors of one parameter group, updating parameters and both
//! moments in place, with the step statistics the observatory reports computed in the same
//! passes: Σ(Δθ)², Σθ_new² and max|Δθ| per tensor.
//!
//! The arithmetic follows `torch.optim.AdamW` as written in the trainer's optimiser, in
//! the same order (so f32 results match the plain-op twin to the last bit or so):
//! ```text
//! g ← g·c                                              c = grad_scale (clip factor)
//! m ← β₁·m + (1 − β₁)·g ;  v ← β₂·v + (1 − β₂)·g²
//! θ ← θ·(1 − lr·wd) − (lr/bc₁) · m / (√v·(1/√bc₂) + ε)
//! ```
//!
//! In-place writes go through candle's `Tensor::inplace_op2/3`, which lock exactly one
//! destination storage per call: the public API cannot write θ, m and v in one call. So
//! one step is three in-place passes per tensor (m from g; v from g; θ from m and v, which
//! also yields the statistics), with no allocation at all.
//!
//! In place, a step cannot be undone, so [`crate::adamw_step_finite`] answers first, reading
//! only, whether the step would leave every θ, m and v finite. Both compute each element
//! through the same functions (`StepConsts`), so the answer is exact: a caller that checks
//! every group before stepping any (as the trainer does) makes the step all-or-nothing.
//!
//! This module holds the step's data types, its CPU passes and its plain-op twin; the entry
//! points, which send a CUDA group to the fused kernels instead, are in `optim`.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
use rayon::prelude::*;

use crate::cpu::{self, GRAIN, Real, check_cpu, check_float, simd_fn, unsupported};
use crate::error::{Error, shape_err};

const OP: &str = "adamw_step";

/// Hyper-parameters of one AdamW step for one parameter group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWHparams {
    /// Learning rate of the group (after μP scaling and the schedule).
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay (0 for none).
    pub weight_decay: f64,
    /// 1 − β₁ᵗ.
    pub bias_correction1: f64,
    /// √(1 − β₂ᵗ).
    pub bias_correction2_sqrt: f64,
    /// Factor applied to the gradients first (global-norm clipping), 1 for none.
    pub grad_scale: f64,
}

/// What one step did to one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AdamWStats {
    /// Σ(θ_new − θ_old)².
    pub update_sq: f64,
    /// Σθ_new².
    pub param_sq: f64,
    /// max |θ_new − θ_old|.
    pub max_abs_update: f64,
}

impl AdamWStats {
    fn merge(self, o: AdamWStats) -> AdamWStats {
        AdamWStats {
            update_sq: self.update_sq + o.update_sq,
            param_sq: self.param_sq + o.param_sq,
            max_abs_update: self.max_abs_update.max(o.max_abs_update),
        }
    }
}

/// g·c, skipping the multiply when there is no clipping (as the trainer does).
#[inline(always)]
fn scaled<T: Real>(g: T, c: Option<T>) -> T {
    match c {
        Some(c) => g * c,
        None => g,
    }
}

/// The constants of one step in the element type, and the arithmetic of one element. The
/// in-place passes and the finiteness check both compute through these methods, so the
/// check sees exactly the values the update writes.
#[derive(Clone, Copy)]
struct StepConsts<T> {
    /// The clip factor c, or `None` for no clipping.
    clip: Option<T>,
    beta1: T,
    one_minus_beta1: T,
    beta2: T,
    one_minus_beta2: T,
    /// 1 − lr·wd, or exactly 1 without weight decay (θ·1 = θ, bit for bit).
    decay: T,
    inv_bc2: T,
    eps: T,
    /// lr / bc₁.
    step: T,
}

impl<T: Real> StepConsts<T> {
    fn new(hp: &AdamWHparams) -> Self {
        StepConsts {
            clip: (hp.grad_scale != 1.0).then(|| T::from_f64(hp.grad_scale)),
            beta1: T::from_f64(hp.beta1),
            one_minus_beta1: T::from_f64(1.0 - hp.beta1),
            beta2: T::from_f64(hp.beta2),
            one_minus_beta2: T::from_f64(1.0 - hp.beta2),
            decay: if hp.weight_decay > 0.0 {
                T::from_f64(1.0 - hp.lr * hp.weight_decay)
            } else {
                T::one()
            },
            inv_bc2: T::from_f64(1.0 / hp.bias_correction2_sqrt),
            eps: T::from_f64(hp.eps),
            step: T::from_f64(hp.lr / hp.bias_correction1),
        }
    }

    /// m' = β₁·m + (1 − β₁)·g·c.
    #[inline(always)]
    fn exp_avg(self, m: T, g: T) -> T {
        m * self.beta1 + scaled(g, self.clip) * self.one_minus_beta1
    }

    /// v' = β₂·v + (1 − β₂)·(g·c)².
    #[inline(always)]
    fn exp_avg_sq(self, v: T, g: T) -> T {
        let g = scaled(g, self.clip);
        v * self.beta2 + g * g * self.one_minus_beta2
    }

    /// θ' = θ·(1 − lr·wd) − (lr/bc₁)·m' / (√v'·(1/√bc₂) + ε), from the new moments.
    #[inline(always)]
    fn param(self, theta: T, m: T, v: T) -> T {
        let denom = v.sqrt() * self.inv_bc2 + self.eps;
        theta * self.decay - (m / denom) * self.step
    }
}

/// In place on a moment: m ← β₁·m + (1 − β₁)·g·c, or with `second`
/// v ← β₂·v + (1 − β₂)·(g·c)².
struct Moment {
    hp: AdamWHparams,
    second: bool,
}
/// θ update from the new m, v (in place on θ), accumulating the statistics.
struct ParamUpdate {
    hp: AdamWHparams,
    stats: Mutex<AdamWStats>,
}

fn moment<T: Real>(dst: &mut [T], g: &[T], hp: &AdamWHparams, second: bool) {
    let k = StepConsts::<T>::new(hp);
    dst.par_chunks_mut(GRAIN)
        .zip(g.par_chunks(GRAIN))
        .for_each(|(dc, gc)| {
            if second {
                for (v, &g) in dc.iter_mut().zip(gc) {
                    *v = k.exp_avg_sq(*v, g);
                }
            } else {
                for (m, &g) in dc.iter_mut().zip(gc) {
                    *m = k.exp_avg(*m, g);
                }
            }
        });
}

fn param_update<T: Real>(theta: &mut [T], m: &[T], v: &[T], hp: &AdamWHparams) -> AdamWStats {
    let k = StepConsts::<T>::new(hp);
    let parts: Vec<AdamWStats> = theta
        .par_chunks_mut(GRAIN)
        .zip(m.par_chunks(GRAIN).zip(v.par_chunks(GRAIN)))
        .map(|(tc, (mc, vc))| update_chunk(tc, mc, vc, k))
        .collect();
    parts
        .into_iter()
        .fold(AdamWStats::default(), AdamWStats::merge)
}

/// Updates one chunk of θ, then takes the statistics from a small buffer of the deltas
/// with lane-parallel reductions (a running f64 sum per element would not vectorise).
#[inline(always)]
fn update_chunk_body<T: Real>(theta: &mut [T], m: &[T], v: &[T], k: StepConsts<T>) -> AdamWStats {
    const BLOCK: usize = 256;
    let mut s = AdamWStats::default();
    let mut delta = [T::zero(); BLOCK];
    for ((tc, mc), vc) in theta
        .chunks_mut(BLOCK)
        .zip(m.chunks(BLOCK))
        .zip(v.chunks(BLOCK))
    {
        let dl = &mut delta[..tc.len()];
        for ((th, d), (&mi, &vi)) in tc.iter_mut().zip(dl.iter_mut()).zip(mc.iter().zip(vc)) {
            let old = *th;
            let new = k.param(old, mi, vi);
            *th = new;
            *d = new - old;
        }
        s.update_sq += cpu::sum_sq_f64(dl);
        s.param_sq += cpu::sum_sq_f64(tc);
        s.max_abs_update = s.max_abs_update.max(cpu::max_abs(dl).to_f64());
    }
    s
}
simd_fn!(fn update_chunk<T: Real>(theta: &mut [T], m: &[T], v: &[T], k: StepConsts<T>) -> AdamWStats => update_chunk_body);

/// Whether the new m, v and θ of every element of one chunk are finite. Every element is
/// computed (no early exit), so the loop vectorises.
#[inline(always)]
fn finite_chunk_body<T: Real>(theta: &[T], g: &[T], m: &[T], v: &[T], k: StepConsts<T>) -> bool {
    let n = theta.len();
    let (g, m, v) = (&g[..n], &m[..n], &v[..n]);
    let mut finite = true;
    for i in 0..n {
        let m1 = k.exp_avg(m[i], g[i]);
        let v1 = k.exp_avg_sq(v[i], g[i]);
        let theta1 = k.param(theta[i], m1, v1);
        finite &= m1.is_finite() & v1.is_finite() & theta1.is_finite();
    }
    finite
}
simd_fn!(fn finite_chunk<T: Real>(theta: &[T], g: &[T], m: &[T], v: &[T], k: StepConsts<T>) -> bool => finite_chunk_body);

/// [`crate::adamw_step_finite`] for one CPU tensor with elements `T`: chunks on the rayon
/// pool.
fn step_finite<T: Real>(
    theta: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    hp: &AdamWHparams,
) -> Result<bool> {
    let (ts, tl) = theta.storage_and_layout();
    let (gs, gl) = grad.storage_and_layout();
    let (ms, ml) = exp_avg.storage_and_layout();
    let (vs, vl) = exp_avg_sq.storage_and_layout();
    let th = cpu::storage_slice::<T>(&ts, tl, OP, "param")?;
    let g = cpu::storage_slice::<T>(&gs, gl, OP, "grad")?;
    let m = cpu::storage_slice::<T>(&ms, ml, OP, "exp_avg")?;
    let v = cpu::storage_slice::<T>(&vs, vl, OP, "exp_avg_sq")?;
    let k = StepConsts::<T>::new(hp);
    Ok(th
        .par_chunks(GRAIN)
        .zip(g.par_chunks(GRAIN))
        .zip(m.par_chunks(GRAIN).zip(v.par_chunks(GRAIN)))
        .all(|((tc, gc), (mc, vc))| finite_chunk(tc, gc, mc, vc, k)))
}

fn moment_typed<T: Real>(
    dst: &mut CpuStorage,
    dl: &Layout,
    g: &CpuStorage,
    gl: &Layout,
    hp: &AdamWHparams,
    second: bool,
) -> Result<()> {
    let what = if second { "exp_avg_sq" } else { "exp_avg" };
    let g = cpu::slice::<T>(g, gl, OP, "grad")?;
    let d = cpu::slice_mut::<T>(dst, dl, OP, what)?;
    moment(d, g, hp, second);
    Ok(())
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        if self.second {
            "adamw_exp_avg_sq"
        } else {
            "adamw_exp_avg"
        }
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        match s1.dtype() {
            DType::F32 => moment_typed::<f32>(s1, l1, s2, l2, &self.hp, self.second),
            DType::F64 => moment_typed::<f64>(s1, l1, s2, l2, &self.hp, self.second),
            dt => Err(unsupported(OP, dt)),
        }
    }
}

impl ParamUpdate {
    fn run<T: Real>(
        &self,
        th: &mut CpuStorage,
        tl: &Layout,
        m: &CpuStorage,
        ml: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> Result<()> {
        let m = cpu::slice::<T>(m, ml, OP, "exp_avg")?;
        let v = cpu::slice::<T>(v, vl, OP, "exp_avg_sq")?;
        let th = cpu::slice_mut::<T>(th, tl, OP, "param")?;
        let s = param_update(th, m, v, &self.hp);
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = s;
        Ok(())
    }
}

impl InplaceOp3 for ParamUpdate {
    fn name(&self) -> &'static str {
        "adamw_param"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        match s1.dtype() {
            DType::F32 => self.run::<f32>(s1, l1, s2, l2, s3, l3),
            DType::F64 => self.run::<f64>(s1, l1, s2, l2, s3, l3),
            dt => Err(unsupported(OP, dt)),
        }
    }
}

/// Checks a group as every entry point needs it: four lists of one length, each tensor on a
/// device the step runs on, of the parameter's float dtype and shape, θ, m and v contiguous.
pub(crate) fn check_group(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avg: &[&Tensor],
    exp_avg_sq: &[&Tensor],
) -> Result<()> {
    let n = params.len();
    if grads.len() != n || exp_avg.len() != n || exp_avg_sq.len() != n {
        return Err(shape_err(
            OP,
            format!(
                "{n} params but {} grads, {} exp_avg, {} exp_avg_sq",
                grads.len(),
                exp_avg.len(),
                exp_avg_sq.len()
            ),
        ));
    }
    for i in 0..n {
        let p = params[i];
        check_cpu(p, OP, "param")?;
        check_float(p, OP)?;
        for (t, what, in_place) in [
            (grads[i], "grad", false),
            (exp_avg[i], "exp_avg", true),
            (exp_avg_sq[i], "exp_avg_sq", true),
        ] {
            check_cpu(t, OP, what)?;
            cpu::check_same_dtype(t, p, OP, what)?;
            if t.dims() != p.dims() {
                return Err(shape_err(
                    OP,
                    format!(
                        "tensor {i}: {what} has shape {:?}, param {:?}",
                        t.dims(),
                        p.dims()
                    ),
                ));
            }
            if in_place && !t.is_contiguous() {
                return Err(Error::NonContiguous { op: OP, what }.into());
            }
        }
        if !p.is_contiguous() {
            return Err(Error::NonContiguous {
                op: OP,
                what: "param",
            }
            .into());
        }
    }
    Ok(())
}

/// [`crate::adamw_step`] on the CPU, for a group [`check_group`] accepted: per tensor, m
/// and v from g, then θ from the new moments (which also yields the statistics).
pub(crate) fn adamw_step_cpu(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avg: &[&Tensor],
    exp_avg_sq: &[&Tensor],
    hp: &AdamWHparams,
) -> Result<Vec<AdamWStats>> {
    let mut out = Vec::with_capacity(params.len());
    for i in 0..params.len() {
        let g = grads[i].contiguous()?;
        let moment = |second| Moment { hp: *hp, second };
        exp_avg[i].inplace_op2(&g, &moment(false))?;
        exp_avg_sq[i].inplace_op2(&g, &moment(true))?;
        let upd = ParamUpdate {
            hp: *hp,
            stats: Mutex::new(AdamWStats::default()),
        };
        params[i].inplace_op3(exp_avg[i], exp_avg_sq[i], &upd)?;
        out.push(upd.stats.into_inner().unwrap_or_else(|e| e.into_inner()));
    }
    Ok(out)
}

/// [`crate::adamw_step_finite`] on the CPU, for a group [`check_group`] accepted: each
/// tensor read once, on rayon's pool, stopping at the first that would not stay finite.
pub(crate) fn adamw_step_finite_cpu(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avg: &[&Tensor],
    exp_avg_sq: &[&Tensor],
    hp: &AdamWHparams,
) -> Result<bool> {
    for i in 0..params.len() {
        let g = grads[i].contiguous()?;
        let (p, m, v) = (params[i], exp_avg[i], exp_avg_sq[i]);
        let finite = match p.dtype() {
            DType::F32 => step_finite::<f32>(p, &g, m, v, hp)?,
            DType::F64 => step_finite::<f64>(p, &g, m, v, hp)?,
            dt => return Err(unsupported(OP, dt)),
        };
        if !finite {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The result of [`adamw_step_slow`] for one tensor: new values instead of in-place writes.
#[derive(Debug, Clone)]
pub struct AdamWSlowStep {
    pub param: Tensor,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
    pub stats: AdamWStats,
}

/// [`crate::adamw_step`] from plain candle ops (the trainer's formulation), returning the
/// new parameters and moments rather than writing them.
pub fn adamw_step_slow(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avg: &[&Tensor],
    exp_avg_sq: &[&Tensor],
    hp: &AdamWHparams,
) -> Result<Vec<AdamWSlowStep>> {
    check_group(params, grads, exp_avg, exp_avg_sq)?;
    let (b1, b2) = (hp.beta1, hp.beta2);
    (0..params.len())
        .map(|i| {
            let theta = params[i];
            let g = if hp.grad_scale != 1.0 {
                grads[i].affine(hp.grad_scale, 0.0)?
            } else {
                grads[i].clone()
            };
            let decayed = if hp.weight_decay > 0.0 {
                theta.affine(1.0 - hp.lr * hp.weight_decay, 0.0)?
            } else {
                theta.clone()
            };
            let m = ((exp_avg[i] * b1)? + (&g * (1.0 - b1))?)?;
            let v = ((exp_avg_sq[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let denom = ((v.sqrt()? / hp.bias_correction2_sqrt)? + hp.eps)?;
            let new = (decayed - (m.div(&denom)? * (hp.lr / hp.bias_correction1))?)?;
            let delta = (&new - theta)?.to_dtype(DType::F64)?;
            let stats = AdamWStats {
                update_sq: delta.sqr()?.sum_all()?.to_scalar::<f64>()?,
                param_sq: new
                    .to_dtype(DType::F64)?
                    .sqr()?
                    .sum_all()?
                    .to_scalar::<f64>()?,
                max_abs_update: delta.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?,
            };
            Ok(AdamWSlowStep {
                param: new,
                exp_avg: m,
                exp_avg_sq: v,
                stats,
            })
        })
        .collect()
}
