//! What sibling runs say, read from a session: per sibling its label, how its configuration
//! differs from the trunk's, its size and final validation loss against the trunk's; and which
//! run — the trunk or a sibling — ended lowest (the LR or width that won a sweep). Shared by
//! `inspect` and `plot`.

use serde::Serialize;
use wsdscope_sessions::{EndReason, RunInfo, Session};
use wsdscope_trainer::RunConfig;

/// One sibling of the trunk.
#[derive(Debug, Clone, Serialize)]
pub struct SiblingRow {
    pub id: u32,
    pub label: String,
    /// Each setting that differs from the trunk: `lr 0.01 → 0.003`.
    pub differences: Vec<String>,
    pub params: u64,
    pub final_val_loss: Option<f64>,
    /// The trunk's final validation loss, for the comparison.
    pub trunk_val_loss: Option<f64>,
    pub completed: bool,
}

/// The run with the lowest final validation loss among the trunk and its siblings.
#[derive(Debug, Clone, Serialize)]
pub struct Winner {
    pub id: u32,
    pub label: String,
    pub final_val_loss: f64,
    /// Its margin below the runner-up (0 with one contender).
    pub margin: f64,
}

/// Siblings are runs beside the trunk from step 0: no parent, not the trunk.
pub fn is_sibling(r: &RunInfo) -> bool {
    r.id != 0 && r.parent.is_none()
}

/// Every sibling of the session, in id order.
pub fn siblings(s: &Session) -> Vec<SiblingRow> {
    let Some(trunk) = s.runs().iter().find(|r| r.id == 0) else {
        return Vec::new();
    };
    let trunk_cfg = config(trunk);
    s.runs()
        .iter()
        .filter(|r| is_sibling(r))
        .map(|r| SiblingRow {
            id: r.id,
            label: r.name.clone(),
            differences: match (&trunk_cfg, config(r)) {
                (Some(t), Some(c)) => differences(t, &c),
                _ => Vec::new(),
            },
            params: r.model.params,
            final_val_loss: r.final_val_loss,
            trunk_val_loss: trunk.final_val_loss,
            completed: matches!(r.end, Some((EndReason::Completed, _))),
        })
        .collect()
}

/// The lowest final validation loss among the trunk and its siblings (`None` without
/// siblings).
pub fn winner(s: &Session) -> Option<Winner> {
    let mut runs: Vec<(&RunInfo, f64)> = s
        .runs()
        .iter()
        .filter(|r| r.id == 0 || is_sibling(r))
        .filter_map(|r| Some((r, r.final_val_loss.filter(|v| v.is_finite())?)))
        .collect();
    if runs.len() < 2 || !s.runs().iter().any(is_sibling) {
        return None;
    }
    runs.sort_by(|a, b| a.1.total_cmp(&b.1));
    Some(Winner {
        id: runs[0].0.id,
        label: runs[0].0.name.clone(),
        final_val_loss: runs[0].1,
        margin: runs[1].1 - runs[0].1,
    })
}

fn config(r: &RunInfo) -> Option<RunConfig> {
    serde_json::from_value(r.config.clone()).ok()
}

/// The settings a sibling may change, where `c` differs from the trunk's `t`.
pub fn differences(t: &RunConfig, c: &RunConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut diff = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name} {a} → {b}"));
        }
    };
    let (ts, cs) = (&t.schedule, &c.schedule);
    diff("schedule", ts.describe(), cs.describe());
    diff("lr", ts.peak().to_string(), cs.peak().to_string());
    diff(
        "warmup",
        format!("{} steps", ts.warmup()),
        format!("{} steps", cs.warmup()),
    );
    diff(
        "weight-decay",
        t.optim.weight_decay.to_string(),
        c.optim.weight_decay.to_string(),
    );
    diff("clip", t.optim.clip.to_string(), c.optim.clip.to_string());
    diff("batch", t.batch.to_string(), c.batch.to_string());
    diff("seed", t.seed.to_string(), c.seed.to_string());
    let (tm, cm) = (&t.model, &c.model);
    for (name, a, b) in [
        ("hidden", tm.hidden, cm.hidden),
        ("layers", tm.layers, cm.layers),
        ("heads", tm.heads, cm.heads),
        ("kv-heads", tm.kv_heads, cm.kv_heads),
        ("ffn", tm.ffn, cm.ffn),
    ] {
        diff(name, a.to_string(), b.to_string());
    }
    out
}
