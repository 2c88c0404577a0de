//! splitmix64: a tiny, portable, seekable PRNG. Output i (0-based) of a stream seeded with `s`
//! is `mix(s + (i+1)·0x9E3779B97F4A7C15)`, so any language can regenerate the same numbers,
//! and a stream can be started anywhere (which is what makes batches pure functions of
//! `(seed, step)`).

pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 finaliser.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a tuple of words into one seed (order matters).
pub fn hash(words: &[u64]) -> u64 {
    words.iter().fold(0x243F_6A88_85A3_08D3u64, |acc, &w| {
        mix(acc ^ mix(w.wrapping_add(GOLDEN)))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the tiny bias is irrelevant here).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in [0, 1).
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal by Box–Muller.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_definition() {
        // Draw i of seed s is mix(s + (i+1)·GOLDEN), as minicpm_ref.py's splitmix64.
        let mut r = SplitMix64::new(7);
        for i in 0..5u64 {
            assert_eq!(
                r.next_u64(),
                mix(7u64.wrapping_add((i + 1).wrapping_mul(GOLDEN)))
            );
        }
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = SplitMix64::new(1);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.01,
            "{mean} {var}"
        );
    }
}
