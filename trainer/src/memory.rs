//! How much memory a run needs, estimated from its configuration before anything is
//! allocated, so that a run that cannot fit is refused with one line that says why (instead
//! of growing towards the OOM killer).
//!
//! Each part below is counted from the code that allocates it, with a comment saying what it
//! counts. The peak is what persists (the process, every live run's parameters, AdamW state,
//! step tracker and CPU-step scratch pool, the data) plus the larger of two transients: a
//! training step (its gradients and the copy of θ before the update) and a periodic probe
//! (a copy of the model and the f64 vectors of its estimator; `probe.rs`, `objective.rs`,
//! `wsdscope_probes::landscape`). Scripted forks add one full run per branch alive at the
//! same time.
//!
//! The CPU step (`model/step.rs` on the CPU backend) keeps every buffer it ever took in its
//! model's pool, so the pool's size is what one pass takes at once; `cpu_step_pool` replays
//! the pass's takes and gives on lengths alone (a test checks it against the real pool).
//!
//! Nothing here allocates in proportion to the batch or the sequence, and the arithmetic is
//! u128, saturated to u64 at the end, so absurd flags give absurd numbers, not overflows.

use std::fmt;

use crate::config::{DataSpec, ModelConfig, Policy, Precision, RunConfig};

const KIB: u128 = 1 << 10;
const MIB: u128 = 1 << 20;
/// A transparent huge page: mimalloc (the binary's allocator) advises huge pages for its
/// arenas, so the kernel backs them in 2 MiB pages.
const HUGE_PAGE: u128 = 2 * MIB;

/// When a part is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// For the whole run.
    Resident,
    /// During a training step.
    Step,
    /// During a periodic probe.
    Probe,
}

/// Where a part lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Place {
    Host,
    /// The CUDA device the run trains on.
    Device,
}

/// What a part grows with, and so which flag shrinks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lever {
    /// The process itself: nothing to lower.
    Fixed,
    /// Tokens per step: `--batch` × `--seq`.
    Tokens,
    /// The model's shape: `--preset`, `--hidden`, `--layers`, `--vocab`.
    Shape,
    /// Periodic probes: `--probe-budget 0` turns them off.
    Probes,
    /// Scripted branches alive at the same time: `--fork-at`.
    Branches,
    /// The training data (`--data`).
    Data,
    /// Added by the caller (the display, the recorder).
    Other,
}

impl Lever {
    /// The group name a one-line summary uses.
    fn label(self) -> &'static str {
        match self {
            Lever::Fixed => "process",
            Lever::Tokens => "activations and batches",
            Lever::Shape => "parameters and AdamW state",
            Lever::Probes => "probes",
            Lever::Branches => "branches",
            Lever::Data => "data",
            Lever::Other => "other",
        }
    }

    /// What to lower, for a refusal.
    fn advice(self) -> Option<&'static str> {
        match self {
            Lever::Tokens => Some("lower --batch or --seq"),
            Lever::Shape => {
                Some("choose a smaller --preset or lower --hidden, --layers or --vocab")
            }
            Lever::Probes => Some(
                "turn periodic probes off with --probe-budget 0, or choose a smaller --preset or \
                 lower --hidden, --layers or --vocab",
            ),
            Lever::Branches => Some("script fewer --fork-at steps whose branches overlap"),
            Lever::Data => Some("use a smaller --data file, or a pre-tokenized .u16/.u32 one"),
            Lever::Fixed | Lever::Other => None,
        }
    }
}

/// One named part of an estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub name: String,
    pub bytes: u64,
    pub place: Place,
    pub phase: Phase,
    pub lever: Lever,
}

/// The memory a run needs: named parts, and the peak they add up to.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEstimate {
    parts: Vec<Part>,
    batch: usize,
    seq: usize,
    /// The run's device is CUDA: parameters and activations live there.
    cuda: bool,
    /// Most branches alive at the same time.
    branches: u64,
}

