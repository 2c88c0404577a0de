use super::dims::Dims;
use super::estimate::{branches_alive, estimate, run_bytes};
use super::fit::{available_host, check_fits};
use super::pool::cpu_step_pool;
use super::units::human;
use crate::config::{
    DataSpec, ForkLength, ForkPlan, ModelConfig, OptimConfig, Policy, Precision, ProbeConfig,
    RunConfig, preset,
};
use crate::model::MiniCpm;
use crate::schedule::{DecayShape, Schedule};
use candle_core::{DType, Device, Tensor};

fn tiny(batch: usize, seq: usize) -> RunConfig {
    let p = preset("tiny").unwrap();
    RunConfig {
        preset: "tiny".into(),
        model: p.model,
        data: DataSpec::Synthetic,
        val_fraction: 0.1,
        steps: 40,
        batch,
        seq,
        seed: 0,
        schedule: Schedule::wsd(0.01, 40, 4, 8, DecayShape::Exp, 0.1).unwrap(),
        optim: OptimConfig::default(),
        eval_every: 0,
        eval_batches: 4,
        device: "cpu".into(),
        threads: 1,
        checkpoint_every: 0,
        checkpoint_dir: None,
        init_from: None,
        forks: Vec::new(),
        policy: Policy::RoundRobin,
        memory_budget_mb: None,
        keep_branch_checkpoints: false,
        probes: ProbeConfig::default(),
        reference_ops: false,
        precision: Precision::F32,
        max_runs: None,
        siblings: Vec::new(),
    }
}

fn fork(at: u64, steps: u64) -> ForkPlan {
    ForkPlan {
        at,
        length: ForkLength::Steps(steps),
        shape: DecayShape::Exp,
        floor: 0.1,
    }
}

#[test]
fn the_replayed_pool_is_the_cpu_steps_pool() {
    // GQA and plain heads, one to five layers, a pass with and without backward.
    for (heads, kv) in [(4, 2), (2, 2)] {
        for layers in 1..=5 {
            let mut m = ModelConfig::minicpm(32, 48, heads, kv, layers, 40);
            m.dim_model_base = 16;
            let (b, t) = (3, 7);
            let ids: Vec<u32> = (0..(b * t) as u32).map(|i| i * 7 % 40).collect();
            let x = Tensor::from_vec(ids.clone(), (b, t), &Device::Cpu).unwrap();
            let y = Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap();
            let d = Dims::new(&m, b, t);
            let model = MiniCpm::init(&m, t, 1, &Device::Cpu, DType::F32).unwrap();
            model.loss(&x, &y, false).unwrap();
            assert_eq!(
                model.scratch_bytes() as u128,
                4 * cpu_step_pool(&d, false),
                "forward, {heads}/{kv} heads, {layers} layers"
            );
            let model = MiniCpm::init(&m, t, 1, &Device::Cpu, DType::F32).unwrap();
            model.loss_and_grads(&x, &y).unwrap();
            model.loss_and_grads(&x, &y).unwrap(); // a second step reuses the pool
            assert_eq!(
                model.scratch_bytes() as u128,
                4 * cpu_step_pool(&d, true),
                "backward, {heads}/{kv} heads, {layers} layers"
            );
        }
    }
}

#[test]
fn the_parameters_part_is_four_bytes_per_parameter() {
    let cfg = tiny(16, 128);
    let est = estimate(&cfg);
    let params = est
        .parts()
        .iter()
        .find(|p| p.name.starts_with("parameters"))
        .unwrap();
    let rope = 2 * 128 * cfg.model.head_dim() as u64 * 4;
    assert_eq!(params.bytes, 4 * cfg.model.total_params() + rope);
    // The breakdown names every part; the summary is one line.
    let text = est.to_string();
    assert!(
        text.contains("AdamW moments") && text.contains("scratch pool"),
        "{text}"
    );
    assert!(!est.summary().contains('\n'));
}

#[test]
fn the_estimate_grows_with_batch_seq_and_layers() {
    let base = tiny(8, 64);
    let total = |f: &dyn Fn(&mut RunConfig)| {
        let mut c = base.clone();
        f(&mut c);
        estimate(&c).total()
    };
    let t0 = total(&|_| {});
    assert!(total(&|c| c.batch = 16) > t0);
    assert!(total(&|c| c.seq = 128) > t0);
    assert!(total(&|c| c.model.layers = 8) > t0);
    let mut last = 0;
    for b in [1, 2, 4, 16, 64, 256] {
        let t = total(&|c| c.batch = b);
        assert!(t > last, "batch {b}: {t} ≤ {last}");
        last = t;
    }
}

