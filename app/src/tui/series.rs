//! Per-run metric columns and the min/max bucket reduction that draws long runs.
//!
//! A chart `W` columns wide never draws more than about `2W` points per series: the visible
//! step range is cut into `W` equal buckets and each bucket contributes its exact minimum and
//! maximum (no random sampling, so spikes survive at any zoom). To make that cheap for a
//! million-step series, every [`Column`] keeps a min/max pyramid next to its values: level 0
//! holds the min and max of each aligned block of [`BLOCK`] samples, level `k + 1` pairs up
//! level `k`. A bucket's min/max is then a few raw samples at its ends plus `O(log n)` pyramid
//! entries, and appending a sample costs amortised `O(1)`.

/// Samples per level-0 block of the pyramid. Small enough that the raw ends of a query are
/// cheap to scan, large enough that the pyramid costs a few percent of the values' memory.
pub const BLOCK: usize = 32;

/// One metric of one run: values aligned with the run's steps, plus a min/max pyramid.
#[derive(Debug, Clone, Default)]
pub struct Column {
    values: Vec<f64>,
    /// `levels[k][i]` is the (min, max) of samples `i·BLOCK·2^k .. (i+1)·BLOCK·2^k`; only
    /// complete blocks are stored. NaNs are ignored; a block of only NaNs holds (+∞, −∞).
    levels: Vec<Vec<(f64, f64)>>,
}

fn merge(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    // f64::min/max ignore NaN operands, so a NaN sample never poisons a block.
    (a.0.min(b.0), a.1.max(b.1))
}

const EMPTY: (f64, f64) = (f64::INFINITY, f64::NEG_INFINITY);

fn scan(values: &[f64]) -> (f64, f64) {
    values.iter().fold(EMPTY, |acc, &v| merge(acc, (v, v)))
}

impl Column {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn values(&self) -> &[f64] {
        &self.values
    }

    pub fn last(&self) -> Option<f64> {
        self.values.last().copied()
    }

    pub fn push(&mut self, v: f64) {
        self.values.push(v);
        let n = self.values.len();
        if !n.is_multiple_of(BLOCK) {
            return;
        }
        // A block just completed: add it to level 0, then carry pairs upwards.
        let block = scan(&self.values[n - BLOCK..]);
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(block);
        let mut k = 0;
        while self.levels[k].len().is_multiple_of(2) {
            let len = self.levels[k].len();
            let pair = merge(self.levels[k][len - 2], self.levels[k][len - 1]);
            if self.levels.len() == k + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[k + 1].push(pair);
            k += 1;
        }
    }

    /// Keeps the first `len` samples. Complete blocks of the prefix are unchanged, so the
    /// pyramid is truncated, never recomputed.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.values.len() {
            return;
        }
        self.values.truncate(len);
        let mut blocks = len / BLOCK;
        for level in &mut self.levels {
            level.truncate(blocks);
            blocks /= 2;
        }
        while self.levels.last().is_some_and(Vec::is_empty) {
            self.levels.pop();
        }
    }

    /// The (min, max) of the non-NaN samples in `a..b`, or `None` if there are none.
    pub fn min_max(&self, a: usize, b: usize) -> Option<(f64, f64)> {
        let b = b.min(self.values.len());
        if a >= b {
            return None;
        }
        let r = if b - a < 2 * BLOCK || self.levels.is_empty() {
            scan(&self.values[a..b])
        } else {
            // Raw samples up to the first block boundary and after the last one.
            let first = a.div_ceil(BLOCK);
            let last = b / BLOCK;
            let mut acc = merge(
                scan(&self.values[a..first * BLOCK]),
                scan(&self.values[last * BLOCK..b]),
            );
            // Blocks first..last, bottom-up as in a segment tree.
            let (mut i, mut j) = (first, last);
            let mut k = 0;
            while i < j && k < self.levels.len() {
                let level = &self.levels[k];
                if i % 2 == 1 {
                    acc = merge(acc, level[i]);
                    i += 1;
                }
                if j % 2 == 1 {
                    j -= 1;
                    acc = merge(acc, level[j]);
                }
                i /= 2;
                j /= 2;
                k += 1;
            }
            acc
        };
        (r.0 <= r.1).then_some(r)
    }
}

