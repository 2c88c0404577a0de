//! The law against a direct evaluation of its formula, the data preparation (subsampling,
//! merged terms), the optimiser's pieces, and fits that recover known laws.

use super::law::Schedule;
use super::optimise::{Problem, box_least_squares};
use super::prepare::prepare;
use super::*;
use std::time::Instant;

const PEAK: f64 = 0.01;

fn truth() -> MultiPowerLaw {
    MultiPowerLaw {
        l0: 2.0,
        a: 0.5,
        alpha: 0.5,
        b: 25.0,
        c: 2.0,
        beta: 0.6,
        gamma: 0.5,
    }
}

/// A prior unlike the truth, so holding or refining it is visible.
fn prior() -> MultiPowerLaw {
    MultiPowerLaw {
        l0: 1.0,
        a: 1.0,
        alpha: 0.3,
        b: 10.0,
        c: 1.0,
        beta: 0.5,
        gamma: 0.4,
    }
}

/// Linear warmup to `PEAK` over `warmup` steps, then constant, `len` steps in all.
fn stable(warmup: usize, len: usize) -> Vec<f64> {
    (1..=len)
        .map(|s| {
            if s <= warmup {
                PEAK * s as f64 / warmup as f64
            } else {
                PEAK
            }
        })
        .collect()
}

enum Decay {
    /// Geometric to the fraction of the peak.
    Exp(f64),
    /// Linear to the fraction of the peak.
    Linear(f64),
}

/// `trunk[..fork]` followed by a `len`-step decay from the peak.
fn branch(trunk: &[f64], fork: usize, len: usize, decay: Decay) -> Vec<f64> {
    let mut lrs = trunk[..fork].to_vec();
    lrs.extend((1..=len).map(|j| {
        let f = j as f64 / len as f64;
        match decay {
            Decay::Exp(end) => PEAK * end.powf(f),
            Decay::Linear(end) => PEAK * (1.0 - (1.0 - end) * f),
        }
    }));
    lrs
}

/// The law straight from its definition, O(t²).
fn direct(law: &MultiPowerLaw, lrs: &[f64], warmup: usize, step: usize) -> f64 {
    let t = step - warmup;
    let eta = |k: usize| lrs[warmup + k - 1];
    let eta0 = lrs[warmup - 1];
    let sw: f64 = lrs[..warmup].iter().sum();
    let s1: f64 = (1..=t).map(eta).sum();
    let ld: f64 = (1..=t)
        .map(|k| {
            let prev = if k == 1 { eta0 } else { eta(k - 1) };
            let sk: f64 = (k..=t).map(eta).sum();
            let x = eta(k).powf(-law.gamma) * sk;
            (prev - eta(k)) * (1.0 - (law.c * x + 1.0).powf(-law.beta))
        })
        .sum();
    law.l0 + law.a * (s1 + sw).powf(-law.alpha) - law.b * ld
}

/// Deterministic noise uniform in ±`amp` (a 64-bit LCG).
fn noise(seed: u64, amp: f64) -> impl FnMut() -> f64 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        amp * (2.0 * (state >> 11) as f64 / (1u64 << 53) as f64 - 1.0)
    }
}

fn observe(
    law: &MultiPowerLaw,
    lrs: &[f64],
    warmup: usize,
    steps: std::ops::RangeInclusive<u64>,
    rng: &mut impl FnMut() -> f64,
) -> Curve {
    let steps: Vec<u64> = steps.collect();
    let losses = law.predict(lrs, warmup, &steps);
    Curve {
        lrs: lrs.to_vec(),
        warmup,
        points: steps
            .into_iter()
            .zip(losses)
            .map(|(s, l)| (s, l + rng()))
            .collect(),
    }
}