#[test]
fn branches_count_only_while_they_overlap() {
    let mut cfg = tiny(8, 64);
    let none = estimate(&cfg).total();
    cfg.forks = vec![fork(10, 20)];
    let one = estimate(&cfg).total();
    assert_eq!(branches_alive(&cfg), 1);
    // Forked after 10 and 12 for 20 steps each: both alive during steps 12..30.
    cfg.forks = vec![fork(10, 20), fork(12, 20)];
    assert_eq!(branches_alive(&cfg), 2);
    let two = estimate(&cfg).total();
    // The second starts when the first has ended: never two at once.
    cfg.forks = vec![fork(10, 5), fork(15, 5)];
    assert_eq!(branches_alive(&cfg), 1);
    assert_eq!(estimate(&cfg).total(), one);
    let run = run_bytes(&cfg);
    assert!(one > none && two > one);
    assert_eq!(two - one, one - none);
    assert!(one - none >= run, "{} < {run}", one - none);
    // A branch is a full run: parameters, moments, tracker and its own pool.
    assert!(run > 20 * cfg.model.total_params());
    // When the trunk waits for its branches, only forks at the same step overlap.
    cfg.forks = vec![fork(10, 20), fork(12, 20), fork(12, 20)];
    cfg.policy = Policy::BranchesFirst;
    assert_eq!(branches_alive(&cfg), 2);
}

#[test]
fn a_huge_batch_is_refused_naming_batch_in_one_line() {
    let cfg = tiny(100_000_000, 128);
    let est = estimate(&cfg);
    assert!(est.total() > 1 << 40, "{}", human(est.total()));
    let e = check_fits(&est, 21 << 30, "MemAvailable").unwrap_err();
    assert!(!e.contains('\n'), "{e}");
    assert!(
        e.contains("--batch 100000000") && e.contains("lower --batch or --seq"),
        "{e}"
    );
    assert!(
        e.contains("TiB") && e.contains("21.0 GiB is available (MemAvailable)"),
        "{e}"
    );
    assert!(check_fits(&estimate(&tiny(16, 128)), 21 << 30, "MemAvailable").is_ok());
}

#[test]
fn the_refusal_names_what_dominates() {
    // A wide model on a small batch: its parameters and the probes' copies.
    let mut cfg = tiny(1, 16);
    cfg.model.hidden = 16384;
    cfg.model.heads = 128;
    cfg.model.kv_heads = 128;
    cfg.model.ffn = 65536;
    let e = check_fits(&estimate(&cfg), 1 << 30, "MemAvailable").unwrap_err();
    assert!(e.contains("--hidden") && e.contains("--preset"), "{e}");
    cfg.probes.budget_pct = Some(0.0);
    let e = check_fits(&estimate(&cfg), 1 << 30, "MemAvailable").unwrap_err();
    assert!(
        e.contains("parameters and AdamW state") && e.contains("--hidden"),
        "{e}"
    );
    // Many branches alive at once.
    let mut cfg = tiny(16, 128);
    cfg.steps = 1000;
    cfg.schedule = Schedule::wsd(0.01, 1000, 10, 100, DecayShape::Exp, 0.1).unwrap();
    cfg.forks = (1..=200).map(|s| fork(s, 500)).collect();
    let e = check_fits(&estimate(&cfg), 1 << 30, "MemAvailable").unwrap_err();
    assert!(
        e.contains("200 alive at once") && e.contains("--fork-at"),
        "{e}"
    );
}

#[test]
fn absurd_shapes_do_not_overflow_or_take_long() {
    let t0 = std::time::Instant::now();
    let mut cfg = tiny(100_000_000, 100_000_000);
    let est = estimate(&cfg);
    assert_eq!(est.total(), u64::MAX);
    assert!(check_fits(&est, 1 << 34, "MemAvailable").is_err());
    cfg.model.layers = 100_000_000;
    cfg.model.hidden = 1 << 40;
    cfg.model.heads = 1 << 20;
    cfg.model.kv_heads = 1 << 20;
    cfg.model.ffn = usize::MAX;
    cfg.model.vocab = u32::MAX as usize;
    cfg.forks = vec![fork(1, u64::MAX)];
    let est = estimate(&cfg);
    assert_eq!(est.total(), u64::MAX);
    assert!(!est.summary().is_empty() && !est.to_string().is_empty());
    assert!(t0.elapsed().as_secs_f64() < 1.0, "{:?}", t0.elapsed());
}

#[test]
fn units_are_human() {
    assert_eq!(human(512), "512 B");
    assert_eq!(human(3 << 20), "3.0 MiB");
    assert_eq!(human(1_288_490_188_800), "1.2 TiB");
    assert_eq!(human(u64::MAX), "16.0 EiB");
    assert!(available_host().is_some_and(|b| b > 0));
}
