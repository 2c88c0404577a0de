//! Sibling runs in the TUI: a run beside the trunk from step 0 is drawn in the panels like a
//! branch and listed by what differs from the trunk.

use wsdscope_sessions::RunEvent;
use wsdscope_trainer::Schedule;

use super::*;

/// The trunk after `upto` steps, and a cosine sibling (run 1) beside it for as many.
fn with_cosine_sibling(upto: u64) -> (TuiState, Schedule) {
    let mut s = state_at(upto);
    let cosine = Schedule::Cosine {
        peak: 0.01,
        warmup: 50,
        total: 1000,
        floor: 0.1,
    };
    let mut start = syn().run_start(1, &cosine, 0);
    if let RunEvent::RunStart(st) = &mut start {
        st.name = "schedule=cosine".into();
        st.parent = None;
        st.fork_step = None;
    }
    s.apply(&start);
    for step in 1..=upto {
        s.apply(&syn().step(1, &cosine, step));
    }
    (s, cosine)
}

/// The screen's row of the cosine sibling (the runs list, or the compare view's table).
fn sibling_row(text: &str) -> &str {
    text.lines()
        .find(|l| l.contains("schedule=cosine"))
        .unwrap_or_else(|| panic!("no sibling row in\n{text}"))
}

#[test]
fn a_sibling_is_listed_by_its_label_beside_the_trunk() {
    let (s, _) = with_cosine_sibling(300);
    let r = &s.runs[&1];
    assert!(r.is_sibling());
    assert_eq!(r.steps.len(), 300);
    let text = screen(&s, 160, 40);
    let row = sibling_row(&text);
    assert!(row.contains("sib"), "{row}");
    assert!(!s.runs[&0].is_sibling());
}

/// The compare view (`c`) lists a sibling by its label with its validation loss, the trunk's
/// at the same eval step, and the difference.
#[test]
fn the_compare_view_sets_a_sibling_against_the_trunk() {
    let (mut s, cosine) = with_cosine_sibling(300);
    let at = *s.runs[&0].eval_steps.last().expect("the trunk has evals");
    s.apply(&syn().eval(1, &cosine, at));
    let (mine, trunk) = (
        s.runs[&1].last_val().unwrap(),
        s.runs[&0].last_val().unwrap(),
    );
    press(&mut s, 'c');
    let text = screen(&s, 160, 40);
    let row = sibling_row(&text);
    assert!(row.contains("sib"), "{row}");
    let diff = format!("{:+.3}", mine - trunk);
    assert!(row.contains(&diff), "{row} lacks {diff}");
}
