//! The estimate of a run's configuration, part by part: the process, what each run holds
//! while it lives (the trunk and every branch alive at once), the data, and the transients
//! of a step and of a probe.

use super::breakdown::{Lever, MemoryEstimate, Phase, Place};
use super::dims::Dims;
use super::pool::{cpu_step_pool, huge_page_tail, large_pool_buffers};
use super::transients::{add_probe_parts, add_step_parts, step_elem};
use super::units::{KIB, MIB, sat};
use crate::config::{DataSpec, Policy, RunConfig};

/// The most scripted branches alive at the same time. Under round-robin a branch forked
/// after trunk step `s` with `d` decay steps takes one step per round with the trunk, so it
/// lives during trunk steps `s..s + d`; under the other policies the trunk waits while
/// branches run, so only branches forked at the same step overlap.
pub fn branches_alive(cfg: &RunConfig) -> u64 {
    let mut ends: Vec<(u64, i64)> = Vec::with_capacity(2 * cfg.forks.len());
    for f in &cfg.forks {
        let d = f.length.steps_at(f.at);
        let end = match cfg.policy {
            Policy::RoundRobin => f.at.saturating_add(d),
            Policy::BranchesFirst | Policy::TrunkPaused => f.at.saturating_add(1),
        };
        ends.push((f.at, 1));
        ends.push((end, -1));
    }
    // Ends before starts at the same point: a branch ending at s is gone when one starts at s.
    ends.sort();
    let (mut alive, mut most) = (0i64, 0i64);
    for (_, delta) in ends {
        alive += delta;
        most = most.max(alive);
    }
    most as u64
}

/// The fixed cost of the process: the mapped binary and its statically linked HDF5, the
/// allocator's first pages and the main, engine and printer threads; measured at 21.5 MiB
/// with the smallest model (`wsdscope record --no-record` of a 1-layer, 64-wide model) on
/// x86-64 Linux.
const PROCESS_BASE: u128 = 21 * MIB + 512 * KIB;
/// Each rayon worker: its stack's touched pages and its allocator heap (measured at 1, 2, 4
/// and 8 threads).
const PER_THREAD: u128 = 512 * KIB;

/// What one run holds while it lives — the trunk, and each branch, since a fork copies all
/// of it — as (name, bytes, lever), and where.
struct RunParts {
    parts: Vec<(&'static str, u128, Lever)>,
    place: Place,
}

impl RunParts {
    fn of(cfg: &RunConfig, d: &Dims) -> Self {
        let p = d.params();
        let cuda = cfg.on_cuda();
        let rope = 2 * d.t * d.hd * 4; // (T, hd) cos and sin, f32, per model
        let mut parts: Vec<(&'static str, u128, Lever)> = vec![
            (
                "parameters, f32, and RoPE tables",
                4 * p + rope,
                Lever::Shape,
            ),
            ("AdamW moments m and v, f32", 8 * p, Lever::Shape),
        ];
        if cfg.probes.per_step {
            parts.push((
                "step tracker: previous gradient and θ before the update, f32",
                8 * p,
                Lever::Shape,
            ));
        }
        if let Some(elem) = step_elem(cfg) {
            // The step's pool holds the same buffers on every backend; on CUDA in bf16 most
            // are half as large (its f32 statistics are a sliver) and it also holds bf16
            // copies of the weights that are not stacked, and one layer's stacked
            // gradients in f32.
            // The CPU step runs one leaf of its reduction tree at a time (`model::tree`).
            let pd = if cuda { *d } else { leaf_dims(d) };
            let pool = cpu_step_pool(&pd, true) * elem;
            // Per layer ((nh + 2·kv)·hd + 2F, H).
            let stacked = d.layers * d.stacked_per_layer() * elem;
            parts.push((
                if elem == 4 {
                    "step's stacked q/k/v and gate/up weights, f32"
                } else {
                    "step's stacked q/k/v and gate/up weights, bf16"
                },
                stacked,
                Lever::Shape,
            ));
            if elem == 2 {
                parts.push((
                    "step's bf16 copies of the other weights, and a layer's stacked \
                     gradients in f32",
                    2 * (p - d.layers * d.stacked_per_layer()) + 4 * d.stacked_per_layer(),
                    Lever::Shape,
                ));
            }
            // Per layer the activations the backward keeps: (N, H) ×4, (N) ×2, (N, nh·hd) ×3,
            // (N, kv·hd) ×2, (B, nh, T), (N, 2F), (N, F); then (N, V) logits and the
            // backward's buffers; N = batch × seq.
            parts.push((
                if cuda {
                    "step's buffer pool at batch × seq: the activations its backward keeps, \
                     (N, V) logits and the backward's buffers (the CPU step's, in the compute \
                     type; uncalibrated on a GPU)"
                } else {
                    "CPU step's scratch pool at one leaf of the batch (≤ 512 tokens, or one \
                     sequence): the activations its backward keeps, (N, V) logits and the \
                     backward's buffers, f32"
                },
                pool.saturating_sub(stacked),
                Lever::Tokens,
            ));
            if !cuda {
                parts.push((
                    "allocator: the pool's large buffers end in 2 MiB huge pages",
                    huge_page_tail(large_pool_buffers(&pd, true)),
                    Lever::Tokens,
                ));
            }
        }
        RunParts {
            parts,
            place: if cuda { Place::Device } else { Place::Host },
        }
    }

