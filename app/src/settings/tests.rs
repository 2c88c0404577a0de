//! Settings: validation messages, flags over the file, the decay flags, and that every
//! declared setting is one flag, one TOML key and one resume rule.

use clap::{Args, FromArgMatches};
use wsdscope_trainer::{DecayShape, ForkLength};

use super::*;

fn err(s: Settings) -> String {
    format!("{:#}", s.to_run_config().unwrap_err())
}

#[test]
fn defaults_give_the_tiny_wsd_run() {
    let c = Settings::default().to_run_config().unwrap();
    assert_eq!(c.preset, "tiny");
    let b = c.schedule.bounds();
    assert_eq!(b.total, c.steps);
    assert_eq!(b.warmup_end, c.steps / 10);
    assert_eq!(b.decay_start, c.steps - c.steps / 10);
}

#[test]
fn invalid_values_name_themselves() {
    let cases: Vec<(Settings, &str)> = vec![
        (
            Settings {
                preset: Some("nope".into()),
                ..Default::default()
            },
            "unknown preset \"nope\"",
        ),
        (
            Settings {
                batch: Some(0),
                ..Default::default()
            },
            "--batch 0",
        ),
        (
            Settings {
                lr: Some(0.0),
                ..Default::default()
            },
            "--lr 0",
        ),
        (
            Settings {
                lr: Some(-1.0),
                ..Default::default()
            },
            "--lr -1",
        ),
        (
            Settings {
                steps: Some(100),
                warmup: Some(0.5),
                decay: Some("exp:0.6".into()),
                ..Default::default()
            },
            "decay of 60 steps",
        ),
        (
            Settings {
                decay: Some("exp:2".into()),
                ..Default::default()
            },
            "FRACTION 2",
        ),
        (
            Settings {
                decay: Some("square:0.1".into()),
                ..Default::default()
            },
            "unknown decay shape \"square\"",
        ),
        (
            Settings {
                schedule: Some("step".into()),
                ..Default::default()
            },
            "--schedule \"step\"",
        ),
        (
            Settings {
                data: Some("/no/such/file.txt".into()),
                ..Default::default()
            },
            "/no/such/file.txt",
        ),
        (
            Settings {
                device: Some("gpu".into()),
                ..Default::default()
            },
            "--device \"gpu\"",
        ),
        (
            Settings {
                heads: Some(3),
                ..Default::default()
            },
            "--hidden 128 is not divisible by --heads 3",
        ),
        (
            Settings {
                precision: Some("fp8".into()),
                ..Default::default()
            },
            "--precision \"fp8\" is not allowed; use f32, bf16",
        ),
        (
            Settings {
                precision: Some("bf16".into()),
                ..Default::default()
            },
            "--precision bf16 is not allowed on --device cpu: bf16 mixed precision needs a CUDA device",
        ),
        (
            Settings {
                warmup: Some(1.0),
                ..Default::default()
            },
            "--warmup 1",
        ),
        (
            Settings {
                probe_decay_points: Some(0),
                ..Default::default()
            },
            "--probe-decay-points 0 is not allowed; it must be in 1..=100",
        ),
    ];
    for (s, want) in cases {
        let e = err(s);
        assert!(e.contains(want), "{e:?} lacks {want:?}");
    }
}

#[test]
fn file_values_yield_to_flags() {
    let file: Settings = toml::from_str("steps = 50\nlr = 0.02\nkv-heads = 2\n").unwrap();
    let cli = Settings {
        lr: Some(0.03),
        ..Default::default()
    };
    let merged = cli.over(file);
    assert_eq!(merged.steps, Some(50));
    assert_eq!(merged.lr, Some(0.03));
    assert_eq!(merged.kv_heads, Some(2));
    assert!(
        toml::from_str::<Settings>("stesp = 5").is_err(),
        "unknown keys are refused"
    );
}

