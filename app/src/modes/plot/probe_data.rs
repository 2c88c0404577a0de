//! Reading probe results from a session for the probe figures: which runs recorded a probe,
//! a probe scalar's points over steps, the one probe result a figure of one step draws, and
//! errors that say what the session has instead.

use std::collections::BTreeSet;

use anyhow::{Result, anyhow, bail};
use wsdscope_sessions::{ProbeKind, ProbeResult, RunEvent, RunInfo, Session};

use crate::cli::PlotArgs;

/// "run 1 (exp 4 @6)".
pub(super) fn run_name(r: &RunInfo) -> String {
    format!("run {} ({})", r.id, r.name)
}

/// The probe kinds recorded anywhere in the session.
pub(super) fn recorded_kinds(session: &Session) -> BTreeSet<String> {
    session
        .runs()
        .iter()
        .filter_map(|r| session.probe_scalars(r.id).ok())
        .flatten()
        .map(|(p, _)| p)
        .collect()
}

/// The error for a session without any `kind` probe: says so and names what it has.
pub(super) fn none_recorded(session: &Session, kind: &str) -> anyhow::Error {
    let kinds = recorded_kinds(session);
    let hint = match ProbeKind::parse(kind) {
        Some(ProbeKind::Interp) => {
            " (interpolations are measured when a branch completes: record with --fork-at and probes on)"
        }
        _ => " (record with --probe-every N or --probe-budget PCT to run probes)",
    };
    if kinds.is_empty() {
        anyhow!(
            "{}: has no {kind} probe results; it has no probe results at all{hint}",
            session.path().display()
        )
    } else {
        anyhow!(
            "{}: has no {kind} probe results; it has: {}{hint}",
            session.path().display(),
            kinds.into_iter().collect::<Vec<_>>().join(", ")
        )
    }
}

/// The scalar names run `id` recorded for probe `kind` (None: that run has no such probe).
fn scalars_of(session: &Session, id: u32, kind: &str) -> Result<Option<Vec<String>>> {
    Ok(session
        .probe_scalars(id)?
        .into_iter()
        .find(|(p, _)| p == kind)
        .map(|(_, names)| names))
}

/// The runs `--runs` names (default: all), each checked to exist.
pub(super) fn selected_runs(a: &PlotArgs, session: &Session) -> Result<Vec<RunInfo>> {
    match &a.runs {
        Some(ids) => ids.iter().map(|&id| Ok(session.run(id)?.clone())).collect(),
        None => Ok(session.runs().to_vec()),
    }
}

/// The selected runs that recorded probe `kind`, with their scalar names. A run named by
/// `--runs` without it is an error; with the default (all runs) such runs are left out.
pub(super) fn runs_with(
    a: &PlotArgs,
    session: &Session,
    kind: &str,
) -> Result<Vec<(RunInfo, Vec<String>)>> {
    let mut out = Vec::new();
    let mut lacking = Vec::new();
    for r in selected_runs(a, session)? {
        match scalars_of(session, r.id, kind)? {
            Some(names) => out.push((r, names)),
            None => lacking.push(r),
        }
    }
    if out.is_empty() && a.runs.is_none() {
        return Err(none_recorded(session, kind));
    }
    if let Some(r) = lacking.first().filter(|_| a.runs.is_some()) {
        let with: Vec<String> = session
            .runs()
            .iter()
            .filter(|o| matches!(scalars_of(session, o.id, kind), Ok(Some(_))))
            .map(|o| o.id.to_string())
            .collect();
        if with.is_empty() {
            return Err(none_recorded(session, kind));
        }
        bail!(
            "{} has no {kind} probe results; runs with them: {}",
            run_name(r),
            with.join(", ")
        );
    }
    Ok(out)
}

/// The finite (step, value) points of scalar `name` of probe `kind` of run `id`; empty when
/// the run never recorded that scalar.
pub(super) fn points(
    session: &Session,
    id: u32,
    kind: &str,
    names: &[String],
    name: &str,
) -> Result<Vec<(f64, f64)>> {
    if !names.iter().any(|n| n == name) {
        return Ok(Vec::new());
    }
    let (steps, values) = session.series(id, &format!("probe.{kind}.{name}"))?;
    Ok(steps
        .iter()
        .zip(&values)
        .filter(|(_, v)| v.is_finite())
        .map(|(s, v)| (*s as f64, *v))
        .collect())
}

