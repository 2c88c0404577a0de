//! The event stream a session holds: its steps, evals and logged events merged back into the
//! order the live run produced them.

use super::session::{Session, damaged};
use crate::error::Result;
use crate::layout::{EVAL, F64_METRICS, F64_METRICS_V1, PHASE, WIDE};
use crate::{Phase, RunEvent, RunId, StepGeometry, StepMetrics};

impl Session {
    /// Every event in the order the live run produced it.
    pub fn events(&self) -> Result<Vec<RunEvent>> {
        Ok(self
            .events_with_seq()?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// Every event with its sequence number (its index in the order the live run produced
    /// them), in that order. In a session still being written, a flush in progress may leave
    /// a gap: the numbers tell a reader which events are certainly all there.
    pub fn events_with_seq(&self) -> Result<Vec<(u64, RunEvent)>> {
        // Each source (the log, every run's steps, every run's evals) is already in seq order;
        // merging them is much cheaper than sorting a million large events.
        let mut sources: Vec<Vec<(u64, RunEvent)>> = vec![self.log.clone()];
        for r in &self.runs {
            let id = r.id;
            let u64col = |name: &str| -> Result<Vec<u64>> { self.read_all(id, name) };
            let f64col = |name: &str| -> Result<Vec<f64>> { self.read_all(id, name) };
            let (seq, step, tokens) = (u64col("seq")?, u64col("step")?, u64col("tokens")?);
            let phase: Vec<u8> = self.read_all(id, PHASE)?;
            let n = seq.len().min(step.len()).min(tokens.len()).min(phase.len());
            // Format 1 lacks the geometry columns: NaN reads back as "no geometry".
            let cols: Vec<Vec<f64>> = F64_METRICS
                .iter()
                .enumerate()
                .map(|(j, m)| {
                    if j < F64_METRICS_V1 || self.has(id, m) {
                        f64col(m)
                    } else {
                        Ok(vec![f64::NAN; n])
                    }
                })
                .collect::<Result<_>>()?;
            let n = cols.iter().fold(n, |n, c| n.min(c.len()));
            let mut all = Vec::with_capacity(n);
            let wide: Vec<(usize, Vec<f64>)> = WIDE
                .iter()
                .map(|name| self.read_wide(id, name, n))
                .collect::<Result<_>>()?;
            // A run narrower than its slot (format 3) reads back at its own width.
            let own = self.run_start(id).map(crate::recorder::run_widths);
            let row = |k: usize, i: usize| -> Vec<f64> {
                let (w, data) = &wide[k];
                let keep = own.map_or(*w, |o| o[k].min(*w));
                if *w > 0 && data.len() >= (i + 1) * w {
                    data[i * w..i * w + keep].to_vec()
                } else {
                    Vec::new()
                }
            };
            for i in 0..n {
                let geometry = (!cols[7][i].is_nan()).then(|| StepGeometry {
                    cos: cols[7][i],
                    d1: cols[8][i],
                    d2: cols[9][i],
                    curvature: cols[10][i],
                });
                all.push((
                    seq[i],
                    RunEvent::Step(StepMetrics {
                        run: id,
                        step: step[i],
                        phase: match phase[i] {
                            0 => Phase::Warmup,
                            1 => Phase::Stable,
                            _ => Phase::Decay,
                        },
                        loss: cols[0][i],
                        lr: cols[1][i],
                        grad_norm: cols[2][i],
                        update_norm: cols[3][i],
                        param_norm: cols[4][i],
                        tokens: tokens[i],
                        tokens_per_s: cols[5][i],
                        step_ms: cols[6][i],
                        grad_norm_per_layer: row(0, i),
                        grad_norm_per_group: row(1, i),
                        geometry,
                        max_update: row(2, i),
                    }),
                ));
            }
            sources.push(all);
            let mut all = Vec::new();
            let (eseq, estep, etok): (Vec<u64>, Vec<u64>, Vec<u64>) = (
                self.read_all(id, &format!("{EVAL}/seq"))?,
                self.read_all(id, &format!("{EVAL}/step"))?,
                self.read_all(id, &format!("{EVAL}/tokens"))?,
            );
            let eloss: Vec<f64> = self.read_all(id, &format!("{EVAL}/val_loss"))?;
            let m = eseq.len().min(estep.len()).min(etok.len()).min(eloss.len());
            for i in 0..m {
                all.push((
                    eseq[i],
                    RunEvent::Eval {
                        run: id,
                        step: estep[i],
                        val_loss: eloss[i],
                        tokens: etok[i],
                    },
                ));
            }
            sources.push(all);
        }
        Ok(merge_by_seq(sources))
    }

    /// The first `n` rows of a 2-D per-step dataset, row-major, and its width (0 when the
    /// file has no such dataset).
    fn read_wide(&self, run: RunId, name: &str, n: usize) -> Result<(usize, Vec<f64>)> {
        if !self.has(run, name) {
            return Ok((0, Vec::new()));
        }
        let ds = self.dataset(run, name)?;
        let w = ds.shape().get(1).copied().unwrap_or(0);
        let rows = ds.shape().first().copied().unwrap_or(0).min(n);
        if w == 0 || rows == 0 {
            return Ok((w, Vec::new()));
        }
        let data = ds
            .read_slice_2d::<f64, _>((0..rows, ..))
            .map_err(|e| damaged(&self.path, e))?
            .iter()
            .copied()
            .collect();
        Ok((w, data))
    }
}

/// Merges lists that are each sorted by seq into one event list in seq order.
fn merge_by_seq(sources: Vec<Vec<(u64, RunEvent)>>) -> Vec<(u64, RunEvent)> {
    let total = sources.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total);
    let mut iters: Vec<std::iter::Peekable<std::vec::IntoIter<(u64, RunEvent)>>> = sources
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.into_iter().peekable())
        .collect();
    while !iters.is_empty() {
        // Few sources (3 per run at most): a linear scan for the smallest head is cheapest.
        let mut best = 0;
        let mut best_seq = u64::MAX;
        for (i, it) in iters.iter_mut().enumerate() {
            if let Some((seq, _)) = it.peek()
                && *seq < best_seq
            {
                best_seq = *seq;
                best = i;
            }
        }
        // Take the whole run of events from that source that precede every other head.
        let next_other = iters
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| *i != best)
            .filter_map(|(_, it)| it.peek().map(|(s, _)| *s))
            .min()
            .unwrap_or(u64::MAX);
        let it = &mut iters[best];
        while let Some((seq, _)) = it.peek() {
            if *seq > next_other {
                break;
            }
            out.push(it.next().expect("peeked"));
        }
        if it.peek().is_none() {
            drop(iters.swap_remove(best));
        }
    }
    out
}