#[test]
fn branch_decay_takes_steps_or_a_fraction() {
    assert_eq!(
        parse_branch_decay("exp:0.1").unwrap(),
        (DecayShape::Exp, ForkLength::FractionOfStep(0.1), 0.1)
    );
    assert_eq!(
        parse_branch_decay("cosine:200:0").unwrap(),
        (DecayShape::Cosine, ForkLength::Steps(200), 0.0)
    );
    assert!(
        parse_branch_decay("exp:1.5")
            .unwrap_err()
            .to_string()
            .contains("LENGTH \"1.5\"")
    );
    let s = Settings {
        steps: Some(100),
        fork_at: Some(vec![40, 60]),
        branch_decay: Some("linear:10".into()),
        ..Default::default()
    };
    let c = s.to_run_config().unwrap();
    assert_eq!(c.forks.len(), 2);
    assert_eq!(
        (c.forks[1].at, c.forks[1].length),
        (60, ForkLength::Steps(10))
    );
    let e = err(Settings {
        steps: Some(100),
        fork_at: Some(vec![100]),
        ..Default::default()
    });
    assert!(e.contains("--fork-at 100"), "{e}");
    let e = err(Settings {
        branch_decay: Some("exp:0.1".into()),
        ..Default::default()
    });
    assert!(e.contains("needs --fork-at"), "{e}");
    let e = err(Settings {
        policy: Some("fifo".into()),
        ..Default::default()
    });
    assert!(e.contains("--policy \"fifo\""), "{e}");
}

#[test]
fn decay_parses_fraction_and_floor() {
    let (s, d, f) = parse_decay("1-sqrt:0.2:0", 1000).unwrap();
    assert_eq!((s, d, f), (DecayShape::OneSqrt, 200, 0.0));
    assert!(parse_decay("exp", 10).is_err());
    assert_eq!(
        parse_decay("exp:0.01", 10).unwrap().1,
        1,
        "rounds up to one step"
    );
}

/// The settings `s` holds a value for.
fn given(s: &Settings) -> Vec<&'static Setting> {
    s.given().collect()
}

#[test]
fn every_setting_is_one_flag_and_one_toml_key() {
    let cmd = Settings::augment_args(clap::Command::new("t"));
    let flags: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
    let keys: Vec<String> = Settings::ALL.iter().map(Setting::key).collect();
    assert_eq!(flags, keys, "one flag per declared setting, in order");
    for a in cmd.get_arguments() {
        assert!(
            a.get_help().is_some(),
            "--{:?} has no help text",
            a.get_long()
        );
    }
    for s in Settings::ALL {
        let key = s.key();
        let (sample, cli, toml) = Settings::sample(s.field);
        let m = cmd
            .clone()
            .try_get_matches_from(["t", &format!("--{key}"), cli])
            .unwrap();
        let flag = Settings::from_arg_matches(&m).unwrap();
        assert_eq!(given(&flag), [s], "--{key} {cli}");
        let file: Settings = toml::from_str(&format!("{key} = {toml}")).unwrap();
        assert_eq!(given(&file), [s], "{key} = {toml}");
        assert_eq!(
            given(&Settings::default().over(file)),
            [s],
            "{key} from the file"
        );
        assert_eq!(
            given(&sample.over(Settings::default())),
            [s],
            "--{key} over the file"
        );
    }
}

#[test]
fn resume_checks_the_shaping_settings_and_adjusts_the_others() {
    // Text data, so that --data-format and --tokenizer have something to differ from.
    let text = std::env::temp_dir().join(format!("wsdscope-settings-{}.txt", std::process::id()));
    std::fs::write(&text, "abcdefgh".repeat(100)).unwrap();
    let saved = Settings {
        data: Some(text.clone()),
        ..Default::default()
    }
    .to_run_config()
    .unwrap();
    for s in Settings::ALL {
        let key = s.key();
        let (sample, _, _) = Settings::sample(s.field);
        let checked = check_resume(&sample, &saved).map_err(|e| e.to_string());
        let mut cfg = saved.clone();
        let adjusted = sample.adjust(&mut cfg);
        if s.shaping {
            let e = checked.expect_err(&key);
            assert!(e.contains(&format!("--{key} ")), "{e}");
            assert!(
                adjusted.is_ok() && cfg == saved,
                "--{key} shapes the run: adjust must not read it"
            );
        } else {
            assert_eq!(
                checked,
                Ok(()),
                "--{key} is adjustable: --resume must not check it"
            );
            assert!(
                adjusted.is_err() || cfg != saved,
                "--{key} is adjustable: adjust must read it"
            );
        }
    }
    std::fs::remove_file(text).unwrap();
}
