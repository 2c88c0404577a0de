//! The CPU step's canonical reduction order: a batch's loss and gradients are sums over its
//! rows, and floating-point sums depend on their order. So that a batch gives bit for bit
//! the same loss and gradients however it is split across data-parallel ranks, the CPU step
//! never sums over more rows than one leaf: the batch's sequences are halved recursively
//! (the first half taking the odd one, as [`crate::collective::rows`] splits a batch between
//! two ranks) down to leaves of at most [`leaf_sequences`], each leaf runs the fused step on
//! its own, and every inner node combines its halves as the gradient all-reduce combines two
//! ranks: `left · share_left + right · share_right`, in f32.
//!
//! ```text
//!   16 sequences of 128 tokens: leaves of 4     two ranks of 8 sequences each
//!            [0, 16)                        rank 0: [0, 8)   rank 1: [8, 16)
//!        [0, 8)    [8, 16)                  all-reduce: g₀ · ½ + g₁ · ½
//!      [0,4) [4,8) [8,12) [12,16)           = the root on the left, bit for bit
//! ```
//!
//! A rank's shard of a power-of-two split is a subtree of the one-process tree, so `mpirun
//! -n 2` (or 4, when the shards still hold whole leaves) trains what one process trains, not
//! just nearly. Leaves of 512 rows cost no speed on this CPU (measured on `tiny` and `wt-9m`:
//! the same CPU time within 2%, GEMMs of 512 rows keep their operands in cache, and the
//! combining adds are ~0.1% of the step's flops) and save memory: only one leaf's
//! activations are alive at a time (peak memory of a `wt-9m` batch of 8: 1275 MiB → 624 MiB).

use super::step::Batch;
use crate::error::Result;

/// Rows (tokens) a leaf holds at most, unless one sequence is longer.
pub const LEAF_ROWS: usize = 512;

/// Sequences per leaf for sequences of `t` tokens: as many as fit [`LEAF_ROWS`], at least one.
pub fn leaf_sequences(t: usize) -> usize {
    (LEAF_ROWS / t.max(1)).max(1)
}

/// Levels of inner nodes above the deepest leaf of a batch of `b` sequences: while that leaf
/// runs, one partial gradient per level waits for it (what the memory estimate counts).
pub fn height(b: usize, leaf_seqs: usize) -> usize {
    if b <= leaf_seqs.max(1) {
        0
    } else {
        1 + height(b.div_ceil(2), leaf_seqs)
    }
}

/// What a leaf (and every node) gives back: the mean loss over its rows and, when asked,
/// the gradient of that mean for every parameter (f32, in checkpoint order).
pub type Partial = (f32, Option<Vec<Vec<f32>>>);

/// One leaf's share of a step, for the gradient noise scale: its rows (tokens) and the
/// squared norm of the gradient of its mean loss. The leaves are small batches drawn from
/// the same step, so with the whole batch's gradient they give the noise scale's two batch
/// sizes without a pass of their own (`engine/step_noise.rs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeafNorm {
    pub tokens: usize,
    pub sq_norm: f64,
}

/// Σ g² over all of a leaf's gradients (f32 within chunks, f64 across them; in parallel).
fn sq_norm(grads: &[Vec<f32>]) -> f64 {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 14;
    grads
        .iter()
        .map(|g| g.par_chunks(CHUNK).map(chunk_sq).sum::<f64>())
        .sum()
}

/// Σ x² of one chunk in 64 independent f32 lanes, so that the compiler vectorises it and
/// no add waits for the one before (with one running sum, a separate pass over the leaves'
/// gradients cost 4% of `tiny`'s step).
fn chunk_sq(c: &[f32]) -> f64 {
    const LANES: usize = 64;
    let mut acc = [0f32; LANES];
    let mut it = c.chunks_exact(LANES);
    for x in &mut it {
        for (a, v) in acc.iter_mut().zip(x) {
            *a += v * v;
        }
    }
    let tail: f32 = it.remainder().iter().map(|x| x * x).sum();
    acc.iter().map(|&a| a as f64).sum::<f64>() + tail as f64
}

