//! The closed vocabulary of probes: every probe kind a run can report, declared once — its
//! name, its scalars and series with their units, how it is drawn and how it reads in one
//! line — and read by every consumer: the trainer that measures it, the session file that
//! makes one table per kind, the progress line, the TUI's probe panels and `wsdscope plot`.
//!
//! The session file creates one table per probe kind, with one column per scalar, before the
//! file enters SWMR mode (a SWMR writer may only append), so the vocabulary must be known up
//! front. A probe result with a kind or scalar outside it is still recorded whole in the event
//! log; only the table column is missing. The trainer's tests check that every scalar and
//! series it emits is declared here.
//!
//! # Adding a probe
//! 1. Here: a [`ProbeKind`] variant, a `pub mod` of its scalar and series names, and its
//!    [`ProbeSpec`] in [`PROBES`] (scalars and series with units, a [`Drawing`], a one-line
//!    [`ProbeSpec::summary`] template). Add it to [`ProbeKind::PERIODIC`] if the engine
//!    should run it in turn with the others.
//! 2. `trainer/src/probe.rs`: measure it in `measure`, emitting exactly the declared names
//!    (`trainer/tests/probes.rs` fails on any undeclared one).
//! 3. Nothing else is required: the session file makes its table from the declaration, the
//!    progress line and `--jsonl` summarise it from the template, and the TUI lists when it
//!    last reported. To draw it, give it a view: a [`Drawing::OverSteps`] kind is a chart of
//!    the TUI's probes view (`app/src/tui/views/probes_view.rs`) and a figure of
//!    `wsdscope plot --metric NAME`; a [`Drawing::Surface`] or [`Drawing::Curves`] kind
//!    belongs to the landscape view (`app/src/tui/views/landscape.rs`).
//! 4. Document its table in `docs/session-format.md`.

use serde::{Deserialize, Serialize};

/// A probe kind: one kind of measurement of a run's loss landscape or gradient noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// Top Hessian eigenvalue and Adam-preconditioned sharpness (Lanczos on FD HVPs).
    Sharpness,
    /// Gradient noise scale B_simple.
    Noise,
    /// 1-D slices along a random direction and along the last update.
    Slice,
    /// 2-D slice along two random directions.
    Landscape,
    /// Loss along the segment between a run and another (a branch and its parent).
    Interp,
}

impl ProbeKind {
    /// Every kind, in the order the session file lists them.
    pub const ALL: [ProbeKind; 5] = [
        ProbeKind::Sharpness,
        ProbeKind::Noise,
        ProbeKind::Slice,
        ProbeKind::Landscape,
        ProbeKind::Interp,
    ];

    /// What the engine runs periodically, in turn (interpolation runs when a branch ends).
    pub const PERIODIC: [ProbeKind; 4] = [
        ProbeKind::Sharpness,
        ProbeKind::Noise,
        ProbeKind::Slice,
        ProbeKind::Landscape,
    ];

    /// Its declaration.
    pub const fn spec(self) -> &'static ProbeSpec {
        &PROBES[self as usize]
    }

    /// The `probe` name of its results.
    pub const fn name(self) -> &'static str {
        self.spec().name
    }

    /// The kind a result's `probe` name stands for, if it is in the vocabulary.
    pub fn parse(name: &str) -> Option<ProbeKind> {
        probe_spec(name).map(|s| s.kind)
    }
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One named number (a scalar) or array (a series) of a probe result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    /// Its key in the result's `scalars` or `series` (and its column name).
    pub name: &'static str,
    /// Its unit: `"1/lr"`-style for sharpness, `"tokens"`, `"nats"`, … or `""` for a count or
    /// a pure number.
    pub unit: &'static str,
    /// What it is, in a phrase.
    pub about: &'static str,
}

const fn q(name: &'static str, unit: &'static str, about: &'static str) -> Quantity {
    Quantity { name, unit, about }
}

