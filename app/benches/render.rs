//! Render benchmark: how long one full frame (every panel) of a 1,000,000-step session takes,
//! and how long building that state from its events takes. Prints the figures; the target is
//! < 16 ms per frame. Run with `cargo bench -p wsdscope --bench render`.

use std::time::{Duration, Instant};

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::widgets::Widget;

use wsdscope::tui::synthetic::Synthetic;
use wsdscope::tui::{App, TuiState};

const STEPS: u64 = 1_000_000;
const BRANCH_STEPS: u64 = 100_000;
const FRAMES: usize = 60;

fn main() {
    // Built as replay builds it before its first frame (no live refits of the forecasts).
    let syn = Synthetic::new(STEPS, 10_000, 100_000);
    let trunk = syn.schedule();
    let mut state = TuiState::replay(Some("session.h5".into()), false);
    // The events first (as the session reader hands them over), then the timed apply.
    let mut evs = vec![syn.run_start(0, &trunk, 0)];
    for s in 1..=STEPS {
        evs.push(syn.step(0, &trunk, s));
        if s % 1000 == 0 {
            evs.push(syn.eval(0, &trunk, s));
        }
    }
    for (run, fork) in [(1u32, 500_000u64), (2, 800_000)] {
        let sched = syn.branch_schedule(fork, BRANCH_STEPS, wsdscope_trainer::DecayShape::Exp);
        evs.push(syn.run_start(run, &sched, fork));
        for s in fork + 1..=fork + BRANCH_STEPS {
            evs.push(syn.step(run, &sched, s));
            if s % 1000 == 0 {
                evs.push(syn.eval(run, &sched, s));
            }
        }
    }
    let events = evs.len() as u64;
    let t0 = Instant::now();
    for ev in &evs {
        state.apply(ev);
    }
    let built = t0.elapsed();
    drop(evs);
    println!(
        "session: {} trunk steps + 2 branches × {} steps, evals every 1000; \
         {} events applied in {:.0} ms ({:.0} ns/event)",
        wsdscope::tui::format::grouped(STEPS),
        wsdscope::tui::format::grouped(BRANCH_STEPS),
        wsdscope::tui::format::grouped(events),
        built.as_secs_f64() * 1e3,
        built.as_secs_f64() * 1e9 / events as f64
    );
    let t = Instant::now();
    state.refresh_forecasts();
    println!(
        "branch predictions after the first frame (2 multi-power-law fits over the 1M-step curves): {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    let mut worst = Duration::ZERO;
    for (w, h) in [(120u16, 36u16), (200, 50), (320, 90)] {
        for variant in ["whole run", "zoomed ×8", "log-y, raw"] {
            let mut s = state.clone();
            match variant {
                "zoomed ×8" => {
                    for _ in 0..3 {
                        s.zoom_in(None);
                    }
                }
                "log-y, raw" => {
                    s.ui.log_y = true;
                    s.ui.smooth = false;
                }
                _ => {}
            }
            let mut term = match Terminal::new(TestBackend::new(w, h)) {
                Ok(t) => t,
                Err(e) => match e {},
            };
            let mut times = Vec::with_capacity(FRAMES);
            for i in 0..FRAMES + 3 {
                // Alternate the selection so no frame is a no-op for the diff.
                s.ui.selected = (i % 3) as u32;
                let t = Instant::now();
                let _ = term.draw(|f| wsdscope::tui::draw(f, &s));
                if i >= 3 {
                    times.push(t.elapsed());
                }
            }
            times.sort();
            let mean = times.iter().sum::<Duration>() / times.len() as u32;
            let median = times[times.len() / 2];
            let max = times[times.len() - 1];
            worst = worst.max(max);
            println!(
                "frame {w}×{h} {variant:<11}: mean {:5.2} ms  median {:5.2} ms  max {:5.2} ms  ({FRAMES} frames via Terminal::draw)",
                ms(mean),
                ms(median),
                ms(max)
            );
        }
    }
    // The render alone (no terminal diff), at the largest size.
    let area = Rect::new(0, 0, 320, 90);
    let mut buf = Buffer::empty(area);
    let t = Instant::now();
    for _ in 0..FRAMES {
        buf.reset();
        App(&state).render(area, &mut buf);
    }
    println!(
        "render only 320×90: {:.2} ms per frame",
        ms(t.elapsed()) / FRAMES as f64
    );
    println!(
        "worst frame {:.2} ms: {} the 16 ms target",
        ms(worst),
        if worst < Duration::from_millis(16) {
            "within"
        } else {
            "OVER"
        }
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
