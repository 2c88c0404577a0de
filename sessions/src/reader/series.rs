//! One metric of one run: a step column, `val_loss` or a probe scalar, read whole as a series
//! or folded into min/max buckets of a step range.

use std::ops::RangeInclusive;

use hdf5::Dataset;

use super::session::{Session, damaged};
use crate::buckets::{Bucket, BucketFolder};
use crate::error::{Error, Result};
use crate::layout::{EVAL, F64_METRICS, metric_names};
use crate::{ProbeResult, RunEvent, RunId};

/// Rows read per slice when scanning a dataset.
const SLICE: usize = 1 << 16;

impl Session {
    /// The probe kinds recorded for `run` and their scalar names, in the order first seen,
    /// from the event log's `probe` events (every format keeps them whole there).
    pub fn probe_scalars(&self, run: RunId) -> Result<Vec<(String, Vec<String>)>> {
        self.run(run)?;
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for p in self.probes(run) {
            let i = match out.iter().position(|(k, _)| *k == p.probe) {
                Some(i) => i,
                None => {
                    out.push((p.probe.clone(), Vec::new()));
                    out.len() - 1
                }
            };
            for k in p.scalars.keys() {
                if !out[i].1.contains(k) {
                    out[i].1.push(k.clone());
                }
            }
        }
        Ok(out)
    }

    /// The probe results of a run, in the order they were recorded.
    pub fn probes(&self, run: RunId) -> impl Iterator<Item = &ProbeResult> {
        self.log.iter().filter_map(move |(_, e)| match e {
            RunEvent::Probe(p) if p.run == run => Some(p),
            _ => None,
        })
    }

    /// The (step, value) series of one metric of one run: a per-step metric
    /// (see [`layout::F64_METRICS`](crate::layout::F64_METRICS)), `val_loss`, or
    /// `probe.<probe>.<scalar>` (NaN where a result of that probe lacks the scalar).
    pub fn series(&self, run: RunId, metric: &str) -> Result<(Vec<u64>, Vec<f64>)> {
        match self.metric(run, metric)? {
            Metric::Column { steps, values } => {
                let s: Vec<u64> = self.read_all(run, &steps)?;
                let v: Vec<f64> = self.read_all(run, &values)?;
                let n = s.len().min(v.len());
                Ok((s[..n].to_vec(), v[..n].to_vec()))
            }
            Metric::Probe { probe, scalar } => Ok(self
                .probes(run)
                .filter(|p| p.probe == probe)
                .map(|p| (p.step, p.scalars.get(&scalar).copied().unwrap_or(f64::NAN)))
                .unzip()),
        }
    }

    fn metric(&self, run: RunId, metric: &str) -> Result<Metric> {
        self.run(run)?;
        if metric == "val_loss" {
            return Ok(Metric::Column {
                steps: format!("{EVAL}/step"),
                values: format!("{EVAL}/val_loss"),
            });
        }
        if F64_METRICS.contains(&metric) {
            if !self.has(run, metric) {
                return Err(Error::Query(format!(
                    "{}: metric {metric:?} is not in this session (format {}); it came with format 2",
                    self.path.display(),
                    self.format_version
                )));
            }
            return Ok(Metric::Column {
                steps: "step".into(),
                values: metric.into(),
            });
        }
        // `probe.<probe>.<scalar>`: a scalar of a periodic probe.
        if let Some(rest) = metric.strip_prefix("probe.")
            && let Some((probe, scalar)) = rest.split_once('.')
        {
            let known = self.probe_scalars(run)?;
            if known
                .iter()
                .any(|(p, names)| p == probe && names.iter().any(|n| n == scalar))
            {
                return Ok(Metric::Probe {
                    probe: probe.into(),
                    scalar: scalar.into(),
                });
            }
            let known: Vec<String> = known
                .into_iter()
                .flat_map(|(p, names)| names.into_iter().map(move |n| format!("probe.{p}.{n}")))
                .collect();
            return Err(Error::Query(format!(
                "run {run} has no probe scalar {metric:?}; recorded: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        Err(Error::Query(format!(
            "unknown metric {metric:?}; allowed: {}, or probe.<probe>.<scalar>",
            metric_names().join(", ")
        )))
    }

    /// At most `n` min/max buckets of `metric` of `run` over the steps in `steps`, reading the
    /// datasets in slices (a binary search finds the step range; nothing else is read).
    pub fn buckets(
        &self,
        run: RunId,
        metric: &str,
        steps: RangeInclusive<u64>,
        n: usize,
    ) -> Result<Vec<Bucket>> {
        let (sp, vp) = match self.metric(run, metric)? {
            Metric::Column { steps, values } => (steps, values),
            Metric::Probe { .. } => {
                // Probe results are few: fold them from memory.
                let (s, v) = self.series(run, metric)?;
                let lo = s.partition_point(|x| x < steps.start()) as u64;
                let hi = s.partition_point(|x| x <= steps.end()) as u64;
                let mut folder = BucketFolder::new(lo, hi, n);
                folder.push(
                    lo,
                    &s[lo as usize..hi as usize],
                    &v[lo as usize..hi as usize],
                );
                return Ok(folder.finish());
            }
        };
        let step_ds = self.dataset(run, &sp)?;
        let val_ds = self.dataset(run, &vp)?;
        let len = self.len(&step_ds).min(self.len(&val_ds));
        let lo = self.lower_bound(&step_ds, len, *steps.start())?;
        let hi = self.lower_bound(&step_ds, len, steps.end().saturating_add(1))?;
        let mut folder = BucketFolder::new(lo, hi, n);
        let mut i = lo;
        while i < hi {
            let j = (i + SLICE as u64).min(hi);
            let r = i as usize..j as usize;
            let s = step_ds
                .read_slice_1d::<u64, _>(r.clone())
                .map_err(|e| damaged(&self.path, e))?;
            let v = val_ds
                .read_slice_1d::<f64, _>(r)
                .map_err(|e| damaged(&self.path, e))?;
            let (s, v) = (
                s.as_slice().expect("contiguous"),
                v.as_slice().expect("contiguous"),
            );
            folder.push(i, s, v);
            i = j;
        }
        Ok(folder.finish())
    }

    /// First index whose step is ≥ `step` (steps are increasing within a run).
    fn lower_bound(&self, ds: &Dataset, len: u64, step: u64) -> Result<u64> {
        let (mut lo, mut hi) = (0u64, len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.read_at::<u64>(ds, mid)? < step {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

/// Where a metric's values come from.
enum Metric {
    /// A run's datasets: a step column and a value column.
    Column { steps: String, values: String },
    /// The event log's probe results.
    Probe { probe: String, scalar: String },
}
