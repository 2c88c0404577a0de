//! Learning-rate schedules as pure, serialisable data: `lr(step)` for 1-based steps.
//!
//! WSD is the MiniCPM paper's eq. (1) (Hu et al. 2024, arXiv 2404.06395): linear warmup to the
//! peak over W steps, the peak until the stable phase ends at S, then a decay over D steps to a
//! floor ratio f. With p = (s − S)/D ∈ (0, 1]:
//!
//! | shape    | multiplier                        | source                      |
//! |----------|-----------------------------------|-----------------------------|
//! | `exp`    | f^p                               | MiniCPM (0.5^((s−S)/T_half)) |
//! | `linear` | 1 − (1 − f)·p                     |                             |
//! | `cosine` | f + (1 − f)·(1 + cos πp)/2        |                             |
//! | `1-sqrt` | f + (1 − f)·(1 − √p)              | Hägele et al. 2024          |
//!
//! Every shape reaches exactly f at s = S + D. The cosine schedule (the baseline WSD is
//! compared against) decays over everything after warmup; the constant schedule never decays.
//! A branch (a later issue) is just another schedule with its own S.

use serde::{Deserialize, Serialize};
use wsdscope_events::{Phase, PhaseBounds};

use crate::error::{Error, Result};

/// The shape of a decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecayShape {
    #[serde(rename = "exp")]
    Exp,
    #[serde(rename = "linear")]
    Linear,
    #[serde(rename = "cosine")]
    Cosine,
    #[serde(rename = "1-sqrt")]
    OneSqrt,
}

impl DecayShape {
    pub const ALL: [DecayShape; 4] = [
        DecayShape::Exp,
        DecayShape::Linear,
        DecayShape::Cosine,
        DecayShape::OneSqrt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DecayShape::Exp => "exp",
            DecayShape::Linear => "linear",
            DecayShape::Cosine => "cosine",
            DecayShape::OneSqrt => "1-sqrt",
        }
    }

    /// Multiplier at decay progress `p` ∈ [0, 1] towards floor ratio `floor`.
    pub fn multiplier(self, p: f64, floor: f64) -> f64 {
        let p = p.clamp(0.0, 1.0);
        match self {
            DecayShape::Exp => floor.powf(p),
            DecayShape::Linear => 1.0 - (1.0 - floor) * p,
            DecayShape::Cosine => {
                floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
            }
            DecayShape::OneSqrt => floor + (1.0 - floor) * (1.0 - p.sqrt()),
        }
    }
}

impl std::str::FromStr for DecayShape {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DecayShape::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown decay shape {s:?}; allowed: exp, linear, cosine, 1-sqrt"
                ))
            })
    }
}

impl std::fmt::Display for DecayShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A learning-rate schedule. Steps are 1-based; `lr(s)` is the rate used by step `s`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// Warmup-Stable-Decay: warmup to `peak` over `warmup` steps, `peak` until `stable_end`,
    /// then `shape` over `decay_steps` to `floor`·peak (and `floor`·peak after that).
    Wsd {
        peak: f64,
        warmup: u64,
        stable_end: u64,
        decay_steps: u64,
        shape: DecayShape,
        floor: f64,
    },
    /// Warmup, then a cosine from `peak` to `floor`·peak at `total`.
    Cosine {
        peak: f64,
        warmup: u64,
        total: u64,
        floor: f64,
    },
    /// Warmup, then `peak` for ever.
    Constant { peak: f64, warmup: u64, total: u64 },
}

impl Schedule {
    /// A WSD schedule over `total` steps whose last `decay_steps` decay.
    pub fn wsd(
        peak: f64,
        total: u64,
        warmup: u64,
        decay_steps: u64,
        shape: DecayShape,
        floor: f64,
    ) -> Result<Self> {
        if decay_steps > total.saturating_sub(warmup) {
            return Err(Error::Config(format!(
                "decay of {decay_steps} steps does not fit in a run of {total} steps with {warmup} warmup steps; \
                 warmup + decay must be at most the number of steps"
            )));
        }
        let s = Schedule::Wsd {
            peak,
            warmup,
            stable_end: total - decay_steps,
            decay_steps,
            shape,
            floor,
        };
        s.validate()?;
        Ok(s)
    }