#[test]
fn a_constant_schedule_is_a_pure_power_law() {
    let law = truth();
    for warmup in [0, 1, 30] {
        let lrs: Vec<f64> = if warmup == 0 {
            vec![PEAK; 200]
        } else {
            stable(warmup, 200)
        };
        let steps: Vec<u64> = (1..=200).collect();
        let got = law.predict(&lrs, warmup, &steps);
        for (&s, &l) in steps.iter().zip(&got) {
            let area: f64 = lrs[..s as usize].iter().sum();
            assert_eq!(l, law.l0 + law.a * area.powf(-law.alpha), "step {s}");
        }
    }
    assert!(law.predict(&[PEAK; 5], 0, &[0, 6])[0].is_nan());
    assert!(law.predict(&[PEAK; 5], 0, &[0, 6])[1].is_nan());
}

#[test]
fn predict_matches_the_direct_quadratic_formula() {
    let law = truth();
    let trunk = stable(20, 400);
    for lrs in [
        branch(&trunk, 250, 150, Decay::Exp(0.05)),
        branch(&trunk, 250, 150, Decay::Linear(0.01)),
        // Decay, a short re-warm, then a linear decay again.
        {
            let mut l = branch(&trunk, 100, 50, Decay::Exp(0.3));
            l.extend([0.005, 0.008, 0.01]);
            l.extend(branch(&trunk, 0, 100, Decay::Linear(0.1)));
            l
        },
    ] {
        let steps: Vec<u64> = (21..=lrs.len() as u64).collect();
        let got = law.predict(&lrs, 20, &steps);
        for (&s, &l) in steps.iter().zip(&got) {
            let want = direct(&law, &lrs, 20, s as usize);
            assert!(((l - want) / want).abs() < 1e-12, "step {s}: {l} vs {want}");
        }
    }
}

#[test]
fn a_zero_lr_stops_the_curve() {
    let law = truth();
    let mut lrs = branch(&stable(10, 300), 200, 50, Decay::Linear(0.0));
    lrs.extend([0.0; 20]);
    let steps: Vec<u64> = (240..=lrs.len() as u64).collect();
    let got = law.predict(&lrs, 10, &steps);
    assert!(got.iter().all(|l| l.is_finite()), "{got:?}");
    let at_zero = got[(250 - 240) as usize];
    for &l in &got[(250 - 240) as usize..] {
        assert_eq!(l, at_zero);
    }
    // Continuous with an lr that only nearly reaches 0.
    let mut near = lrs.clone();
    near[249..].iter_mut().for_each(|l| *l = 1e-15);
    let near_loss = law.predict(&near, 10, &[250])[0];
    assert!(
        (near_loss - at_zero).abs() < 1e-5,
        "{near_loss} vs {at_zero}"
    );
}

#[test]
fn recovers_a_known_law_and_predicts_an_unseen_branch() {
    let law = truth();
    let warmup = 50;
    let stable_lrs = stable(warmup, 600);
    let trunk = branch(&stable_lrs, 540, 60, Decay::Exp(0.1));
    let b300 = branch(&stable_lrs, 300, 60, Decay::Exp(0.1));
    let b420 = branch(&stable_lrs, 420, 60, Decay::Exp(0.1));
    let mut rng = noise(7, 0.002);
    let curves = vec![
        observe(&law, &trunk, warmup, 1..=600, &mut rng),
        observe(&law, &b300, warmup, 301..=360, &mut rng),
        observe(&law, &b420, warmup, 421..=480, &mut rng),
    ];
    let t0 = Instant::now();
    let fit = fit_multi_power_law(&curves, &prior()).unwrap();
    let elapsed = t0.elapsed();
    eprintln!(
        "mpl fit of 3 curves ({} points used): {elapsed:?}, rms {:.5}, {:?}",
        fit.points, fit.rms, fit.law
    );
    assert!(fit.decay_fitted);
    assert!(fit.rms < 0.002, "{fit:?}");
    assert!(fit.law.l0 >= 0.0 && fit.law.l0 <= 2.2, "{fit:?}");
    for c in &curves {
        let last = c.lrs.len() as u64;
        let got = fit.law.predict(&c.lrs, warmup, &[last])[0];
        let want = law.predict(&c.lrs, warmup, &[last])[0];
        eprintln!(
            "final loss at {last}: fitted {got:.5}, true {want:.5}, error {:.5}",
            got - want
        );
        assert!((got - want).abs() < 0.01, "step {last}: {got} vs {want}");
    }
    let unseen = branch(&stable_lrs, 360, 60, Decay::Linear(0.0));
    let got = fit.law.predict(&unseen, warmup, &[420])[0];
    let want = law.predict(&unseen, warmup, &[420])[0];
    eprintln!(
        "unseen branch (fork 360, linear to 0): fitted {got:.5}, true {want:.5}, error {:.5}",
        got - want
    );
    assert!((got - want).abs() < 0.02, "{got} vs {want}");
}