impl MemoryEstimate {
    fn new(cfg: &RunConfig) -> Self {
        MemoryEstimate {
            parts: Vec::new(),
            batch: cfg.batch,
            seq: cfg.seq,
            cuda: cfg.device.starts_with("cuda:"),
            branches: 0,
        }
    }

    fn part(&mut self, name: &str, bytes: u128, place: Place, phase: Phase, lever: Lever) {
        self.parts.push(Part {
            name: name.into(),
            bytes: sat(bytes),
            place,
            phase,
            lever,
        });
    }

    /// Adds a host part held for the whole run (the app's display and recorder buffers).
    pub fn add(&mut self, name: impl Into<String>, bytes: u64) {
        self.add_part(Part {
            name: name.into(),
            bytes,
            place: Place::Host,
            phase: Phase::Resident,
            lever: Lever::Other,
        });
    }

    pub fn add_part(&mut self, part: Part) {
        self.parts.push(part);
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Whether the run trains on a CUDA device (then [`Self::total`] is device memory).
    pub fn is_cuda(&self) -> bool {
        self.cuda
    }

    fn sum(&self, place: Place, phase: Phase) -> u128 {
        self.parts
            .iter()
            .filter(|p| p.place == place && p.phase == phase)
            .map(|p| p.bytes as u128)
            .sum()
    }

    /// The transient phase that sets the peak at `place`.
    fn peak_phase(&self, place: Place) -> Phase {
        if self.sum(place, Phase::Probe) > self.sum(place, Phase::Step) {
            Phase::Probe
        } else {
            Phase::Step
        }
    }

    /// Peak bytes at `place`: what is resident plus the larger transient.
    pub fn peak(&self, place: Place) -> u64 {
        let resident = self.sum(place, Phase::Resident);
        sat(resident
            + self
                .sum(place, Phase::Step)
                .max(self.sum(place, Phase::Probe)))
    }

    /// The peak where the run's tensors live: host memory on the CPU, device memory on CUDA.
    pub fn total(&self) -> u64 {
        self.peak(if self.cuda {
            Place::Device
        } else {
            Place::Host
        })
    }

    /// The parts that make up [`Self::total`], summed by lever, largest first.
    fn groups(&self) -> Vec<(Lever, u128)> {
        let place = if self.cuda {
            Place::Device
        } else {
            Place::Host
        };
        let transient = self.peak_phase(place);
        let mut groups: Vec<(Lever, u128)> = Vec::new();
        for p in &self.parts {
            if p.place != place || !(p.phase == Phase::Resident || p.phase == transient) {
                continue;
            }
            match groups.iter_mut().find(|(l, _)| *l == p.lever) {
                Some((_, b)) => *b += p.bytes as u128,
                None => groups.push((p.lever, p.bytes as u128)),
            }
        }
        groups.sort_by_key(|g| std::cmp::Reverse(g.1));
        groups
    }

    fn group_text(&self, lever: Lever, bytes: u128) -> String {
        let b = human(sat(bytes));
        match lever {
            Lever::Tokens => format!(
                "{} {b} at --batch {} × --seq {}",
                lever.label(),
                self.batch,
                self.seq
            ),
            Lever::Branches => format!("{} {b} ({} alive at once)", lever.label(), self.branches),
            _ => format!("{} {b}", lever.label()),
        }
    }

    /// One line: the peak and its three largest groups.
    pub fn summary(&self) -> String {
        let groups = self.groups();
        let groups: Vec<(Lever, u128)> = groups
            .into_iter()
            .filter(|&(l, b)| l != Lever::Fixed && b > 0)
            .collect();
        let shown: Vec<String> = groups
            .iter()
            .take(3)
            .map(|&(l, b)| self.group_text(l, b))
            .collect();
        let more = if groups.len() > 3 { "; …" } else { "" };
        let place = if self.cuda { " of device memory" } else { "" };
        format!(
            "about {}{place} ({}{more})",
            human(self.total()),
            shown.join("; ")
        )
    }

    /// The advice for a refusal: the flag that lowers the largest group that has one.
    fn advice(&self) -> &'static str {
        self.groups()
            .iter()
            .find_map(|(l, _)| l.advice())
            .unwrap_or("free some memory")
    }
}