    /// Checks peak, floor and shape together; messages name the value and what is allowed.
    pub fn validate(&self) -> Result<()> {
        let peak = self.peak();
        if !(peak.is_finite() && peak > 0.0) {
            return Err(Error::Config(format!(
                "learning rate {peak} is not allowed; it must be a finite number > 0"
            )));
        }
        let floor = match *self {
            Schedule::Wsd { floor, .. } | Schedule::Cosine { floor, .. } => floor,
            Schedule::Constant { .. } => 0.0,
        };
        if !(0.0..=1.0).contains(&floor) {
            return Err(Error::Config(format!(
                "decay floor {floor} is not allowed; it is a fraction of the peak lr in [0, 1]"
            )));
        }
        if let Schedule::Wsd {
            shape: DecayShape::Exp,
            floor,
            decay_steps,
            ..
        } = *self
            && floor == 0.0
            && decay_steps > 0
        {
            return Err(Error::Config(
                "exp decay needs a floor > 0 (floor^p never reaches 0); use linear, cosine or 1-sqrt to decay to 0"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The `--schedule` name of this schedule: `wsd`, `cosine` or `constant`.
    pub fn kind(&self) -> &'static str {
        match self {
            Schedule::Wsd { .. } => "wsd",
            Schedule::Cosine { .. } => "cosine",
            Schedule::Constant { .. } => "constant",
        }
    }

    pub fn peak(&self) -> f64 {
        match *self {
            Schedule::Wsd { peak, .. }
            | Schedule::Cosine { peak, .. }
            | Schedule::Constant { peak, .. } => peak,
        }
    }

    pub fn warmup(&self) -> u64 {
        match *self {
            Schedule::Wsd { warmup, .. }
            | Schedule::Cosine { warmup, .. }
            | Schedule::Constant { warmup, .. } => warmup,
        }
    }

    /// The last step of the schedule.
    pub fn total(&self) -> u64 {
        match *self {
            Schedule::Wsd {
                stable_end,
                decay_steps,
                ..
            } => stable_end + decay_steps,
            Schedule::Cosine { total, .. } | Schedule::Constant { total, .. } => total,
        }
    }

    /// Multiplier of the peak at 1-based step `s`.
    pub fn multiplier(&self, s: u64) -> f64 {
        let w = self.warmup();
        if w > 0 && s <= w {
            return s as f64 / w as f64;
        }
        match *self {
            Schedule::Wsd {
                stable_end,
                decay_steps,
                shape,
                floor,
                ..
            } => {
                if decay_steps == 0 || s <= stable_end {
                    1.0
                } else {
                    shape.multiplier((s - stable_end) as f64 / decay_steps as f64, floor)
                }
            }
            Schedule::Cosine { total, floor, .. } => {
                let span = total.saturating_sub(w).max(1);
                DecayShape::Cosine.multiplier((s.saturating_sub(w)) as f64 / span as f64, floor)
            }
            Schedule::Constant { .. } => 1.0,
        }
    }

    /// Learning rate at 1-based step `s`.
    pub fn lr(&self, s: u64) -> f64 {
        self.peak() * self.multiplier(s)
    }

    /// Phase boundaries (see [`PhaseBounds`]). Cosine has no stable phase; constant no decay.
    pub fn bounds(&self) -> PhaseBounds {
        let warmup_end = self.warmup();
        let total = self.total();
        let decay_start = match *self {
            Schedule::Wsd { stable_end, .. } => stable_end,
            Schedule::Cosine { .. } => warmup_end,
            Schedule::Constant { .. } => total,
        };
        PhaseBounds {
            warmup_end,
            decay_start,
            total,
        }
    }

    pub fn phase(&self, s: u64) -> Phase {
        let b = self.bounds();
        if s <= b.warmup_end {
            Phase::Warmup
        } else if s <= b.decay_start {
            Phase::Stable
        } else {
            Phase::Decay
        }
    }

    /// One-line description, e.g. `wsd exp decay 10% to 0.1`.
    pub fn describe(&self) -> String {
        match *self {
            Schedule::Wsd {
                decay_steps,
                shape,
                floor,
                ..
            } => format!("wsd, {shape} decay over {decay_steps} steps to {floor}×peak"),
            Schedule::Cosine { floor, .. } => format!("cosine to {floor}×peak"),
            Schedule::Constant { .. } => "constant".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn wsd_boundaries_for_every_shape() {
        for shape in DecayShape::ALL {
            let s = Schedule::wsd(0.01, 100, 10, 20, shape, 0.1).unwrap();
            assert!(close(s.lr(1), 0.001), "{shape}: first warmup step");
            assert!(close(s.lr(10), 0.01), "{shape}: end of warmup is the peak");
            assert!(close(s.lr(11), 0.01), "{shape}: stable");
            assert!(close(s.lr(80), 0.01), "{shape}: last stable step");
            assert!(
                s.lr(81) < 0.01,
                "{shape}: decay starts right after the stable phase"
            );
            assert!(
                close(s.lr(100), 0.001),
                "{shape}: ends at the floor exactly"
            );
            assert!(
                close(s.lr(150), 0.001),
                "{shape}: stays at the floor past the end"
            );
            assert_eq!(s.phase(10), Phase::Warmup);
            assert_eq!(s.phase(11), Phase::Stable);
            assert_eq!(s.phase(80), Phase::Stable);
            assert_eq!(s.phase(81), Phase::Decay);
            // Monotone non-increasing over the decay.
            for t in 81..100 {
                assert!(s.lr(t + 1) <= s.lr(t) + 1e-15, "{shape} rises at {t}");
            }
        }
    }

    #[test]
    fn shapes_match_their_formulas_midway() {
        let f = 0.1;
        assert!(close(DecayShape::Exp.multiplier(0.5, f), 0.1f64.sqrt()));
        assert!(close(DecayShape::Linear.multiplier(0.5, f), 0.55));
        assert!(close(DecayShape::Cosine.multiplier(0.5, f), 0.55));
        assert!(close(
            DecayShape::OneSqrt.multiplier(0.25, f),
            0.1 + 0.9 * 0.5
        ));
        assert!(close(DecayShape::Cosine.multiplier(0.0, f), 1.0));
    }

    #[test]
    fn floor_zero_is_allowed_except_for_exp() {
        let s = Schedule::wsd(0.01, 100, 0, 10, DecayShape::Linear, 0.0).unwrap();
        assert_eq!(s.lr(100), 0.0);
        assert_eq!(s.lr(1), 0.01, "no warmup: first step at the peak");
        let err = Schedule::wsd(0.01, 100, 0, 10, DecayShape::Exp, 0.0).unwrap_err();
        assert!(err.to_string().contains("exp decay needs a floor > 0"));
    }

    #[test]
    fn rejects_decay_longer_than_the_run_and_bad_values() {
        let e = Schedule::wsd(0.01, 100, 10, 95, DecayShape::Exp, 0.1).unwrap_err();
        assert!(e.to_string().contains("decay of 95 steps"), "{e}");
        assert!(Schedule::wsd(0.0, 100, 10, 10, DecayShape::Exp, 0.1).is_err());
        assert!(Schedule::wsd(-1.0, 100, 10, 10, DecayShape::Exp, 0.1).is_err());
        assert!(Schedule::wsd(0.01, 100, 10, 10, DecayShape::Exp, 1.5).is_err());
    }

    #[test]
    fn cosine_and_constant() {
        let c = Schedule::Cosine {
            peak: 1.0,
            warmup: 10,
            total: 110,
            floor: 0.1,
        };
        assert!(close(c.lr(10), 1.0));
        assert!(close(c.lr(60), 0.55));
        assert!(close(c.lr(110), 0.1));
        assert_eq!(c.phase(11), Phase::Decay);
        let k = Schedule::Constant {
            peak: 0.5,
            warmup: 0,
            total: 10,
        };
        assert!(close(k.lr(1), 0.5) && close(k.lr(10), 0.5));
        assert_eq!(k.phase(10), Phase::Stable);
    }

    #[test]
    fn serde_round_trip_is_pure_data() {
        let s = Schedule::wsd(0.01, 1000, 100, 100, DecayShape::OneSqrt, 0.0).unwrap();
        let j = serde_json::to_string(&s).unwrap();
        assert!(j.contains("\"1-sqrt\""), "{j}");
        let back: Schedule = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
        for t in [1, 100, 900, 950, 1000] {
            assert_eq!(back.lr(t), s.lr(t));
        }
    }

    #[test]
    fn matches_the_torch_reference_formula() {
        // minicpm_ref.py wsd_mult(step=95, total=100, warmup=10, decay=10, "exp", 0.1) = 0.1**0.5
        let s = Schedule::wsd(1.0, 100, 10, 10, DecayShape::Exp, 0.1).unwrap();
        assert!(close(s.multiplier(95), 0.1f64.powf(0.5)));
        assert!(close(s.multiplier(5), 0.5));
    }
}
