//! The command line a new user meets first: `--version` names the commit the binary was built
//! from, `completions` prints scripts each shell loads, and `--threads` defaults to the
//! `RAYON_NUM_THREADS` the user set.

use wsdscope_tests::wsdscope;

#[test]
fn version_names_the_commit() {
    let out = wsdscope().arg("--version").output().unwrap();
    assert!(out.status.success());
    let v = String::from_utf8_lossy(&out.stdout);
    let commit = v
        .split("(commit ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("no commit in {v:?}"));
    let hash = commit.trim_end_matches("-dirty");
    assert!(
        hash == "unknown" || (hash.len() == 12 && hash.chars().all(|c| c.is_ascii_hexdigit())),
        "{v:?}"
    );
}

#[test]
fn completions_cover_the_subcommands_and_refuse_an_unknown_shell() {
    for (shell, marker) in [
        ("bash", "_wsdscope"),
        ("zsh", "#compdef wsdscope"),
        ("fish", "complete -c wsdscope"),
    ] {
        let out = wsdscope().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for sub in ["record", "replay", "attach", "inspect", "plot"] {
            assert!(script.contains(sub), "{shell}: {sub} is not completed");
        }
    }
    let out = wsdscope().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
}

#[test]
fn threads_default_to_rayon_num_threads() {
    let threads = |rayon: &str| -> serde_json::Value {
        let out = wsdscope()
            .env("RAYON_NUM_THREADS", rayon)
            .args(["record", "--dry-run", "--no-record"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let s = String::from_utf8_lossy(&out.stdout);
        let json = &s[s.find('{').unwrap()..=s.rfind('}').unwrap()];
        let cfg: serde_json::Value = serde_json::from_str(json).unwrap();
        cfg["threads"].clone()
    };
    assert_eq!(threads("3"), 3);
    assert_eq!(threads("1"), 1);
}
