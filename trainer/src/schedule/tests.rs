//! The schedules' shapes, boundaries and limits, and the decay grammar's accepted and
//! refused forms.

use super::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn wsd_boundaries_for_every_shape() {
    for shape in DecayShape::ALL {
        let s = Schedule::wsd(0.01, 100, 10, 20, shape, 0.1).unwrap();
        assert!(close(s.lr(1), 0.001), "{shape}: first warmup step");
        assert!(close(s.lr(10), 0.01), "{shape}: end of warmup is the peak");
        assert!(close(s.lr(11), 0.01), "{shape}: stable");
        assert!(close(s.lr(80), 0.01), "{shape}: last stable step");
        assert!(
            s.lr(81) < 0.01,
            "{shape}: decay starts right after the stable phase"
        );
        assert!(
            close(s.lr(100), 0.001),
            "{shape}: ends at the floor exactly"
        );
        assert!(
            close(s.lr(150), 0.001),
            "{shape}: stays at the floor past the end"
        );
        assert_eq!(s.phase(10), Phase::Warmup);
        assert_eq!(s.phase(11), Phase::Stable);
        assert_eq!(s.phase(80), Phase::Stable);
        assert_eq!(s.phase(81), Phase::Decay);
        // Monotone non-increasing over the decay.
        for t in 81..100 {
            assert!(s.lr(t + 1) <= s.lr(t) + 1e-15, "{shape} rises at {t}");
        }
    }
}

#[test]
fn shapes_match_their_formulas_midway() {
    let f = 0.1;
    assert!(close(DecayShape::Exp.multiplier(0.5, f), 0.1f64.sqrt()));
    assert!(close(DecayShape::Linear.multiplier(0.5, f), 0.55));
    assert!(close(DecayShape::Cosine.multiplier(0.5, f), 0.55));
    assert!(close(
        DecayShape::OneSqrt.multiplier(0.25, f),
        0.1 + 0.9 * 0.5
    ));
    assert!(close(DecayShape::Cosine.multiplier(0.0, f), 1.0));
}

#[test]
fn floor_zero_is_allowed_except_for_exp() {
    let s = Schedule::wsd(0.01, 100, 0, 10, DecayShape::Linear, 0.0).unwrap();
    assert_eq!(s.lr(100), 0.0);
    assert_eq!(s.lr(1), 0.01, "no warmup: first step at the peak");
    let err = Schedule::wsd(0.01, 100, 0, 10, DecayShape::Exp, 0.0).unwrap_err();
    assert!(err.to_string().contains("exp decay needs a floor > 0"));
}

#[test]
fn rejects_decay_longer_than_the_run_and_bad_values() {
    let e = Schedule::wsd(0.01, 100, 10, 95, DecayShape::Exp, 0.1).unwrap_err();
    assert!(e.to_string().contains("decay of 95 steps"), "{e}");
    assert!(Schedule::wsd(0.0, 100, 10, 10, DecayShape::Exp, 0.1).is_err());
    assert!(Schedule::wsd(-1.0, 100, 10, 10, DecayShape::Exp, 0.1).is_err());
    assert!(Schedule::wsd(0.01, 100, 10, 10, DecayShape::Exp, 1.5).is_err());
}

#[test]
fn cosine_and_constant() {
    let c = Schedule::Cosine {
        peak: 1.0,
        warmup: 10,
        total: 110,
        floor: 0.1,
    };
    assert!(close(c.lr(10), 1.0));
    assert!(close(c.lr(60), 0.55));
    assert!(close(c.lr(110), 0.1));
    assert_eq!(c.phase(11), Phase::Decay);
    let k = Schedule::Constant {
        peak: 0.5,
        warmup: 0,
        total: 10,
    };
    assert!(close(k.lr(1), 0.5) && close(k.lr(10), 0.5));
    assert_eq!(k.phase(10), Phase::Stable);
}

#[test]
fn serde_round_trip_is_pure_data() {
    let s = Schedule::wsd(0.01, 1000, 100, 100, DecayShape::OneSqrt, 0.0).unwrap();
    let j = serde_json::to_string(&s).unwrap();
    assert!(j.contains("\"1-sqrt\""), "{j}");
    let back: Schedule = serde_json::from_str(&j).unwrap();
    assert_eq!(back, s);
    for t in [1, 100, 900, 950, 1000] {
        assert_eq!(back.lr(t), s.lr(t));
    }
}

fn length(text: &str, form: LengthForm) -> std::result::Result<DecayLength, String> {
    DecayLength::parse(text, form).map_err(|e| e.to_string())
}

/// Each of `texts` is refused with one message that quotes it and says what is `allowed`.
fn refuses_as_written(form: LengthForm, texts: &[&str], allowed: &str) {
    for text in texts {
        let e = length(text, form).unwrap_err();
        assert_eq!(e, format!("LENGTH {text:?} is not allowed; {allowed}"));
    }
}

