//! MiniCPM (Hu et al. 2024, arXiv 2404.06395; HF `modeling_minicpm.py`) on candle tensors.
//!
//! ```text
//! h  = embed(x) · scale_emb                                   (B·T, H)
//! for each of the L blocks, with s = scale_depth / √L:
//!     h += s · Attn(RMSNorm(h))         causal GQA, RoPE, softmax(q·kᵀ/√d_head)
//!     h += s · SwiGLU(RMSNorm(h))       down(silu(gate(x)) ⊙ up(x))
//! logits = RMSNorm(h) / (H / dim_model_base) · embedᵀ          tied head, (B·T, V)
//! loss   = mean cross-entropy
//! ```
//!
//! μP ("model wind tunnel"): 2-D hidden matrices start at N(0, init_std/√(H/dim_model_base)),
//! the embedding at N(0, init_std), RMSNorm gains at 1; per-tensor learning rates are set by
//! the optimiser from [`ParamGroup`].
//!
//! By default RMSNorm, RoPE, attention, SwiGLU and the cross-entropy run as the fused ops of
//! `wsdscope_kernels` (forward and backward; flash-style attention, a cross-entropy that
//! keeps no B·T·V probabilities). [`Ops::Reference`] (`--reference-ops`) runs the same maths
//! as plain candle ops instead — the kernels' slow twins — which the tests compare against.
//! (candle-nn's fused `rms_norm`, `softmax_last_dim` and `rope` silently return no gradient,
//! so they are never used.) Tensor names are the HF MiniCPM checkpoint keys.

mod cpu;
pub mod step;
pub mod tree;

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{D, DType, Device, Tensor, Var};
use wsdscope_kernels::backend::cpu::CpuPool;

use crate::config::{ModelConfig, Precision};
// The parameters' names and shapes follow from the configuration alone, so they live with
// it; re-exported here, where a reader of the model looks for them.
pub use crate::config::{param_names, param_shapes};
use crate::data::rng::{SplitMix64, hash};
use crate::error::{Error, Result};

/// The squared norms of a step's leaf gradients (`tree.rs`), where it was asked for them and
/// computes in leaves.
pub type Leaves = Option<Vec<tree::LeafNorm>>;

/// The μP parameter group a tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamGroup {
    /// The token embedding (and tied head): lr, weight decay.
    Embedding,
    /// 2-D hidden matrices: lr / width_mult, weight decay.
    Hidden,
    /// RMSNorm gains: lr, no weight decay.
    Norm,
}

impl ParamGroup {
    /// Every group, in the order per-group metrics are reported.
    pub const ALL: [ParamGroup; 3] = [ParamGroup::Embedding, ParamGroup::Hidden, ParamGroup::Norm];

    /// Position in [`Self::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            ParamGroup::Embedding => "embedding",
            ParamGroup::Hidden => "hidden",
            ParamGroup::Norm => "norm",
        }
    }

    pub fn of(name: &str, rank: usize) -> Self {
        if name.ends_with("embed_tokens.weight") {
            ParamGroup::Embedding
        } else if rank == 2 {
            ParamGroup::Hidden
        } else {
            ParamGroup::Norm
        }
    }
}

/// Which implementation of the model's ops runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ops {
    /// The fused kernels (default).
    #[default]
    Fused,
    /// Plain candle ops (the kernels' slow twins).
    Reference,
}

/// One decoder block's weights.
struct Block {
    input_layernorm: Var,          // (H)
    q_proj: Var,                   // (nh·hd, H)
    k_proj: Var,                   // (kv·hd, H)
    v_proj: Var,                   // (kv·hd, H)
    o_proj: Var,                   // (H, nh·hd)
    post_attention_layernorm: Var, // (H)
    gate_proj: Var,                // (F, H)
    up_proj: Var,                  // (F, H)
    down_proj: Var,                // (H, F)
}

