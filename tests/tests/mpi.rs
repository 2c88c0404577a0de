//! Data parallel over MPI: `mpirun -n 2 wsdscope record …` trains the run one process
//! trains. Needs `mpirun` (OpenMPI) and a binary built with `--features wsdscope/mpi`
//! (`target/<profile>/wsdscope-mpi`, or `WSDSCOPE_MPI_BIN`); without them these tests skip,
//! saying why, unless `WSDSCOPE_REQUIRE_MPI=1` (scripts/test), which makes them fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use wsdscope_tests::{binary, json_lines, step_losses};

/// The MPI build of `wsdscope` and `mpirun`, or why the tests cannot run.
fn mpi_binary() -> Option<PathBuf> {
    let required = std::env::var("WSDSCOPE_REQUIRE_MPI").is_ok_and(|v| v == "1");
    let bin = std::env::var("WSDSCOPE_MPI_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| binary().with_file_name("wsdscope-mpi"));
    let why = if !bin.exists() {
        format!(
            "{} is missing (cargo build --release -p wsdscope --features mpi, then copy \
             target/release/wsdscope there, or set WSDSCOPE_MPI_BIN)",
            bin.display()
        )
    } else if Command::new("mpirun").arg("--version").output().is_err() {
        "mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)".into()
    } else {
        return Some(bin);
    };
    assert!(!required, "WSDSCOPE_REQUIRE_MPI=1 but {why}");
    eprintln!("skipped: {why}");
    None
}

/// `wsdscope ARGS` with the MPI build, under `mpirun -n ranks` when `ranks` is given; the
/// `--jsonl` events it printed.
fn record(bin: &Path, ranks: Option<usize>, dir: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let mut c = match ranks {
        Some(n) => {
            let mut c = Command::new("mpirun");
            c.args(["--oversubscribe", "-n", &n.to_string()]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let out = c
        .args(["record", "--jsonl", "--no-record", "--threads", "1"])
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .current_dir(dir)
        .output()
        .expect("the run starts");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{ranks:?} ranks failed:\n{stderr}");
    json_lines(&stdout)
}

/// The f32 tensors of a safetensors file, by name.
fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            assert_eq!(v["dtype"], "F32", "{k}");
            let o = &v["data_offsets"];
            let (a, b) = (o[0].as_u64().unwrap(), o[1].as_u64().unwrap());
            let xs = data[a as usize..b as usize]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (k.clone(), xs)
        })
        .collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(1e-30)
}

/// ‖a − b‖ / ‖a‖.
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let n: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    (d / n.max(1e-300)).sqrt()
}

/// Two ranks, each on half of every batch, train what one process trains, its scripted fork
/// included. The CPU step sums a batch in a fixed tree whose halves are the two ranks'
/// shards (`trainer/src/model/tree.rs`), so the gradients agree bit for bit and so do the
/// parameters after 30 steps; the losses differ only in the last bits of the all-reduce's
/// f64 mean. The bound is 1e-5 relative; the test asserts it with room to spare.
#[test]
fn two_ranks_train_what_one_process_trains() {
    let Some(bin) = mpi_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    // A scripted fork at step 20 (a 2-step decay branch): every rank forks at that step.
    let args = |ck: &'static str| {
        let a = [
            "--steps",
            "30",
            "--batch",
            "16",
            "--fork-at",
            "20",
            "--probe-every",
            "4",
        ];
        [&a[..], &["--checkpoint-dir", ck]].concat()
    };
    let one = record(&bin, None, dir.path(), &args("one"));
    let two = record(&bin, Some(2), dir.path(), &args("two"));

    // Rank 0 alone prints: one stream, the same events in the same order.
    let kinds = |ev: &[serde_json::Value]| -> Vec<String> {
        ev.iter().map(|e| e["type"].to_string()).collect()
    };
    assert_eq!(kinds(&one), kinds(&two));
    let (l1, l2) = (step_losses(&one), step_losses(&two));
    assert_eq!(l1.len(), 32, "30 steps of the trunk, 2 of the branch");
    assert_eq!(l1.len(), l2.len());
    let first = |ev: &[serde_json::Value], k: &str| {
        ev.iter().find(|e| e["type"] == "step").unwrap()[k]
            .as_f64()
            .unwrap()
    };
    for k in ["loss", "grad_norm"] {
        let r = rel(first(&one, k), first(&two, k));
        assert!(r < 1e-6, "step 1 {k}: relative difference {r:.2e}");
    }
    let worst = l1
        .iter()
        .zip(&l2)
        .map(|(a, b)| rel(*a, *b))
        .fold(0.0, f64::max);
    eprintln!("worst relative loss difference over the 32 steps: {worst:.2e}");
    for (s, (a, b)) in l1.iter().zip(&l2).enumerate() {
        assert!(
            rel(*a, *b) < 1e-6,
            "step {}: loss {a} with one process, {b} with two",
            s + 1
        );
    }

    // Probes run on rank 0 over the global batch's rows, on the same parameters: the same
    // measurements (sharpness, noise scale, slices, landscape), timings aside.
    let probes = |ev: &[serde_json::Value]| -> Vec<serde_json::Value> {
        ev.iter()
            .filter(|e| e["type"] == "probe")
            .cloned()
            .collect()
    };
    let (q1, q2) = (probes(&one), probes(&two));
    assert!(q1.len() >= 7, "probes every 4 steps: {}", q1.len());
    assert_eq!(q1.len(), q2.len());
    for (a, b) in q1.iter().zip(&q2) {
        same_measurement(a, b, "");
    }

    // Rank 0 wrote the final checkpoint; its parameters are those of one process.
    let ck = |d: &str| dir.path().join(d).join("step-00000030/model.safetensors");
    let (p1, p2) = (tensors(&ck("one")), tensors(&ck("two")));
    assert_eq!(p1.keys().collect::<Vec<_>>(), p2.keys().collect::<Vec<_>>());
    let mut worst = 0.0f64;
    for (name, a) in &p1 {
        let r = rel_l2(a, &p2[name]);
        worst = worst.max(r);
        assert!(
            r == 0.0,
            "{name}: relative L2 difference {r:.2e}, not bit for bit"
        );
    }
    eprintln!("worst relative L2 parameter difference after 30 steps: {worst:.2e}");
}

