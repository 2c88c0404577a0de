//! The probe panel of the main view: the selected run's latest probe readings, most telling
//! first so a short panel keeps the best of them. Per step: the update geometry (cos, D1,
//! D2, K), the norms, the per-group gradient norms and the tracked tensors' max |Δθ|.
//! Periodic: the preconditioned sharpness against Adam's stability line 38/η (⚠ once above
//! it: the edge of stability), the gradient noise scale against the batch, and which other
//! probes have reported (key `v` shows them). A failed run's full message comes first.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Widget, Wrap};
use wsdscope_sessions::vocabulary::{noise, sharpness};
use wsdscope_sessions::{EndReason, ProbeKind};

use super::landscape::latest_interp;
use super::{AXIS, LABEL, latest_finite, no_probe_text, run_color};
use crate::tui::format;
use crate::tui::state::{RunData, TuiState};

pub struct ProbesPanel<'a>(pub &'a TuiState);

impl Widget for ProbesPanel<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let state = self.0;
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let label = Style::default().fg(LABEL);
        let mut title = vec![Span::styled(" probes ", bold)];
        let mut lines = Vec::new();
        let Some(r) = state.selected_run() else {
            lines.push(Line::from(Span::styled("no steps yet", label)));
            render(title, lines, area, buf);
            return;
        };
        title.push(Span::styled(
            format!("run {}", r.id),
            Style::default().fg(run_color(r.id)),
        ));
        title.push(Span::styled(format!(" · step {} ", r.last_step()), label));
        if let Some(end) = &r.end
            && end.reason == EndReason::Failed
        {
            lines.push(Line::from(Span::styled(
                format!(
                    "✖ run {} failed at step {}: {}",
                    r.id,
                    end.step,
                    end.message.as_deref().unwrap_or("no message")
                ),
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            )));
        }
        let val = |v: Option<f64>| v.map(sig3).unwrap_or_else(|| "–".into());

        // The geometry of the last update.
        lines.push(Line::from(vec![
            Span::styled("cos ", label),
            Span::raw(val(latest_finite(&r.grad_cos))),
            Span::styled("  D1 ", label),
            Span::raw(val(latest_finite(&r.d1))),
            Span::styled("  D2 ", label),
            Span::raw(val(latest_finite(&r.d2))),
            Span::styled("  K ", label),
            Span::raw(val(latest_finite(&r.curvature))),
        ]));
        lines.extend(periodic(state, r));

        // Norms.
        let theta = r.param_norm.last().copied();
        let update = r.update_norm.last();
        let rel = match (update, theta) {
            (Some(u), Some(t)) if t > 0.0 => Some(u / t),
            _ => None,
        };
        lines.push(Line::from(vec![
            Span::styled("‖θ‖ ", label),
            Span::raw(val(theta)),
            Span::styled("  ‖g‖ ", label),
            Span::raw(val(r.grad_norm.last())),
            Span::styled("  ‖Δθ‖ ", label),
            Span::raw(val(update)),
        ]));
        let start = r.start.as_deref();
        if !r.grad_norm_per_group.is_empty() {
            let names = start.map(|s| s.param_groups.as_slice()).unwrap_or(&[]);
            lines.push(named_values(
                "‖g‖ ",
                names,
                &r.grad_norm_per_group,
                |n| n.to_string(),
            ));
        }
        let latest_max: Vec<f64> = r.max_update.iter().map(latest_finite_or_nan).collect();
        if !latest_max.is_empty() {
            let names = start.map(|s| s.tracked_tensors.as_slice()).unwrap_or(&[]);
            lines.push(named_values("max|Δθ| ", names, &latest_max, short_tensor));
        }
        lines.push(Line::from(vec![
            Span::styled("‖Δθ‖/‖θ‖ ", label),
            Span::raw(val(rel)),
            Span::styled("  lr ", label),
            Span::raw(val(r.lr.last())),
            Span::styled("  ", label),
            Span::raw(val(r.recent_step_ms())),
            Span::styled(" ms/step", label),
        ]));
        render(title, lines, area, buf);
    }
}

fn render(title: Vec<Span>, lines: Vec<Line>, area: Rect, buf: &mut Buffer) {
    let block = Block::bordered()
        .border_style(Style::default().fg(AXIS))
        .title(Line::from(title));
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(block)
        .render(area, buf);
}

