//! The TUI end to end: the real binary in a pseudo-terminal (tmux), driven by key presses,
//! read back from the screen. `wsdscope run` trains a small model, shows help, toggles log-y,
//! pauses, survives a tiny terminal, quits after confirmation with a complete session file;
//! its fork form pauses the run and the branch starts at the step the form showed;
//! `wsdscope replay` opens that file and moves its cursor, and `replay A B --x tokens` puts two
//! sessions of other batch sizes on a tokens axis that `x` turns into time. Needs tmux (CI
//! installs it); without it these tests fail, they do not skip.

use std::path::Path;

use wsdscope_tests::{SMALL, Tmux, binary, run, session_events};

/// `wsdscope ARGS…` as a shell command that prints its exit status when it ends.
fn shell(args: &[&str]) -> String {
    let mut cmd = format!("RAYON_NUM_THREADS=1 '{}'", binary().display());
    for a in args {
        cmd.push_str(&format!(" '{a}'"));
    }
    format!("{cmd}; echo EXIT=$?")
}

fn session_json(path: &Path) -> serde_json::Value {
    let r = run(&["inspect", path.to_str().unwrap(), "--json"]);
    assert!(r.ok(), "inspect failed: {}", r.stderr);
    serde_json::from_str(&r.stdout).expect("inspect --json prints JSON")
}

#[test]
fn run_trains_shows_help_pauses_and_quits_with_a_complete_session() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tui.h5");
    let mut args = vec!["run", "--out", out.to_str().unwrap(), "--steps", "20000"];
    args.extend_from_slice(SMALL);
    let t = Tmux::start(dir.path(), 120, 40, &shell(&args));

    let s = t.wait_for("training steps", |s| {
        s.contains("● running") && s.contains("tok/s")
    });
    assert!(s.contains("loss"), "{s}");
    assert!(s.contains("learning rate"), "{s}");
    assert!(
        s.contains("tui.h5"),
        "the header names the session file:\n{s}"
    );

    t.keys(&["?"]);
    t.wait_for("help overlay", |s| {
        s.contains("show / hide this help") && s.contains("fork a decay branch")
    });
    t.keys(&["?"]);
    t.wait_for("help closed", |s| !s.contains("show / hide this help"));

    t.keys(&["g"]);
    t.wait_for("log-y on", |s| s.contains("[log-y]"));

    t.keys(&["Space"]);
    let paused = t.wait_for("paused", |s| s.contains("❚❚ paused"));
    assert!(paused.contains("paused"), "{paused}");

    // A tiny terminal says so instead of drawing panels; the size comes back.
    t.resize(20, 6);
    t.wait_for("too small", |s| s.contains("terminal too small"));
    t.resize(120, 40);
    t.wait_for("panels again", |s| s.contains("❚❚ paused"));

    let end = quit_confirmed(&t);
    assert!(
        end.contains("session: "),
        "the session path is printed:\n{end}"
    );
    assert!(
        end.contains("run stopped at step"),
        "one-line summary:\n{end}"
    );

    let j = session_json(&out);
    let trunk = &j["runs"][0];
    assert_eq!(trunk["status"], "stopped", "{j}");
    assert!(trunk["steps"].as_u64().unwrap() >= 1, "{j}");

    // Replay the file just recorded: it opens at the end, paused; the cursor moves.
    let t = Tmux::start(
        dir.path(),
        120,
        40,
        &shell(&["replay", out.to_str().unwrap()]),
    );
    let steps = trunk["steps"].as_u64().unwrap();
    let s = t.wait_for("replay", |s| s.contains("replay paused"));
    assert!(
        s.contains(&format!("/{steps} steps 100%")) || steps >= 1000,
        "{s}"
    );
    t.keys(&["b"]);
    t.wait_for("cursor at the start", |s| s.contains("cursor 0/"));
    t.keys(&["]"]);
    t.wait_for("one step on", |s| s.contains("cursor 1/"));
    t.keys(&["?"]);
    t.wait_for("replay help", |s| {
        s.contains("jump to the previous / next phase")
    });
    t.keys(&["Escape"]);
    t.keys(&["q"]);
    let end = t.wait_for("exit", |s| s.contains("EXIT="));
    assert!(end.contains("EXIT=0"), "{end}");
}

