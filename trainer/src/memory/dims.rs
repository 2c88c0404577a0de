//! A model's dimensions at a pass's batch and sequence length, in u128 so that no product
//! of absurd flags overflows, and the counts of parameters the estimate is built from.

use crate::config::ModelConfig;

/// A model's dimensions in u128, so no product overflows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dims {
    /// Sequences and tokens of the pass.
    pub(super) b: u128,
    pub(super) t: u128,
    pub(super) n: u128,
    pub(super) h: u128,
    pub(super) f: u128,
    pub(super) v: u128,
    pub(super) nh: u128,
    pub(super) kv: u128,
    pub(super) hd: u128,
    /// Columns of the stacked q/k/v projection: (nh + 2·kv)·hd.
    pub(super) width: u128,
    pub(super) layers: u128,
}

impl Dims {
    pub(super) fn new(m: &ModelConfig, b: usize, t: usize) -> Self {
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

    pub(super) fn with_batch(self, b: u128) -> Self {
        Dims {
            b,
            n: b * self.t,
            ..self
        }
    }

    /// All parameters, the tied head counted once (`ModelConfig::total_params`).
    pub(super) fn params(&self) -> u128 {
        let per_layer =
            self.h * self.hd * (2 * self.nh + 2 * self.kv) + 3 * self.h * self.f + 2 * self.h;
        self.layers * per_layer + self.h + self.v * self.h
    }

    /// Elements of the largest parameter tensor: probes convert one tensor at a time.
    pub(super) fn largest_tensor(&self) -> u128 {
        (self.v * self.h)
            .max(self.f * self.h)
            .max(self.nh * self.hd * self.h)
    }

    /// The CPU step's stacked q/k/v and gate/up weights, per layer, in elements.
    pub(super) fn stacked_per_layer(&self) -> u128 {
        self.width * self.h + 2 * self.f * self.h
    }
}
