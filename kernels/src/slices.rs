//! The fused ops on plain f32 slices, forward and backward as separate calls, for a
//! hand-written backward pass (the trainer's CPU step) that keeps its own activations instead
//! of a candle graph. Same arithmetic as the `CustomOp`s (they call these functions), so the
//! tests that compare the ops with their `*_slow` twins cover these too; plus
//! [`matmul`], a row-major GEMM on the `gemm` crate that candle's CPU matmul also uses.
//!
//! Shapes are passed explicitly; every function panics if a slice's length disagrees with
//! them (a caller bug, not bad user input), except [`cross_entropy_forward`], whose targets
//! come from data and get an error.

use candle_core::Result;

use crate::attention::{self, BwdIn, Dims};
use crate::{cross_entropy, rms_norm, rope, swiglu};

/// Shape of an attention call: q (B, H, T, D); k, v (B, Hkv, T, D).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    pub b: usize,
    pub h: usize,
    pub hkv: usize,
    pub t: usize,
    pub d: usize,
}

impl AttnShape {
    fn dims(&self) -> Dims {
        assert!(
            self.hkv > 0 && self.h.is_multiple_of(self.hkv),
            "H must be a multiple of Hkv"
        );
        Dims {
            b: self.b,
            h: self.h,
            hkv: self.hkv,
            t: self.t,
            d: self.d,
        }
    }

    fn q_len(&self) -> usize {
        self.b * self.h * self.t * self.d
    }

    fn kv_len(&self) -> usize {
        self.b * self.hkv * self.t * self.d
    }
}

/// RMSNorm of rows of `x` (N, H) with gain `w` (H) into `y` (N, H).
pub fn rms_norm_forward(x: &[f32], w: &[f32], eps: f64, y: &mut [f32]) {
    assert_eq!(x.len() % w.len(), 0, "x is not a whole number of rows");
    assert_eq!(x.len(), y.len());
    rms_norm::forward_into(x, w, eps, y)
}

/// Backward of [`rms_norm_forward`] for upstream `dy` (N, H): dx into `dx`, returns dw (H).
pub fn rms_norm_backward(x: &[f32], w: &[f32], dy: &[f32], eps: f64, dx: &mut [f32]) -> Vec<f32> {
    assert!(x.len() == dy.len() && x.len() == dx.len());
    assert_eq!(x.len() % w.len(), 0, "x is not a whole number of rows");
    rms_norm::backward_into(x, w, dy, eps, dx)
}

/// [`rms_norm_forward`] that also writes each row's 1/rms into `rstd` (N), for
/// [`rms_norm_backward_saved`] (the CUDA kernels' form).
pub fn rms_norm_forward_saving(x: &[f32], w: &[f32], eps: f64, y: &mut [f32], rstd: &mut [f32]) {
    assert_eq!(x.len() % w.len(), 0, "x is not a whole number of rows");
    assert_eq!(x.len(), y.len());
    assert_eq!(
        rstd.len() * w.len(),
        x.len(),
        "rstd is not one value per row"
    );
    rms_norm::forward_into_saving(x, w, eps, y, rstd)
}

/// [`rms_norm_backward`] with each row's 1/rms read from `rstd` as
/// [`rms_norm_forward_saving`] wrote it (the same values, so the same results).
pub fn rms_norm_backward_saved(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    rstd: &[f32],
    dx: &mut [f32],
) -> Vec<f32> {
    assert!(x.len() == dy.len() && x.len() == dx.len());
    assert_eq!(x.len() % w.len(), 0, "x is not a whole number of rows");
    assert_eq!(
        rstd.len() * w.len(),
        x.len(),
        "rstd is not one value per row"
    );
    rms_norm::backward_into_saved(x, w, dy, rstd, dx)
}

/// silu(gate) ⊙ up, elementwise, into `y`.
pub fn swiglu_forward(gate: &[f32], up: &[f32], y: &mut [f32]) {
    assert!(gate.len() == up.len() && up.len() == y.len());
    swiglu::forward_into(gate, up, y)
}

/// (dgate, dup) of [`swiglu_forward`] for upstream `dy`, into `dgate` and `dup`.
pub fn swiglu_backward(gate: &[f32], up: &[f32], dy: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
    let n = gate.len();
    assert!(up.len() == n && dy.len() == n && dgate.len() == n && dup.len() == n);
    swiglu::backward_into(gate, up, dy, dgate, dup)
}

/// silu(gate) ⊙ up on rows that hold [gate | up] side by side (one GEMM's output for the
/// stacked gate and up weights): `gu` (N, 2F) → `y` (N, F).
pub fn swiglu_paired_forward(gu: &[f32], f: usize, y: &mut [f32]) {
    assert!(gu.len() == 2 * y.len() && y.len().is_multiple_of(f));
    swiglu::forward_paired(gu, f, y)
}

/// Backward of [`swiglu_paired_forward`]: `dgu` (N, 2F) gets rows [dgate | dup].
pub fn swiglu_paired_backward(gu: &[f32], dy: &[f32], f: usize, dgu: &mut [f32]) {
    assert!(gu.len() == 2 * dy.len() && dgu.len() == gu.len() && dy.len().is_multiple_of(f));
    swiglu::backward_paired(gu, dy, f, dgu)
}