#[test]
fn a_fraction_of_the_run_is_a_number_in_0_1() {
    use DecayLength::*;
    let run = LengthForm::FractionOfRun;
    assert_eq!(length("0.1", run), Ok(Fraction(0.1)));
    assert_eq!(length("1", run), Ok(Fraction(1.0)), "1 is the whole run");
    assert_eq!(length("1.0", run), Ok(Fraction(1.0)));
    let refused = [
        (
            "0",
            "FRACTION 0 is not allowed; it is a fraction of the run's steps in (0, 1]",
        ),
        ("2", "FRACTION 2 is not allowed"),
        ("-0.1", "FRACTION -0.1 is not allowed"),
        ("NaN", "FRACTION NaN is not allowed"),
        ("10%", "FRACTION \"10%\" is not a number"),
        ("", "FRACTION \"\" is not a number"),
        ("abc", "FRACTION \"abc\" is not a number"),
    ];
    for (text, want) in refused {
        let e = length(text, run).unwrap_err();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn a_branch_length_is_steps_or_a_fraction_below_1() {
    use DecayLength::*;
    let branch = LengthForm::StepsOrFraction;
    assert_eq!(length("200", branch), Ok(Steps(200)));
    assert_eq!(length("1", branch), Ok(Steps(1)), "an integer is steps");
    assert_eq!(length("0.1", branch), Ok(Fraction(0.1)));
    refuses_as_written(
        branch,
        &["0", "1.5", "1.0", "-3", "10%", "", "abc"],
        "give steps (an integer ≥ 1) or a fraction of the fork step in (0, 1)",
    );
}

#[test]
fn a_fork_form_length_is_steps_or_a_percentage() {
    use DecayLength::*;
    let form = LengthForm::StepsOrPercent;
    assert_eq!(length("200", form), Ok(Steps(200)));
    assert_eq!(length("10%", form), Ok(Fraction(0.1)));
    assert_eq!(length("100%", form), Ok(Fraction(1.0)));
    assert_eq!(length("0.5%", form), Ok(Fraction(0.005)));
    refuses_as_written(
        form,
        &["0", "0%", "150%", "%", "0.1", "", "x%"],
        "give steps (an integer ≥ 1) or a percentage of the fork step in (0, 100]",
    );
}

#[test]
fn a_floor_is_a_ratio_in_0_1() {
    assert_eq!(parse_floor("0").unwrap(), 0.0);
    assert_eq!(parse_floor("0.1").unwrap(), 0.1);
    assert_eq!(parse_floor("1").unwrap(), 1.0);
    let refused = [
        (
            "1.5",
            "FLOOR 1.5 is not allowed; it is a fraction of the peak lr in [0, 1]",
        ),
        ("-0.1", "FLOOR -0.1 is not allowed"),
        ("", "FLOOR \"\" is not a number"),
        ("x", "FLOOR \"x\" is not a number"),
    ];
    for (text, want) in refused {
        let e = parse_floor(text).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn a_spec_is_shape_length_and_an_optional_floor() {
    let spec = |s: &str, form| DecaySpec::parse(s, form).map_err(|e| e.to_string());
    assert_eq!(
        spec("1-sqrt:0.2:0", LengthForm::FractionOfRun),
        Ok(DecaySpec {
            shape: DecayShape::OneSqrt,
            length: DecayLength::Fraction(0.2),
            floor: 0.0,
        })
    );
    assert_eq!(
        spec("cosine:200", LengthForm::StepsOrFraction),
        Ok(DecaySpec {
            shape: DecayShape::Cosine,
            length: DecayLength::Steps(200),
            floor: DEFAULT_FLOOR,
        })
    );
    let refused = [
        (
            "exp",
            LengthForm::FractionOfRun,
            "\"exp\" is not allowed; use SHAPE:FRACTION[:FLOOR], e.g. exp:0.1 or linear:0.2:0",
        ),
        (
            "exp:1:2:3",
            LengthForm::StepsOrFraction,
            "\"exp:1:2:3\" is not allowed; use SHAPE:LENGTH[:FLOOR], e.g. exp:0.1 or cosine:200:0",
        ),
        (
            "wiggle:0.1",
            LengthForm::FractionOfRun,
            "\"wiggle:0.1\": unknown decay shape \"wiggle\"; allowed: exp, linear, cosine, 1-sqrt",
        ),
        (
            "exp:2",
            LengthForm::FractionOfRun,
            "\"exp:2\": FRACTION 2 is not allowed",
        ),
        (
            "exp:1.5",
            LengthForm::StepsOrFraction,
            "\"exp:1.5\": LENGTH \"1.5\" is not allowed",
        ),
        (
            "exp:0.1:x",
            LengthForm::FractionOfRun,
            "\"exp:0.1:x\": FLOOR \"x\" is not a number",
        ),
    ];
    for (text, form, want) in refused {
        let e = spec(text, form).unwrap_err();
        assert!(e.starts_with(want), "{text:?}: {e}");
    }
}

#[test]
fn a_length_in_steps_is_at_least_one() {
    assert_eq!(DecayLength::Fraction(0.2).steps(1000), 200);
    assert_eq!(DecayLength::Fraction(0.01).steps(10), 1);
    assert_eq!(DecayLength::Steps(30).steps(10), 30);
    assert!(DecayShape::Linear.reaches(0.0) && !DecayShape::Exp.reaches(0.0));
}

#[test]
fn matches_the_torch_reference_formula() {
    // minicpm_ref.py wsd_mult(step=95, total=100, warmup=10, decay=10, "exp", 0.1) = 0.1**0.5
    let s = Schedule::wsd(1.0, 100, 10, 10, DecayShape::Exp, 0.1).unwrap();
    assert!(close(s.multiplier(95), 0.1f64.powf(0.5)));
    assert!(close(s.multiplier(5), 0.5));
}