/// The latest sharpness and noise scale, and when each periodic probe last reported.
fn periodic<'a>(state: &TuiState, r: &RunData) -> Vec<Line<'a>> {
    let label = Style::default().fg(LABEL);
    let mut lines = Vec::new();
    let num = |v: Option<f64>| v.map(sig3).unwrap_or_else(|| "–".into());
    if let Some(p) = r.latest_probe(ProbeKind::Sharpness.name()) {
        let s = p.scalars.get(sharpness::PRECOND_LAMBDA_MAX).copied();
        let t = p.scalars.get(sharpness::THRESHOLD).copied();
        let above = matches!((s, t), (Some(s), Some(t)) if s > t);
        let mut spans = vec![
            Span::styled("sharpness ", label),
            Span::raw(num(s)),
            Span::styled(if above { " > 38/η " } else { " < 38/η " }, label),
            Span::raw(num(t)),
        ];
        if above {
            spans.push(Span::styled(
                " ⚠ edge of stability",
                Style::default()
                    .fg(Color::Yellow)
                    .add_modifier(Modifier::BOLD),
            ));
        } else if s.is_some() && t.is_some() {
            spans.push(Span::styled(" ✔", Style::default().fg(Color::Green)));
        }
        if let Some(l) = p.scalars.get(sharpness::LAMBDA_MAX) {
            spans.push(Span::styled("  λmax ", label));
            spans.push(Span::raw(sig3(*l)));
        }
        lines.push(Line::from(spans));
    }
    if let Some(p) = r.latest_probe(ProbeKind::Noise.name()) {
        let si = |k: &str| {
            p.scalars
                .get(k)
                .map(|v| format::si(*v))
                .unwrap_or_else(|| "–".into())
        };
        lines.push(Line::from(vec![
            Span::styled("noise B ", label),
            Span::raw(si(noise::B_SIMPLE_AVG)),
            Span::styled(" avg vs batch ", label),
            Span::raw(si(noise::BATCH_TOKENS)),
            Span::styled(", rule ", label),
            Span::raw(si(noise::RULE_TOKENS)),
        ]));
    }
    // When each probe last reported, newest first: "@700 sharpness, noise · @600 interp".
    // The interpolation may be reported on the other end (a branch) of the selected run.
    let mut seen: Vec<(u64, ProbeKind)> = ProbeKind::ALL
        .into_iter()
        .filter(|&k| k != ProbeKind::Interp)
        .filter_map(|k| r.latest_probe(k.name()).map(|p| (p.step, k)))
        .chain(latest_interp(state).map(|p| (p.step, ProbeKind::Interp)))
        .collect();
    if seen.is_empty() {
        lines.push(Line::from(vec![
            Span::styled("periodic: ", label),
            Span::raw(no_probe_text(state)),
        ]));
        return lines;
    }
    seen.sort_by_key(|&(step, _)| std::cmp::Reverse(step));
    let mut spans = Vec::new();
    let mut i = 0;
    while i < seen.len() {
        let step = seen[i].0;
        let kinds: Vec<&str> = seen[i..]
            .iter()
            .take_while(|(s, _)| *s == step)
            .map(|(_, k)| k.name())
            .collect();
        if i > 0 {
            spans.push(Span::styled(" · ", label));
        }
        spans.push(Span::styled(format!("@{step} "), label));
        spans.push(Span::raw(kinds.join(", ")));
        i += kinds.len();
    }
    if seen
        .iter()
        .any(|(_, k)| k.spec().drawing.in_parameter_space())
    {
        spans.push(Span::styled(" · v views", label));
    }
    lines.push(Line::from(spans));
    lines
}

/// A value in three significant digits (the panel is narrow): 0.1267 → "0.127",
/// 15.17 → "15.2", 3937 → "3937".
fn sig3(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() || v == 0.0 || !(1e-3..1e5).contains(&a) {
        return format::value(v);
    }
    let decimals = (2 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn latest_finite_or_nan(c: &crate::tui::series::Column) -> f64 {
    latest_finite(c).unwrap_or(f64::NAN)
}

/// "‖g‖ embedding 0.12  hidden 0.5  …": values with their names (or their index where
/// the names are missing).
fn named_values<'a>(
    what: &'a str,
    names: &[String],
    values: &[f64],
    short: impl Fn(&str) -> String,
) -> Line<'a> {
    let label = Style::default().fg(LABEL);
    let mut spans = vec![Span::styled(what, label)];
    for (i, v) in values.iter().enumerate() {
        let name = names
            .get(i)
            .map(|n| short(n))
            .unwrap_or_else(|| format!("#{i}"));
        let sep = if i > 0 { "  " } else { "" };
        spans.push(Span::styled(format!("{sep}{name} "), label));
        spans.push(Span::raw(if v.is_finite() {
            sig3(*v)
        } else {
            "–".into()
        }));
    }
    Line::from(spans)
}

/// A tensor's name short enough for the panel: `model.layers.0.self_attn.q_proj.weight` →
/// `L0.q_proj`, `model.embed_tokens.weight` → `embed_tokens`.
pub fn short_tensor(name: &str) -> String {
    let name = name.strip_prefix("model.").unwrap_or(name);
    let name = name
        .strip_suffix(".weight")
        .or_else(|| name.strip_suffix(".bias"))
        .unwrap_or(name);
    let mut out: Vec<String> = Vec::new();
    let mut parts = name.split('.').peekable();
    while let Some(p) = parts.next() {
        match p {
            "layers" if parts.peek().is_some_and(|n| n.parse::<u32>().is_ok()) => {
                out.push(format!("L{}", parts.next().unwrap_or_default()));
            }
            "self_attn" | "mlp" => {}
            _ => out.push(p.to_string()),
        }
    }
    out.join(".")
}

#[cfg(test)]
mod tests {
    use super::{short_tensor, sig3};

    #[test]
    fn three_significant_digits() {
        assert_eq!(sig3(0.12674), "0.127");
        assert_eq!(sig3(15.17), "15.2");
        assert_eq!(sig3(3937.2), "3937");
        assert_eq!(sig3(-0.02968), "-0.0297");
        assert_eq!(sig3(1e-5), "1e-5");
    }

    #[test]
    fn tensor_names_are_shortened() {
        assert_eq!(
            short_tensor("model.layers.0.self_attn.q_proj.weight"),
            "L0.q_proj"
        );
        assert_eq!(short_tensor("model.embed_tokens.weight"), "embed_tokens");
        assert_eq!(short_tensor("lm_head.weight"), "lm_head");
        assert_eq!(
            short_tensor("model.layers.11.mlp.down_proj.weight"),
            "L11.down_proj"
        );
    }
}