impl fmt::Display for MemoryEstimate {
    /// The breakdown: one line per part, grouped by phase, then the peak.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let places: &[Place] = if self.cuda {
            &[Place::Device, Place::Host]
        } else {
            &[Place::Host]
        };
        for &place in places {
            let where_ = match place {
                Place::Host => "host memory",
                Place::Device => "device memory",
            };
            let peak_phase = self.peak_phase(place);
            writeln!(f, "{where_}: peak {}", human(self.peak(place)))?;
            for (phase, title) in [
                (Phase::Resident, "held for the whole run"),
                (Phase::Step, "during a training step"),
                (Phase::Probe, "during a periodic probe"),
            ] {
                let parts: Vec<&Part> = self
                    .parts
                    .iter()
                    .filter(|p| p.place == place && p.phase == phase && p.bytes > 0)
                    .collect();
                if parts.is_empty() {
                    continue;
                }
                let sum: u128 = parts.iter().map(|p| p.bytes as u128).sum();
                let mark = if phase != Phase::Resident && phase == peak_phase {
                    " (the larger transient: counted in the peak)"
                } else {
                    ""
                };
                writeln!(f, "  {title}: {}{mark}", human(sat(sum)))?;
                for p in parts {
                    writeln!(f, "    {:>10}  {}", human(p.bytes), p.name)?;
                }
            }
        }
        Ok(())
    }
}