/// Quits a run that is training (`q`, then `y` to confirm); the screen at its clean exit.
fn quit_confirmed(t: &Tmux) -> String {
    t.keys(&["q"]);
    t.wait_for("quit confirmation", |s| {
        s.contains("stop training and quit")
    });
    t.keys(&["y"]);
    let end = t.wait_for("exit", |s| s.contains("EXIT="));
    assert!(end.contains("EXIT=0"), "clean exit expected:\n{end}");
    end
}

/// The step the fork form's title shows ("fork a decay branch from run 0 at step 1,234").
fn form_step(screen: &str) -> Option<u64> {
    let rest = &screen[screen.find("from run 0 at step ")? + "from run 0 at step ".len()..];
    let digits: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn the_fork_form_pauses_the_run_and_the_branch_starts_at_the_step_it_showed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fork.h5");
    let mut args = vec!["run", "--out", out.to_str().unwrap(), "--steps", "20000"];
    args.extend_from_slice(SMALL);
    let t = Tmux::start(dir.path(), 120, 40, &shell(&args));
    t.wait_for("training steps", |s| {
        s.contains("● running") && s.contains("tok/s")
    });

    t.keys(&["f"]);
    let form = t.wait_for("the form with the step it paused at", |s| {
        s.contains("paused while you choose") && form_step(s).is_some()
    });
    let shown = form_step(&form).unwrap();
    // Paused: the step does not move while the form is open.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let later = t.screen();
    assert_eq!(form_step(&later), Some(shown), "{later}");
    assert!(later.contains("❚❚ paused"), "{later}");

    t.keys(&["Enter"]);
    t.wait_for("training again", |s| s.contains("● running"));
    quit_confirmed(&t);

    let events = session_events(dir.path(), "fork.h5").unwrap();
    let forks: Vec<&serde_json::Value> = events.iter().filter(|e| e["type"] == "forked").collect();
    assert_eq!(forks.len(), 1, "one fork: {forks:?}");
    assert_eq!(
        forks[0]["step"].as_u64(),
        Some(shown),
        "the branch starts at the step the form showed"
    );
    assert!(
        !events.iter().any(|e| e["kind"] == "refused"),
        "no refusal expected"
    );
}

#[test]
fn run_completes_by_itself_and_q_quits_without_asking() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("done.h5");
    let mut args = vec!["run", "--out", out.to_str().unwrap(), "--steps", "30"];
    args.extend_from_slice(SMALL);
    let t = Tmux::start(dir.path(), 100, 30, &shell(&args));
    t.wait_for("completed", |s| s.contains("✔ completed"));
    t.keys(&["q"]);
    let end = t.wait_for("exit", |s| s.contains("EXIT="));
    assert!(end.contains("EXIT=0"), "{end}");
    assert!(end.contains("run completed at step 30/30"), "{end}");
    assert_eq!(session_json(&out)["runs"][0]["status"], "completed");
}

#[test]
fn replay_of_a_bad_file_is_one_line_and_run_needs_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("notes.h5");
    std::fs::write(&bad, "not a session").unwrap();
    let r = run(&["replay", bad.to_str().unwrap()]);
    assert_eq!(r.code, Some(2));
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("notes.h5"), "{}", r.stderr);
    // Through a terminal too: the error comes before the screen is touched.
    let t = Tmux::start(
        dir.path(),
        100,
        30,
        &shell(&["replay", bad.to_str().unwrap()]),
    );
    let end = t.wait_for("exit", |s| s.contains("EXIT="));
    assert!(end.contains("EXIT=2") && end.contains("notes.h5"), "{end}");

    let r = run(&["run", "--no-record", "--steps", "3"]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("needs a terminal"), "{}", r.stderr);
    let r = run(&["run", "--jsonl"]);
    assert_eq!(r.code, Some(2), "--jsonl is not a run flag");
}

