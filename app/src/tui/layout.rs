//! Where each panel goes for a terminal size. Pure, so drawing and mouse hit-testing agree.

use ratatui::layout::{Constraint, Layout, Rect};

/// Below this the app shows a single "terminal too small" line.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;
/// From this width on, the runs list and probes sit in a column right of the charts.
const WIDE: u16 = 110;

/// The rectangles of every panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppLayout {
    /// Two lines: run facts, then status.
    pub header: Rect,
    pub loss: Rect,
    pub lr: Rect,
    pub norms: Rect,
    pub runs: Rect,
    pub probes: Rect,
    /// One line of key hints.
    pub footer: Rect,
}

/// The layout for `area` with `n_runs` runs, or `None` when the terminal is too small.
pub fn compute(area: Rect, n_runs: usize) -> Option<AppLayout> {
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        return None;
    }
    let [header, body, footer] = area.layout(&Layout::vertical([
        Constraint::Length(2),
        Constraint::Fill(1),
        Constraint::Length(1),
    ]));
    // Border, header row, one row per run.
    let runs_rows = (n_runs.max(1) as u16).saturating_add(3);
    let charts = |r: Rect| -> [Rect; 3] {
        r.layout(&Layout::vertical([
            Constraint::Fill(3),
            Constraint::Fill(2),
            Constraint::Fill(2),
        ]))
    };
    if area.width >= WIDE {
        let [left, right] = body.layout(&Layout::horizontal([
            Constraint::Fill(2),
            Constraint::Length((area.width * 2 / 5).clamp(46, 72)),
        ]));
        let [loss, lr, norms] = charts(left);
        let [runs, probes] = right.layout(&Layout::vertical([
            Constraint::Max(runs_rows.max(5)),
            Constraint::Min(7),
        ]));
        Some(AppLayout {
            header,
            loss,
            lr,
            norms,
            runs,
            probes,
            footer,
        })
    } else if area.height >= 36 {
        let bottom = runs_rows.clamp(7, area.height / 3);
        let [top, lower] = body.layout(&Layout::vertical([
            Constraint::Fill(1),
            Constraint::Length(bottom),
        ]));
        let [loss, lr, norms] = charts(top);
        let [runs, probes] = lower.layout(&Layout::horizontal([
            Constraint::Fill(3),
            Constraint::Fill(2),
        ]));
        Some(AppLayout {
            header,
            loss,
            lr,
            norms,
            runs,
            probes,
            footer,
        })
    } else {
        // Short and narrow (80×24 is common): loss on top, lr beside norms, a short runs row.
        let bottom = runs_rows.clamp(4, 6);
        let [loss, middle, lower] = body.layout(&Layout::vertical([
            Constraint::Fill(3),
            Constraint::Fill(2),
            Constraint::Length(bottom),
        ]));
        let [lr, norms] = middle.layout(&Layout::horizontal([
            Constraint::Fill(1),
            Constraint::Fill(1),
        ]));
        let [runs, probes] = lower.layout(&Layout::horizontal([
            Constraint::Fill(3),
            Constraint::Fill(2),
        ]));
        Some(AppLayout {
            header,
            loss,
            lr,
            norms,
            runs,
            probes,
            footer,
        })
    }
}

/// The rectangles of the branches view (key `c`): the comparison table across the top, the
/// loss chart and the endpoint fit side by side below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompareLayout {
    pub header: Rect,
    pub table: Rect,
    pub loss: Rect,
    pub fit: Rect,
    pub footer: Rect,
}

/// Lines of the branches table besides its rows: border (2), column header, two fit lines.
pub const TABLE_EXTRA_ROWS: u16 = 5;

/// The branches view for `area` with `n_rows` table rows (trunk and branches), or `None`
/// when the terminal is too small.
pub fn compare(area: Rect, n_rows: usize) -> Option<CompareLayout> {
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        return None;
    }
    let [header, body, footer] = area.layout(&Layout::vertical([
        Constraint::Length(2),
        Constraint::Fill(1),
        Constraint::Length(1),
    ]));
    let rows = (n_rows.max(1) as u16).saturating_add(TABLE_EXTRA_ROWS);
    let [table, charts] = body.layout(&Layout::vertical([
        Constraint::Length(rows.min(body.height / 2).max(TABLE_EXTRA_ROWS + 1)),
        Constraint::Fill(1),
    ]));
    let [loss, fit] = charts.layout(&Layout::horizontal([
        Constraint::Fill(1),
        Constraint::Fill(1),
    ]));
    Some(CompareLayout {
        header,
        table,
        loss,
        fit,
        footer,
    })
}

/// The three bands every full-screen view shares: the two-line header, the body, the footer.
fn frame(area: Rect) -> Option<[Rect; 3]> {
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        return None;
    }
    Some(area.layout(&Layout::vertical([
        Constraint::Length(2),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])))
}

/// The rectangles of the probes view (key `v`): six step charts, two per row, and below
/// them, where there is room, the strip of where each periodic probe ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbesLayout {
    pub header: Rect,
    /// In the order of `views::probes_view::CHARTS`: cos, D1, D2, K, sharpness, noise.
    pub charts: [Rect; 6],
    /// `views::probes_view::ProbeTimeline` (empty on a short terminal).
    pub timeline: Rect,
    pub footer: Rect,
}

/// Rows of the probe strip: a border, one row per periodic kind, the phase names.
const TIMELINE_ROWS: u16 = 7;