/// A MiniCPM decoder with its parameters as candle `Var`s.
pub struct MiniCpm {
    cfg: ModelConfig,
    embed_tokens: Var, // (V, H)
    layers: Vec<Block>,
    norm: Var, // (H)
    /// All parameters in checkpoint order, with their HF names.
    named: Vec<(String, Var)>,
    rope_cos: Tensor, // (max_seq, hd)
    rope_sin: Tensor, // (max_seq, hd)
    max_seq: usize,
    device: Device,
    dtype: DType,
    /// The dtype the passes compute in: `dtype`, or bf16 over f32 parameters (mixed
    /// precision: each weight is cast on use, so gradients reach the f32 masters).
    compute: DType,
    ops: Ops,
    /// Buffers the CPU step reuses from one step to the next.
    pool: CpuPool,
    /// The CUDA step's backend (its buffer pool, the device's stream and cuBLAS handle),
    /// made at the first CUDA step.
    #[cfg(feature = "cuda")]
    cuda: std::sync::OnceLock<wsdscope_kernels::backend::cuda::Cuda>,
}

/// FNV-1a of a name, to seed each tensor's init independently of the others.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

impl MiniCpm {
    /// μP initialisation, a pure function of `seed` (each tensor from its own stream).
    pub fn init(
        cfg: &ModelConfig,
        max_seq: usize,
        seed: u64,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let hidden_std = cfg.init_std / cfg.width_mult().sqrt();
        let mut tensors = HashMap::new();
        for (name, shape) in param_shapes(cfg) {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = match ParamGroup::of(&name, shape.len()) {
                ParamGroup::Norm => vec![1.0; n],
                g => {
                    let std = if g == ParamGroup::Embedding {
                        cfg.init_std
                    } else {
                        hidden_std
                    };
                    let mut rng = SplitMix64::new(hash(&[seed, name_hash(&name)]));
                    (0..n).map(|_| (rng.normal() * std) as f32).collect()
                }
            };
            tensors.insert(name, Tensor::from_vec(data, shape, device)?);
        }
        Self::from_tensors(cfg, max_seq, tensors, device, dtype)
    }

