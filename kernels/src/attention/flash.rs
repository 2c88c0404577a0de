//! The CPU passes of attention, flash style. Both passes walk one head's T×T score matrix
//! in BR×BC tiles (64×64, the last ones cut short at T) on and below the diagonal, so a task
//! holds at most one tile of scores (and, backward, one of score gradients), never the T×T
//! matrix. Every tile product is a register-blocked matrix multiply from the `gemm` crate
//! (one thread per call), with operands laid out so that `gemm` need not repack them; on a
//! diagonal tile the products skip the quarter above the diagonal ([`diag_split`]). The
//! elementwise work between them (mask, eˣ, online softmax) runs in vectorised loops here.
//!
//! Forward, per (b, h, query tile i): for key tiles j up to the diagonal,
//! S = Qᵢ Kⱼᵀ·scale (keys after a row's position masked out in the diagonal tile), then the
//! online softmax: running row max m and sum ℓ, P = exp(S − m), Oᵢ ← Oᵢ·exp(m_old − m) + P Vⱼ.
//! The score tile is kept keys-major, so these loops run down the query rows with no
//! horizontal sums. Finally Oᵢ /= ℓ, and the per-row log-sum-exp m + ln ℓ (B·H·T floats) is
//! all that is saved for backward.
//!
//! Backward, FlashAttention-2's recurrence: Δᵢ = rowsum(dOᵢ ∘ Oᵢ); per (b, KV head) task, for
//! each key tile j, each query head of the group and each query tile i ≥ j: recompute
//! P = exp(S − LSEᵢ), then dVⱼ += Pᵀ dOᵢ, dP = dOᵢ Vⱼᵀ, dS = P ∘ (dP − Δᵢ)·scale,
//! dQᵢ += dS Kⱼ, dKⱼ += dSᵀ Qᵢ. A task owns its KV head's dk, dv and its query heads' dq, so
//! no reductions across tasks are needed. (Splitting further over key tiles would need a
//! fixed-order reduction of partial dq's, and tasks of unequal size; it only pays when
//! B·Hkv is below a few times the thread count.)
//!
//! Work split: forward over (B, H, query tile), backward over (B, Hkv), on rayon's current
//! pool. Each output element is summed by one task in a fixed tile order, and each `gemm`
//! call is single-threaded with shapes fixed by (T, D), so results do not depend on the
//! number of threads. Unlike the crate's own loops they may differ in the last bits between
//! CPUs, since `gemm` picks its micro-kernels (AVX-512, AVX2 with FMA, …) at run time.

use rayon::prelude::*;

use crate::cpu::{self, Real, dot, simd_fn};

/// Query rows per tile.
const BR: usize = 64;
/// Key rows per tile.
const BC: usize = 64;
/// Elementwise loops that skip the masked part of a diagonal tile stop at a multiple of
/// this many elements (a vector of f32 under AVX2), not at the mask's edge.
const GROUP: usize = 8;

#[derive(Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) b: usize,
    pub(crate) h: usize,
    pub(crate) hkv: usize,
    pub(crate) t: usize,
    pub(crate) d: usize,
}

impl Dims {
    pub(super) fn of(q: &[usize], k: &[usize]) -> Self {
        Dims {
            b: q[0],
            h: q[1],
            hkv: k[1],
            t: q[2],
            d: q[3],
        }
    }

    fn rep(&self) -> usize {
        self.h / self.hkv
    }
}

