//! The two transients of an estimate, of which the larger counts in the peak: a training
//! step (its gradients, the copy of θ before the update, the batch) and a periodic probe
//! (a copy of the model and the f64 vectors of its estimator); and which step a run's passes
//! go through, which decides what both hold.

use super::breakdown::{Lever, MemoryEstimate, Phase, Place};
use super::dims::Dims;
use super::pool::{LARGE_OBJECT, cpu_step_pool, huge_page_tail, large_param_tensors};
use crate::config::{Precision, RunConfig};

/// Bytes per element of the hand-written step's buffers (`model/step.rs`) if the run's
/// passes go through it: the fused ops on the CPU in f32, or on CUDA in f32 or bf16.
pub(super) fn step_elem(cfg: &RunConfig) -> Option<u128> {
    if cfg.reference_ops {
        return None;
    }
    match (cfg.on_cuda(), cfg.precision) {
        (_, Precision::F32) => Some(4),
        (true, Precision::Bf16) => Some(2),
        (false, Precision::Bf16) => None,
    }
}

/// Whether the run's passes go through the hand-written step on the CPU (`model/step.rs`):
/// the fused ops on the CPU in f32.
fn uses_cpu_step(cfg: &RunConfig) -> bool {
    !cfg.on_cuda() && !cfg.reference_ops && cfg.precision == Precision::F32
}

/// A training step: its gradients (the step writes each once; candle's backward one per
/// parameter), the copy of θ before the update the tracker keeps, and the batch.
pub(super) fn add_step_parts(est: &mut MemoryEstimate, cfg: &RunConfig, d: &Dims) {
    let p = d.params();
    let dev = if est.cuda { Place::Device } else { Place::Host };
    est.part("gradients, f32", 4 * p, dev, Phase::Step, Lever::Shape);
    if cfg.probes.per_step {
        est.part(
            "θ before the update, f32",
            4 * p,
            dev,
            Phase::Step,
            Lever::Shape,
        );
    }
    if uses_cpu_step(cfg) {
        // The reduction tree's partial gradients waiting for the leaf that runs.
        let leaf = crate::model::tree::leaf_sequences(d.t as usize);
        let levels = crate::model::tree::height(d.b as usize, leaf) as u128;
        if levels > 0 {
            est.part(
                "the CPU step's partial gradients, one per level of its reduction tree, f32",
                levels * 4 * p,
                dev,
                Phase::Step,
                Lever::Tokens,
            );
        }
    }
    if step_elem(cfg).is_some() {
        // A layer's stacked q/k/v and gate/up gradients and their unstacked copies.
        est.part(
            "a layer's stacked gradients while they are split",
            d.stacked_per_layer() * 4,
            dev,
            Phase::Step,
            Lever::Shape,
        );
    } else {
        // candle's autograd graph (the reference ops) keeps each op's output for the
        // backward: per token and layer the normed inputs, projections, heads and attention
        // output (about 12·H), the SwiGLU's gate, up and product (3·F), plus (N, V) logits,
        // their softmax and its gradient; T×T scores per head (uncalibrated).
        let elem = if cfg.precision == Precision::Bf16 {
            2
        } else {
            4
        };
        let scores = 4 * d.nh * d.t;
        let acts = elem * d.n * (d.layers * (12 * d.h + 3 * d.f + scores) + 3 * d.v);
        est.part(
            "autograd activations at batch × seq (uncalibrated)",
            acts,
            dev,
            Phase::Step,
            Lever::Tokens,
        );
    }
    est.part(
        "the train batch: (B, T) inputs and targets as tensors and as ids, u32",
        16 * d.n,
        Place::Host,
        Phase::Step,
        Lever::Tokens,
    );
}