/// The probes view for `area`, or `None` when the terminal is too small.
pub fn probes(area: Rect) -> Option<ProbesLayout> {
    let [header, body, footer] = frame(area)?;
    // The strip only where the charts keep at least 6 rows each.
    let strip = if body.height >= 3 * 6 + TIMELINE_ROWS {
        TIMELINE_ROWS
    } else {
        0
    };
    let [body, timeline] = body.layout(&Layout::vertical([
        Constraint::Fill(1),
        Constraint::Length(strip),
    ]));
    let rows: [Rect; 3] = body.layout(&Layout::vertical([Constraint::Fill(1); 3]));
    let mut charts = [Rect::default(); 6];
    for (i, row) in rows.iter().enumerate() {
        let [a, b] = row.layout(&Layout::horizontal([Constraint::Fill(1); 2]));
        charts[2 * i] = a;
        charts[2 * i + 1] = b;
    }
    Some(ProbesLayout {
        header,
        charts,
        timeline,
        footer,
    })
}

/// The rectangles of the landscape view (key `v` twice): the 2-D loss map on the left, the
/// two 1-D slices and the interpolation stacked on the right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LandscapeLayout {
    pub header: Rect,
    pub map: Rect,
    pub slice_random: Rect,
    pub slice_update: Rect,
    pub interp: Rect,
    pub footer: Rect,
}

/// The landscape view for `area`, or `None` when the terminal is too small. The map gets
/// about a square of half-block pixels plus room for its labels and colour bar, at most half
/// the width.
pub fn landscape(area: Rect) -> Option<LandscapeLayout> {
    let [header, body, footer] = frame(area)?;
    let square = 2 * body.height.saturating_sub(3) + 20;
    let map_w = square.min(body.width / 2);
    let [map, right] = body.layout(&Layout::horizontal([
        Constraint::Length(map_w),
        Constraint::Fill(1),
    ]));
    let [slice_random, slice_update, interp] =
        right.layout(&Layout::vertical([Constraint::Fill(1); 3]));
    Some(LandscapeLayout {
        header,
        map,
        slice_random,
        slice_update,
        interp,
        footer,
    })
}

/// A `width`×`height` box centred in `area` (clipped to it).
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_tile_without_overlap_at_many_sizes() {
        for (w, h) in [
            (60, 16),
            (80, 24),
            (109, 30),
            (100, 40),
            (110, 30),
            (200, 60),
            (400, 120),
        ] {
            let l = compute(Rect::new(0, 0, w, h), 3).unwrap();
            let all = [l.header, l.loss, l.lr, l.norms, l.runs, l.probes, l.footer];
            for (i, a) in all.iter().enumerate() {
                assert!(a.width > 0 && a.height > 0, "{w}×{h}: panel {i} empty");
                assert!(a.right() <= w && a.bottom() <= h);
                for b in &all[i + 1..] {
                    assert!(!a.intersects(*b), "{w}×{h}: {a:?} overlaps {b:?}");
                }
            }
        }
        assert!(compute(Rect::new(0, 0, 20, 6), 1).is_none());
        assert!(compute(Rect::new(0, 0, 59, 40), 1).is_none());
    }

    #[test]
    fn the_branches_view_tiles_without_overlap() {
        for (w, h) in [(60, 16), (80, 24), (120, 36), (400, 120)] {
            for n in [1, 4, 40] {
                let l = compare(Rect::new(0, 0, w, h), n).unwrap();
                let all = [l.header, l.table, l.loss, l.fit, l.footer];
                for (i, a) in all.iter().enumerate() {
                    assert!(a.width > 0 && a.height > 0, "{w}×{h}/{n}: panel {i} empty");
                    assert!(a.right() <= w && a.bottom() <= h);
                    for b in &all[i + 1..] {
                        assert!(!a.intersects(*b), "{w}×{h}/{n}: {a:?} overlaps {b:?}");
                    }
                }
            }
        }
        assert!(compare(Rect::new(0, 0, 20, 6), 1).is_none());
    }

    #[test]
    fn the_probe_and_landscape_views_tile_without_overlap() {
        for (w, h) in [(60, 16), (80, 24), (120, 36), (400, 120)] {
            let area = Rect::new(0, 0, w, h);
            let p = probes(area).unwrap();
            let l = landscape(area).unwrap();
            let mut sets = vec![[p.header, p.footer].to_vec(), l_rects(&l)];
            sets[0].extend(p.charts);
            if h >= 36 {
                sets[0].push(p.timeline);
            } else {
                assert_eq!(p.timeline.height, 0, "{w}×{h}: no room for the probe strip");
            }
            for all in sets {
                for (i, a) in all.iter().enumerate() {
                    assert!(a.width > 0 && a.height > 0, "{w}×{h}: panel {i} empty");
                    assert!(a.right() <= w && a.bottom() <= h);
                    for b in &all[i + 1..] {
                        assert!(!a.intersects(*b), "{w}×{h}: {a:?} overlaps {b:?}");
                    }
                }
            }
        }
        assert!(probes(Rect::new(0, 0, 20, 6)).is_none());
        assert!(landscape(Rect::new(0, 0, 59, 40)).is_none());
    }

    fn l_rects(l: &LandscapeLayout) -> Vec<Rect> {
        vec![
            l.header,
            l.map,
            l.slice_random,
            l.slice_update,
            l.interp,
            l.footer,
        ]
    }
}
