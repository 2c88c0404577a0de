//! The closed vocabulary of periodic probes: every probe kind the trainer emits, with the
//! names of its scalars and series.
//!
//! The session file creates one table per probe kind, with one column per scalar, before the
//! file enters SWMR mode (a SWMR writer may only append), so the vocabulary must be known up
//! front. A probe result with a kind or scalar outside it is still recorded whole in the event
//! log; only the table column is missing. The trainer's tests check that every scalar it emits
//! is listed here.

/// One periodic probe kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSpec {
    /// The `probe` field of its `ProbeResult`s.
    pub name: &'static str,
    /// Its scalars (besides [`COMMON_SCALARS`]), in table column order.
    pub scalars: &'static [&'static str],
    /// Its series (kept in the event log's `probe` events only).
    pub series: &'static [&'static str],
}

/// Scalars every probe result carries: its wall time and that time in training steps.
pub const COMMON_SCALARS: &[&str] = &["seconds", "cost_steps"];

/// Every probe kind, in the order the session file lists them.
pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        name: "sharpness",
        scalars: &[
            "lambda_max",
            "lambda_min",
            "precond_lambda_max",
            "precond_lambda_min",
            "threshold",
            "gd_threshold",
            "lr",
            "products",
            "sequences",
        ],
        series: &[],
    },
    ProbeSpec {
        name: "noise",
        scalars: &[
            "b_simple",
            "b_simple_avg",
            "g_sq",
            "trace",
            "batch_tokens",
            "rule_tokens",
            "loss",
            "micro_batches",
        ],
        series: &[],
    },
    ProbeSpec {
        name: "slice",
        scalars: &["span", "update_norm", "sequences"],
        series: &["alpha", "loss_random", "beta", "loss_update"],
    },
    ProbeSpec {
        name: "landscape",
        scalars: &["grid", "span", "sequences"],
        series: &["x", "y", "loss"],
    },
    ProbeSpec {
        name: "interp",
        scalars: &[
            "from_run",
            "from_step",
            "to_run",
            "to_step",
            "distance",
            "sequences",
        ],
        series: &["alpha", "loss"],
    },
];

/// The spec of a probe kind, if it is in the vocabulary.
pub fn probe_spec(name: &str) -> Option<&'static ProbeSpec> {
    PROBES.iter().find(|p| p.name == name)
}

/// Every scalar column of a probe kind's table: its own scalars, then the common ones.
pub fn probe_columns(spec: &ProbeSpec) -> impl Iterator<Item = &'static str> {
    spec.scalars.iter().chain(COMMON_SCALARS).copied()
}

#[cfg(test)]
mod tests {
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
}