/// A strided matrix view: element (r, c) is `data[r·rs + c·cs]`.
#[derive(Clone, Copy)]
struct Mat<'a, T> {
    data: &'a [T],
    rs: usize,
    cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// Row-major, rows `ld` elements apart.
    fn rows(data: &'a [T], ld: usize) -> Self {
        Mat {
            data,
            rs: ld,
            cs: 1,
        }
    }

    /// Column-major, columns `ld` elements apart.
    fn cols(data: &'a [T], ld: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: ld,
        }
    }

    /// The view from element (r, c) on.
    fn at(self, r: usize, c: usize) -> Self {
        Mat {
            data: &self.data[r * self.rs + c * self.cs..],
            ..self
        }
    }

    /// The transposed view.
    fn t(self) -> Self {
        Mat {
            data: self.data,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// Whether an r×c matrix with strides (rs, cs) lies inside `len` elements.
fn fits(len: usize, (r, c): (usize, usize), (rs, cs): (usize, usize)) -> bool {
    r == 0 || c == 0 || (r - 1) * rs + (c - 1) * cs < len
}

/// Where the tile of queries i0..i0 + rows and keys j0..j0 + n is split: on the diagonal
/// (i0 = j0, rows = n) its first c0 query rows see only its first c0 keys, so the tile
/// products skip that c0 × (n − c0) block, a quarter of the tile. c0 is a multiple of
/// `GROUP`; 0 (no split) off the diagonal, where the split products reduce to whole ones.
fn diag_split(i0: usize, rows: usize, j0: usize, n: usize) -> usize {
    if i0 == j0 && rows == n {
        n / 2 / GROUP * GROUP
    } else {
        0
    }
}

/// dst ← beta·a·b, or dst += beta·a·b when `acc`, for a (m×k), b (k×n) and dst (m×n) with
/// strides `dst_s` (row, column): `gemm`'s register-blocked kernels, on the calling thread.
///
/// `gemm` computes column-major outputs (a row-major one as its transpose) and reads the
/// left factor of that product by columns: one stored by rows it first repacks, a
/// transpose per call. The callers lay tiles out to avoid that: a row-major dst with a
/// row-major b, or a column-major dst with a column-major a.
fn matmul<T: Real>(
    dst: &mut [T],
    dst_s: (usize, usize),
    acc: bool,
    (m, n, k): (usize, usize, usize),
    a: Mat<'_, T>,
    b: Mat<'_, T>,
    beta: T,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        fits(dst.len(), (m, n), dst_s)
            && fits(a.data.len(), (m, k), (a.rs, a.cs))
            && fits(b.data.len(), (k, n), (b.rs, b.cs)),
        "attention: tile product out of bounds"
    );
    // SAFETY: every element gemm reads or writes lies inside its slice (checked just above),
    // dst is a unique borrow so it aliases neither input, and T is f32 or f64 (`Real`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_s.1 as isize,
            dst_s.0 as isize,
            acc,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Rows j0..j0 + n of a (T, D) head, transposed into `out` (D, ld).
#[inline(always)]
fn transpose_tile<T: Real>(src: &[T], j0: usize, n: usize, d: usize, out: &mut [T], ld: usize) {
    for j in 0..n {
        for (c, &x) in src[(j0 + j) * d..(j0 + j + 1) * d].iter().enumerate() {
            out[c * ld + j] = x;
        }
    }
}

/// m = max(m, col), elementwise (NaNs skipped; they still reach the sums through exp).
#[inline(always)]
fn col_max<T: Real>(m: &mut [T], col: &[T]) {
    for (mr, &x) in m.iter_mut().zip(col) {
        *mr = mr.fmax(x);
    }
}

/// col ← exp(col − m) and sum += col, elementwise.
#[inline(always)]
fn col_exp<T: Real>(col: &mut [T], m: &[T], sum: &mut [T]) {
    for ((x, &mr), sr) in col.iter_mut().zip(m).zip(sum) {
        *x = (*x - mr).exp_fast();
        *sr += *x;
    }
}

/// One online-softmax step of a forward tile. `st` holds the tile's scores keys-major:
/// S(r, c) = st[c·BR + r] for query rows i0 + r (r < `rows`) and keys j0 + c (c < n), so
/// every loop runs down the query rows (vectorised, no horizontal sums). Masks keys after a
/// row's position, turns S into P = exp(S − m_new), updates the running row max `m` and sum
/// `l`, and rescales the output rows `o` (`d` wide) by exp(m_old − m_new).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn softmax_step_body<T: Real>(
    st: &mut [T],
    o: &mut [T],
    m: &mut [T; BR],
    l: &mut [T; BR],
    i0: usize,
    j0: usize,
    n: usize,
    d: usize,
) {
    let rows = o.len() / d;
    let mut m_new = *m;
    for (c, col) in st.chunks_mut(BR).take(n).enumerate() {
        // Key j0 + c is visible from query row j0 + c on.
        let first = (j0 + c).saturating_sub(i0).min(rows);
        col_max(&mut m_new[first..rows], &col[first..rows]);
    }
    // P = exp(S − m_new) and the tile's row sums, in key order. Masked rows get P = 0: those
    // below a whole group of `GROUP` directly, the rest as exp(−∞), so the exp loop keeps
    // to whole vectors.
    let mut sum = [T::zero(); BR];
    for (c, col) in st.chunks_mut(BR).take(n).enumerate() {
        let first = (j0 + c).saturating_sub(i0).min(rows);
        let start = first / GROUP * GROUP;
        col[..start].fill(T::zero());
        col[start..first].fill(T::NEG_INF);
        let live = start..rows;
        col_exp(&mut col[live.clone()], &m_new[live.clone()], &mut sum[live]);
    }
    // Rescale by exp(m_old − m_new): 0 on the first tile, where m = −∞ and o is still 0.
    let mut alpha = [T::zero(); BR];
    for ((a, &mo), &mn) in alpha.iter_mut().zip(m.iter()).zip(&m_new).take(rows) {
        *a = (mo - mn).exp_fast();
    }
    for (r, orow) in o.chunks_exact_mut(d).enumerate() {
        if alpha[r] != T::one() && m[r] != T::NEG_INF {
            cpu::scale(orow, alpha[r]);
        }
        l[r] = l[r] * alpha[r] + sum[r];
        m[r] = m_new[r];
    }
}

simd_fn!(fn softmax_step<T: Real>(
    st: &mut [T], o: &mut [T], m: &mut [T; BR], l: &mut [T; BR], i0: usize, j0: usize, n: usize,
    d: usize,
) => softmax_step_body);

/// One query tile (rows i0.., as many as `lse` holds) of one head (q, k, v (T, D)): online
/// softmax over key tiles up to the diagonal. `o` holds the tile's output rows, zeroed.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_tile_body<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    o: &mut [T],
    lse: &mut [T],
    i0: usize,
    d: usize,
    scale: T,
    scratch: &mut FwdScratch<T>,
) {
    let rows = lse.len();
    let FwdScratch { qt, st } = scratch;
    transpose_tile(q, i0, rows, d, qt, BR);
    let qi = Mat::cols(&qt[..], BR);
    let one = T::one();
    let (mut m, mut l) = ([T::NEG_INF; BR], [T::zero(); BR]);
    let i_end = i0 + rows; // keys j < i_end are visible to some row of the tile
    for j0 in (0..i_end).step_by(BC) {
        let n = BC.min(i_end - j0);
        let span = j0 * d..(j0 + n) * d;
        let (kj, vj) = (Mat::rows(&k[span.clone()], d), Mat::rows(&v[span], d));
        // S = Qᵢ Kⱼᵀ·scale, column-major, in two parts (see `diag_split`; the first is empty
        // off the diagonal): keys ..c0 for all rows, keys c0.. for rows c0.. (softmax_step
        // masks the block left unwritten).
        let c0 = diag_split(i0, rows, j0, n);
        matmul(st, (1, BR), false, (rows, c0, d), qi, kj.t(), scale);
        let (st_c0, rest) = (&mut st[c0 * BR + c0..], (rows - c0, n - c0, d));
        let (qi_c0, kj_c0) = (qi.at(c0, 0), kj.at(c0, 0).t());
        matmul(st_c0, (1, BR), false, rest, qi_c0, kj_c0, scale);
        softmax_step(st, o, &mut m, &mut l, i0, j0, n, d);
        let p = Mat::cols(&st[..], BR);
        // Oᵢ += P Vⱼ: rows ..c0 from keys ..c0, the others from all n keys.
        matmul(o, (d, 1), true, (c0, d, c0), p, vj, one);
        let (o_c0, p_c0) = (&mut o[c0 * d..], p.at(c0, 0));
        matmul(o_c0, (d, 1), true, (rows - c0, d, n), p_c0, vj, one);
    }
    for (r, orow) in o.chunks_exact_mut(d).enumerate() {
        cpu::scale(orow, one / l[r]);
        lse[r] = m[r] + l[r].ln();
    }
}

