//! Min/max buckets: how a long series (a million steps) is drawn without random sampling.
//! Each bucket covers a contiguous run of samples and keeps their step span, minimum, maximum,
//! first and last value, so a chart of W columns shows every spike from 2·W numbers.

/// One bucket of consecutive samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub step_lo: u64,
    pub step_hi: u64,
    pub min: f64,
    pub max: f64,
    pub first: f64,
    pub last: f64,
    pub count: u64,
}

/// Folds samples with indices in `lo..hi` into `n` buckets of (almost) equal sample counts,
/// fed in order, in as many pieces as the caller likes.
pub struct BucketFolder {
    lo: u64,
    len: u64,
    n: u64,
    out: Vec<Bucket>,
}

impl BucketFolder {
    /// Buckets for the sample indices `lo..hi`; at most `n` (fewer when there are fewer samples).
    pub fn new(lo: u64, hi: u64, n: usize) -> Self {
        let len = hi.saturating_sub(lo);
        BucketFolder {
            lo,
            len,
            n: (n as u64).min(len).max(1),
            out: Vec::new(),
        }
    }

    fn bucket_of(&self, index: u64) -> u64 {
        // Bucket b holds indices lo + [b·len/n, (b+1)·len/n).
        ((index - self.lo) as u128 * self.n as u128 / self.len as u128) as u64
    }

    /// Adds samples whose first has index `start`. NaN values are skipped in min/max.
    pub fn push(&mut self, start: u64, steps: &[u64], values: &[f64]) {
        for (k, (&s, &v)) in steps.iter().zip(values).enumerate() {
            let b = self.bucket_of(start + k as u64) as usize;
            if b >= self.out.len() {
                self.out.push(Bucket {
                    step_lo: s,
                    step_hi: s,
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                    first: v,
                    last: v,
                    count: 0,
                });
            }
            let bk = self.out.last_mut().expect("just pushed");
            bk.step_hi = s;
            bk.last = v;
            bk.count += 1;
            if !v.is_nan() {
                bk.min = bk.min.min(v);
                bk.max = bk.max.max(v);
            }
        }
    }

    pub fn finish(self) -> Vec<Bucket> {
        self.out
    }
}

/// Buckets of an in-memory series.
pub fn reduce(steps: &[u64], values: &[f64], n: usize) -> Vec<Bucket> {
    let mut f = BucketFolder::new(0, steps.len() as u64, n);
    f.push(0, steps, values);
    f.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_every_extreme() {
        let steps: Vec<u64> = (1..=1000).collect();
        let mut values: Vec<f64> = steps.iter().map(|&s| (s as f64).sin()).collect();
        values[517] = 50.0; // a spike
        values[3] = -50.0;
        let b = reduce(&steps, &values, 10);
        assert_eq!(b.len(), 10);
        assert_eq!(b.iter().map(|x| x.count).sum::<u64>(), 1000);
        assert_eq!(b[5].max, 50.0);
        assert_eq!(b[0].min, -50.0);
        assert_eq!((b[0].step_lo, b[9].step_hi), (1, 1000));
        // Pieces give the same buckets as one push.
        let mut f = BucketFolder::new(0, 1000, 10);
        for c in 0..10 {
            let r = c * 100..(c + 1) * 100;
            f.push(r.start as u64, &steps[r.clone()], &values[r]);
        }
        assert_eq!(f.finish(), b);
    }

    #[test]
    fn fewer_samples_than_buckets() {
        let b = reduce(&[1, 2, 3], &[1.0, f64::NAN, 3.0], 100);
        assert_eq!(b.len(), 3);
        assert!(b[1].min.is_infinite(), "a NaN-only bucket has no extremes");
        assert!(reduce(&[], &[], 10).is_empty());
    }
}
