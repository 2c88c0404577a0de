//! The CPU step's scratch pool, replayed on buffer lengths alone (`model/step.rs` takes and
//! gives the same buffers in the same order), and what the allocator holds beyond the bytes
//! of large buffers: the tails of the huge pages they end in.

use super::dims::Dims;
use super::units::{KIB, MIB};

/// A transparent huge page: mimalloc (the binary's allocator) advises huge pages for its
/// arenas, so the kernel backs them in 2 MiB pages.
const HUGE_PAGE: u128 = 2 * MIB;

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
pub(super) fn cpu_step_pool(d: &Dims, grad: bool) -> u128 {
    if d.layers <= 3 {
        return replay_cpu_step(d, d.layers, grad);
    }
    let two = replay_cpu_step(d, 2, grad);
    let three = replay_cpu_step(d, 3, grad);
    three + (d.layers - 3) * three.saturating_sub(two)
}

/// Buffers of at least this size are pages of their own in mimalloc (its
/// `MI_LARGE_MAX_OBJ_SIZE`, 512 KiB); smaller ones share pages.
pub(super) const LARGE_OBJECT: u128 = 512 * KIB;

/// What `count` large buffers hold beyond their bytes. mimalloc advises transparent huge
/// pages for its arenas, so the kernel maps them 2 MiB at a time: a buffer that is a page of
/// its own begins and ends inside huge pages that are resident in full, on average half a
/// huge page per buffer. (Measured: with `MIMALLOC_ALLOW_THP=0` the calibration runs' peaks
/// fall by 4–15%, which this term accounts for.)
pub(super) fn huge_page_tail(count: u128) -> u128 {
    count * HUGE_PAGE / 2
}

/// How many parameter tensors of a model are at least [`LARGE_OBJECT`], over one copy.
pub(super) fn large_param_tensors(d: &Dims) -> u128 {
    let big = |elems: u128| u128::from(4 * elems >= LARGE_OBJECT);
    big(d.v * d.h)
        + d.layers
            * (big(d.nh * d.hd * d.h) * 2 // q_proj, o_proj
                + big(d.kv * d.hd * d.h) * 2 // k_proj, v_proj
                + big(d.f * d.h) * 3) // gate, up, down
}

/// How many pool buffers a CPU-step pass holds that are at least [`LARGE_OBJECT`].
pub(super) fn large_pool_buffers(d: &Dims, grad: bool) -> u128 {
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