#[test]
fn loss_spikes_do_not_pull_the_fit() {
    let law = truth();
    let stable_lrs = stable(50, 600);
    let trunk = branch(&stable_lrs, 540, 60, Decay::Exp(0.1));
    let b300 = branch(&stable_lrs, 300, 60, Decay::Exp(0.1));
    let mut rng = noise(11, 0.002);
    let mut curves = vec![
        observe(&law, &trunk, 50, 51..=600, &mut rng),
        observe(&law, &b300, 50, 301..=360, &mut rng),
    ];
    // Spikes of +0.3 on every 25th trunk point, decay region included.
    for p in curves[0].points.iter_mut().step_by(25) {
        p.1 += 0.3;
    }
    let fit = fit_multi_power_law(&curves, &prior()).unwrap();
    for c in &curves {
        let last = c.lrs.len() as u64;
        let got = fit.law.predict(&c.lrs, 50, &[last])[0];
        let want = law.predict(&c.lrs, 50, &[last])[0];
        assert!((got - want).abs() < 0.01, "step {last}: {got} vs {want}");
    }
}

#[test]
fn l0_may_lie_above_the_decayed_losses() {
    // A strong decay term: the decayed losses end ~0.2 below L0 = 2.5, so bounding L0 by the
    // lowest observed loss would bias the whole fit.
    let law = MultiPowerLaw {
        l0: 2.5,
        a: 0.4,
        alpha: 0.7,
        b: 40.0,
        c: 10.0,
        beta: 1.0,
        gamma: 0.9,
    };
    let stable_lrs = stable(50, 600);
    let trunk = branch(&stable_lrs, 540, 60, Decay::Exp(0.1));
    let b300 = branch(&stable_lrs, 300, 60, Decay::Exp(0.1));
    let mut rng = noise(19, 0.002);
    let curves = vec![
        observe(&law, &trunk, 50, 1..=600, &mut rng),
        observe(&law, &b300, 50, 301..=360, &mut rng),
    ];
    let lowest = curves[0].points.last().unwrap().1;
    assert!(lowest < law.l0 - 0.1, "{lowest}");
    let fit = fit_multi_power_law(&curves, &prior()).unwrap();
    assert!(fit.rms < 0.002, "{fit:?}");
    assert!(fit.law.l0 > lowest, "{fit:?}");
    for c in &curves {
        let last = c.lrs.len() as u64;
        let got = fit.law.predict(&c.lrs, 50, &[last])[0];
        let want = law.predict(&c.lrs, 50, &[last])[0];
        assert!((got - want).abs() < 0.01, "step {last}: {got} vs {want}");
    }
}

#[test]
fn stable_points_alone_hold_the_decay_term_at_the_prior() {
    let law = truth();
    // The schedule decays after step 500, but only stable-phase points are observed.
    let lrs = branch(&stable(50, 600), 500, 100, Decay::Exp(0.1));
    let mut rng = noise(3, 0.002);
    let curves = vec![observe(&law, &lrs, 50, 1..=500, &mut rng)];
    let pr = prior();
    let fit = fit_multi_power_law(&curves, &pr).unwrap();
    assert!(!fit.decay_fitted);
    assert_eq!(
        (fit.law.b, fit.law.c, fit.law.beta, fit.law.gamma),
        (pr.b, pr.c, pr.beta, pr.gamma)
    );
    assert_eq!(fit.points, 256);
    assert!(fit.rms < 0.002, "{fit:?}");
    let got = fit.law.predict(&lrs, 50, &[500])[0];
    let want = law.predict(&lrs, 50, &[500])[0];
    assert!((got - want).abs() < 0.005, "{got} vs {want}");
}

