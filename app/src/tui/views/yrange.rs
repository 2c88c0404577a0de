//! The y range of a step chart. By default the loss and norm panels clip outliers, as a chart
//! that plotted every point would be scaled to the warmup's first losses (≈ 9 nats on the
//! default run) and leave the decay's drop (≈ 0.25 nats) a few dots high. The rule, in the
//! drawn scale (log10 with log-y), over the points inside the visible step range, while that
//! range includes the trunk's warmup (zoomed or panned past it, every point fits):
//!
//! - the bottom is the lowest point: nothing below the range is ever hidden (the decay's
//!   results and every run's latest values are the lowest losses);
//! - the top is the 80th percentile of the points after the trunk's warmup (all points while
//!   the view shows only warmup), raised to every run's latest point and to every point of a
//!   series marked to keep (the branches), so the warmup and the fast fall just
//!   after it (on the default run: steps 1–160 of 600, above 2.3 nats) are what go over the
//!   top, and the decay's drop covers about a third of the chart.
//!
//! Points outside the range are drawn on its edge, never left out.

/// The share of the points after the warmup that sets the top of a clipped range.
pub const CLIP_QUANTILE: f64 = 0.8;

/// How a chart fits its y range.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum YFit {
    /// Every point (in the visible step range and its nearest neighbours) inside.
    #[default]
    All,
    /// Outliers clipped: see the module's rule; `warmup_end` is the trunk's last warmup step
    /// (`None`: not known, so nothing is clipped).
    Clipped { warmup_end: Option<f64> },
}

/// A chart's series for [`extent`]: its points (already in the drawn scale) and whether a
/// clipped range keeps all of them (a branch's curve).
pub type Points<'a> = (&'a [(f64, f64)], bool);

/// The lowest and highest y the chart shows, over `series` with the visible step range `x`;
/// `None` when there is no point.
pub fn extent(series: &[Points], x: (f64, f64), fit: YFit) -> Option<(f64, f64)> {
    let all = || series.iter().flat_map(|s| s.0.iter().map(|p| p.1));
    let (mut lo, mut hi) = min_max(all())?;
    let YFit::Clipped { warmup_end } = fit else {
        return Some((lo, hi));
    };
    let (x0, x1) = (x.0.min(x.1), x.0.max(x.1));
    let visible = |&&(px, _): &&(f64, f64)| px >= x0 && px <= x1;
    let inside: Vec<f64> = series
        .iter()
        .flat_map(|s| s.0.iter().filter(visible).map(|p| p.1))
        .collect();
    if inside.is_empty() {
        return Some((lo, hi));
    }
    let Some(from) = warmup_end.filter(|&w| x0 <= w) else {
        // No warmup in view (zoomed or panned past it): nothing to leave out.
        return Some((lo, hi));
    };
    let mut fit: Vec<f64> = series
        .iter()
        .flat_map(|s| {
            s.0.iter()
                .filter(visible)
                .filter(|p| p.0 > from)
                .map(|p| p.1)
        })
        .collect();
    if fit.is_empty() {
        fit = inside.clone();
    }
    lo = min_max(inside.iter().copied())?.0;
    hi = quantile(&mut fit, CLIP_QUANTILE);
    for &(points, keep) in series {
        let mut shown = points.iter().filter(visible);
        if keep {
            hi = shown.fold(hi, |h, p| h.max(p.1));
        } else if let Some(last) = shown.next_back() {
            hi = hi.max(last.1);
        }
    }
    Some((lo, hi.max(lo)))
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((a, b)) => Some((v.min(a), v.max(b))),
    })
}

/// The `q` quantile of `values` (linear between neighbours); `values` is sorted in place.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let at = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let (i, t) = (at.floor() as usize, at.fract());
    let next = values[(i + 1).min(values.len() - 1)];
    values[i] + (next - values[i]) * t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warmup_goes_over_the_top_and_nothing_goes_under() {
        // Warmup to step 10 from 9 down to 3, then 3 → 2 slowly, a drop to 1.5 at the end.
        let pts: Vec<(f64, f64)> = (0..=100)
            .map(|s| {
                let s = s as f64;
                let y = if s <= 10.0 {
                    9.0 - 0.6 * s
                } else if s <= 80.0 {
                    3.0 - (s - 10.0) / 70.0
                } else {
                    2.0 - 0.025 * (s - 80.0)
                };
                (s, y)
            })
            .collect();
        let all = extent(&[(&pts[..], false)], (0.0, 100.0), YFit::All).unwrap();
        assert_eq!(all, (1.5, 9.0));
        let fit = YFit::Clipped {
            warmup_end: Some(10.0),
        };
        let (lo, hi) = extent(&[(&pts[..], false)], (0.0, 100.0), fit).unwrap();
        assert_eq!(lo, 1.5);
        assert!(hi > 2.7 && hi < 3.0, "{hi}");
        // A branch far above is kept whole; another run's latest point too.
        let branch = [(50.0, 4.0), (60.0, 3.5)];
        let late = [(20.0, 2.0), (90.0, 5.0)];
        let (_, hi) = extent(&[(&pts[..], false), (&branch[..], true)], (0.0, 100.0), fit).unwrap();
        assert_eq!(hi, 4.0);
        let (_, hi) = extent(&[(&pts[..], false), (&late[..], false)], (0.0, 100.0), fit).unwrap();
        assert_eq!(hi, 5.0);
        // Zoomed into the warmup: nothing after it is visible, so every visible point counts.
        let (lo, hi) = extent(&[(&pts[..], false)], (0.0, 8.0), fit).unwrap();
        assert!(lo <= 4.2 && hi >= 8.0, "{lo} {hi}");
        // Zoomed past it: every point fits.
        let past = extent(&[(&pts[..], false)], (30.0, 70.0), fit);
        assert_eq!(past, extent(&[(&pts[..], false)], (30.0, 70.0), YFit::All));
        assert!(extent(&[(&[][..], false)], (0.0, 1.0), fit).is_none());
    }
}