    /// Builds the model from named tensors (HF names); every parameter must be present with
    /// its shape. Tensors are copied, so the model never aliases the caller's storage.
    pub fn from_tensors(
        cfg: &ModelConfig,
        max_seq: usize,
        mut tensors: HashMap<String, Tensor>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let mut named = Vec::new();
        for (name, shape) in param_shapes(cfg) {
            let t = tensors
                .remove(&name)
                .ok_or_else(|| Error::Config(format!("weights lack tensor {name}")))?;
            if t.dims() != shape.as_slice() {
                return Err(Error::Config(format!(
                    "tensor {name} has shape {:?}, the model wants {shape:?}",
                    t.dims()
                )));
            }
            let t = t.to_device(device)?.to_dtype(dtype)?.copy()?;
            named.push((name, Var::from_tensor(&t)?));
        }
        let var = |i: usize| named[i].1.clone();
        let mut layers = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let b = 1 + 9 * l;
            layers.push(Block {
                input_layernorm: var(b),
                q_proj: var(b + 1),
                k_proj: var(b + 2),
                v_proj: var(b + 3),
                o_proj: var(b + 4),
                post_attention_layernorm: var(b + 5),
                gate_proj: var(b + 6),
                up_proj: var(b + 7),
                down_proj: var(b + 8),
            });
        }
        let (rope_cos, rope_sin) =
            rope_tables(max_seq, cfg.head_dim(), cfg.rope_theta, device, dtype)?;
        Ok(MiniCpm {
            cfg: cfg.clone(),
            embed_tokens: var(0),
            norm: var(named.len() - 1),
            layers,
            named,
            rope_cos,
            rope_sin,
            max_seq,
            device: device.clone(),
            dtype,
            compute: dtype,
            ops: Ops::default(),
            pool: CpuPool::default(),
            #[cfg(feature = "cuda")]
            cuda: Default::default(),
        })
    }

    /// Chooses the implementation of the ops (fused by default).
    pub fn set_ops(&mut self, ops: Ops) {
        self.ops = ops;
    }

    pub fn ops(&self) -> Ops {
        self.ops
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Computes in `dt`: the parameters' dtype, or bf16 over f32 parameters on CUDA (mixed
    /// precision; the loss stays f32).
    pub fn set_compute_dtype(&mut self, dt: DType) -> Result<()> {
        let mixed = dt == DType::BF16 && self.dtype == DType::F32 && self.device.is_cuda();
        if dt != self.dtype && !mixed {
            return Err(Error::Config(format!(
                "computing in {dt:?} over {:?} parameters on {:?} is not supported; bf16 mixed \
                 precision needs f32 parameters on a CUDA device",
                self.dtype,
                self.device.location()
            )));
        }
        self.compute = dt;
        Ok(())
    }

    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    pub fn max_seq(&self) -> usize {
        self.max_seq
    }

    /// Bytes the CPU step's scratch pool holds between steps (what the memory estimate
    /// models; see `memory/`).
    pub fn scratch_bytes(&self) -> u64 {
        self.pool.bytes()
    }

    /// Every parameter with its HF name, in checkpoint order.
    pub fn named_vars(&self) -> &[(String, Var)] {
        &self.named
    }

    /// RoPE's cos and sin tables (max_seq, head_dim), in the parameters' dtype.
    pub fn rope_tables(&self) -> (&Tensor, &Tensor) {
        (&self.rope_cos, &self.rope_sin)
    }

    /// Mean next-token cross-entropy of `inputs` → `targets`, both (B, T) u32.
    /// With `grad` false the weights are detached, so no graph is kept for backward.
    pub fn loss(&self, inputs: &Tensor, targets: &Tensor, grad: bool) -> Result<Tensor> {
        if !grad && self.uses_step() {
            let (loss, _, _) = self.run_step(inputs, targets, false, false)?;
            return Ok(Tensor::new(loss, &self.device)?);
        }
        let logits = self.logits(inputs, grad)?; // (B·T, V)
        let targets = targets.flatten_all()?; // (B·T)
        match self.ops {
            // bf16 logits give an f32 loss (the kernel accumulates in f32).
            Ops::Fused => Ok(wsdscope_kernels::cross_entropy(&logits, &targets)?),
            Ops::Reference => cross_entropy(&logits.to_dtype(self.dtype)?, &targets),
        }
    }

    /// The mean loss (as [`Self::loss`]) and the gradient of every parameter (keyed by its
    /// `Var`). With the fused ops over f32 parameters (on the CPU in f32, on CUDA in f32 or
    /// bf16 mixed precision) this runs the hand-written step of `model/step.rs`; otherwise
    /// candle's autograd over the graph of [`Self::loss`] (the reference ops).
    pub fn loss_and_grads(&self, inputs: &Tensor, targets: &Tensor) -> Result<(Tensor, GradStore)> {
        let (loss, grads, _) = self.loss_grads_and_leaves(inputs, targets, false)?;
        Ok((loss, grads))
    }

    /// [`Self::loss_and_grads`], and with `leaves` on the CPU step also the squared norm of
    /// each leaf's gradient of its reduction tree (`model/tree.rs`, in no particular order);
    /// `None` where the passes are not split into leaves (CUDA, the reference ops).
    pub fn loss_grads_and_leaves(
        &self,
        inputs: &Tensor,
        targets: &Tensor,
        leaves: bool,
    ) -> Result<(Tensor, GradStore, Leaves)> {
        if self.uses_step() {
            let (loss, grads, norms) = self.run_step(inputs, targets, true, leaves)?;
            let grads = grads.expect("the step returns gradients when asked");
            return Ok((Tensor::new(loss, &self.device)?, grads, norms));
        }
        let loss = self.loss(inputs, targets, true)?;
        let grads = loss.backward()?;
        Ok((loss, grads, None))
    }

    /// Whether the training step is split into the leaves of `model/tree.rs` (the CPU step),
    /// so that [`Self::loss_grads_and_leaves`] can report their gradients' norms.
    pub fn steps_in_leaves(&self) -> bool {
        self.uses_step() && matches!(self.device, Device::Cpu)
    }

    /// Whether [`step::run`] computes this model's passes: the fused ops over f32
    /// parameters, on the CPU in f32, or on CUDA (with the `cuda` feature) in f32 or bf16.
    fn uses_step(&self) -> bool {
        let on = match &self.device {
            Device::Cpu => self.compute == DType::F32,
            Device::Cuda(_) => cfg!(feature = "cuda"),
            _ => false,
        };
        on && self.ops == Ops::Fused && self.dtype == DType::F32
    }

    /// The step's loss and (with `grad`) gradients as a candle `GradStore`.
    fn run_step(
        &self,
        inputs: &Tensor,
        targets: &Tensor,
        grad: bool,
        leaves: bool,
    ) -> Result<(f32, Option<GradStore>, Leaves)> {
        self.check_seq(inputs)?;
        let (b, t) = inputs.dims2()?;
        let ids: Vec<u32> = inputs.flatten_all()?.to_vec1()?;
        let tgt: Vec<u32> = targets.flatten_all()?.to_vec1()?;
        let batch = step::Batch {
            inputs: &ids,
            targets: &tgt,
            b,
            t,
        };
        let precision = if self.compute == DType::BF16 {
            Precision::Bf16
        } else {
            Precision::F32
        };
        let (loss, grads, norms) = match &self.device {
            #[cfg(feature = "cuda")]
            Device::Cuda(dev) => {
                let (loss, grads) = self.cuda_step(dev, batch, precision, grad)?;
                (loss, grads, None)
            }
            _ => self.cpu_step(batch, precision, grad, leaves)?,
        };
        let Some(grads) = grads else {
            return Ok((loss, None, norms));
        };
        let mut store = GradStore::default();
        for ((_, p), g) in self.named.iter().zip(grads) {
            store.insert(p.as_tensor(), g);
        }
        Ok((loss, Some(store), norms))
    }

    /// The step on the CUDA backend (in f32 or bf16 mixed precision), reading the parameters
    /// and RoPE tables in place; the gradients become tensors without a copy.
    #[cfg(feature = "cuda")]
    fn cuda_step(
        &self,
        dev: &candle_core::CudaDevice,
        batch: step::Batch<'_>,
        precision: Precision,
        grad: bool,
    ) -> Result<(f32, Option<Vec<Tensor>>)> {
        use wsdscope_kernels::backend::cuda;
        let be = self.cuda.get_or_init(|| cuda::backend(dev));
        let ts: Vec<&Tensor> = self
            .named
            .iter()
            .map(|(_, p)| p.as_tensor())
            .chain([&self.rope_cos, &self.rope_sin])
            .collect();
        let np = self.named.len();
        let (loss, grads) = cuda::with_borrowed(dev, &ts, |bufs| {
            let w = step::Weights {
                params: &bufs[..np],
                cos: &bufs[np],
                sin: &bufs[np + 1],
            };
            step::run(be, &self.cfg, w, batch, precision, grad)
        })??;
        let grads = grads
            .map(|g| self.as_tensors(g, |g, dims| Ok(cuda::into_tensor(g, dev, dims)?)))
            .transpose()?;
        Ok((loss, grads))
    }

    /// A step's gradients (in parameter order) as tensors of the parameters' shapes.
    fn as_tensors<G>(
        &self,
        grads: Vec<G>,
        to: impl Fn(G, &[usize]) -> Result<Tensor>,
    ) -> Result<Vec<Tensor>> {
        self.named
            .iter()
            .zip(grads)
            .map(|((_, p), g)| to(g, p.dims()))
            .collect()
    }

    /// Errors if `inputs` (B, T) is longer than the RoPE tables.
    fn check_seq(&self, inputs: &Tensor) -> Result<()> {
        let (_, t) = inputs.dims2()?;
        if t > self.max_seq {
            return Err(Error::Config(format!(
                "sequence of {t} tokens exceeds the model's {}",
                self.max_seq
            )));
        }
        Ok(())
    }

    /// Next-token logits (B·T, V) of `inputs` (B, T) u32.
    pub fn logits(&self, inputs: &Tensor, grad: bool) -> Result<Tensor> {
        self.check_seq(inputs)?;
        let (b, t) = inputs.dims2()?;
        let w = |v: &Var| self.weight(v, grad);
        let cfg = &self.cfg;
        let res = cfg.residual_scale();
        let cos = self.rope_cos.narrow(0, 0, t)?.to_dtype(self.compute)?; // (T, hd)
        let sin = self.rope_sin.narrow(0, 0, t)?.to_dtype(self.compute)?; // (T, hd)
        let mask = match self.ops {
            Ops::Fused => None,
            Ops::Reference => Some(wsdscope_kernels::causal_mask(
                t,
                &self.device,
                self.compute,
            )?), // (T, T)
        };

        let ids = inputs.flatten_all()?; // (B·T)
        let embed = w(&self.embed_tokens)?; // (V, H), cast once for the input and the head
        let mut h = embed.index_select(&ids, 0)?.affine(cfg.scale_emb, 0.0)?; // (B·T, H)
        for l in &self.layers {
            let x = self.rms_norm(&h, &w(&l.input_layernorm)?)?;
            let a = self.attention(&x, l, b, t, &cos, &sin, mask.as_ref(), grad)?; // (B·T, H)
            h = (h + a.affine(res, 0.0)?)?;
            let x = self.rms_norm(&h, &w(&l.post_attention_layernorm)?)?;
            let m = self.swiglu(&x, &w(&l.gate_proj)?, &w(&l.up_proj)?, &w(&l.down_proj)?)?; // (B·T, H)
            h = (h + m.affine(res, 0.0)?)?;
        }
        let h = self
            .rms_norm(&h, &w(&self.norm)?)?
            .affine(1.0 / cfg.width_mult(), 0.0)?; // (B·T, H)
        Ok(h.matmul(&embed.t()?)?) // (B·T, V)
    }

    /// A parameter as the passes use it: detached unless `grad`, cast to the compute dtype
    /// (a differentiable cast, so gradients arrive in the parameter's dtype).
    fn weight(&self, v: &Var, grad: bool) -> Result<Tensor> {
        let t = if grad {
            v.as_tensor().clone()
        } else {
            v.as_tensor().detach()
        };
        Ok(t.to_dtype(self.compute)?)
    }

    /// Causal grouped-query self-attention on pre-normed `x` (B·T, H) → (B·T, H).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        x: &Tensor,
        l: &Block,
        b: usize,
        t: usize,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        grad: bool,
    ) -> Result<Tensor> {
        let w = |v: &Var| self.weight(v, grad);
        let (nh, kv, hd) = (self.cfg.heads, self.cfg.kv_heads, self.cfg.head_dim());
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            Ok(y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?) // (B, n, T, hd)
        };
        let q = self.rope(&heads(linear(x, &w(&l.q_proj)?)?, nh)?, cos, sin)?; // (B, nh, T, hd)
        let k = self.rope(&heads(linear(x, &w(&l.k_proj)?)?, kv)?, cos, sin)?; // (B, kv, T, hd)
        let v = heads(linear(x, &w(&l.v_proj)?)?, kv)?; // (B, kv, T, hd)
        let scale = 1.0 / (hd as f64).sqrt();
        let o = match mask {
            // Flash-style: query head h reads KV head h / (nh/kv); no T×T scores kept.
            None => wsdscope_kernels::attention(&q, &k, &v, scale)?, // (B, nh, T, hd)
            Some(mask) => {
                let (k, v) = (
                    wsdscope_kernels::repeat_kv(&k, nh / kv)?,
                    wsdscope_kernels::repeat_kv(&v, nh / kv)?,
                ); // (B, nh, T, hd)
                let scores = q.matmul(&k.t()?)?.affine(scale, 0.0)?; // (B, nh, T, T)
                let p = softmax_last(&scores.broadcast_add(mask)?)?; // (B, nh, T, T)
                p.matmul(&v)? // (B, nh, T, hd)
            }
        };
        let o = o.transpose(1, 2)?.reshape((b * t, nh * hd))?; // (B·T, nh·hd)
        linear(&o, &w(&l.o_proj)?)
    }
}