/// Four ranks too: each holds one leaf of 4 sequences, and the ranks add their partial sums
/// by recursive doubling, the same tree one process's step adds them in, so the parameters
/// after 20 steps are identical.
#[test]
fn four_ranks_train_bit_for_bit_what_one_process_trains() {
    let Some(bin) = mpi_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let args = |ck: &'static str| {
        let a = ["--steps", "20", "--batch", "16", "--probe-budget", "0"];
        [&a[..], &["--checkpoint-dir", ck]].concat()
    };
    let one = record(&bin, None, dir.path(), &args("one"));
    let four = record(&bin, Some(4), dir.path(), &args("four"));
    let (l1, l4) = (step_losses(&one), step_losses(&four));
    assert_eq!(l1.len(), 20);
    assert_eq!(l1.len(), l4.len());
    for (s, (a, b)) in l1.iter().zip(&l4).enumerate() {
        assert!(
            rel(*a, *b) < 1e-6,
            "step {}: loss {a} with one process, {b} with four ranks",
            s + 1
        );
    }
    let ck = |d: &str| dir.path().join(d).join("step-00000020/model.safetensors");
    let (p1, p4) = (tensors(&ck("one")), tensors(&ck("four")));
    assert_eq!(p1.keys().collect::<Vec<_>>(), p4.keys().collect::<Vec<_>>());
    for (name, a) in &p1 {
        let r = rel_l2(a, &p4[name]);
        assert!(
            r == 0.0,
            "{name}: relative L2 difference {r:.2e}, not bit for bit"
        );
    }
}

