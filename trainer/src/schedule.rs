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
//!
//! A decay is written `SHAPE:LENGTH[:FLOOR]` ([`DecaySpec`]); one parser reads its length
//! ([`DecayLength::parse`]) and floor ([`parse_floor`]) for `--decay`, `--branch-decay` and
//! the TUI's fork form, each taking the length forms of its [`LengthForm`].

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

    /// Whether this shape can decay to `floor`: exp (floor^p) never reaches 0.
    pub fn reaches(self, floor: f64) -> bool {
        !(self == DecayShape::Exp && floor == 0.0)
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

/// The floor a written decay takes when it gives none: a tenth of the peak.
pub const DEFAULT_FLOOR: f64 = 0.1;

/// How long a decay lasts, as written: a number of steps, or a fraction of a span (the run's
/// steps for the trunk's decay, the fork step for a branch's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DecayLength {
    Steps(u64),
    Fraction(f64),
}

/// The ways a place lets a decay's length be written. The number rules are the same
/// everywhere ([`DecayLength::parse`]); each place takes the forms that make sense there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthForm {
    /// A fraction of the run's steps in (0, 1]; `1` is the whole run (`--decay`'s FRACTION).
    FractionOfRun,
    /// Steps (an integer ≥ 1) or a fraction of the fork step in (0, 1) (`--branch-decay`'s
    /// LENGTH).
    StepsOrFraction,
    /// Steps (an integer ≥ 1) or a percentage of the fork step in (0, 100], e.g. `10%` (the
    /// TUI's fork form).
    StepsOrPercent,
}

impl LengthForm {
    /// The length's name in the grammar `SHAPE:NAME[:FLOOR]`.
    fn name(self) -> &'static str {
        match self {
            LengthForm::FractionOfRun => "FRACTION",
            LengthForm::StepsOrFraction | LengthForm::StepsOrPercent => "LENGTH",
        }
    }

    /// Two whole decays written this way.
    fn examples(self) -> &'static str {
        match self {
            LengthForm::FractionOfRun => "exp:0.1 or linear:0.2:0",
            LengthForm::StepsOrFraction => "exp:0.1 or cosine:200:0",
            LengthForm::StepsOrPercent => "exp:10% or cosine:200:0",
        }
    }

    /// What a length written this way may be.
    fn allowed(self) -> &'static str {
        match self {
            LengthForm::FractionOfRun => "a fraction of the run's steps in (0, 1]",
            LengthForm::StepsOrFraction => {
                "steps (an integer ≥ 1) or a fraction of the fork step in (0, 1)"
            }
            LengthForm::StepsOrPercent => {
                "steps (an integer ≥ 1) or a percentage of the fork step in (0, 100]"
            }
        }
    }

    fn takes_steps(self) -> bool {
        self != LengthForm::FractionOfRun
    }

    fn takes_percent(self) -> bool {
        self == LengthForm::StepsOrPercent
    }

    /// Whether `f` is a bare fraction this form takes.
    fn takes_fraction(self, f: f64) -> bool {
        match self {
            LengthForm::FractionOfRun => f > 0.0 && f <= 1.0,
            // `1` is a step there, so a fraction stays below it.
            LengthForm::StepsOrFraction => f > 0.0 && f < 1.0,
            LengthForm::StepsOrPercent => false,
        }
    }
}

impl DecayLength {
    /// Parses a decay's length written in one of `form`'s ways: an integer is steps (where
    /// the form takes steps), `P%` a percentage (where it takes them), any other number a
    /// fraction. The error names the value and what is allowed.
    pub fn parse(text: &str, form: LengthForm) -> Result<Self> {
        let refuse = || {
            Error::Config(format!(
                "LENGTH {text:?} is not allowed; give {}",
                form.allowed()
            ))
        };
        if form.takes_percent()
            && let Some(p) = text.strip_suffix('%')
        {
            return match p.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(DecayLength::Fraction(p / 100.0)),
                _ => Err(refuse()),
            };
        }
        if form.takes_steps()
            && let Ok(n) = text.parse::<u64>()
        {
            return if n >= 1 {
                Ok(DecayLength::Steps(n))
            } else {
                Err(refuse())
            };
        }
        match text.parse::<f64>() {
            Ok(f) if form.takes_fraction(f) => Ok(DecayLength::Fraction(f)),
            // A length that may be steps too is quoted as written.
            _ if form.takes_steps() => Err(refuse()),
            // One that is only ever a fraction says which rule it broke.
            Err(_) => Err(Error::Config(format!(
                "{} {text:?} is not a number",
                form.name()
            ))),
            Ok(f) => Err(Error::Config(format!(
                "{} {f} is not allowed; it is {}",
                form.name(),
                form.allowed()
            ))),
        }
    }

    /// The length in steps of a span of `of` steps: at least one, so a short span still
    /// has the shape it asks for.
    pub fn steps(self, of: u64) -> u64 {
        match self {
            DecayLength::Steps(n) => n.max(1),
            DecayLength::Fraction(f) => ((f * of as f64).round() as u64).max(1),
        }
    }
}

/// Parses a decay's floor: the final learning rate as a ratio of the peak, in [0, 1].
pub fn parse_floor(text: &str) -> Result<f64> {
    let floor: f64 = text
        .parse()
        .map_err(|_| Error::Config(format!("FLOOR {text:?} is not a number")))?;
    if !(0.0..=1.0).contains(&floor) {
        return Err(Error::Config(format!(
            "FLOOR {floor} is not allowed; it is a fraction of the peak lr in [0, 1]"
        )));
    }
    Ok(floor)
}

/// A decay as written on the command line: `SHAPE:LENGTH[:FLOOR]`, the length in one of a
/// [`LengthForm`]'s ways, the floor [`DEFAULT_FLOOR`] when not given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecaySpec {
    pub shape: DecayShape,
    pub length: DecayLength,
    pub floor: f64,
}

impl DecaySpec {
    /// Parses `SHAPE:LENGTH[:FLOOR]`; the error quotes `spec` and names the part at fault,
    /// so a caller only prefixes where it was written (`--decay`).
    pub fn parse(spec: &str, form: LengthForm) -> Result<Self> {
        let parts: Vec<&str> = spec.split(':').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(Error::Config(format!(
                "{spec:?} is not allowed; use SHAPE:{}[:FLOOR], e.g. {}",
                form.name(),
                form.examples()
            )));
        }
        let in_spec = |e: Error| Error::Config(format!("{spec:?}: {e}"));
        let shape: DecayShape = parts[0].parse().map_err(in_spec)?;
        let length = DecayLength::parse(parts[1], form).map_err(in_spec)?;
        let floor = match parts.get(2) {
            Some(f) => parse_floor(f).map_err(in_spec)?,
            None => DEFAULT_FLOOR,
        };
        Ok(DecaySpec {
            shape,
            length,
            floor,
        })
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
            shape,
            floor,
            decay_steps,
            ..
        } = *self
            && !shape.reaches(floor)
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
mod tests;