#[test]
fn subsampling_keeps_the_last_point_and_a_dense_decay() {
    let lrs = branch(&stable(100, 5000), 4000, 1000, Decay::Exp(0.1));
    let curve = Curve {
        lrs,
        warmup: 100,
        points: (1..=5000).map(|s| (s, 3.0)).collect(),
    };
    let prep = prepare(0, &curve).unwrap();
    let fc = &prep.curve;
    assert_eq!((fc.points.len(), prep.ys.len()), (256, 256));
    assert_eq!((prep.min_before_decay, prep.max_loss), (3.0, 3.0));
    assert_eq!(prep.n_decay, 128);
    assert_eq!(fc.points.last().unwrap().step, 5000);
    assert!(fc.first_change.is_some());
}

#[test]
fn bad_input_is_named() {
    let pr = prior();
    let lrs = stable(10, 100);
    let curve = |points: Vec<(u64, f64)>| Curve {
        lrs: lrs.clone(),
        warmup: 10,
        points,
    };
    assert_eq!(fit_multi_power_law(&[], &pr), Err(MplError::NoCurves));
    let e = fit_multi_power_law(&[curve(vec![])], &pr).unwrap_err();
    assert_eq!(e, MplError::EmptyCurve { curve: 0 });
    assert!(e.to_string().contains("no observed points"), "{e}");

    let good: Vec<(u64, f64)> = (11..=60).map(|s| (s, 3.0 - s as f64 * 1e-3)).collect();
    let mut nan = good.clone();
    nan[5].1 = f64::NAN;
    let e = fit_multi_power_law(&[curve(good.clone()), curve(nan)], &pr).unwrap_err();
    assert!(
        matches!(e, MplError::NonFiniteLoss { curve: 1, step: 16, loss } if loss.is_nan()),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("NaN") && e.to_string().contains("16"),
        "{e}"
    );

    let mut past = good.clone();
    past.push((101, 2.0));
    let e = fit_multi_power_law(&[curve(past)], &pr).unwrap_err();
    assert_eq!(
        e,
        MplError::StepBeyondSchedule {
            curve: 0,
            step: 101,
            len: 100
        }
    );
    assert!(
        e.to_string().contains("101") && e.to_string().contains("100"),
        "{e}"
    );

    let mut bad_lr = curve(good.clone());
    bad_lr.lrs[41] = -1e-3;
    let e = fit_multi_power_law(&[bad_lr], &pr).unwrap_err();
    assert!(
        e.to_string().contains("-0.001") && e.to_string().contains("42"),
        "{e}"
    );

    let e = fit_multi_power_law(&[curve(vec![(12, 3.0), (12, 2.9)])], &pr).unwrap_err();
    assert_eq!(e, MplError::BadStep { curve: 0, step: 12 });

    // Points only during warmup leave nothing to fit.
    let e = fit_multi_power_law(&[curve(vec![(3, 3.5), (9, 3.1)])], &pr).unwrap_err();
    assert_eq!(e, MplError::TooFewPoints { got: 0, need: 4 });

    let e = fit_multi_power_law(
        &[curve(good)],
        &MultiPowerLaw {
            gamma: f64::NAN,
            ..pr
        },
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("gamma") && e.to_string().contains("NaN"),
        "{e}"
    );
}

#[test]
fn box_least_squares_respects_bounds() {
    // y = 1 + 2x exactly; with the slope capped at 1 the intercept absorbs the rest.
    let xs = [0.0, 1.0, 2.0, 3.0];
    let mut gram = [[0.0; 3]; 3];
    let mut xty = [0.0; 3];
    let mut yty = 0.0;
    for &x in &xs {
        let (row, y) = ([1.0, x, 0.0], 1.0 + 2.0 * x);
        for a in 0..2 {
            xty[a] += row[a] * y;
            for b in 0..2 {
                gram[a][b] += row[a] * row[b];
            }
        }
        yty += y * y;
    }
    let inf = f64::INFINITY;
    let (x, err) = box_least_squares(&gram, &xty, yty, 2, &[0.0; 3], &[inf; 3]).unwrap();
    assert!((x[0] - 1.0).abs() < 1e-12 && (x[1] - 2.0).abs() < 1e-12 && err.abs() < 1e-9);
    let (x, _) = box_least_squares(&gram, &xty, yty, 2, &[0.0; 3], &[inf, 1.0, inf]).unwrap();
    assert!(
        (x[1] - 1.0).abs() < 1e-12 && (x[0] - 2.5).abs() < 1e-12,
        "{x:?}"
    );
}

