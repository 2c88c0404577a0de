//! The model as a [`wsdscope_probes::Objective`]: the loss of a fixed batch as a function of
//! the flattened parameter vector (all tensors in checkpoint order), so the landscape
//! estimators of `probes` run on it unchanged.
//!
//! A probe works on its own copy of the model, so nothing it does can touch the run's
//! parameters. The trait returns plain numbers; a candle error inside it is kept and turns
//! every later value into NaN, and [`ModelObjective::error`] reports it.

use candle_core::{DType, Tensor};
use wsdscope_probes::Objective;

use crate::error::{Error, Result};
use crate::model::MiniCpm;

/// Loss of `model` on one batch, over flat parameters.
pub struct ModelObjective {
    model: MiniCpm,
    x: Tensor,
    y: Tensor,
    /// (offset, len) of each parameter tensor in the flat vector.
    spans: Vec<(usize, usize)>,
    dim: usize,
    error: Option<Error>,
    /// Forward passes run (with or without backward).
    pub forwards: usize,
    /// Of which with a backward pass.
    pub backwards: usize,
}

/// Concatenates tensors into one f64 vector, in order.
pub fn flatten(ts: &[Tensor]) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(ts.iter().map(Tensor::elem_count).sum());
    for t in ts {
        out.extend(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?);
    }
    Ok(out)
}

impl ModelObjective {
    /// A copy of `model` evaluated on inputs `x` and targets `y` (both (B, T) u32).
    pub fn new(model: &MiniCpm, x: Tensor, y: Tensor) -> Result<Self> {
        let tensors = model
            .named_vars()
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let mut copy = MiniCpm::from_tensors(
            model.config(),
            model.max_seq(),
            tensors,
            model.device(),
            model.dtype(),
        )?;
        copy.set_ops(model.ops());
        // Probes difference gradients a step of 5e-5 apart (`probe::HVP_STEP`): that needs
        // passes in the parameters' own precision (f32) even where the run trains in bf16.
        copy.set_compute_dtype(model.dtype())?;
        let mut spans = Vec::new();
        let mut off = 0;
        for (_, v) in copy.named_vars() {
            spans.push((off, v.elem_count()));
            off += v.elem_count();
        }
        Ok(ModelObjective {
            model: copy,
            x,
            y,
            spans,
            dim: off,
            error: None,
            forwards: 0,
            backwards: 0,
        })
    }

    /// The parameters the objective was built from, flattened.
    pub fn params(&self) -> Result<Vec<f64>> {
        let ts: Vec<Tensor> = self
            .model
            .named_vars()
            .iter()
            .map(|(_, v)| v.as_tensor().clone())
            .collect();
        flatten(&ts)
    }

    /// Li et al.'s filters: each row of every 2-D tensor (an output neuron, or a token's
    /// embedding). 1-D tensors (RMSNorm gains) are not filters; see [`Self::gain_spans`].
    pub fn filters(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for ((_, v), &(off, _)) in self.model.named_vars().iter().zip(&self.spans) {
            if let [rows, cols] = v.dims() {
                out.extend((0..*rows).map(|r| (off + r * cols, *cols)));
            }
        }
        out
    }

    /// Spans of the 1-D tensors, which random directions leave at zero (Li et al. do the same
    /// for biases and normalisation parameters).
    pub fn gain_spans(&self) -> Vec<(usize, usize)> {
        self.model
            .named_vars()
            .iter()
            .zip(&self.spans)
            .filter(|((_, v), _)| v.rank() == 1)
            .map(|(_, &s)| s)
            .collect()
    }

    /// (offset, len) of each parameter tensor, in checkpoint order.
    pub fn spans(&self) -> &[(usize, usize)] {
        &self.spans
    }

    /// The first error any evaluation hit, if one did.
    pub fn error(&mut self) -> Option<Error> {
        self.error.take()
    }

    fn set(&self, theta: &[f64]) -> Result<()> {
        for ((_, var), &(off, len)) in self.model.named_vars().iter().zip(&self.spans) {
            let t = Tensor::from_slice(&theta[off..off + len], var.dims(), var.device())?
                .to_dtype(var.dtype())?;
            var.set(&t)?;
        }
        Ok(())
    }

    fn try_loss(&mut self, theta: &[f64]) -> Result<f64> {
        self.set(theta)?;
        self.forwards += 1;
        Ok(self
            .model
            .loss(&self.x, &self.y, false)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?)
    }

