//! AdamW with μP parameter groups, global-norm clipping and the step statistics the
//! observatory reports (pre-clip gradient norm, update norm, parameter norm).
//!
//! The update follows `torch.optim.AdamW` exactly, so that runs match the PyTorch reference:
//! ```text
//! g  ← g · min(1, clip / (‖g‖ + 1e-6))                  global norm over all tensors
//! θ  ← θ · (1 − lr_p · wd_p)                            decoupled weight decay
//! m  ← β₁ m + (1 − β₁) g ;  v ← β₂ v + (1 − β₂) g²
//! θ  ← θ − (lr_p / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
//! ```
//! with per-group `lr_p`: the embedding and the RMSNorm gains use `lr`, hidden matrices
//! `lr / width_mult` (μP); the gains have no weight decay.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::config::OptimConfig;
use crate::error::{Error, Result};
use crate::model::ParamGroup;

/// One parameter and its moments.
pub struct ParamState {
    pub name: String,
    pub var: Var,
    pub group: ParamGroup,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
}

/// What one optimiser step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    pub grad_norm: f64,
    pub update_norm: f64,
    pub param_norm: f64,
}

pub struct AdamW {
    cfg: OptimConfig,
    /// Update in place with the fused kernel (see [`AdamW::step`]).
    fused: bool,
    width_mult: f64,
    params: Vec<ParamState>,
    /// Number of steps taken (the t of the bias corrections).
    t: u64,
}

use wsdscope_kernels::{AdamWHparams, adamw_step, adamw_step_finite, sum_sq_many};

/// Gradient norms before clipping: global, per decoder layer and per μP group.
#[derive(Debug, Clone, PartialEq)]
pub struct GradNorms {
    pub total: f64,
    /// Index = decoder layer.
    pub per_layer: Vec<f64>,
    /// In [`ParamGroup::ALL`] order.
    pub per_group: Vec<f64>,
}