/// Asserts two probe events measured the same thing: every number within 1e-6 relative,
/// except the wall-clock ones (`seconds`, `cost_steps`).
fn same_measurement(a: &serde_json::Value, b: &serde_json::Value, at: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                rel(x, y) <= 1e-6 || (x - y).abs() < 1e-12,
                "{at}: {x} with one process, {y} with two"
            );
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{at}"
            );
            for (k, v) in x {
                if k != "seconds" && k != "cost_steps" {
                    same_measurement(v, &y[k], &format!("{at}.{k}"));
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                same_measurement(v, w, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

/// `wsdscope record ARGS --jsonl` under `mpirun -n 2`, and the JSON lines rank 0 printed so
/// far.
struct Job {
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    seen: Vec<serde_json::Value>,
}

impl Job {
    fn start(bin: &Path, dir: &Path, args: &[&str]) -> Job {
        let mut child = Command::new("mpirun")
            .args(["--oversubscribe", "-n", "2"])
            .arg(bin)
            .args(["record", "--jsonl", "--threads", "1", "--steps", "3000"])
            .args(args)
            .env("RAYON_NUM_THREADS", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .current_dir(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("mpirun starts");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
        Job {
            child,
            stdout,
            seen: Vec::new(),
        }
    }

    /// Reads rank 0's lines until it has reported step `step`.
    fn read_to_step(&mut self, step: u64) {
        use std::io::BufRead;
        let mut line = String::new();
        while !self.seen.last().is_some_and(|e: &serde_json::Value| {
            e["type"] == "step" && e["step"].as_u64() >= Some(step)
        }) {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "the job ended before step {step}");
            self.seen
                .push(serde_json::from_str(&line).expect("a JSON line"));
        }
    }

    /// Waits (`secs` at most) for mpirun to end; its stderr and every JSON line printed.
    fn finish(mut self, secs: u64) -> (String, Vec<serde_json::Value>) {
        use std::io::Read;
        // Read on while waiting, so that rank 0 never blocks on a full pipe.
        let mut stdout = self.stdout;
        let rest = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            out
        });
        let t0 = std::time::Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if t0.elapsed().as_secs() >= secs {
                let _ = self.child.kill();
                panic!("the job did not end within {secs} s");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let (out, mut err) = (rest.join().unwrap(), String::new());
        let mut stderr = self.child.stderr.take().expect("piped");
        stderr.read_to_string(&mut err).unwrap();
        // The last line may be cut short where a rank was killed.
        self.seen
            .extend(out.lines().filter_map(|l| serde_json::from_str(l).ok()));
        (err, self.seen)
    }

    /// The pid of rank `rank` (a child of mpirun that OpenMPI told its rank).
    fn rank_pid(&self, rank: usize) -> i32 {
        let want = format!("OMPI_COMM_WORLD_RANK={rank}");
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid …: the ppid is the second field after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            if ppid != Some(self.child.id()) {
                continue;
            }
            let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            if env.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
                return pid;
            }
        }
        panic!("no process of rank {rank} under mpirun");
    }
}

/// The session of `path` as `inspect --json` reads it.
fn inspect(bin: &Path, path: &Path) -> serde_json::Value {
    let out = Command::new(bin)
        .args(["inspect", path.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "inspect {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// SIGTERM to the job (what a scheduler sends before preemption; mpirun forwards it to every
/// rank): rank 0 checkpoints, records the end and closes the session, and every rank exits
/// before mpirun's grace period ends (a rank 0 blocked on a full stdout pipe would not).
#[test]
fn sigterm_to_the_job_checkpoints_on_rank_0_and_stops_every_rank() {
    let Some(bin) = mpi_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::start(&bin, dir.path(), &["--batch", "4", "--out", "a.h5"]);
    job.read_to_step(20);
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(job.child.id() as i32, libc::SIGTERM) },
        0
    );
    let (err, _) = job.finish(30);
    // The session says so (stdout may lose lines here: mpirun stops reading it on SIGTERM).
    let v = inspect(&bin, &dir.path().join("a.h5"));
    let trunk = &v["runs"][0];
    assert_eq!(trunk["message"], "interrupted by SIGTERM", "{v}\n{err}");
    assert_eq!(trunk["status"], "stopped", "{v}");
    let step = trunk["last_step"].as_u64().unwrap_or(0);
    assert!(step >= 20, "{v}");
    let ck = dir
        .path()
        .join(format!("a.checkpoints/step-{step:08}/model.safetensors"));
    assert!(ck.exists(), "{} is missing:\n{err}", ck.display());
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
}

/// A rank that dies (SIGKILL) takes the job down within 10 s, named on rank 0; rank 0's
/// session stays readable and its run ends `failed`, saying which rank died.
#[test]
fn a_dead_rank_stops_the_job_naming_it() {
    let Some(bin) = mpi_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::start(&bin, dir.path(), &["--batch", "4", "--out", "b.h5"]);
    job.read_to_step(20);
    let pid = job.rank_pid(1);
    // SAFETY: kill(2) on a process of our own job.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let (err, _) = job.finish(10);
    assert!(
        err.contains("rank 1 of 2 died"),
        "rank 0 does not name the rank that died:\n{err}"
    );
    let session = inspect(&bin, &dir.path().join("b.h5"));
    let trunk = &session["runs"][0];
    assert_eq!(trunk["status"], "failed", "{trunk}");
    assert!(trunk["last_step"].as_u64().unwrap() >= 20, "{trunk}");
    let message = trunk["message"].as_str().unwrap_or_default();
    assert!(message.contains("rank 1 of 2 died"), "{message}");
}