    fn try_loss_and_grad(&mut self, theta: &[f64]) -> Result<(f64, Vec<f64>)> {
        self.set(theta)?;
        self.forwards += 1;
        self.backwards += 1;
        let (loss, grads) = self.model.loss_and_grads(&self.x, &self.y)?;
        let mut g = Vec::with_capacity(self.dim);
        for (name, var) in self.model.named_vars() {
            let t = grads
                .get(var)
                .ok_or_else(|| Error::Config(format!("parameter {name} received no gradient")))?;
            g.extend(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?);
        }
        Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, g))
    }
}

impl Objective for ModelObjective {
    fn dim(&self) -> usize {
        self.dim
    }

    fn loss(&mut self, theta: &[f64]) -> f64 {
        if self.error.is_some() {
            return f64::NAN;
        }
        self.try_loss(theta).unwrap_or_else(|e| {
            self.error = Some(e);
            f64::NAN
        })
    }

    fn loss_and_grad(&mut self, theta: &[f64]) -> (f64, Vec<f64>) {
        if self.error.is_some() {
            return (f64::NAN, vec![f64::NAN; self.dim]);
        }
        self.try_loss_and_grad(theta).unwrap_or_else(|e| {
            self.error = Some(e);
            (f64::NAN, vec![f64::NAN; self.dim])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use candle_core::{Device, Var};
    use wsdscope_probes::{hvp, top_eigenvalue};

    /// A bigram language model — logits = W[x], mean cross-entropy — through candle autograd.
    /// Its Hessian is known in closed form: each position with context token c and softmax p
    /// adds (diag(p) − ppᵀ)/N to the block of row W[c].
    struct Bigram {
        v: usize,
        x: Vec<u32>,
        y: Vec<u32>,
    }

    impl Bigram {
        fn loss_graph(&self, w: &Tensor) -> Tensor {
            let dev = Device::Cpu;
            let x = Tensor::new(self.x.as_slice(), &dev).unwrap();
            let y = Tensor::new(self.y.as_slice(), &dev).unwrap();
            let logits = w.index_select(&x, 0).unwrap(); // (N, V)
            let m = logits.max_keepdim(1).unwrap().detach();
            let z = logits.broadcast_sub(&m).unwrap();
            let lse = z.exp().unwrap().sum_keepdim(1).unwrap().log().unwrap();
            let picked = z.gather(&y.unsqueeze(1).unwrap(), 1).unwrap();
            (lse - picked).unwrap().mean_all().unwrap()
        }

        fn hessian(&self, theta: &[f64]) -> Vec<Vec<f64>> {
            let (v, n) = (self.v, self.x.len());
            let mut h = vec![vec![0.0; v * v]; v * v];
            for &c in &self.x {
                let row = &theta[c as usize * v..(c as usize + 1) * v];
                let mx = row.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = row.iter().map(|a| (a - mx).exp()).collect();
                let s: f64 = e.iter().sum();
                let p: Vec<f64> = e.iter().map(|x| x / s).collect();
                let base = c as usize * v;
                for i in 0..v {
                    for j in 0..v {
                        let d = if i == j { p[i] } else { 0.0 };
                        h[base + i][base + j] += (d - p[i] * p[j]) / n as f64;
                    }
                }
            }
            h
        }
    }

    impl Objective for Bigram {
        fn dim(&self) -> usize {
            self.v * self.v
        }
        fn loss(&mut self, theta: &[f64]) -> f64 {
            self.loss_and_grad(theta).0
        }
        fn loss_and_grad(&mut self, theta: &[f64]) -> (f64, Vec<f64>) {
            let w = Var::from_vec(theta.to_vec(), (self.v, self.v), &Device::Cpu).unwrap();
            let loss = self.loss_graph(w.as_tensor());
            let g = loss.backward().unwrap();
            let g = g.get(&w).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            (loss.to_scalar::<f64>().unwrap(), g)
        }
    }

    #[test]
    fn finite_difference_hvp_matches_the_exact_hessian_of_a_small_model() {
        let v = 6;
        let mut f = Bigram {
            v,
            x: vec![0, 1, 2, 1, 3, 5, 4, 0, 2, 2],
            y: vec![1, 2, 1, 3, 5, 4, 0, 2, 2, 3],
        };
        let theta: Vec<f64> = (0..v * v)
            .map(|i| ((i * 37 % 11) as f64 - 5.0) * 0.3)
            .collect();
        let h = f.hessian(&theta);
        let dir: Vec<f64> = (0..v * v)
            .map(|i| ((i * 13 % 7) as f64 - 3.0) * 0.1)
            .collect();
        let got = hvp(&mut f, &theta, &dir, 1e-4);
        let want: Vec<f64> = h
            .iter()
            .map(|row| row.iter().zip(&dir).map(|(a, b)| a * b).sum())
            .collect();
        let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let err = got
            .iter()
            .zip(&want)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("bigram HVP: max |Δ| {err:.2e} (max |Hv| {scale:.3})");
        assert!(err < 1e-6 * scale.max(1.0), "{err} vs scale {scale}");
        // Power iteration against the exact top eigenvalue (from the exact Hessian by power
        // iteration on the matrix itself, which has no finite differences in it).
        let mut q = vec![1.0; v * v];
        let mut lam = 0.0;
        for _ in 0..2000 {
            let w: Vec<f64> = h
                .iter()
                .map(|row| row.iter().zip(&q).map(|(a, b)| a * b).sum())
                .collect();
            let n = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            lam = w.iter().zip(&q).map(|(a, b)| a * b).sum();
            q = w.iter().map(|x| x / n).collect();
        }
        let (est, _, _) = top_eigenvalue(&mut f, &theta, &vec![1.0; v * v], 1e-4, 1e-10, 2000);
        eprintln!("bigram top eigenvalue: exact {lam:.6}, finite differences {est:.6}");
        assert!((est - lam).abs() / lam < 1e-3, "{est} vs {lam}");
    }

    fn tiny() -> (MiniCpm, Tensor, Tensor) {
        let mut cfg = ModelConfig::minicpm(16, 24, 2, 1, 2, 32);
        cfg.dim_model_base = 8;
        let dev = Device::Cpu;
        let m = MiniCpm::init(&cfg, 8, 3, &dev, DType::F64).unwrap();
        let x = Tensor::from_vec((0..16u32).map(|i| i * 7 % 32).collect(), (2, 8), &dev).unwrap();
        let y = Tensor::from_vec((0..16u32).map(|i| i * 5 % 32).collect(), (2, 8), &dev).unwrap();
        (m, x, y)
    }

    #[test]
    fn the_minicpm_objective_has_a_symmetric_hessian_and_consistent_curvature() {
        let (m, x, y) = tiny();
        let mut f = ModelObjective::new(&m, x, y).unwrap();
        let theta = f.params().unwrap();
        let n = f.dim();
        let u: Vec<f64> = (0..n).map(|i| ((i * 31 % 17) as f64 - 8.0) / 8.0).collect();
        let w: Vec<f64> = (0..n).map(|i| ((i * 7 % 13) as f64 - 6.0) / 6.0).collect();
        let eps = 1e-4;
        let hu = hvp(&mut f, &theta, &u, eps);
        let hw = hvp(&mut f, &theta, &w, eps);
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let (a, b) = (dot(&w, &hu), dot(&u, &hw));
        eprintln!("MiniCPM HVP symmetry: wᵀHu {a:.6e}, uᵀHw {b:.6e}");
        assert!((a - b).abs() < 1e-5 * a.abs().max(b.abs()), "{a} vs {b}");
        // uᵀHu against the second difference of the loss itself (no gradients involved).
        let nu = dot(&u, &u).sqrt();
        let h = 1e-3;
        let at = |s: f64, f: &mut ModelObjective| {
            let th: Vec<f64> = theta.iter().zip(&u).map(|(t, d)| t + s * d / nu).collect();
            f.loss(&th)
        };
        let second = (at(h, &mut f) - 2.0 * at(0.0, &mut f) + at(-h, &mut f)) / (h * h);
        let from_hvp = dot(&u, &hu) / (nu * nu);
        eprintln!("MiniCPM curvature along u: HVP {from_hvp:.6}, loss differences {second:.6}");
        assert!((second - from_hvp).abs() < 1e-3 * from_hvp.abs().max(1.0));
        assert!(f.error().is_none());
        // Filters tile exactly the 2-D tensors; gains are the rest.
        let covered: usize = f.filters().iter().map(|f| f.1).sum::<usize>()
            + f.gain_spans().iter().map(|s| s.1).sum::<usize>();
        assert_eq!(covered, n);
    }
}