simd_fn!(fn forward_tile<T: Real>(
    q: &[T], k: &[T], v: &[T], o: &mut [T], lse: &mut [T], i0: usize, d: usize, scale: T,
    scratch: &mut FwdScratch<T>,
) => forward_tile_body);

/// A forward task's scratch, reused by the tasks of one rayon job: Qᵢᵀ (D, BR), so that the
/// score product reads a column-major left operand, and the score tile, keys-major (BC, BR).
/// Both are written before they are read.
struct FwdScratch<T> {
    qt: Vec<T>,
    st: Vec<T>,
}

/// (out (B, H, T, D), lse (B, H, T)).
pub(super) fn forward<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    dm: Dims,
    scale: f64,
) -> (Vec<T>, Vec<T>) {
    let mut out = vec![T::zero(); q.len()];
    let mut lse = vec![T::zero(); dm.b * dm.h * dm.t];
    forward_into(q, k, v, dm, scale, &mut out, &mut lse);
    (out, lse)
}

/// [`forward`] into `out` (as long as q) and `lse` (B·H·T), whatever they held before.
pub(crate) fn forward_into<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    dm: Dims,
    scale: f64,
    out: &mut [T],
    lse: &mut [T],
) {
    let Dims { b, h, t, d, .. } = dm;
    let (rep, hkv) = (dm.rep(), dm.hkv);
    let scale = T::from_f64(scale);
    out.fill(T::zero());
    if q.is_empty() {
        // B, H, T or D is 0. With D = 0 every score is 0, so row i's log-sum-exp is ln(i + 1).
        for (x, l) in lse.iter_mut().enumerate().take(b * h * t) {
            *l = T::from_f64(((x % t + 1) as f64).ln());
        }
        return;
    }
    // One task per (b, h, query tile).
    let mut tasks = Vec::with_capacity(lse.len().div_ceil(BR));
    for (bh, (oh, lh)) in out.chunks_mut(t * d).zip(lse.chunks_mut(t)).enumerate() {
        for (qt, (ot, lt)) in oh.chunks_mut(BR * d).zip(lh.chunks_mut(BR)).enumerate() {
            tasks.push((bh, qt * BR, ot, lt));
        }
    }
    let scratch = || FwdScratch {
        qt: vec![T::zero(); d * BR],
        st: vec![T::zero(); BC * BR],
    };
    tasks
        .into_par_iter()
        .for_each_init(scratch, |scratch, (bh, i0, ot, lt)| {
            let (bi, hi) = (bh / h, bh % h);
            let kv = (bi * hkv + hi / rep) * t * d;
            let (kh, vh) = (&k[kv..kv + t * d], &v[kv..kv + t * d]); // (T, D)
            let qh = &q[bh * t * d..(bh + 1) * t * d]; // (T, D)
            forward_tile(qh, kh, vh, ot, lt, i0, d, scale, scratch);
        });
}