/// Half-split RoPE of `x` (B·h, T, D) into `y`, with tables `cos`, `sin` (≥ T rows of D):
/// rows past T of the tables are ignored.
pub fn rope_forward(x: &[f32], cos: &[f32], sin: &[f32], t: usize, d: usize, y: &mut [f32]) {
    assert!(x.len().is_multiple_of(t * d) && cos.len() >= t * d && sin.len() >= t * d);
    assert_eq!(x.len(), y.len());
    rope::rotate_into(x, cos, sin, t, d, false, y)
}

/// The gradient of [`rope_forward`]: the inverse rotation of `dy` (B·h, T, D) into `dx`.
pub fn rope_backward(dy: &[f32], cos: &[f32], sin: &[f32], t: usize, d: usize, dx: &mut [f32]) {
    assert!(dy.len().is_multiple_of(t * d) && cos.len() >= t * d && sin.len() >= t * d);
    assert_eq!(dy.len(), dx.len());
    rope::rotate_into(dy, cos, sin, t, d, true, dx)
}

/// Causal grouped-query attention into `out` (B, H, T, D) and `lse` (B, H, T); `lse` is
/// what [`attention_backward`] needs besides the inputs and the output.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttnShape,
    scale: f64,
    out: &mut [f32],
    lse: &mut [f32],
) {
    assert!(q.len() == shape.q_len() && out.len() == q.len());
    assert!(k.len() == shape.kv_len() && v.len() == shape.kv_len());
    assert_eq!(lse.len(), shape.b * shape.h * shape.t);
    attention::forward_into(q, k, v, shape.dims(), scale, out, lse)
}

/// The slices [`attention_backward`] reads: the forward's inputs, output and lse, and the
/// upstream gradient `dout` (B, H, T, D).
pub struct AttnSaved<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub out: &'a [f32],
    pub lse: &'a [f32],
    pub dout: &'a [f32],
}

/// dq, dk, dv of [`attention_forward`] into the last three slices (as long as q, k, v).
pub fn attention_backward(
    x: AttnSaved<'_>,
    shape: AttnShape,
    scale: f64,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let n = shape.q_len();
    assert!(x.q.len() == n && x.out.len() == n && x.dout.len() == n && dq.len() == n);
    let m = shape.kv_len();
    assert!(x.k.len() == m && x.v.len() == m && dk.len() == m && dv.len() == m);
    assert_eq!(x.lse.len(), shape.b * shape.h * shape.t);
    let saved = BwdIn {
        q: x.q,
        k: x.k,
        v: x.v,
        o: x.out,
        dout: x.dout,
        lse: x.lse,
    };
    attention::backward_into(&saved, shape.dims(), scale, dq, dk, dv)
}

/// Mean cross-entropy of `logits` (N, V) against `targets` (N) → (mean, lse (N)). A target
/// ≥ V is an error naming its row.
pub fn cross_entropy_forward(logits: &[f32], targets: &[u32], v: usize) -> Result<(f32, Vec<f32>)> {
    assert_eq!(logits.len(), targets.len() * v);
    cross_entropy::check_targets(targets, v)?;
    Ok(cross_entropy::forward(logits, targets, v))
}

/// Backward of `g` · [`cross_entropy_forward`]'s mean, in place: `logits` (N, V) become
/// dlogits.
pub fn cross_entropy_backward(logits: &mut [f32], targets: &[u32], lse: &[f32], v: usize, g: f64) {
    assert!(logits.len() == targets.len() * v && lse.len() == targets.len());
    cross_entropy::backward_in_place(logits, targets, lse, v, g)
}

/// A row-major matrix operand of [`matmul`]: `data` holds `rows × cols` row-major, used as
/// is or transposed.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub transposed: bool,
}

impl<'a> Mat<'a> {
    /// `data` (rows, cols), used as is.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix data is not rows × cols");
        Mat {
            data,
            rows,
            cols,
            transposed: false,
        }
    }

    /// `data` (rows, cols), used as its transpose (cols, rows).
    pub fn t(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            transposed: true,
            ..Mat::new(data, rows, cols)
        }
    }

    /// (rows, cols) of the operand as used.
    fn used(&self) -> (usize, usize) {
        if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    /// (column stride, row stride) of the operand as used.
    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (self.cols as isize, 1)
        } else {
            (1, self.cols as isize)
        }
    }
}