/// How a probe kind is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drawing {
    /// Its scalars over training steps, one point per result: a chart of the TUI's probes
    /// view and a figure of `wsdscope plot`.
    OverSteps {
        /// The scalar the chart is about, drawn as a line in the run's colour.
        headline: &'static str,
        /// The single estimates behind the headline (drawn as marks in the run's colour),
        /// when the headline is a smoothed or preconditioned form of them.
        samples: Option<&'static str>,
        /// The scalar the headline is judged against (drawn faint).
        reference: Option<&'static str>,
        /// Its y-axis: unit, and whether it is logarithmic by default.
        y_label: &'static str,
        log_y: bool,
    },
    /// A loss surface `z[j·nx + i]` at (`x[i]`, `y[j]`): the landscape view.
    Surface {
        x: &'static str,
        y: &'static str,
        z: &'static str,
    },
    /// Loss curves `(x, y)` along directions in parameter space: the landscape view.
    Curves {
        curves: &'static [(&'static str, &'static str)],
    },
}

impl Drawing {
    /// Whether the kind belongs to the landscape view (parameter space, not steps).
    pub fn in_parameter_space(&self) -> bool {
        !matches!(self, Drawing::OverSteps { .. })
    }
}

/// The declaration of one probe kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    /// The `probe` field of its `ProbeResult`s (and its session table's name).
    pub name: &'static str,
    /// A title for charts and figures.
    pub title: &'static str,
    /// Its scalars (besides [`COMMON_SCALARS`]), in table column order.
    pub scalars: &'static [Quantity],
    /// Its series (kept in the event log's `probe` events only).
    pub series: &'static [Quantity],
    pub drawing: Drawing,
    /// How one result reads in one line: text with `{scalar:.N}` (N decimals) and
    /// `{series:range.N}` (the series' min..max) fields; see [`ProbeSpec::summarize`].
    pub summary: &'static str,
}

/// Scalars every probe result carries: its wall time and that time in training steps.
pub const COMMON_SCALARS: &[&str] = &[common::SECONDS, common::COST_STEPS];

/// The names of the scalars every result carries.
pub mod common {
    pub const SECONDS: &str = "seconds";
    pub const COST_STEPS: &str = "cost_steps";
    /// Sequences of the step's batch the probe evaluated (all but the noise scale).
    pub const SEQUENCES: &str = "sequences";
}

/// Names of the sharpness probe's scalars.
pub mod sharpness {
    pub const LAMBDA_MAX: &str = "lambda_max";
    pub const LAMBDA_MIN: &str = "lambda_min";
    pub const PRECOND_LAMBDA_MAX: &str = "precond_lambda_max";
    pub const PRECOND_LAMBDA_MIN: &str = "precond_lambda_min";
    pub const THRESHOLD: &str = "threshold";
    pub const GD_THRESHOLD: &str = "gd_threshold";
    pub const LR: &str = "lr";
    pub const PRODUCTS: &str = "products";
    pub const RESIDUAL: &str = "residual";
    pub const PRECOND_RESIDUAL: &str = "precond_residual";
    pub const FD_STEP: &str = "fd_step";
}

/// Names of the noise-scale probe's scalars.
pub mod noise {
    pub const B_SIMPLE: &str = "b_simple";
    pub const B_SIMPLE_AVG: &str = "b_simple_avg";
    pub const G_SQ: &str = "g_sq";
    pub const TRACE: &str = "trace";
    pub const BATCH_TOKENS: &str = "batch_tokens";
    pub const RULE_TOKENS: &str = "rule_tokens";
    pub const LOSS: &str = "loss";
    pub const MICRO_BATCHES: &str = "micro_batches";
    pub const STEPS: &str = "steps";
}

/// Names of the 1-D slice probe's scalars and series.
pub mod slice {
    pub const SPAN: &str = "span";
    pub const UPDATE_NORM: &str = "update_norm";
    pub const ALPHA: &str = "alpha";
    pub const LOSS_RANDOM: &str = "loss_random";
    pub const BETA: &str = "beta";
    pub const LOSS_UPDATE: &str = "loss_update";
}

/// Names of the 2-D slice probe's scalars and series.
pub mod landscape {
    pub const GRID: &str = "grid";
    pub const SPAN: &str = "span";
    pub const X: &str = "x";
    pub const Y: &str = "y";
    pub const LOSS: &str = "loss";
}