/// The points to draw for `col` (aligned with `steps`, ascending) over the step range
/// `lo..=hi` on a chart with `buckets` columns: the raw samples when there are at most
/// `2·buckets` of them, otherwise each bucket's min and max (ordered so the line does not
/// jump needlessly). The nearest sample outside the range on each side is included, so lines
/// reach the chart's edges. Non-finite values are left out.
pub fn envelope(steps: &[u64], col: &Column, lo: f64, hi: f64, buckets: usize) -> Vec<(f64, f64)> {
    envelope_on(steps, col, (lo, hi, buckets), |s| s as f64)
}

/// [`envelope`] on an x axis other than the steps: `x` maps a step to it and must not
/// decrease with the step (tokens, training time); `lo..=hi` and the points are in its unit.
pub fn envelope_on(
    steps: &[u64],
    col: &Column,
    (lo, hi, buckets): (f64, f64, usize),
    x: impl Fn(u64) -> f64,
) -> Vec<(f64, f64)> {
    let n = steps.len().min(col.len());
    let steps = &steps[..n];
    let values = &col.values()[..n];
    if n == 0 || buckets == 0 || hi.is_nan() || lo.is_nan() || hi < lo {
        return Vec::new();
    }
    let first = steps.partition_point(|&s| x(s) < lo);
    let end = steps.partition_point(|&s| x(s) <= hi);
    let mut out = Vec::with_capacity(2 * buckets + 2);
    let push = |out: &mut Vec<(f64, f64)>, i: usize| {
        let v = values[i];
        if v.is_finite() {
            out.push((x(steps[i]), v));
        }
    };
    if first > 0 {
        push(&mut out, first - 1);
    }
    if end - first <= 2 * buckets {
        for i in first..end {
            push(&mut out, i);
        }
    } else {
        let width = (hi - lo) / buckets as f64;
        let mut a = first;
        for j in 0..buckets {
            let right = lo + width * (j + 1) as f64;
            let b = if j + 1 == buckets {
                end
            } else {
                a + steps[a..end].partition_point(|&s| x(s) < right)
            };
            if b > a {
                if b - a == 1 {
                    push(&mut out, a);
                } else if let Some((mn, mx)) = col.min_max(a, b)
                    && mn.is_finite()
                    && mx.is_finite()
                {
                    let mid = lo + width * (j as f64 + 0.5);
                    let prev = out.last().map(|p| p.1);
                    // Visit the extreme nearer to where the line already is first.
                    let max_first = prev.is_some_and(|p| (p - mx).abs() < (p - mn).abs());
                    if mn == mx {
                        out.push((mid, mn));
                    } else if max_first {
                        out.push((mid, mx));
                        out.push((mid, mn));
                    } else {
                        out.push((mid, mn));
                        out.push((mid, mx));
                    }
                }
            }
            a = b;
        }
    }
    if end < n {
        push(&mut out, end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(values: &[f64]) -> Column {
        let mut c = Column::new();
        for &v in values {
            c.push(v);
        }
        c
    }

    /// A deterministic, spiky test signal.
    fn signal(n: usize) -> Vec<f64> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let noise = (x % 10_000) as f64 / 10_000.0;
                10.0 / (1.0 + i as f64 / 100.0) + noise
            })
            .collect()
    }

    fn brute(values: &[f64], a: usize, b: usize) -> Option<(f64, f64)> {
        let b = b.min(values.len());
        if a >= b {
            return None;
        }
        let r = scan(&values[a..b]);
        (r.0 <= r.1).then_some(r)
    }

    #[test]
    fn min_max_matches_a_scan_for_every_range_shape() {
        let v = signal(3000);
        let c = column(&v);
        let cases = [
            (0, 3000),
            (0, 1),
            (5, 6),
            (31, 33),
            (32, 64),
            (1, 2999),
            (100, 1700),
            (64, 2048),
            (1023, 1025),
            (2999, 3000),
            (17, 900),
            (0, 0),
            (10, 5),
        ];
        for (a, b) in cases {
            assert_eq!(c.min_max(a, b), brute(&v, a, b), "range {a}..{b}");
        }
        for a in (0..3000).step_by(97) {
            for b in (a..=3000).step_by(89) {
                assert_eq!(c.min_max(a, b), brute(&v, a, b), "range {a}..{b}");
            }
        }
    }

    #[test]
    fn truncate_keeps_the_pyramid_exact() {
        let v = signal(2000);
        let mut c = column(&v);
        c.truncate(1234);
        for &x in &v[1234..1500] {
            c.push(x * 2.0);
        }
        let mut expect = v[..1234].to_vec();
        expect.extend(v[1234..1500].iter().map(|x| x * 2.0));
        for (a, b) in [(0, 1500), (100, 1400), (1200, 1300), (0, 1234)] {
            assert_eq!(c.min_max(a, b), brute(&expect, a, b), "range {a}..{b}");
        }
    }

    #[test]
    fn nan_samples_are_ignored() {
        let mut v = signal(200);
        v[70] = f64::NAN;
        v[71] = 1e9;
        let c = column(&v);
        assert_eq!(c.min_max(0, 200).map(|r| r.1), Some(1e9));
        let nans = column(&[f64::NAN; 100]);
        assert_eq!(nans.min_max(0, 100), None);
    }

    #[test]
    fn buckets_preserve_each_buckets_exact_min_and_max() {
        let n = 100_000;
        let v = signal(n);
        let steps: Vec<u64> = (1..=n as u64).collect();
        let c = column(&v);
        let buckets = 50;
        let pts = envelope(&steps, &c, 1.0, n as f64, buckets);
        // No neighbours outside 1..=n exist, so every point belongs to a bucket.
        assert!(pts.len() <= 2 * buckets, "{} points", pts.len());
        let width = (n as f64 - 1.0) / buckets as f64;
        for j in 0..buckets {
            let left = 1.0 + width * j as f64;
            let right = left + width;
            let idx: Vec<usize> = (0..n)
                .filter(|&i| {
                    let s = steps[i] as f64;
                    s >= left && (s < right || j + 1 == buckets)
                })
                .collect();
            let (mn, mx) = brute(&v, idx[0], idx[idx.len() - 1] + 1).unwrap();
            let ys: Vec<f64> = pts
                .iter()
                .filter(|p| p.0 >= left && p.0 < right)
                .map(|p| p.1)
                .collect();
            assert_eq!(ys.len(), 2, "bucket {j}");
            assert!(ys.contains(&mn) && ys.contains(&mx), "bucket {j}: {ys:?}");
        }
        // The global extremes are always visible.
        let all = brute(&v, 0, n).unwrap();
        assert!(pts.iter().any(|p| p.1 == all.0));
        assert!(pts.iter().any(|p| p.1 == all.1));
    }

    #[test]
    fn a_narrow_range_draws_raw_points_and_its_neighbours() {
        let v = signal(1000);
        let steps: Vec<u64> = (1..=1000).collect();
        let c = column(&v);
        let pts = envelope(&steps, &c, 100.0, 109.0, 40);
        assert_eq!(pts.len(), 12);
        assert_eq!(pts[0], (99.0, v[98]));
        assert_eq!(pts[11], (110.0, v[109]));
        assert!(envelope(&steps, &c, 2000.0, 3000.0, 40).len() <= 1);
        assert!(envelope(&[], &Column::new(), 0.0, 1.0, 40).is_empty());
    }
}