/// Saved and incoming tensors of the backward pass, as slices.
pub(crate) struct BwdIn<'a, T> {
    pub(crate) q: &'a [T],
    pub(crate) k: &'a [T],
    pub(crate) v: &'a [T],
    pub(crate) o: &'a [T],
    pub(crate) dout: &'a [T],
    pub(crate) lse: &'a [T],
}

/// (dq, dk, dv). With P = exp(S − lse), Δᵢ = ⟨dOᵢ, Oᵢ⟩:
/// dV = Pᵀ dO, dP = dO Vᵀ, dS = P ⊙ (dP − Δ), dQ = dS K·scale, dK = dSᵀ Q·scale.
pub(super) fn backward<T: Real>(
    x: &BwdIn<'_, T>,
    dm: Dims,
    scale: f64,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let mut dq = vec![T::zero(); x.q.len()];
    let mut dk = vec![T::zero(); x.k.len()];
    let mut dv = vec![T::zero(); x.v.len()];
    backward_into(x, dm, scale, &mut dq, &mut dk, &mut dv);
    (dq, dk, dv)
}

/// [`backward`] into `dq`, `dk`, `dv` (as long as q, k, v), whatever they held before.
pub(crate) fn backward_into<T: Real>(
    x: &BwdIn<'_, T>,
    dm: Dims,
    scale: f64,
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
) {
    let Dims { t, d, .. } = dm;
    let rep = dm.rep();
    let scale = T::from_f64(scale);
    dq.fill(T::zero());
    dk.fill(T::zero());
    dv.fill(T::zero());
    if x.q.is_empty() {
        return; // B, H, T or D is 0: nothing depends on k or v
    }
    dq.par_chunks_mut(rep * t * d)
        .zip(dk.par_chunks_mut(t * d).zip(dv.par_chunks_mut(t * d)))
        .enumerate()
        .for_each(|(bg, (dqg, (dkh, dvh)))| backward_group(x, dm, scale, bg, dqg, dkh, dvh));
}