impl MiniCpm {
    fn rms_norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        match self.ops {
            Ops::Fused => Ok(wsdscope_kernels::rms_norm(x, w, self.cfg.rms_eps)?),
            Ops::Reference => rms_norm(x, w, self.cfg.rms_eps),
        }
    }

    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        match self.ops {
            Ops::Fused => Ok(wsdscope_kernels::rope(x, cos, sin)?),
            Ops::Reference => rope(x, cos, sin),
        }
    }

    /// down(silu(gate(x)) ⊙ up(x)).
    fn swiglu(&self, x: &Tensor, gate: &Tensor, up: &Tensor, down: &Tensor) -> Result<Tensor> {
        match self.ops {
            Ops::Fused => {
                let g = linear(x, gate)?; // (N, F)
                let u = linear(x, up)?; // (N, F)
                linear(&wsdscope_kernels::swiglu(&g, &u)?, down)
            }
            Ops::Reference => swiglu(x, gate, up, down),
        }
    }
}

/// `x · wᵀ` for x (N, in) and w (out, in).
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.matmul(&w.t()?)?)
}

/// RMSNorm from primitives (candle-nn's fused one has no backward): x (N, H), w (H).
fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let inv_rms = (x.sqr()?.mean_keepdim(1)? + eps)?.sqrt()?.recip()?; // (N, 1)
    Ok(x.broadcast_mul(&inv_rms)?.broadcast_mul(w)?)
}