/// Every probe result of `kind` in the session, in the order they happened.
pub(super) fn results_of(session: &Session, kind: &str) -> Result<Vec<ProbeResult>> {
    Ok(session
        .events()?
        .into_iter()
        .filter_map(|e| match e {
            RunEvent::Probe(p) if p.probe == kind => Some(p),
            _ => None,
        })
        .collect())
}

/// The probe among `found` (one run's results of one kind) at `step`, or the latest one
/// without a step; the error names the steps there are.
pub(crate) fn pick_at<'a>(
    found: &[&'a ProbeResult],
    step: Option<u64>,
    kind: &str,
    run: &str,
) -> Result<&'a ProbeResult> {
    let picked = match step {
        None => found.iter().max_by_key(|p| p.step),
        Some(s) => found.iter().rev().find(|p| p.step == s),
    };
    if let Some(p) = picked {
        return Ok(p);
    }
    let steps: Vec<String> = found.iter().map(|p| p.step.to_string()).collect();
    match step {
        Some(s) if !steps.is_empty() => bail!(
            "{run} has no {kind} probe at step {s}; its {kind} probes are at steps {}",
            steps.join(", ")
        ),
        _ => bail!("{run} has no {kind} probe results"),
    }
}

/// The run that landscape and slice draw (the first of `--runs`, default the trunk) and its
/// probe of `kind` at `--step`.
pub(super) fn one_probe(
    a: &PlotArgs,
    session: &Session,
    kind: &str,
) -> Result<(RunInfo, ProbeResult)> {
    let id = a
        .runs
        .as_ref()
        .and_then(|r| r.first().copied())
        .unwrap_or(session.runs()[0].id);
    let info = session.run(id)?.clone();
    let all = results_of(session, kind)?;
    if all.is_empty() {
        return Err(none_recorded(session, kind));
    }
    let mine: Vec<&ProbeResult> = all.iter().filter(|p| p.run == id).collect();
    if mine.is_empty() {
        let mut others: Vec<String> = Vec::new();
        for r in session.runs() {
            let steps: Vec<String> = all
                .iter()
                .filter(|p| p.run == r.id)
                .map(|p| p.step.to_string())
                .collect();
            if !steps.is_empty() {
                others.push(format!("run {} (steps {})", r.id, steps.join(", ")));
            }
        }
        bail!(
            "{} has no {kind} probe results; runs with them: {} (choose one with --runs)",
            run_name(&info),
            others.join("; ")
        );
    }
    let p = pick_at(&mine, a.step, kind, &run_name(&info))?.clone();
    Ok((info, p))
}

pub(super) fn series<'a>(p: &'a ProbeResult, name: &str) -> Result<&'a [f64]> {
    p.series.get(name).map(Vec::as_slice).ok_or_else(|| {
        anyhow!(
            "the {} probe of run {} at step {} has no series {name:?}",
            p.probe,
            p.run,
            p.step
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn probe(step: u64) -> ProbeResult {
        ProbeResult {
            run: 0,
            step,
            probe: "landscape".into(),
            scalars: BTreeMap::new(),
            series: BTreeMap::new(),
        }
    }

    #[test]
    fn the_probe_at_step_or_the_latest_is_picked() {
        let ps = [probe(8), probe(24), probe(16)];
        let found: Vec<&ProbeResult> = ps.iter().collect();
        assert_eq!(
            pick_at(&found, None, "landscape", "run 0").unwrap().step,
            24
        );
        assert_eq!(
            pick_at(&found, Some(16), "landscape", "run 0")
                .unwrap()
                .step,
            16
        );
        let e = pick_at(&found, Some(999), "landscape", "run 0 (trunk)")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "run 0 (trunk) has no landscape probe at step 999; its landscape probes are at steps 8, 24, 16"
        );
        let e = pick_at(&[], None, "slice", "run 2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("run 2 has no slice probe"), "{e}");
    }
}