/// Scores → probabilities over a backward tile `p`, row-major (rows of BC, n used; query
/// rows i0.., as many as `lse` holds, against keys j0..j0 + n): P = exp(S − LSE), 0 for keys
/// after the row's position.
#[inline(always)]
fn probs<T: Real>(p: &mut [T], lse: &[T], i0: usize, j0: usize, n: usize) {
    for (r, (prow, &li)) in p.chunks_mut(BC).zip(lse).enumerate() {
        let prow = &mut prow[..n];
        let visible = (i0 + r + 1).saturating_sub(j0).min(n);
        for x in prow[..visible.next_multiple_of(GROUP).min(n)].iter_mut() {
            *x = (*x - li).exp_fast();
        }
        prow[visible..].fill(T::zero());
    }
}

/// dP → dS = P ∘ (dP − Δ)·scale over a backward tile (rows of BC, n used; query rows i0..,
/// as many as `delta` holds, against keys j0..j0 + n), 0 for keys after the row's position
/// (where dP may not have been computed). Query 0 sees key 0 alone: its P is 1 and
/// dP − Δ = dO₀·(V₀ − O₀) is 0 in exact arithmetic, so its dS is set to 0 rather than to
/// the rounding error between the two products (the reference's gradient is exactly 0).
#[inline(always)]
fn dscores<T: Real>(ds: &mut [T], p: &[T], delta: &[T], i0: usize, j0: usize, n: usize, scale: T) {
    for (r, ((dsrow, prow), &di)) in ds.chunks_mut(BC).zip(p.chunks(BC)).zip(delta).enumerate() {
        let dsrow = &mut dsrow[..n];
        let live = if i0 + r == 0 {
            0
        } else {
            (i0 + r + 1)
                .saturating_sub(j0)
                .next_multiple_of(GROUP)
                .min(n)
        };
        for (x, &pj) in dsrow[..live].iter_mut().zip(&prow[..live]) {
            *x = pj * (*x - di) * scale;
        }
        dsrow[live..].fill(T::zero());
    }
}