/// The periodic probes' transient: the largest of sharpness, noise scale, slices, the 2-D
/// landscape and the interpolation at a branch's end (`probe.rs`), each on a copy of the
/// model (`objective.rs`) with f64 vectors of all parameters (`wsdscope_probes::landscape`).
pub(super) fn add_probe_parts(est: &mut MemoryEstimate, cfg: &RunConfig, d: &Dims) {
    let cpu_step = uses_cpu_step(cfg);
    let p = d.params();
    let cuda = est.cuda;
    let dev = if cuda { Place::Device } else { Place::Host };
    let per_step = cfg.probes.per_step;
    let rope = 2 * d.t * d.hd * 4;
    // Sequences the probes evaluate: the first probe-batch ones, or a noise micro-batch.
    let probe_seqs = cfg.probes.batch_for(cfg.batch) as u128;
    let k = cfg.probes.micro_batches.min(cfg.batch).max(1) as u128;
    let micro_seqs = d.b / k;
    // The copy's pool over those sequences, with a backward (sharpness, noise) or without;
    // its stacked weights are counted with the copy.
    let copy_stacked = if cpu_step {
        d.layers * d.stacked_per_layer() * 4
    } else {
        0
    };
    let copy_pool = |seqs: u128, grad: bool| -> u128 {
        if cpu_step {
            let stacked = if grad {
                copy_stacked
            } else {
                d.stacked_per_layer() * 4
            };
            (cpu_step_pool(&d.with_batch(seqs), grad) * 4).saturating_sub(stacked)
        } else {
            let n = seqs * d.t;
            let acts = 4 * n * (d.layers * (12 * d.h + 3 * d.f) + 3 * d.v);
            if grad { acts } else { acts / d.layers.max(1) }
        }
    };
    // θ − θ_prev as f32 tensors, handed to every probe when the tracker has a last update.
    let last_update = if per_step { 4 * p } else { 0 };
    // One tensor at a time goes f32 → f64 tensor → Vec<f64> (16 B per element).
    let convert = 16 * d.largest_tensor();
    // The step's batch read again, and the probe sequences as tensors.
    let batch = 8 * d.n + 8 * probe_seqs * d.t;
    // The large f64 vectors and the copy's large tensors (parameters and gradients) end in
    // huge pages.
    let large_vector = u128::from(8 * p >= LARGE_OBJECT);
    let tail = |vectors: u128| -> u128 {
        if cuda {
            0
        } else {
            huge_page_tail(vectors * large_vector + large_param_tensors(d) * 2)
        }
    };

    type Kind = (&'static str, Vec<(&'static str, u128, Place)>);
    let mut kinds: Vec<Kind> = Vec::new();
    // Sharpness: two Lanczos runs on forward-difference Hessian-vector products. During the
    // second (P^(−1/2) H P^(−1/2)), inside a product: θ, the gradient g at θ, P^(−1/2), the
    // start u0, Lanczos q and q_prev, the scaled direction z, the shifted θ, the gradient at
    // θ + εz as f64 (differenced in place) and the scaled product being formed: ten f64
    // vectors (the gradient's f32 tensors are the copy's); and the Lanczos basis, up to
    // `power_iters` f32 vectors.
    kinds.push((
        "sharpness",
        vec![
            (
                "model copy: parameters, gradients and stacked weights (f32), RoPE tables",
                8 * p + rope + copy_stacked,
                dev,
            ),
            (
                "model copy's CPU-step pool over the probe batch, with backward",
                copy_pool(probe_seqs, true),
                dev,
            ),
            (
                "ten f64 vectors of all parameters (θ, g, P^(−1/2), u0, q, q_prev, z, θ + εz, g₊, the product)",
                80 * p,
                Place::Host,
            ),
            (
                "the Lanczos basis: one f32 vector of all parameters per product, at its cap",
                4 * cfg.probes.power_iters as u128 * p,
                Place::Host,
            ),
            ("the last update θ − θ_prev, f32", last_update, dev),
            ("one tensor converted to f64", convert, Place::Host),
            ("the step's batch and the probe batch, u32", batch, Place::Host),
            (
                "allocator: huge-page tails of the probe's buffers",
                tail(10 + cfg.probes.power_iters as u128 / 2),
                Place::Host,
            ),
        ],
    ));
    if cfg.batch >= 2 {
        // Noise scale: k micro-batch gradients as f64 vectors; while the last is computed, a
        // model copy, its θ (f64) and its gradient as f32 tensors and as f64.
        kinds.push((
            "noise scale",
            vec![
                (
                    "model copy: parameters, gradients and stacked weights (f32), RoPE tables",
                    8 * p + rope + copy_stacked,
                    dev,
                ),
                (
                    "model copy's CPU-step pool over one micro-batch, with backward",
                    copy_pool(micro_seqs, true),
                    dev,
                ),
                (
                    "micro-batch gradients and θ, f64 (8 B per parameter each)",
                    8 * (k + 1) * p,
                    Place::Host,
                ),
                ("the last update θ − θ_prev, f32", last_update, dev),
                ("one tensor converted to f64", convert, Place::Host),
                ("the step's batch, u32", batch, Place::Host),
                (
                    "allocator: huge-page tails of the probe's buffers",
                    tail(k + 1),
                    Place::Host,
                ),
            ],
        ));
    }
    // 1-D slices: θ, the random direction, the update direction and the shifted θ (f64);
    // the 2-D slice: θ, two directions and the shifted θ. Without the tracker there is no
    // update direction, and neither gets the last update.
    let slice_vectors: u128 = if per_step { 4 } else { 3 };
    for (name, vectors) in [("1-D slices", slice_vectors), ("2-D landscape", 4)] {
        kinds.push((
            name,
            vec![
                (
                    "model copy: parameters and a layer's stacked weights (f32), RoPE tables",
                    4 * p + rope + copy_stacked / d.layers.max(1),
                    dev,
                ),
                (
                    "model copy's CPU-step pool over the probe batch, forward only",
                    copy_pool(probe_seqs, false),
                    dev,
                ),
                (
                    "f64 vectors of all parameters",
                    8 * vectors * p,
                    Place::Host,
                ),
                ("the last update θ − θ_prev, f32", last_update, dev),
                (
                    "one tensor as f64 and f32 while it is set",
                    12 * d.largest_tensor(),
                    Place::Host,
                ),
                (
                    "the step's batch and the probe batch, u32",
                    batch,
                    Place::Host,
                ),
                (
                    "allocator: huge-page tails of the probe's buffers",
                    tail(vectors),
                    Place::Host,
                ),
            ],
        ));
    }
    if !cfg.forks.is_empty() {
        // Interpolation when a branch ends: θ of both runs, their difference and the
        // interpolated θ (f64), on a copy of the parent.
        kinds.push((
            "interpolation",
            vec![
                (
                    "model copy: parameters and a layer's stacked weights (f32), RoPE tables",
                    4 * p + rope + copy_stacked / d.layers.max(1),
                    dev,
                ),
                (
                    "model copy's CPU-step pool over the probe batch, forward only",
                    copy_pool(probe_seqs, false),
                    dev,
                ),
                ("f64 vectors of all parameters", 32 * p, Place::Host),
                ("one tensor converted to f64", convert, Place::Host),
                ("the probe batch, u32", batch, Place::Host),
                (
                    "allocator: huge-page tails of the probe's buffers",
                    tail(4),
                    Place::Host,
                ),
            ],
        ));
    }
    // The largest where the tensors live decides.
    let place_sum = |parts: &[(&str, u128, Place)], place: Place| -> u128 {
        parts.iter().filter(|x| x.2 == place).map(|x| x.1).sum()
    };
    let biggest = kinds
        .into_iter()
        .max_by_key(|(_, parts)| (place_sum(parts, dev), place_sum(parts, Place::Host)))
        .expect("sharpness always runs");
    for (name, bytes, place) in biggest.1 {
        let lever = if name.contains("pool") || name.contains("batch") {
            Lever::Tokens
        } else {
            Lever::Probes
        };
        est.part(
            &format!("{} probe: {name}", biggest.0),
            bytes,
            place,
            Phase::Probe,
            lever,
        );
    }
}