/// `NO_COLOR` (and `--color never`) draw the TUI in the terminal's own colours: the screen
/// carries no colour escape, while its text and the selection (reversed) stay; without them
/// the same screen is coloured.
#[test]
fn no_color_draws_the_tui_without_colour() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.h5");
    let mut args = vec!["record", "--out", out.to_str().unwrap(), "--steps", "40"];
    args.extend_from_slice(SMALL);
    let r = run(&args);
    assert!(r.ok(), "{}", r.stderr);
    // An SGR sequence that sets a foreground or background colour (30–49, 90–107, 38;…, 48;…).
    let coloured = |s: &str| {
        s.split("\x1b[").skip(1).any(|seq| {
            let params = seq.split('m').next().unwrap_or("");
            params.split(';').any(|p| {
                p.parse::<u32>().is_ok_and(|n| {
                    (30..=49).contains(&n) && n != 39 && n != 49 || (90..=107).contains(&n)
                })
            })
        })
    };
    for (env, flag, want_colour) in [
        ("", "", true),
        ("NO_COLOR=1 ", "", false),
        ("", "--color=never", false),
        ("NO_COLOR=1 ", "--color=always", true),
    ] {
        let mut a = vec!["replay", out.to_str().unwrap()];
        if !flag.is_empty() {
            a.push(flag);
        }
        let t = Tmux::start(dir.path(), 120, 40, &format!("{env}{}", shell(&a)));
        t.wait_for("replay", |s| s.contains("replay paused"));
        let screen = t.screen_with_escapes();
        assert_eq!(
            coloured(&screen),
            want_colour,
            "{env}{flag}: colour {}expected",
            if want_colour { "" } else { "not " }
        );
        assert!(screen.contains("loss"), "the text stays");
        t.keys(&["q"]);
    }
}

/// Two sessions with batches of 4 and 8 sequences replayed together on a tokens axis
/// (`--x tokens`): the charts' axes say "tokens" and run to the larger batch's 40 steps;
/// `x` turns them into training time.
#[test]
fn replay_of_two_batch_sizes_on_a_tokens_axis_and_x_cycles_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for batch in ["4", "8"] {
        let out = dir.path().join(format!("b{batch}.h5"));
        let mut args = vec!["record", "--out", out.to_str().unwrap(), "--steps", "40"];
        // SMALL with its batch replaced.
        for pair in SMALL.chunks(2) {
            args.push(pair[0]);
            args.push(if pair[0] == "--batch" { batch } else { pair[1] });
        }
        let r = run(&args);
        assert!(r.ok(), "{}", r.stderr);
        files.push(out.to_str().unwrap().to_string());
    }
    let events = session_events(dir.path(), "b8.h5").unwrap();
    let per_step = events
        .iter()
        .find(|e| e["type"] == "run_start")
        .map(|e| e["batch"].as_u64().unwrap() * e["seq"].as_u64().unwrap())
        .unwrap();
    let t = Tmux::start(
        dir.path(),
        120,
        40,
        &shell(&["replay", &files[0], &files[1], "--x", "tokens"]),
    );
    // The x axis rows: `└` then a tick label.
    let axes = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| {
                l.split('└')
                    .skip(1)
                    .any(|p| p.starts_with(|c: char| c.is_ascii_digit()))
            })
            .map(String::from)
            .collect()
    };
    let s = t.wait_for("the tokens axis", |s| !axes(s).is_empty());
    for row in axes(&s) {
        assert!(row.contains("tokens"), "{row}\n{s}");
    }
    // The axes end at the batch of 8's 40 steps (40 × 8 × 16 = 5120 tokens: "5.12k"), not
    // at the batch of 4's.
    assert_eq!(per_step, 8 * 16);
    assert!(
        axes(&s).iter().all(|r| r.contains("5.12k")),
        "the axes should end at 5.12k tokens:\n{s}"
    );
    t.keys(&["x"]);
    let s = t.wait_for("the time axis", |s| {
        axes(s).iter().all(|r| r.contains("time"))
    });
    assert!(s.contains("x axis: training time"), "{s}");
    t.keys(&["q"]);
    let end = t.wait_for("exit", |s| s.contains("EXIT="));
    assert!(end.contains("EXIT=0"), "{end}");
}