/// The problem of fitting one curve with every parameter free, `law` as the held values.
fn one_curve_problem(curve: &Curve, law: &MultiPowerLaw) -> Problem {
    let prep = prepare(0, curve).unwrap();
    Problem {
        curves: vec![prep.curve],
        y: prep.ys,
        l0_max: 3.0,
        free: 7,
        held: *law,
    }
}

#[test]
fn merged_terms_match_the_exact_law_on_long_decays() {
    let law = truth();
    let st = stable(1000, 100_000);
    // (schedule, whether its changes are dense enough to merge)
    for (lrs, merges) in [
        (branch(&st, 80_000, 20_000, Decay::Exp(0.1)), true),
        (branch(&st, 80_000, 20_000, Decay::Linear(0.0)), true),
        // Step decay: few changes, far apart, none merged.
        (
            (1..=100_000)
                .map(|s: i32| PEAK * 0.3f64.powi(s / 20_000))
                .collect(),
            false,
        ),
    ] {
        let curve = Curve {
            lrs,
            warmup: 1000,
            points: (1001..=100_000).map(|s| (s, 3.0)).collect(),
        };
        let problem = one_curve_problem(&curve, &law);
        let fc = &problem.curves[0];
        let steps: Vec<u64> = fc.points.iter().map(|p| p.step).collect();
        let exact = law.predict(&curve.lrs, 1000, &steps);
        let mut merged = vec![0.0; steps.len()];
        problem.eval(&law.to_array(), &mut merged, None);
        let worst = exact
            .iter()
            .zip(&merged)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let sched = Schedule::new(&curve.lrs, 1000);
        let pairs: usize = steps
            .iter()
            .map(|&s| sched.changes.partition_point(|c| c.step <= s))
            .sum();
        eprintln!(
            "merged LD: {} terms for {pairs} exact pairs, worst error {worst:.2e}",
            fc.terms.len()
        );
        assert!(worst < 1e-4, "{worst}");
        if merges {
            assert!(fc.terms.len() * 20 < pairs, "{} vs {pairs}", fc.terms.len());
        } else {
            assert_eq!(fc.terms.len(), pairs);
        }
    }
}

#[test]
fn the_jacobian_matches_finite_differences() {
    let law = MultiPowerLaw { l0: 1.5, ..truth() };
    let stable_lrs = stable(50, 600);
    let curve = Curve {
        lrs: branch(&stable_lrs, 400, 200, Decay::Linear(0.0)),
        warmup: 50,
        points: (51..=600).map(|s| (s, 3.0)).collect(),
    };
    let problem = one_curve_problem(&curve, &law);
    let n = problem.y.len();
    let p = law.to_array();
    let theta = problem.theta_of(&p);
    let (mut pred, mut jac) = (vec![0.0; n], vec![0.0; n * 7]);
    problem.eval(&p, &mut pred, Some(&mut jac));
    for j in 0..7 {
        let h = 1e-6;
        let (mut up, mut down) = (theta, theta);
        up[j] += h;
        down[j] -= h;
        let (mut pu, mut pd) = (vec![0.0; n], vec![0.0; n]);
        problem.eval(&problem.params_of(&up), &mut pu, None);
        problem.eval(&problem.params_of(&down), &mut pd, None);
        for i in 0..n {
            let fd = (pu[i] - pd[i]) / (2.0 * h);
            let an = jac[i * 7 + j];
            assert!(
                (fd - an).abs() <= 1e-6 * (1.0 + an.abs()),
                "parameter {j}, point {i}: analytic {an}, numeric {fd}"
            );
        }
    }
}