/// Names of the interpolation probe's scalars and series.
pub mod interp {
    pub const FROM_RUN: &str = "from_run";
    pub const FROM_STEP: &str = "from_step";
    pub const TO_RUN: &str = "to_run";
    pub const TO_STEP: &str = "to_step";
    pub const DISTANCE: &str = "distance";
    pub const ALPHA: &str = "alpha";
    pub const LOSS: &str = "loss";
}

const SEQUENCES: Quantity = q(common::SEQUENCES, "", "sequences of the batch evaluated");

/// Every probe kind, in [`ProbeKind`] order (the order the session file lists them).
pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        kind: ProbeKind::Sharpness,
        name: "sharpness",
        title: "sharpness",
        scalars: &[
            q(sharpness::LAMBDA_MAX, "", "top eigenvalue of the Hessian"),
            q(
                sharpness::LAMBDA_MIN,
                "",
                "bottom eigenvalue of the Hessian",
            ),
            q(
                sharpness::PRECOND_LAMBDA_MAX,
                "",
                "top eigenvalue of the Adam-preconditioned Hessian P⁻¹H",
            ),
            q(
                sharpness::PRECOND_LAMBDA_MIN,
                "",
                "bottom eigenvalue of P⁻¹H",
            ),
            q(
                sharpness::THRESHOLD,
                "",
                "Adam's stability threshold (2+2β₁)/((1−β₁)η) = 38/η",
            ),
            q(
                sharpness::GD_THRESHOLD,
                "",
                "plain gradient descent's threshold 2/η",
            ),
            q(sharpness::LR, "", "the learning rate η at the step"),
            q(sharpness::PRODUCTS, "", "Hessian-vector products used"),
            q(
                sharpness::RESIDUAL,
                "",
                "Ritz residual of lambda_max, relative: an eigenvalue of H lies this close",
            ),
            q(
                sharpness::PRECOND_RESIDUAL,
                "",
                "Ritz residual of precond_lambda_max, relative",
            ),
            q(
                sharpness::FD_STEP,
                "",
                "finite-difference step of the Hessian-vector products, in parameter space",
            ),
            SEQUENCES,
        ],
        series: &[],
        drawing: Drawing::OverSteps {
            headline: sharpness::PRECOND_LAMBDA_MAX,
            samples: Some(sharpness::LAMBDA_MAX),
            reference: Some(sharpness::THRESHOLD),
            y_label: "sharpness λ_max",
            log_y: true,
        },
        summary: "sharpness λmax {lambda_max:.4}, Adam-preconditioned {precond_lambda_max:.4} vs 38/η {threshold:.4}",
    },
    ProbeSpec {
        kind: ProbeKind::Noise,
        name: "noise",
        title: "gradient noise scale",
        scalars: &[
            q(
                noise::B_SIMPLE,
                "tokens",
                "one estimate of B_simple = tr Σ / |G|²",
            ),
            q(
                noise::B_SIMPLE_AVG,
                "tokens",
                "B_simple from the run's recent estimates (tr Σ and |G|² averaged apart, the newest weighted 0.3)",
            ),
            q(
                noise::G_SQ,
                "",
                "|G|², the squared norm of the true gradient (estimate)",
            ),
            q(
                noise::TRACE,
                "",
                "tr Σ, the per-token gradient variance (estimate)",
            ),
            q(noise::BATCH_TOKENS, "tokens", "tokens per step: the batch"),
            q(
                noise::RULE_TOKENS,
                "tokens",
                "MiniCPM's batch rule 1.21e9 / L^6.24 at the current loss",
            ),
            q(noise::LOSS, "nats", "the loss the rule was evaluated at"),
            q(
                noise::MICRO_BATCHES,
                "",
                "small-batch gradients per estimate (the step's leaves, or micro-batches)",
            ),
            q(
                noise::STEPS,
                "steps",
                "training steps whose own leaves the estimate averages (absent: a separate pass at this step)",
            ),
        ],
        series: &[],
        drawing: Drawing::OverSteps {
            headline: noise::B_SIMPLE_AVG,
            samples: Some(noise::B_SIMPLE),
            reference: Some(noise::BATCH_TOKENS),
            y_label: "tokens per batch",
            log_y: true,
        },
        summary: "noise scale B_simple {b_simple:.0} tokens (run average {b_simple_avg:.0}); batch {batch_tokens:.0}, MiniCPM rule {rule_tokens:.0}",
    },
    ProbeSpec {
        kind: ProbeKind::Slice,
        name: "slice",
        title: "1-D loss slices",
        scalars: &[
            q(
                slice::SPAN,
                "",
                "half-width of the slice, in filter-normalised units",
            ),
            q(slice::UPDATE_NORM, "", "norm of the last update"),
            SEQUENCES,
        ],
        series: &[
            q(
                slice::ALPHA,
                "",
                "offsets along a random filter-normalised direction",
            ),
            q(slice::LOSS_RANDOM, "nats", "loss at each alpha"),
            q(
                slice::BETA,
                "",
                "offsets along the last update, in update lengths",
            ),
            q(slice::LOSS_UPDATE, "nats", "loss at each beta"),
        ],
        drawing: Drawing::Curves {
            curves: &[
                (slice::ALPHA, slice::LOSS_RANDOM),
                (slice::BETA, slice::LOSS_UPDATE),
            ],
        },
        summary: "slice loss {loss_random:range.4}",
    },
    ProbeSpec {
        kind: ProbeKind::Landscape,
        name: "landscape",
        title: "2-D loss slice",
        scalars: &[
            q(landscape::GRID, "", "points per side"),
            q(
                landscape::SPAN,
                "",
                "half-width, in filter-normalised units",
            ),
            SEQUENCES,
        ],
        series: &[
            q(landscape::X, "", "offsets along the first direction"),
            q(landscape::Y, "", "offsets along the second direction"),
            q(landscape::LOSS, "nats", "loss[j·nx + i] at (x[i], y[j])"),
        ],
        drawing: Drawing::Surface {
            x: landscape::X,
            y: landscape::Y,
            z: landscape::LOSS,
        },
        summary: "landscape loss {loss:range.4}",
    },
    ProbeSpec {
        kind: ProbeKind::Interp,
        name: "interp",
        title: "loss between two runs",
        scalars: &[
            q(interp::FROM_RUN, "", "the run at alpha 0"),
            q(interp::FROM_STEP, "", "its step"),
            q(interp::TO_RUN, "", "the run at alpha 1"),
            q(interp::TO_STEP, "", "its step"),
            q(interp::DISTANCE, "", "|θ_to − θ_from|"),
            SEQUENCES,
        ],
        series: &[
            q(
                interp::ALPHA,
                "",
                "positions on the segment, 0 = from, 1 = to",
            ),
            q(interp::LOSS, "nats", "loss at each alpha"),
        ],
        drawing: Drawing::Curves {
            curves: &[(interp::ALPHA, interp::LOSS)],
        },
        summary: "interp loss {loss:range.4}",
    },
];

