//! Checkpoint and resume: N steps straight and N/2 + resume + N/2 give bit-identical losses.

mod common;

use wsdscope_events::{EndReason, RunEvent};
use wsdscope_trainer::{Engine, Trainer, checkpoint};

#[test]
fn resume_continues_bit_identically() {
    let steps = 12;
    let mut straight = Trainer::new(common::small_run(steps)).unwrap();
    let a: Vec<f64> = (0..steps)
        .map(|_| straight.train_step().unwrap().loss)
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let mut first = Trainer::new(common::small_run(steps)).unwrap();
    let mut b: Vec<f64> = (0..steps / 2)
        .map(|_| first.train_step().unwrap().loss)
        .collect();
    let saved = first.save_checkpoint(dir.path()).unwrap();
    drop(first);
    let mut second = Trainer::resume(dir.path(), |_| {}).unwrap();
    assert_eq!(second.step_count(), steps / 2);
    b.extend((0..steps / 2).map(|_| second.train_step().unwrap().loss));

    assert_eq!(a, b, "losses differ after resume");
    assert!(a.iter().all(|l| l.is_finite()));
    // The checkpoint holds HF-named weights, the HF config and the optimiser moments.
    let ck = checkpoint::load(&saved).unwrap();
    assert!(ck.model.contains_key("model.embed_tokens.weight"));
    assert!(
        ck.model
            .contains_key("model.layers.1.self_attn.k_proj.weight")
    );
    assert!(ck.optimizer.contains_key("model.norm.weight.exp_avg_sq"));
    let hf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved.join("config.json")).unwrap()).unwrap();
    assert_eq!(hf["model_type"], "minicpm");
    assert_eq!(hf["num_key_value_heads"], 1);
    assert_eq!(ck.state.data_cursor, steps / 2 + 1);
}

#[test]
fn engine_checkpoints_and_resumes_from_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::small_run(8);
    cfg.checkpoint_every = 3;
    cfg.checkpoint_dir = Some(dir.path().to_path_buf());
    let (tx, rx) = std::sync::mpsc::channel();
    let out = Engine::spawn(Trainer::new(cfg).unwrap(), move |e| tx.send(e).unwrap())
        .unwrap()
        .join();
    assert_eq!(out.reason, EndReason::Completed);
    let events: Vec<RunEvent> = rx.iter().collect();
    let ck_steps: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Checkpoint { step, .. } => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(ck_steps, vec![3, 6, 8], "every 3 steps and at the end");
    let newest = checkpoint::resolve(dir.path()).unwrap();
    assert!(newest.ends_with("step-00000008"), "{}", newest.display());
    let e = checkpoint::resolve(&dir.path().join("missing"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("missing") && e.contains("no such directory"),
        "{e}"
    );
}