    fn total(&self) -> u128 {
        self.parts.iter().map(|x| x.1).sum()
    }
}

/// The dimensions of one leaf of the CPU step's reduction tree (`model::tree`): the rows its
/// pool is sized for.
pub(super) fn leaf_dims(d: &Dims) -> Dims {
    let leaf = crate::model::tree::leaf_sequences(d.t as usize) as u128;
    d.with_batch(d.b.min(leaf))
}

/// Bytes one run of `cfg` holds while it lives: parameters, AdamW moments, the step tracker
/// and the CPU step's pool (what a fork adds).
pub fn run_bytes(cfg: &RunConfig) -> u64 {
    sat(RunParts::of(cfg, &Dims::new(&cfg.model, cfg.batch, cfg.seq)).total())
}

/// Bytes a training step of `cfg` adds on top of what the runs hold (one step at a time).
pub fn step_bytes(cfg: &RunConfig) -> u64 {
    let mut est = MemoryEstimate::new(cfg);
    add_step_parts(&mut est, cfg, &Dims::new(&cfg.model, cfg.batch, cfg.seq));
    let place = if est.cuda { Place::Device } else { Place::Host };
    sat(est.sum(place, Phase::Step))
}

/// The memory `cfg` needs at its peak, part by part.
pub fn estimate(cfg: &RunConfig) -> MemoryEstimate {
    let mut est = MemoryEstimate::new(cfg);
    let d = Dims::new(&cfg.model, cfg.batch, cfg.seq);
    let branches = branches_alive(cfg) as u128;
    est.branches = branches as u64;

    est.part(
        "process: binary, HDF5, thread stacks, allocator",
        PROCESS_BASE + PER_THREAD * cfg.threads.max(1) as u128,
        Place::Host,
        Phase::Resident,
        Lever::Fixed,
    );
    let run = RunParts::of(cfg, &d);
    for &(name, bytes, lever) in &run.parts {
        let place = if name.starts_with("allocator") {
            Place::Host
        } else {
            run.place
        };
        est.part(name, bytes, place, Phase::Resident, lever);
    }
    if branches > 0 {
        est.part(
            "scripted branches alive at once, each a full copy of the run's state above",
            branches * run.total(),
            run.place,
            Phase::Resident,
            Lever::Branches,
        );
    }
    // Siblings live beside the trunk for the whole run, each a run of its own shape.
    let siblings: u128 = cfg
        .siblings
        .iter()
        .map(|s| run_bytes(&s.config) as u128)
        .sum();
    if siblings > 0 {
        est.part(
            "siblings: each its own parameters, AdamW moments, tracker and pool",
            siblings,
            run.place,
            Phase::Resident,
            Lever::Siblings,
        );
    }

    // Data: the fixed validation batches (inputs and targets, u32) and the source.
    let e = cfg.eval_batches as u128;
    est.part(
        "validation batches: --eval-batches × (B, T) inputs and targets, u32",
        e * d.n * 8,
        Place::Host,
        Phase::Resident,
        Lever::Tokens,
    );
    match &cfg.data {
        DataSpec::Synthetic => est.part(
            "synthetic language: 4 successors per token, u32",
            16 * d.v,
            Place::Host,
            Phase::Resident,
            Lever::Data,
        ),
        DataSpec::Tokenized { path, .. } => {
            // Encoded ids stay owned, u32; a byte-level tokenizer makes at most one token per
            // byte, so the file's size bounds their count.
            let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) as u128;
            est.part(
                "tokenized text: u32 ids, at most one per byte of --data",
                4 * bytes,
                Place::Host,
                Phase::Resident,
                Lever::Data,
            );
        }
        // Text and token files are memory-mapped: their pages are the kernel's page cache,
        // reclaimable, not memory the run must have.
        DataSpec::Text { .. } | DataSpec::Tokens { .. } => {}
    }

    add_step_parts(&mut est, cfg, &d);
    // Runs step one at a time: a sibling with a larger step raises the transient peak.
    let trunk_step = step_bytes(cfg);
    let largest = cfg
        .siblings
        .iter()
        .map(|s| step_bytes(&s.config))
        .max()
        .unwrap_or(0);
    if largest > trunk_step {
        let place = if est.cuda { Place::Device } else { Place::Host };
        est.part(
            "the largest sibling's training step beyond the trunk's",
            (largest - trunk_step) as u128,
            place,
            Phase::Step,
            Lever::Siblings,
        );
    }
    if cfg.probes.periodic() {
        add_probe_parts(&mut est, cfg, &d);
    }
    est
}