/// down(silu(gate(x)) ⊙ up(x)).
fn swiglu(x: &Tensor, gate: &Tensor, up: &Tensor, down: &Tensor) -> Result<Tensor> {
    let g = linear(x, gate)?.silu()?; // (N, F)
    let u = linear(x, up)?; // (N, F)
    linear(&(g * u)?, down)
}

/// cos/sin tables (T, hd) of half-split RoPE: angle(t, i) = t / θ^(2i/hd), duplicated halves.
fn rope_tables(
    seq: usize,
    hd: usize,
    theta: f64,
    device: &Device,
    dtype: DType,
) -> Result<(Tensor, Tensor)> {
    let half = hd / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / hd as f32))
        .collect();
    let (mut cos, mut sin) = (Vec::with_capacity(seq * hd), Vec::with_capacity(seq * hd));
    for t in 0..seq {
        // Both halves of the head dim use the same angles (half-split convention).
        for &f in inv.iter().chain(inv.iter()) {
            let a = t as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    let cos = Tensor::from_vec(cos, (seq, hd), device)?.to_dtype(dtype)?;
    let sin = Tensor::from_vec(sin, (seq, hd), device)?.to_dtype(dtype)?;
    Ok((cos, sin))
}

/// x·cos + rotate_half(x)·sin for x (B, h, T, hd), rotate_half(x) = [−x₂, x₁].
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

/// Softmax over the last dim from primitives; the max shift carries no gradient.
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Mean cross-entropy of logits (N, V) against u32 targets (N).
fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let m = logits.max_keepdim(1)?.detach(); // (N, 1)
    let z = logits.broadcast_sub(&m)?; // (N, V)
    let lse = z.exp()?.sum_keepdim(1)?.log()?; // (N, 1)
    let picked = z.gather(&targets.unsqueeze(1)?, 1)?; // (N, 1)
    Ok((lse - picked)?.mean_all()?)
}

#[cfg(test)]
mod tests;