/// Runs `leaf` on each leaf of `batch`'s tree, left to right, and combines the results.
/// With `norms` (and gradients), also each leaf's [`LeafNorm`], in no particular order: a
/// leaf's is taken while its parent combines it, in the same pass over its gradients.
pub fn reduce(
    batch: Batch<'_>,
    leaf_seqs: usize,
    leaf: &mut dyn FnMut(Batch<'_>) -> Result<Partial>,
    mut norms: Option<&mut Vec<LeafNorm>>,
) -> Result<Partial> {
    if batch.b <= leaf_seqs.max(1) {
        // The whole batch is one leaf: no parent to take its norm.
        let (tokens, out) = (batch.b * batch.t, leaf(batch)?);
        if let (Some(n), Some(g)) = (norms, &out.1) {
            n.push(LeafNorm {
                tokens,
                sq_norm: sq_norm(g),
            });
        }
        return Ok(out);
    }
    node(batch, leaf_seqs, leaf, &mut norms)
}

/// An inner node of the tree: its two halves (leaves or nodes), combined.
fn node(
    batch: Batch<'_>,
    leaf_seqs: usize,
    leaf: &mut dyn FnMut(Batch<'_>) -> Result<Partial>,
    norms: &mut Option<&mut Vec<LeafNorm>>,
) -> Result<Partial> {
    let (b, t) = (batch.b, batch.t);
    let nl = b.div_ceil(2);
    let is_leaf = |n: usize| n <= leaf_seqs.max(1);
    let (left, right) = split(batch, nl);
    let mut half = |h: Batch<'_>, norms: &mut Option<&mut Vec<LeafNorm>>| {
        if is_leaf(h.b) {
            leaf(h)
        } else {
            node(h, leaf_seqs, leaf, norms)
        }
    };
    let (loss_l, grads_l) = half(left, norms)?;
    let (loss_r, grads_r) = half(right, norms)?;
    // The shares exactly as the all-reduce computes them (f64, then f32).
    let wl = (nl as f64 / b as f64) as f32;
    let wr = ((b - nl) as f64 / b as f64) as f32;
    let loss = loss_l * wl + loss_r * wr;
    let grads = match (grads_l, grads_r) {
        (Some(mut gl), Some(gr)) => {
            // The norms of the halves that are leaves, read in the combining pass.
            let squares = norms.is_some().then_some((is_leaf(nl), is_leaf(b - nl)));
            let mut sq = (0.0, 0.0);
            for (l, r) in gl.iter_mut().zip(&gr) {
                let s = combine(l, r, wl, wr, squares);
                sq = (sq.0 + s.0, sq.1 + s.1);
            }
            if let (Some(n), Some((left_leaf, right_leaf))) = (norms.as_deref_mut(), squares) {
                let halves = [(left_leaf, nl, sq.0), (right_leaf, b - nl, sq.1)];
                for (_, seqs, sq_norm) in halves.into_iter().filter(|h| h.0) {
                    n.push(LeafNorm {
                        tokens: seqs * t,
                        sq_norm,
                    });
                }
            }
            Some(gl)
        }
        _ => None,
    };
    Ok((loss, grads))
}

/// `l = l · wl + r · wr`, element by element (in parallel over chunks; each element's
/// arithmetic is the same however the chunks fall); with `squares`, also Σ l² and Σ r²
/// before combining (each where asked for), read in the same pass.
fn combine(
    l: &mut [f32],
    r: &[f32],
    wl: f32,
    wr: f32,
    squares: Option<(bool, bool)>,
) -> (f64, f64) {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 14;
    let (sl, sr) = squares.unwrap_or((false, false));
    l.par_chunks_mut(CHUNK)
        .zip(r.par_chunks(CHUNK))
        .map(|(l, r)| {
            let sq = (
                if sl { chunk_sq(l) } else { 0.0 },
                if sr { chunk_sq(r) } else { 0.0 },
            );
            for (a, &b) in l.iter_mut().zip(r) {
                *a = *a * wl + b * wr;
            }
            sq
        })
        .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// The first `nl` sequences of `batch` and the rest.
fn split(batch: Batch<'_>, nl: usize) -> (Batch<'_>, Batch<'_>) {
    let at = nl * batch.t;
    let (il, ir) = batch.inputs.split_at(at);
    let (tl, tr) = batch.targets.split_at(at);
    (
        Batch {
            inputs: il,
            targets: tl,
            b: nl,
            t: batch.t,
        },
        Batch {
            inputs: ir,
            targets: tr,
            b: batch.b - nl,
            t: batch.t,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake leaf: loss = the mean of its inputs, one "gradient" = the inputs' mean too,
    /// and a record of which leaves ran.
    fn run(b: usize, t: usize, leaf_seqs: usize) -> (Partial, Vec<(u32, usize)>) {
        let (out, seen, _) = run_with_norms(b, t, leaf_seqs);
        (out, seen)
    }

    /// [`run`], also asking for the leaves' norms; with what each leaf's should be (its
    /// "gradient" is its mean three times: 3·mean²).
    #[allow(clippy::type_complexity)]
    fn run_with_norms(
        b: usize,
        t: usize,
        leaf_seqs: usize,
    ) -> (Partial, Vec<(u32, usize)>, (Vec<LeafNorm>, Vec<LeafNorm>)) {
        let inputs: Vec<u32> = (0..(b * t) as u32).collect();
        let batch = Batch {
            inputs: &inputs,
            targets: &inputs,
            b,
            t,
        };
        let (mut seen, mut want, mut norms) = (Vec::new(), Vec::new(), Vec::new());
        let out = reduce(
            batch,
            leaf_seqs,
            &mut |leaf| {
                seen.push((leaf.inputs[0], leaf.b));
                let mean =
                    leaf.inputs.iter().map(|&x| x as f32).sum::<f32>() / leaf.inputs.len() as f32;
                want.push(LeafNorm {
                    tokens: leaf.b * leaf.t,
                    sq_norm: 3.0 * (mean * mean) as f64,
                });
                Ok((mean, Some(vec![vec![mean; 3]])))
            },
            Some(&mut norms),
        )
        .unwrap();
        (out, seen, (norms, want))
    }

    #[test]
    fn leaves_cover_the_batch_in_order_and_the_mean_is_the_batch_mean() {
        let ((loss, grads), seen) = run(16, 4, 2);
        assert_eq!(seen.len(), 8);
        assert!(seen.iter().all(|&(_, b)| b == 2));
        assert_eq!(
            seen.iter().map(|s| s.0).collect::<Vec<_>>(),
            [0, 8, 16, 24, 32, 40, 48, 56]
        );
        assert_eq!(loss, 31.5, "the mean of 0..64");
        assert_eq!(grads.unwrap()[0], vec![31.5; 3]);
    }

    #[test]
    fn odd_batches_split_like_two_ranks() {
        let (_, seen) = run(5, 1, 1);
        // [0,5) → [0,3) + [3,5) → ([0,2) + [2,3)) + ([3,4) + [4,5)) → leaves of one.
        assert_eq!(seen, [(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)]);
        assert_eq!(
            crate::collective::rows(5, 0, 2),
            0..3,
            "rank 0 takes the odd sequence, as the tree's left half does"
        );
    }

    #[test]
    fn a_half_of_the_batch_is_the_same_subtree_as_a_rank_computes() {
        // The root's left child equals the tree of the first half on its own, bit for bit.
        let ((whole, _), _) = run(16, 3, 1);
        let ((left, _), _) = run(8, 3, 1);
        let inputs: Vec<u32> = (24..48).collect();
        let right_batch = Batch {
            inputs: &inputs,
            targets: &inputs,
            b: 8,
            t: 3,
        };
        let (right, _) = reduce(
            right_batch,
            1,
            &mut |leaf| {
                let mean =
                    leaf.inputs.iter().map(|&x| x as f32).sum::<f32>() / leaf.inputs.len() as f32;
                Ok((mean, None))
            },
            None,
        )
        .unwrap();
        assert_eq!(whole.to_bits(), (left * 0.5 + right * 0.5).to_bits());
    }

    #[test]
    fn leaf_size_follows_the_sequence_length() {
        assert_eq!(leaf_sequences(128), 4);
        assert_eq!(leaf_sequences(64), 8);
        assert_eq!(leaf_sequences(1024), 1);
        assert_eq!(leaf_sequences(0), LEAF_ROWS);
        assert_eq!(height(4, 4), 0);
        assert_eq!(height(16, 4), 2);
        assert_eq!(height(5, 1), 3, "[0,5) → [0,3) → [0,2) → leaves");
    }

    #[test]
    fn every_leafs_norm_is_taken_once_whether_its_sibling_is_a_leaf_or_a_node() {
        // 16 of 4: leaves in pairs; 5 of 1: [0,2)+[2,3) puts a leaf beside a node; 3 of 4:
        // the whole batch is one leaf.
        for (b, t, leaf) in [(16, 4, 4), (5, 2, 1), (7, 1, 2), (3, 4, 4)] {
            let (_, seen, (mut got, mut want)) = run_with_norms(b, t, leaf);
            assert_eq!(got.len(), seen.len(), "{b}/{leaf}: one norm per leaf");
            let key = |n: &LeafNorm| (n.tokens, n.sq_norm.to_bits());
            got.sort_by_key(key);
            want.sort_by_key(key);
            assert_eq!(got, want, "{b}/{leaf}");
        }
    }

    #[test]
    fn a_leafs_squared_norm_spans_all_its_tensors() {
        let grads = vec![vec![3.0; 1 << 15], vec![], vec![-2.0; 5]];
        assert_eq!(sq_norm(&grads), 9.0 * (1 << 15) as f64 + 20.0);
    }
}