/// The spec of a probe kind, if it is in the vocabulary.
pub fn probe_spec(name: &str) -> Option<&'static ProbeSpec> {
    PROBES.iter().find(|p| p.name == name)
}

/// Every scalar column of a probe kind's table: its own scalars, then the common ones.
pub fn probe_columns(spec: &ProbeSpec) -> impl Iterator<Item = &'static str> {
    spec.scalars
        .iter()
        .map(|s| s.name)
        .chain(COMMON_SCALARS.iter().copied())
}

impl ProbeSpec {
    /// The declaration of a scalar or series by name.
    pub fn quantity(&self, name: &str) -> Option<&'static Quantity> {
        self.scalars
            .iter()
            .chain(self.series)
            .find(|q| q.name == name)
    }

    /// One line about a result of this kind, from the [`ProbeSpec::summary`] template:
    /// `{k:.N}` is scalar `k` with N decimals, `{k:range.N}` the min..max of series `k`; a
    /// missing value reads `NaN`.
    pub fn summarize(
        &self,
        scalars: &std::collections::BTreeMap<String, f64>,
        series: &std::collections::BTreeMap<String, Vec<f64>>,
    ) -> String {
        let mut out = String::new();
        let mut rest = self.summary;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let field = &rest[open + 1..open + close];
            let (key, fmt) = field.split_once(':').unwrap_or((field, ".4"));
            let (range, digits) = match fmt.strip_prefix("range") {
                Some(d) => (true, d),
                None => (false, fmt),
            };
            let digits: usize = digits.trim_start_matches('.').parse().unwrap_or(4);
            if range {
                let (lo, hi) = series
                    .get(key)
                    .map(|l| {
                        l.iter()
                            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                                (a.min(x), b.max(x))
                            })
                    })
                    .unwrap_or((f64::NAN, f64::NAN));
                out.push_str(&format!("{lo:.digits$}..{hi:.digits$}"));
            } else {
                let v = scalars.get(key).copied().unwrap_or(f64::NAN);
                out.push_str(&format!("{v:.digits$}"));
            }
            rest = &rest[open + close + 1..];
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn names_are_unique_and_safe_as_hdf5_links() {
        let mut kinds: Vec<&str> = PROBES.iter().map(|p| p.name).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), PROBES.len());
        for p in PROBES {
            let mut cols: Vec<&str> = probe_columns(p).collect();
            let n = cols.len();
            cols.sort_unstable();
            cols.dedup();
            assert_eq!(cols.len(), n, "{}", p.name);
            for c in cols.iter().chain([&p.name]) {
                assert!(!c.contains(['/', '.']) && !c.is_empty(), "{c}");
                assert!(!["run", "seq", "step"].contains(c), "{c} clashes");
            }
        }
    }

    #[test]
    fn kinds_and_specs_agree() {
        for k in ProbeKind::ALL {
            assert_eq!(k.spec().kind, k);
            assert_eq!(ProbeKind::parse(k.name()), Some(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
        }
        assert_eq!(PROBES.len(), ProbeKind::ALL.len());
        assert_eq!(ProbeKind::parse("nope"), None);
    }

    #[test]
    fn drawings_and_summaries_name_declared_quantities() {
        for p in PROBES {
            let scalar = |n: &str| p.scalars.iter().any(|q| q.name == n);
            let series = |n: &str| p.series.iter().any(|q| q.name == n);
            match p.drawing {
                Drawing::OverSteps {
                    headline,
                    samples,
                    reference,
                    ..
                } => {
                    for n in [Some(headline), samples, reference].into_iter().flatten() {
                        assert!(scalar(n), "{}: {n}", p.name);
                    }
                }
                Drawing::Surface { x, y, z } => {
                    assert!(series(x) && series(y) && series(z), "{}", p.name)
                }
                Drawing::Curves { curves } => {
                    for (x, y) in curves {
                        assert!(series(x) && series(y), "{}: {x} {y}", p.name);
                    }
                }
            }
            // Every template field is a declared scalar (or, with `range`, a series).
            let mut rest = p.summary;
            while let Some(open) = rest.find('{') {
                let close = rest[open..].find('}').expect("closed field") + open;
                let (key, fmt) = rest[open + 1..close].split_once(':').unwrap();
                if fmt.starts_with("range") {
                    assert!(series(key), "{}: {key}", p.name);
                } else {
                    assert!(scalar(key), "{}: {key}", p.name);
                }
                rest = &rest[close + 1..];
            }
        }
    }

    #[test]
    fn summaries_fill_their_templates() {
        let s = BTreeMap::from([
            ("lambda_max".to_string(), 12.5),
            ("precond_lambda_max".to_string(), 3.0),
        ]);
        assert_eq!(
            ProbeKind::Sharpness.spec().summarize(&s, &BTreeMap::new()),
            "sharpness λmax 12.5000, Adam-preconditioned 3.0000 vs 38/η NaN"
        );
        let series = BTreeMap::from([("loss".to_string(), vec![3.25, 2.5, 4.0])]);
        assert_eq!(
            ProbeKind::Landscape
                .spec()
                .summarize(&BTreeMap::new(), &series),
            "landscape loss 2.5000..4.0000"
        );
    }
}