fn sat(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

/// Bytes in binary units: `512 B`, `3.4 KiB`, `21.3 GiB`, `1.2 TiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else if v >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// MemAvailable from /proc/meminfo, in bytes (`None` where there is no such file).
pub fn available_host() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// `Ok` when the estimate fits in `available` bytes; otherwise one line saying what the run
/// needs, what is available (`what`: e.g. `MemAvailable`) and which flag to lower.
pub fn check_fits(est: &MemoryEstimate, available: u64, what: &str) -> Result<(), String> {
    if est.total() <= available {
        return Ok(());
    }
    Err(format!(
        "the run needs {} but {} is available ({what}); {}",
        est.summary(),
        human(available),
        est.advice()
    ))
}

/// A model's dimensions in u128, so no product overflows.
#[derive(Debug, Clone, Copy)]
struct Dims {
    /// Sequences and tokens of the pass.
    b: u128,
    t: u128,
    n: u128,
    h: u128,
    f: u128,
    v: u128,
    nh: u128,
    kv: u128,
    hd: u128,
    /// Columns of the stacked q/k/v projection: (nh + 2·kv)·hd.
    width: u128,
    layers: u128,
}

impl Dims {
    fn new(m: &ModelConfig, b: usize, t: usize) -> Self {
        let u = |x: usize| x as u128;
        let hd = u(m.hidden / m.heads.max(1));
        let (nh, kv) = (u(m.heads), u(m.kv_heads));
        Dims {
            b: u(b),
            t: u(t),
            n: u(b) * u(t),
            h: u(m.hidden),
            f: u(m.ffn),
            v: u(m.vocab),
            nh,
            kv,
            hd,
            width: (nh + 2 * kv) * hd,
            layers: u(m.layers),
        }
    }

    fn with_batch(self, b: u128) -> Self {
        Dims {
            b,
            n: b * self.t,
            ..self
        }
    }

    /// All parameters, the tied head counted once (`ModelConfig::total_params`).
    fn params(&self) -> u128 {
        let per_layer =
            self.h * self.hd * (2 * self.nh + 2 * self.kv) + 3 * self.h * self.f + 2 * self.h;
        self.layers * per_layer + self.h + self.v * self.h
    }

    /// Elements of the largest parameter tensor: probes convert one tensor at a time.
    fn largest_tensor(&self) -> u128 {
        (self.v * self.h)
            .max(self.f * self.h)
            .max(self.nh * self.hd * self.h)
    }

    /// The CPU step's stacked q/k/v and gate/up weights, per layer, in elements.
    fn stacked_per_layer(&self) -> u128 {
        self.width * self.h + 2 * self.f * self.h
    }
}

/// The lengths of the buffers a scratch pool holds: takes reuse a free buffer of the same
/// length, or allocate (`wsdscope_kernels::backend::cpu::CpuPool`).
#[derive(Default)]
struct Pool {
    free: Vec<u128>,
    total: u128,
}

impl Pool {
    fn take(&mut self, len: u128) -> u128 {
        match self.free.iter().position(|&l| l == len) {
            Some(i) => {
                self.free.swap_remove(i);
            }
            None => self.total += len,
        }
        len
    }

    fn give(&mut self, lens: &[u128]) {
        self.free.extend(lens.iter().copied().filter(|&l| l > 0));
    }
}

/// Replays the takes and gives of one `step::run` on the CPU backend over `layers` layers
/// (in that order; a buffer's name is the variable it lands in there) and returns the pool's
/// elements. In f32 the step reads the weights in place; token ids, gradients and their
/// parts are fresh buffers, not the pool's.
fn replay_cpu_step(d: &Dims, layers: u128, grad: bool) -> u128 {
    let Dims {
        b,
        t,
        n,
        h,
        f,
        v,
        nh,
        kv,
        hd,
        width,
        ..
    } = *d;
    let mut p = Pool::default();
    let mut h_cur = p.take(n * h); // (N, H) embedding rows
    let mut acts: Vec<[u128; 16]> = Vec::new(); // at most 3 layers are replayed
    for _ in 0..layers {
        let x1 = p.take(n * h); // (N, H)
        let r1 = p.take(n); // (N) 1/rms
        let w_qkv = p.take(width * h); // ((nh + 2·kv)·hd, H) stacked weights
        let qkv = p.take(n * width); // (N, (nh + 2·kv)·hd)
        let q = {
            let y = p.take(n * nh * hd); // heads before RoPE
            let r = p.take(n * nh * hd); // (B, nh, T, hd)
            p.give(&[y]);
            r
        };
        let k = {
            let y = p.take(n * kv * hd);
            let r = p.take(n * kv * hd); // (B, kv, T, hd)
            p.give(&[y]);
            r
        };
        let vv = p.take(n * kv * hd); // (B, kv, T, hd)
        p.give(&[qkv]);
        let o = p.take(n * nh * hd); // (B, nh, T, hd)
        let lse = p.take(b * nh * t); // (B, nh, T)
        let o_rows = p.take(n * nh * hd); // (N, nh·hd)
        let a = p.take(n * h); // (N, H) attention output
        let h_mid = p.take(n * h); // (N, H)
        p.give(&[a]);
        let x2 = p.take(n * h); // (N, H)
        let r2 = p.take(n); // (N) 1/rms
        let w_gu = p.take(2 * f * h); // (2F, H) stacked weights
        let gu = p.take(n * 2 * f); // (N, 2F)
        let act = p.take(n * f); // (N, F)
        let mlp = p.take(n * h); // (N, H)
        let h_out = p.take(n * h); // (N, H)
        p.give(&[mlp]);
        let block = [
            h_cur, x1, r1, w_qkv, q, k, vv, o, lse, o_rows, h_mid, x2, r2, w_gu, gu, act,
        ];
        h_cur = h_out;
        if grad {
            acts.push(block);
        } else {
            p.give(&block);
        }
    }
    let xf = p.take(n * h); // (N, H)
    let rf = p.take(n); // (N) 1/rms
    let logits = p.take(n * v); // (N, V)
    let lse = p.take(n); // (N) the cross-entropy's log-sum-exps
    let loss = p.take(1);
    if !grad {
        p.give(&[logits, xf, h_cur, rf, lse, loss]);
        return p.total;
    }
    let dxf = p.take(n * h);
    let dh = p.take(n * h);
    p.give(&[logits, xf, h_cur, dxf, rf, lse]);
    let tmp = p.take(n * h);
    let dnorm = p.take(n * h);
    while let Some(a) = acts.pop() {
        let dact = p.take(n * f); // (N, F)
        let dgu = p.take(2 * n * f); // (N, 2F)
        let dx = p.take(n * h); // (N, H)
        let dw_gu = p.take(2 * f * h); // (2F, H) before it is split into gate and up
        p.give(&[dact, dgu]);
        let do_rows = p.take(n * nh * hd);
        let dout = p.take(n * nh * hd);
        let dq = p.take(n * nh * hd);
        let dk = p.take(n * kv * hd);
        let dv = p.take(n * kv * hd);
        let dqkv = p.take(n * width);
        let dk_heads = p.take(n * kv * hd);
        let dw_qkv = p.take(width * h); // before it is split into q, k and v
        p.give(&[do_rows, dout, dx, dqkv, dk_heads, dq, dk, dv]);
        p.give(&a);
        p.give(&[dw_qkv, dw_gu]);
    }
    p.give(&[dh, tmp, dnorm, loss]);
    p.total
}

/// Elements a model's CPU-step scratch pool holds after passes over `d.b` × `d.t` tokens
/// (with a backward if `grad`). Every layer takes the same buffers, so the pool grows by
/// the same amount per layer once the first layers have filled its free list: it is replayed
/// for up to three layers and extended linearly (no loop over `--layers`).
fn cpu_step_pool(d: &Dims, grad: bool) -> u128 {
    if d.layers <= 3 {
        return replay_cpu_step(d, d.layers, grad);
    }
    let two = replay_cpu_step(d, 2, grad);
    let three = replay_cpu_step(d, 3, grad);
    three + (d.layers - 3) * three.saturating_sub(two)
}

/// Buffers of at least this size are pages of their own in mimalloc (its
/// `MI_LARGE_MAX_OBJ_SIZE`, 512 KiB); smaller ones share pages.
const LARGE_OBJECT: u128 = 512 * KIB;

/// What `count` large buffers hold beyond their bytes. mimalloc advises transparent huge
/// pages for its arenas, so the kernel maps them 2 MiB at a time: a buffer that is a page of
/// its own begins and ends inside huge pages that are resident in full, on average half a
/// huge page per buffer. (Measured: with `MIMALLOC_ALLOW_THP=0` the calibration runs' peaks
/// fall by 4–15%, which this term accounts for.)
fn huge_page_tail(count: u128) -> u128 {
    count * HUGE_PAGE / 2
}

/// How many parameter tensors of a model are at least [`LARGE_OBJECT`], over one copy.
fn large_param_tensors(d: &Dims) -> u128 {
    let big = |elems: u128| u128::from(4 * elems >= LARGE_OBJECT);
    big(d.v * d.h)
        + d.layers
            * (big(d.nh * d.hd * d.h) * 2 // q_proj, o_proj
                + big(d.kv * d.hd * d.h) * 2 // k_proj, v_proj
                + big(d.f * d.h) * 3) // gate, up, down
}

/// How many pool buffers a CPU-step pass holds that are at least [`LARGE_OBJECT`].
fn large_pool_buffers(d: &Dims, grad: bool) -> u128 {
    let big = |elems: u128| u128::from(4 * elems >= LARGE_OBJECT);
    let (n, h, f, v) = (d.n, d.h, d.f, d.v);
    let (nh, kv, hd) = (d.nh, d.kv, d.hd);
    // Per layer: h_in, x1, h_mid, x2 (N, H); the two 1/rms (N); q, o, o_rows (N, nh·hd);
    // k, v (N, kv·hd); lse; gu; act; the two stacked weights.
    let per_layer = 4 * big(n * h)
        + 2 * big(n)
        + 3 * big(n * nh * hd)
        + 2 * big(n * kv * hd)
        + big(d.b * nh * d.t)
        + big(2 * n * f)
        + big(n * f)
        + big(d.width * h)
        + big(2 * f * h);
    let layers = if grad { d.layers } else { 1 };
    layers * per_layer + big(n * v) + 4 * big(n * h)
}

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
        let cuda = cfg.device.starts_with("cuda:");
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
            let pool = cpu_step_pool(d, true) * elem;
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
                    "CPU step's scratch pool at batch × seq: the activations its backward \
                     keeps, (N, V) logits and the backward's buffers, f32"
                },
                pool.saturating_sub(stacked),
                Lever::Tokens,
            ));
            if !cuda {
                parts.push((
                    "allocator: the pool's large buffers end in 2 MiB huge pages",
                    huge_page_tail(large_pool_buffers(d, true)),
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

/// Bytes per element of the hand-written step's buffers (`model/step.rs`) if the run's
/// passes go through it: the fused ops on the CPU in f32, or on CUDA in f32 or bf16.
fn step_elem(cfg: &RunConfig) -> Option<u128> {
    if cfg.reference_ops {
        return None;
    }
    match (cfg.device.starts_with("cuda:"), cfg.precision) {
        (_, Precision::F32) => Some(4),
        (true, Precision::Bf16) => Some(2),
        (false, Precision::Bf16) => None,
    }
}

/// Whether the run's passes go through the hand-written step on the CPU (`model/step.rs`):
/// the fused ops on the CPU in f32.
fn uses_cpu_step(cfg: &RunConfig) -> bool {
    !cfg.device.starts_with("cuda:") && !cfg.reference_ops && cfg.precision == Precision::F32
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
    if cfg.probes.periodic() {
        add_probe_parts(&mut est, cfg, &d);
    }
    est
}

/// A training step: its gradients (the step writes each once; candle's backward one per
/// parameter), the copy of θ before the update the tracker keeps, and the batch.
fn add_step_parts(est: &mut MemoryEstimate, cfg: &RunConfig, d: &Dims) {
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
fn add_probe_parts(est: &mut MemoryEstimate, cfg: &RunConfig, d: &Dims) {
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
    // Sharpness: two Lanczos runs on finite-difference Hessian-vector products. During the
    // second (P^(−1/2) H P^(−1/2)): θ, v0, P⁻¹ and P^(−1/2), Lanczos q and q_prev, the scaled
    // direction z, the gradient at θ + εz, the shifted θ, and the gradient at θ − εz as f32
    // tensors and as the f64 vector being built: ten f64 vectors.
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
                "ten f64 vectors of all parameters (θ, v0, P⁻¹, P^(−1/2), q, q_prev, z, g₊, θ ± εz, g₋)",
                80 * p,
                Place::Host,
            ),
            ("the last update θ − θ_prev, f32", last_update, dev),
            ("one tensor converted to f64", convert, Place::Host),
            ("the step's batch and the probe batch, u32", batch, Place::Host),
            ("allocator: huge-page tails of the probe's buffers", tail(10), Place::Host),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ForkLength, ForkPlan, OptimConfig, ProbeConfig, preset};
    use crate::model::MiniCpm;
    use crate::schedule::{DecayShape, Schedule};
    use candle_core::{DType, Device, Tensor};

    fn tiny(batch: usize, seq: usize) -> RunConfig {
        let p = preset("tiny").unwrap();
        RunConfig {
            preset: "tiny".into(),
            model: p.model,
            data: DataSpec::Synthetic,
            val_fraction: 0.1,
            steps: 40,
            batch,
            seq,
            seed: 0,
            schedule: Schedule::wsd(0.01, 40, 4, 8, DecayShape::Exp, 0.1).unwrap(),
            optim: OptimConfig::default(),
            eval_every: 0,
            eval_batches: 4,
            device: "cpu".into(),
            threads: 1,
            checkpoint_every: 0,
            checkpoint_dir: None,
            init_from: None,
            forks: Vec::new(),
            policy: Policy::RoundRobin,
            memory_budget_mb: None,
            keep_branch_checkpoints: false,
            probes: ProbeConfig::default(),
            reference_ops: false,
            precision: Precision::F32,
            max_runs: None,
        }
    }

    fn fork(at: u64, steps: u64) -> ForkPlan {
        ForkPlan {
            at,
            length: ForkLength::Steps(steps),
            shape: DecayShape::Exp,
            floor: 0.1,
        }
    }

    #[test]
    fn the_replayed_pool_is_the_cpu_steps_pool() {
        // GQA and plain heads, one to five layers, a pass with and without backward.
        for (heads, kv) in [(4, 2), (2, 2)] {
            for layers in 1..=5 {
                let mut m = ModelConfig::minicpm(32, 48, heads, kv, layers, 40);
                m.dim_model_base = 16;
                let (b, t) = (3, 7);
                let ids: Vec<u32> = (0..(b * t) as u32).map(|i| i * 7 % 40).collect();
                let x = Tensor::from_vec(ids.clone(), (b, t), &Device::Cpu).unwrap();
                let y = Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap();
                let d = Dims::new(&m, b, t);
                let model = MiniCpm::init(&m, t, 1, &Device::Cpu, DType::F32).unwrap();
                model.loss(&x, &y, false).unwrap();
                assert_eq!(
                    model.scratch_bytes() as u128,
                    4 * cpu_step_pool(&d, false),
                    "forward, {heads}/{kv} heads, {layers} layers"
                );
                let model = MiniCpm::init(&m, t, 1, &Device::Cpu, DType::F32).unwrap();
                model.loss_and_grads(&x, &y).unwrap();
                model.loss_and_grads(&x, &y).unwrap(); // a second step reuses the pool
                assert_eq!(
                    model.scratch_bytes() as u128,
                    4 * cpu_step_pool(&d, true),
                    "backward, {heads}/{kv} heads, {layers} layers"
                );
            }
        }
    }

    #[test]
    fn the_parameters_part_is_four_bytes_per_parameter() {
        let cfg = tiny(16, 128);
        let est = estimate(&cfg);
        let params = est
            .parts()
            .iter()
            .find(|p| p.name.starts_with("parameters"))
            .unwrap();
        let rope = 2 * 128 * cfg.model.head_dim() as u64 * 4;
        assert_eq!(params.bytes, 4 * cfg.model.total_params() + rope);
        // The breakdown names every part; the summary is one line.
        let text = est.to_string();
        assert!(
            text.contains("AdamW moments") && text.contains("scratch pool"),
            "{text}"
        );
        assert!(!est.summary().contains('\n'));
    }

    #[test]
    fn the_estimate_grows_with_batch_seq_and_layers() {
        let base = tiny(8, 64);
        let total = |f: &dyn Fn(&mut RunConfig)| {
            let mut c = base.clone();
            f(&mut c);
            estimate(&c).total()
        };
        let t0 = total(&|_| {});
        assert!(total(&|c| c.batch = 16) > t0);
        assert!(total(&|c| c.seq = 128) > t0);
        assert!(total(&|c| c.model.layers = 8) > t0);
        let mut last = 0;
        for b in [1, 2, 4, 16, 64, 256] {
            let t = total(&|c| c.batch = b);
            assert!(t > last, "batch {b}: {t} ≤ {last}");
            last = t;
        }
    }

    #[test]
    fn branches_count_only_while_they_overlap() {
        let mut cfg = tiny(8, 64);
        let none = estimate(&cfg).total();
        cfg.forks = vec![fork(10, 20)];
        let one = estimate(&cfg).total();
        assert_eq!(branches_alive(&cfg), 1);
        // Forked after 10 and 12 for 20 steps each: both alive during steps 12..30.
        cfg.forks = vec![fork(10, 20), fork(12, 20)];
        assert_eq!(branches_alive(&cfg), 2);
        let two = estimate(&cfg).total();
        // The second starts when the first has ended: never two at once.
        cfg.forks = vec![fork(10, 5), fork(15, 5)];
        assert_eq!(branches_alive(&cfg), 1);
        assert_eq!(estimate(&cfg).total(), one);
        let run = run_bytes(&cfg);
        assert!(one > none && two > one);
        assert_eq!(two - one, one - none);
        assert!(one - none >= run, "{} < {run}", one - none);
        // A branch is a full run: parameters, moments, tracker and its own pool.
        assert!(run > 20 * cfg.model.total_params());
        // When the trunk waits for its branches, only forks at the same step overlap.
        cfg.forks = vec![fork(10, 20), fork(12, 20), fork(12, 20)];
        cfg.policy = Policy::BranchesFirst;
        assert_eq!(branches_alive(&cfg), 2);
    }

    #[test]
    fn a_huge_batch_is_refused_naming_batch_in_one_line() {
        let cfg = tiny(100_000_000, 128);
        let est = estimate(&cfg);
        assert!(est.total() > 1 << 40, "{}", human(est.total()));
        let e = check_fits(&est, 21 << 30, "MemAvailable").unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.contains("--batch 100000000") && e.contains("lower --batch or --seq"),
            "{e}"
        );
        assert!(
            e.contains("TiB") && e.contains("21.0 GiB is available (MemAvailable)"),
            "{e}"
        );
        assert!(check_fits(&estimate(&tiny(16, 128)), 21 << 30, "MemAvailable").is_ok());
    }

    #[test]
    fn the_refusal_names_what_dominates() {
        // A wide model on a small batch: its parameters and the probes' copies.
        let mut cfg = tiny(1, 16);
        cfg.model.hidden = 16384;
        cfg.model.heads = 128;
        cfg.model.kv_heads = 128;
        cfg.model.ffn = 65536;
        let e = check_fits(&estimate(&cfg), 1 << 30, "MemAvailable").unwrap_err();
        assert!(e.contains("--hidden") && e.contains("--preset"), "{e}");
        cfg.probes.budget_pct = Some(0.0);
        let e = check_fits(&estimate(&cfg), 1 << 30, "MemAvailable").unwrap_err();
        assert!(
            e.contains("parameters and AdamW state") && e.contains("--hidden"),
            "{e}"
        );
        // Many branches alive at once.
        let mut cfg = tiny(16, 128);
        cfg.steps = 1000;
        cfg.schedule = Schedule::wsd(0.01, 1000, 10, 100, DecayShape::Exp, 0.1).unwrap();
        cfg.forks = (1..=200).map(|s| fork(s, 500)).collect();
        let e = check_fits(&estimate(&cfg), 1 << 30, "MemAvailable").unwrap_err();
        assert!(
            e.contains("200 alive at once") && e.contains("--fork-at"),
            "{e}"
        );
    }

    #[test]
    fn absurd_shapes_do_not_overflow_or_take_long() {
        let t0 = std::time::Instant::now();
        let mut cfg = tiny(100_000_000, 100_000_000);
        let est = estimate(&cfg);
        assert_eq!(est.total(), u64::MAX);
        assert!(check_fits(&est, 1 << 34, "MemAvailable").is_err());
        cfg.model.layers = 100_000_000;
        cfg.model.hidden = 1 << 40;
        cfg.model.heads = 1 << 20;
        cfg.model.kv_heads = 1 << 20;
        cfg.model.ffn = usize::MAX;
        cfg.model.vocab = u32::MAX as usize;
        cfg.forks = vec![fork(1, u64::MAX)];
        let est = estimate(&cfg);
        assert_eq!(est.total(), u64::MAX);
        assert!(!est.summary().is_empty() && !est.to_string().is_empty());
        assert!(t0.elapsed().as_secs_f64() < 1.0, "{:?}", t0.elapsed());
    }

    #[test]
    fn units_are_human() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
        assert_eq!(human(1_288_490_188_800), "1.2 TiB");
        assert_eq!(human(u64::MAX), "16.0 EiB");
        assert!(available_host().is_some_and(|b| b > 0));
    }
}