/// The backward pass of KV group `bg` = b·Hkv + g: its dk, dv (T, D) and the dq of its
/// query heads (rep, T, D).
#[inline(always)]
fn backward_group_body<T: Real>(
    x: &BwdIn<'_, T>,
    dm: Dims,
    scale: T,
    bg: usize,
    dqg: &mut [T],
    dkh: &mut [T],
    dvh: &mut [T],
) {
    let Dims { t, d, .. } = dm;
    let rep = dm.rep();
    let one = T::one();
    // Its query heads are b·H + g·rep + r = bg·rep + r.
    let kh = &x.k[bg * t * d..(bg + 1) * t * d]; // (T, D)
    let vh = &x.v[bg * t * d..(bg + 1) * t * d]; // (T, D)
    let mut p = vec![T::zero(); BR * BC]; // S, then P, row-major
    let mut ds = vec![T::zero(); BR * BC]; // dP, then dS, row-major
    // Kⱼᵀ and Vⱼᵀ (D, BC): row-major right operands for S and dP.
    let (mut kt, mut vt) = (vec![T::zero(); d * BC], vec![T::zero(); d * BC]);
    // Δ of each query head of the group, (rep, T).
    let mut delta = vec![T::zero(); rep * t];
    for (i, di) in delta.iter_mut().enumerate() {
        let span = (bg * rep * t + i) * d..(bg * rep * t + i + 1) * d;
        *di = dot(&x.dout[span.clone()], &x.o[span]);
    }
    for j0 in (0..t).step_by(BC) {
        let n = BC.min(t - j0);
        let kspan = j0 * d..(j0 + n) * d;
        let kj = Mat::rows(&kh[kspan.clone()], d);
        let (dkj, dvj) = (&mut dkh[kspan.clone()], &mut dvh[kspan]);
        transpose_tile(kh, j0, n, d, &mut kt, BC);
        transpose_tile(vh, j0, n, d, &mut vt, BC);
        let (ktm, vtm) = (Mat::rows(&kt[..], BC), Mat::rows(&vt[..], BC));
        // The query heads of the group, and in each the query tiles with a row at or after
        // key j0; this key tile's k, v, dk, dv stay in cache across them.
        for (r, dqh) in dqg.chunks_exact_mut(t * d).enumerate() {
            let bh = bg * rep + r;
            let span = bh * t * d..(bh + 1) * t * d;
            let (qh, doh) = (&x.q[span.clone()], &x.dout[span]);
            let (lh, dh) = (&x.lse[bh * t..(bh + 1) * t], &delta[r * t..(r + 1) * t]);
            for i0 in (j0 / BR * BR..t).step_by(BR) {
                let rows = BR.min(t - i0);
                let qspan = i0 * d..(i0 + rows) * d;
                let qi = Mat::rows(&qh[qspan.clone()], d);
                let doi = Mat::rows(&doh[qspan.clone()], d);
                let dqi = &mut dqh[qspan];
                // Each product in two parts (see `diag_split`; the first is empty off the
                // diagonal): rows ..c0 against keys ..c0, and the rest.
                let c0 = diag_split(i0, rows, j0, n);
                let (rest, nc) = ((rows - c0, n, d), (n - c0, d, rows - c0));
                // S = Qᵢ Kⱼᵀ·scale, then P.
                matmul(&mut p, (BC, 1), false, (c0, c0, d), qi, ktm, scale);
                let p_c0 = &mut p[c0 * BC..];
                matmul(p_c0, (BC, 1), false, rest, qi.at(c0, 0), ktm, scale);
                probs(&mut p, &lh[i0..i0 + rows], i0, j0, n);
                // dVⱼ += Pᵀ dOᵢ.
                let pt = Mat::rows(&p[..], BC).t();
                matmul(dvj, (d, 1), true, (c0, d, rows), pt, doi, one);
                let (pt_c0, doi_c0) = (pt.at(c0, c0), doi.at(c0, 0));
                matmul(&mut dvj[c0 * d..], (d, 1), true, nc, pt_c0, doi_c0, one);
                // dP = dOᵢ Vⱼᵀ, then dS.
                matmul(&mut ds, (BC, 1), false, (c0, c0, d), doi, vtm, one);
                matmul(&mut ds[c0 * BC..], (BC, 1), false, rest, doi_c0, vtm, one);
                dscores(&mut ds, &p, &dh[i0..i0 + rows], i0, j0, n, scale);
                let dsm = Mat::rows(&ds[..], BC);
                // dQᵢ += dS Kⱼ.
                matmul(dqi, (d, 1), true, (c0, d, c0), dsm, kj, one);
                let (dqi_c0, dsm_c0) = (&mut dqi[c0 * d..], dsm.at(c0, 0));
                matmul(dqi_c0, (d, 1), true, (rows - c0, d, n), dsm_c0, kj, one);
                // dKⱼ += dSᵀ Qᵢ.
                matmul(dkj, (d, 1), true, (c0, d, rows), dsm.t(), qi, one);
                let (dst_c0, qi_c0) = (dsm.t().at(c0, c0), qi.at(c0, 0));
                matmul(&mut dkj[c0 * d..], (d, 1), true, nc, dst_c0, qi_c0, one);
            }
        }
    }
}

simd_fn!(fn backward_group<T: Real>(
    x: &BwdIn<'_, T>, dm: Dims, scale: T, bg: usize, dqg: &mut [T], dkh: &mut [T], dvh: &mut [T],
) => backward_group_body);