/// The decoder layer a tensor belongs to, from its HF name (`model.layers.{i}.…`).
pub fn layer_index(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

impl AdamW {
    pub fn new(named: &[(String, Var)], cfg: OptimConfig, width_mult: f64) -> Result<Self> {
        let params = named
            .iter()
            .map(|(name, var)| {
                Ok(ParamState {
                    name: name.clone(),
                    group: ParamGroup::of(name, var.rank()),
                    exp_avg: var.zeros_like()?,
                    exp_avg_sq: var.zeros_like()?,
                    var: var.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            fused: true,
            cfg,
            width_mult,
            params,
            t: 0,
        })
    }

    pub fn steps_taken(&self) -> u64 {
        self.t
    }

    pub fn params(&self) -> &[ParamState] {
        &self.params
    }

    /// (learning-rate multiplier, weight decay) of a group.
    fn group_hparams(&self, g: ParamGroup) -> (f64, f64) {
        match g {
            ParamGroup::Embedding => (1.0, self.cfg.weight_decay),
            ParamGroup::Hidden => (1.0 / self.width_mult, self.cfg.weight_decay),
            ParamGroup::Norm => (1.0, 0.0),
        }
    }

    /// Global norm of the gradients (before clipping). Missing gradients count as zero.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        Ok(self.grad_norms(grads, 0)?.total)
    }

    /// Global gradient norm, the norm of each of the first `layers` decoder layers' tensors
    /// (`model.layers.{i}.*`) and of each μP group, all before clipping.
    pub fn grad_norms(&self, grads: &GradStore, layers: usize) -> Result<GradNorms> {
        let mut total = 0.0;
        let mut per_layer = vec![0.0; layers];
        let mut per_group = vec![0.0; ParamGroup::ALL.len()];
        // Missing gradients count as zero.
        let present: Vec<(&ParamState, &Tensor)> = self
            .params
            .iter()
            .filter_map(|p| grads.get(&p.var).map(|g| (p, g)))
            .collect();
        let sums = sum_sq_many(&present.iter().map(|(_, g)| *g).collect::<Vec<_>>())?;
        for ((p, _), s) in present.iter().zip(sums) {
            total += s;
            if let Some(i) = layer_index(&p.name).filter(|&i| i < layers) {
                per_layer[i] += s;
            }
            per_group[p.group.index()] += s;
        }
        Ok(GradNorms {
            total: total.sqrt(),
            per_layer: per_layer.into_iter().map(f64::sqrt).collect(),
            per_group: per_group.into_iter().map(f64::sqrt).collect(),
        })
    }

    /// The learning-rate multiplier of a parameter's group (1/width_mult for hidden
    /// matrices under μP, 1 otherwise).
    pub fn lr_mult(&self, group: ParamGroup) -> f64 {
        self.group_hparams(group).0
    }

    /// Adam's diagonal preconditioner as the update sees it, per parameter in order:
    /// Δθ ≈ −lr·(lr_mult/((1 − β₁ᵗ)(√v̂ + ε)))·m, i.e. P⁻¹ relative to the base lr. Used for
    /// the preconditioned sharpness (Cohen et al. 2022), whose stability line is
    /// (2 + 2β₁)/((1 − β₁)·lr) = 38/lr for β₁ = 0.9.
    pub fn preconditioner_inv(&self) -> Result<Vec<Tensor>> {
        let t = self.t.max(1) as i32;
        let bc1 = 1.0 - self.cfg.beta1.powi(t);
        let bc2_sqrt = (1.0 - self.cfg.beta2.powi(t)).sqrt();
        self.params
            .iter()
            .map(|p| {
                let denom = ((p.exp_avg_sq.sqrt()? / bc2_sqrt)? + self.cfg.eps)?;
                Ok(denom.recip()?.affine(self.lr_mult(p.group) / bc1, 0.0)?)
            })
            .collect()
    }

    pub fn beta1(&self) -> f64 {
        self.cfg.beta1
    }

    /// Whether [`Self::step`] updates in place with the fused kernel (default) or stages the
    /// update with plain tensor ops (the kernel's slow twin, `--reference-ops`).
    pub fn set_fused(&mut self, fused: bool) {
        self.fused = fused;
    }

    /// One AdamW step at base learning rate `lr`. `grad_norm` is [`Self::grad_norm`] of the
    /// same gradients, which the caller has checked is finite. On success returns the step's
    /// statistics and max |Δθ| of every parameter, in parameter order.
    ///
    /// The step is all or nothing: `Ok(None)` if any new parameter or moment would not be
    /// finite, and then no tensor was written and t is unchanged. The staged path computes
    /// every new tensor first and commits them only if all are finite. The fused path first
    /// asks [`wsdscope_kernels::adamw_step_finite`] of every group, which computes each new
    /// θ, m and v exactly as the in-place update does, and only then updates in place (three
    /// passes per tensor, no allocation).
    pub fn step(
        &mut self,
        grads: &GradStore,
        lr: f64,
        grad_norm: f64,
    ) -> Result<Option<(StepStats, Vec<f64>)>> {
        if self.fused {
            self.step_fused(grads, lr, grad_norm)
        } else {
            self.step_staged(grads, lr, grad_norm)
        }
    }

    fn clip_scale(&self, grad_norm: f64) -> f64 {
        if self.cfg.clip > 0.0 {
            (self.cfg.clip / (grad_norm + 1e-6)).min(1.0)
        } else {
            1.0
        }
    }

    fn grad_of<'g>(&self, grads: &'g GradStore, p: &ParamState) -> Result<&'g Tensor> {
        grads
            .get(&p.var)
            .ok_or_else(|| Error::Config(format!("parameter {} received no gradient", p.name)))
    }

    /// The parameters, gradients and moments of the tensors `idx`, for the fused kernels.
    fn group_tensors<'a>(
        &'a self,
        grads: &'a GradStore,
        idx: &[usize],
    ) -> Result<[Vec<&'a Tensor>; 4]> {
        let ps = idx.iter().map(|&i| &self.params[i]);
        Ok([
            ps.clone().map(|p| p.var.as_tensor()).collect(),
            ps.clone()
                .map(|p| self.grad_of(grads, p))
                .collect::<Result<_>>()?,
            ps.clone().map(|p| &p.exp_avg).collect(),
            ps.map(|p| &p.exp_avg_sq).collect(),
        ])
    }

    fn step_fused(
        &mut self,
        grads: &GradStore,
        lr: f64,
        grad_norm: f64,
    ) -> Result<Option<(StepStats, Vec<f64>)>> {
        let t = (self.t + 1) as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let clip = self.clip_scale(grad_norm);
        // Each μP group's tensors (indices in parameter order) and hyper-parameters.
        let groups: Vec<(Vec<usize>, AdamWHparams)> = ParamGroup::ALL
            .into_iter()
            .filter_map(|group| {
                let idx: Vec<usize> = (0..self.params.len())
                    .filter(|&i| self.params[i].group == group)
                    .collect();
                let (lr_mult, wd) = self.group_hparams(group);
                let hp = AdamWHparams {
                    lr: lr * lr_mult,
                    beta1: b1,
                    beta2: b2,
                    eps: self.cfg.eps,
                    weight_decay: wd,
                    bias_correction1: 1.0 - b1.powi(t),
                    bias_correction2_sqrt: (1.0 - b2.powi(t)).sqrt(),
                    grad_scale: clip,
                };
                (!idx.is_empty()).then_some((idx, hp))
            })
            .collect();
        // Nothing is written unless every group's update is finite: in place, a half-applied
        // step could not be taken back.
        for (idx, hp) in &groups {
            let [p, g, m, v] = self.group_tensors(grads, idx)?;
            if !adamw_step_finite(&p, &g, &m, &v, hp)? {
                return Ok(None);
            }
        }
        let mut max_abs = vec![0.0; self.params.len()];
        let (mut upd_sq, mut par_sq) = (0.0, 0.0);
        for (idx, hp) in &groups {
            let [p, g, m, v] = self.group_tensors(grads, idx)?;
            let stats = adamw_step(&p, &g, &m, &v, hp)?;
            for (&i, s) in idx.iter().zip(stats) {
                upd_sq += s.update_sq;
                par_sq += s.param_sq;
                max_abs[i] = s.max_abs_update;
            }
        }
        self.t += 1;
        Ok(Some((
            StepStats {
                grad_norm,
                update_norm: upd_sq.sqrt(),
                param_norm: par_sq.sqrt(),
            },
            max_abs,
        )))
    }

    fn step_staged(
        &mut self,
        grads: &GradStore,
        lr: f64,
        grad_norm: f64,
    ) -> Result<Option<(StepStats, Vec<f64>)>> {
        let t = (self.t + 1) as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let clip = self.clip_scale(grad_norm);
        let (mut upd_sq, mut par_sq) = (0.0, 0.0);
        let mut moments_finite = true;
        let mut staged = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let (lr_mult, wd) = self.group_hparams(p.group);
            let g = self.grad_of(grads, p)?;
            let g = if clip < 1.0 {
                g.affine(clip, 0.0)?
            } else {
                g.clone()
            };
            let lr_p = lr * lr_mult;
            let theta = p.var.as_tensor();
            let decayed = if wd > 0.0 {
                theta.affine(1.0 - lr_p * wd, 0.0)?
            } else {
                theta.clone()
            };
            let m = ((&p.exp_avg * b1)? + (&g * (1.0 - b1))?)?;
            let v = ((&p.exp_avg_sq * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let denom = ((v.sqrt()? / bc2_sqrt)? + self.cfg.eps)?;
            let new = (decayed - (m.div(&denom)? * (lr_p / bc1))?)?;
            let delta = (&new - theta)?;
            let sums = sum_sq_many(&[&delta, &new, &m, &v])?;
            upd_sq += sums[0];
            par_sq += sums[1];
            // Σx² in f64 is finite exactly when every element is (for f32 tensors).
            moments_finite &= sums[2].is_finite() && sums[3].is_finite();
            let max = delta
                .abs()?
                .max_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            staged.push((new, m, v, max));
        }
        if !(par_sq.is_finite() && moments_finite) {
            return Ok(None);
        }
        let mut max_abs = Vec::with_capacity(staged.len());
        for (p, (new, m, v, max)) in self.params.iter_mut().zip(staged) {
            p.var.set(&new)?;
            p.exp_avg = m;
            p.exp_avg_sq = v;
            max_abs.push(max);
        }
        self.t += 1;
        Ok(Some((
            StepStats {
                grad_norm,
                update_norm: upd_sq.sqrt(),
                param_norm: par_sq.sqrt(),
            },
            max_abs,
        )))
    }

    /// Moments by name, for checkpoints: `{name}.exp_avg`, `{name}.exp_avg_sq`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .flat_map(|p| {
                [
                    (format!("{}.exp_avg", p.name), p.exp_avg.clone()),
                    (format!("{}.exp_avg_sq", p.name), p.exp_avg_sq.clone()),
                ]
            })
            .collect()
    }

    /// Restores moments written by [`Self::state_tensors`] and the step count.
    pub fn load_state(&mut self, mut tensors: HashMap<String, Tensor>, t: u64) -> Result<()> {
        for p in &mut self.params {
            for (suffix, slot) in [
                ("exp_avg", &mut p.exp_avg),
                ("exp_avg_sq", &mut p.exp_avg_sq),
            ] {
                let key = format!("{}.{suffix}", p.name);
                let v = tensors
                    .remove(&key)
                    .ok_or_else(|| Error::Config(format!("optimizer state lacks {key}")))?;
                if v.dims() != p.var.dims() {
                    return Err(Error::Config(format!(
                        "optimizer state {key} has shape {:?}, the parameter has {:?}",
                        v.dims(),
                        p.var.dims()
                    )));
                }
                *slot = v.to_device(p.var.device())?.to_dtype(p.var.dtype())?;
            }
        }
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// One step on f(θ) = ½‖θ‖² checked against the closed form of the first AdamW step:
    /// m̂ = g, v̂ = g², so θ' = θ(1 − lr·wd) − lr·g/(|g| + ε).
    #[test]
    fn first_step_matches_the_closed_form() {
        let dev = Device::Cpu;
        let theta = Var::from_vec(vec![1.0f64, -2.0, 0.5], 3, &dev).unwrap();
        let hidden = Var::from_vec(vec![0.3f64, 0.1, -0.2, 0.4], (2, 2), &dev).unwrap();
        let named = vec![
            ("model.norm.weight".to_string(), theta.clone()),
            (
                "model.layers.0.mlp.up_proj.weight".to_string(),
                hidden.clone(),
            ),
        ];
        let cfg = OptimConfig {
            clip: 0.0,
            ..OptimConfig::default()
        };
        let mut opt = AdamW::new(&named, cfg, 2.0).unwrap();
        let loss = ((theta.as_tensor().sqr().unwrap().sum_all().unwrap()
            + hidden.as_tensor().sqr().unwrap().sum_all().unwrap())
        .unwrap()
            * 0.5)
            .unwrap();
        let grads = loss.backward().unwrap();
        let gn = opt.grad_norm(&grads).unwrap();
        let lr = 0.1;
        let (stats, max_abs) = opt.step(&grads, lr, gn).unwrap().unwrap();
        assert_eq!(max_abs.len(), 2);
        let got = theta.as_tensor().to_vec1::<f64>().unwrap();
        for (g, x0) in got.iter().zip([1.0f64, -2.0, 0.5]) {
            // Norm gains: no weight decay, full lr.
            let want = x0 - lr * x0 / (x0.abs() + 1e-8);
            assert!((g - want).abs() < 1e-12, "{g} vs {want}");
        }
        let got = hidden
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for (g, x0) in got.iter().zip([0.3f64, 0.1, -0.2, 0.4]) {
            // Hidden matrix: lr / width_mult, decay 0.1.
            let lr_p = lr / 2.0;
            let want = x0 * (1.0 - lr_p * 0.1) - lr_p * x0 / (x0.abs() + 1e-8);
            assert!((g - want).abs() < 1e-12, "{g} vs {want}");
        }
        assert!((gn - (1.0f64 + 4.0 + 0.25 + 0.09 + 0.01 + 0.04 + 0.16).sqrt()).abs() < 1e-12);
        assert!(stats.update_norm > 0.0 && stats.param_norm > 0.0);
        let _ = DType::F64;
    }

    /// The fused in-place update and the staged plain-op update agree over several steps
    /// (with clipping and every group), in f32.
    #[test]
    fn fused_and_staged_updates_agree() {
        let dev = Device::Cpu;
        let mk = |seed: u64| {
            let mut x = seed;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32
            };
            let emb = Var::from_vec((0..60).map(|_| next()).collect(), (6, 10), &dev).unwrap();
            let hid = Var::from_vec((0..40).map(|_| next()).collect(), (4, 10), &dev).unwrap();
            let gain = Var::from_vec((0..10).map(|_| 1.0 + next()).collect(), 10, &dev).unwrap();
            vec![
                ("model.embed_tokens.weight".to_string(), emb),
                ("model.layers.0.mlp.up_proj.weight".to_string(), hid),
                ("model.norm.weight".to_string(), gain),
            ]
        };
        let (a, b) = (mk(7), mk(7));
        let mut fused = AdamW::new(&a, OptimConfig::default(), 2.0).unwrap();
        let mut staged = AdamW::new(&b, OptimConfig::default(), 2.0).unwrap();
        staged.set_fused(false);
        for step in 0..5 {
            let loss = |named: &[(String, Var)]| {
                let t = |i: usize| named[i].1.as_tensor();
                // Different scales per step so clipping engages on some steps.
                let k = 0.5 + step as f64;
                ((t(0).sqr().unwrap().sum_all().unwrap() * k).unwrap()
                    + t(1).sin().unwrap().sum_all().unwrap()
                    + (t(2).sqr().unwrap().sum_all().unwrap() * 0.3).unwrap())
                .unwrap()
            };
            let (ga, gb) = (loss(&a).backward().unwrap(), loss(&b).backward().unwrap());
            let (na, nb) = (
                fused.grad_norm(&ga).unwrap(),
                staged.grad_norm(&gb).unwrap(),
            );
            let (sa, ma) = fused.step(&ga, 0.01, na).unwrap().unwrap();
            let (sb, mb) = staged.step(&gb, 0.01, nb).unwrap().unwrap();
            assert!((sa.update_norm - sb.update_norm).abs() < 1e-5 * sb.update_norm);
            assert!((sa.param_norm - sb.param_norm).abs() < 1e-5 * sb.param_norm);
            for (x, y) in ma.iter().zip(&mb) {
                assert!((x - y).abs() < 1e-6 + 1e-4 * y, "max |Δθ| {x} vs {y}");
            }
        }
        for ((_, va), (_, vb)) in a.iter().zip(&b) {
            let (x, y) = (
                va.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
                vb.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            );
            for (p, q) in x.iter().zip(&y) {
                assert!((p - q).abs() < 1e-6, "{p} vs {q}");
            }
        }
    }

    /// Every parameter and moment as raw bits, and t.
    fn state_bits(opt: &AdamW) -> (Vec<Vec<u32>>, u64) {
        let bits = |t: &Tensor| -> Vec<u32> {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        };
        let tensors = opt
            .params()
            .iter()
            .flat_map(|p| {
                [
                    bits(p.var.as_tensor()),
                    bits(&p.exp_avg),
                    bits(&p.exp_avg_sq),
                ]
            })
            .collect();
        (tensors, opt.steps_taken())
    }

    /// A step whose update would not be finite returns `None` and writes nothing, on both
    /// paths: an infinite v' (|g| = 1e20 unclipped, whose θ' is finite: √v' = ∞ zeroes the
    /// update) and an overflowing θ' (an enormous lr). The next finite step then matches a
    /// twin that never saw the bad one.
    #[test]
    fn a_non_finite_update_writes_nothing() {
        let dev = Device::Cpu;
        let named = || {
            let emb = Var::from_vec(vec![0.1f32, -0.2, 0.3, 0.4], (2, 2), &dev).unwrap();
            let hid = Var::from_vec(vec![0.5f32, -0.1, 0.2, 0.3], (2, 2), &dev).unwrap();
            let gain = Var::from_vec(vec![1.0f32, 0.9], 2, &dev).unwrap();
            vec![
                ("model.embed_tokens.weight".to_string(), emb),
                ("model.layers.0.mlp.up_proj.weight".to_string(), hid),
                ("model.norm.weight".to_string(), gain),
            ]
        };
        // The gradients of scale·Σθ: `scale` everywhere.
        let grads = |named: &[(String, Var)], scale: f64| {
            named
                .iter()
                .map(|(_, v)| (v.as_tensor().sum_all().unwrap() * scale).unwrap())
                .reduce(|a, b| (a + b).unwrap())
                .unwrap()
                .backward()
                .unwrap()
        };
        let cfg = OptimConfig {
            clip: 0.0,
            ..OptimConfig::default()
        };
        for fused in [true, false] {
            for (what, scale, lr) in [("v'", 1e20, 0.01), ("θ'", 1.0, 1e39)] {
                let (a, b) = (named(), named());
                let (ga, gb, bad) = (grads(&a, 1.0), grads(&b, 1.0), grads(&a, scale));
                let mut opt = AdamW::new(&a, cfg.clone(), 2.0).unwrap();
                let mut twin = AdamW::new(&b, cfg.clone(), 2.0).unwrap();
                opt.set_fused(fused);
                twin.set_fused(fused);
                let gn = opt.grad_norm(&ga).unwrap();
                opt.step(&ga, 0.01, gn).unwrap().unwrap();
                twin.step(&gb, 0.01, gn).unwrap().unwrap();
                let before = state_bits(&opt);
                let bad_norm = opt.grad_norm(&bad).unwrap();
                assert!(bad_norm.is_finite());
                let got = opt.step(&bad, lr, bad_norm).unwrap();
                assert!(got.is_none(), "fused {fused}, non-finite {what}: applied");
                assert!(state_bits(&opt) == before, "fused {fused}, {what}: wrote");
                let (sa, _) = opt.step(&ga, 0.01, gn).unwrap().unwrap();
                let (sb, _) = twin.step(&gb, 0.01, gn).unwrap().unwrap();
                assert_eq!(sa, sb);
                assert!(
                    state_bits(&opt) == state_bits(&twin),
                    "fused {fused}, {what}"
                );
            }
        }
    }

    #[test]
    fn clipping_scales_the_gradient() {
        let dev = Device::Cpu;
        let x = Var::from_vec(vec![3.0f64, 4.0], 2, &dev).unwrap();
        let named = vec![("model.norm.weight".to_string(), x.clone())];
        let mut opt = AdamW::new(&named, OptimConfig::default(), 1.0).unwrap();
        // loss = 10·Σx → g = (10, 10), ‖g‖ = 14.14 > clip 1: Adam's first step is sign-like
        // regardless, so check the reported pre-clip norm and the moment scale instead.
        let grads = (x.as_tensor().sum_all().unwrap() * 10.0)
            .unwrap()
            .backward()
            .unwrap();
        let gn = opt.grad_norm(&grads).unwrap();
        assert!((gn - 200f64.sqrt()).abs() < 1e-12);
        opt.step(&grads, 0.01, gn).unwrap();
        let m = opt.params()[0].exp_avg.to_vec1::<f64>().unwrap();
        let clipped = 10.0 / (gn + 1e-6);
        assert!((m[0] - 0.1 * clipped).abs() < 1e-12, "{m:?}");
    }
}