/// c (m, n) = a · b, or c += a · b with `accumulate`; c is row-major. Runs on rayon's current
/// pool; the k-sums of each output element are done in the same order for any pool size.
pub fn matmul(c: &mut [f32], a: Mat<'_>, b: Mat<'_>, accumulate: bool) {
    let (m, k) = a.used();
    let (k2, n) = b.used();
    assert_eq!(k, k2, "inner dimensions differ");
    assert_eq!(c.len(), m * n, "output is not m × n");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    let threads = rayon::current_num_threads();
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let (a_cs, a_rs) = a.strides();
    let (b_cs, b_rs) = b.strides();
    // SAFETY: the asserts above make every index the strides reach lie inside its slice:
    // a spans m×k, b spans k×n and c spans m×n elements with the strides given, and c is a
    // unique borrow that does not alias a or b.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn naive(
        a: &[f32],
        ar: usize,
        ac: usize,
        at: bool,
        b: &[f32],
        br: usize,
        bc: usize,
        bt: bool,
    ) -> Vec<f32> {
        let get = |d: &[f32], cols: usize, t: bool, i: usize, j: usize| {
            if t { d[j * cols + i] } else { d[i * cols + j] }
        };
        let (m, k) = if at { (ac, ar) } else { (ar, ac) };
        let n = if bt { br } else { bc };
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| get(a, ac, at, i, p) * get(b, bc, bt, p, j))
                    .sum();
            }
        }
        c
    }

    #[test]
    fn matmul_matches_naive_for_every_transpose_and_accumulates() {
        let a: Vec<f32> = (0..35).map(|i| (i as f32 * 0.37).sin()).collect(); // 5×7
        let b: Vec<f32> = (0..28).map(|i| (i as f32 * 0.71).cos()).collect(); // 7×4 or 4×7
        for (at, bt) in [(false, false), (true, false), (false, true), (true, true)] {
            let (ar, ac) = if at { (7, 5) } else { (5, 7) };
            let (br, bc) = if bt { (4, 7) } else { (7, 4) };
            let am = if at {
                Mat::t(&a, ar, ac)
            } else {
                Mat::new(&a, ar, ac)
            };
            let bm = if bt {
                Mat::t(&b, br, bc)
            } else {
                Mat::new(&b, br, bc)
            };
            let want = naive(&a, ar, ac, at, &b, br, bc, bt);
            let mut c = vec![f32::NAN; 20];
            matmul(&mut c, am, bm, false);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-5, "{at} {bt}: {x} vs {y}");
            }
            matmul(&mut c, am, bm, true);
            for (x, y) in c.iter().zip(&want) {
                assert!(
                    (x - 2.0 * y).abs() < 1e-5,
                    "accumulate {at} {bt}: {x} vs {}",
                    2.0 * y
                );
            }
        }
    }

    #[test]
    fn in_place_cross_entropy_backward_matches_the_op() {
        use candle_core::{Device, Tensor};
        let (n, v) = (37, 29);
        let x: Vec<f32> = (0..n * v)
            .map(|i| ((i * 7919 % 1000) as f32 / 100.0) - 5.0)
            .collect();
        let t: Vec<u32> = (0..n).map(|i| (i * 13 % v) as u32).collect();
        let xt = candle_core::Var::from_tensor(
            &Tensor::from_vec(x.clone(), (n, v), &Device::Cpu).unwrap(),
        )
        .unwrap();
        let tt = Tensor::from_vec(t.clone(), n, &Device::Cpu).unwrap();
        let loss = crate::cross_entropy(&xt, &tt).unwrap();
        let want = loss
            .backward()
            .unwrap()
            .get(&xt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let (mean, lse) = cross_entropy_forward(&x, &t, v).unwrap();
        assert_eq!(mean, loss.to_scalar::<f32>().unwrap());
        let mut d = x.clone();
        cross_entropy_backward(&mut d, &t, &lse, v, 1.0);
        assert_eq!(d, want);
    }

    #[test]
    fn paired_swiglu_matches_the_split_one() {
        let (n, f) = (300, 70); // more than one task's worth of rows
        let gu: Vec<f32> = (0..n * 2 * f)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0)
            .collect();
        let dy: Vec<f32> = (0..n * f)
            .map(|i| ((i * 11 % 29) as f32 - 14.0) / 7.0)
            .collect();
        let (g, u): (Vec<f32>, Vec<f32>) = (
            gu.chunks(2 * f).flat_map(|r| r[..f].to_vec()).collect(),
            gu.chunks(2 * f).flat_map(|r| r[f..].to_vec()).collect(),
        );
        let (mut y1, mut y2) = (vec![0.0; n * f], vec![0.0; n * f]);
        swiglu_forward(&g, &u, &mut y1);
        swiglu_paired_forward(&gu, f, &mut y2);
        assert_eq!(y1, y2);
        let (mut dg, mut du, mut dgu) = (vec![0.0; n * f], vec![0.0; n * f], vec![0.0; 2 * n * f]);
        swiglu_backward(&g, &u, &dy, &mut dg, &mut du);
        swiglu_paired_backward(&gu, &dy, f, &mut dgu);
        let joined: Vec<f32> = dg
            .chunks(f)
            .zip(du.chunks(f))
            .flat_map(|(a, b)| [a, b].concat())
            .collect();
        assert_eq!(joined, dgu);
    }

    #[test]
    fn bad_targets_are_an_error_not_a_panic() {
        let e = cross_entropy_forward(&[0.0; 6], &[1, 3], 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains('3'), "{e}");
    }
}
