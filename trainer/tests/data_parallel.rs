//! Data parallel without MPI: ranks on threads of this process, joined by an in-process
//! [`Collective`], train what one process trains; a command sent to rank 0 reaches every rank
//! at the same step boundary, and every rank holds the same global loss.

mod common;

use std::collections::BTreeMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};

use wsdscope_events::RunEvent;
use wsdscope_trainer::config::ForkLength;
use wsdscope_trainer::schedule::DecayShape;
use wsdscope_trainer::{Collective, Command, Engine, ForkRequest, Result, Trainer};

/// A rendezvous of `n` ranks: each call hands in every rank's bytes and returns all of them.
struct Hub {
    n: usize,
    state: Mutex<Round>,
    cv: Condvar,
}

#[derive(Default)]
struct Round {
    slots: Vec<Option<Vec<u8>>>,
    done: Option<Vec<Vec<u8>>>,
    taken: usize,
    generation: u64,
}

impl Hub {
    fn new(n: usize) -> Arc<Hub> {
        Arc::new(Hub {
            n,
            state: Mutex::new(Round {
                slots: vec![None; n],
                ..Round::default()
            }),
            cv: Condvar::new(),
        })
    }

    fn exchange(&self, rank: usize, data: Vec<u8>) -> Vec<Vec<u8>> {
        let mut s = self.state.lock().unwrap();
        while s.done.is_some() {
            s = self.cv.wait(s).unwrap(); // the previous round is still being read
        }
        s.slots[rank] = Some(data);
        let generation = s.generation;
        if s.slots.iter().all(Option::is_some) {
            s.done = Some(s.slots.iter_mut().map(|x| x.take().unwrap()).collect());
            self.cv.notify_all();
        }
        while s.generation == generation && s.done.is_none() {
            s = self.cv.wait(s).unwrap();
        }
        let all = s.done.clone().unwrap();
        s.taken += 1;
        if s.taken == self.n {
            (s.done, s.taken, s.generation) = (None, 0, generation + 1);
            self.cv.notify_all();
        }
        all
    }
}

/// Rank `rank` of a [`Hub`]; sums in rank order, so every rank gets the same bits.
struct Rank(Arc<Hub>, usize);

impl Rank {
    /// Every rank's `buf` summed element-wise, in rank order.
    fn sum<T: Copy + Default + std::ops::AddAssign, const W: usize>(
        &self,
        buf: &mut [T],
        to: fn(T) -> [u8; W],
        from: fn([u8; W]) -> T,
    ) {
        let bytes = buf.iter().flat_map(|x| to(*x)).collect();
        let all = self.0.exchange(self.1, bytes);
        buf.fill(T::default());
        for b in all {
            for (x, c) in buf.iter_mut().zip(b.chunks_exact(W)) {
                *x += from(c.try_into().unwrap());
            }
        }
    }
}

impl Collective for Rank {
    fn rank(&self) -> usize {
        self.1
    }
    fn size(&self) -> usize {
        self.0.n
    }
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.sum(buf, f32::to_le_bytes, f32::from_le_bytes);
        Ok(())
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.sum(buf, f64::to_le_bytes, f64::from_le_bytes);
        Ok(())
    }
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) -> Result<()> {
        *bytes = self
            .0
            .exchange(self.1, std::mem::take(bytes))
            .swap_remove(0);
        Ok(())
    }
}

/// Step losses by (run, step) and the steps at which runs forked, of one rank's events.
type Trace = (BTreeMap<(u32, u64), f64>, Vec<u64>);

/// Trains `small_run(steps)` as rank `rank` of `comm` (one process when `None`); on rank 0 a
/// decay fork of the trunk is asked for, as a command, right after step 5.
fn train(comm: Option<Arc<dyn Collective>>, steps: u64) -> Trace {
    let mut trainer = Trainer::new(common::small_run(steps)).unwrap();
    let root = comm.as_ref().is_none_or(|c| c.is_root());
    if let Some(c) = comm {
        trainer.set_collective(c).unwrap();
    }
    let link: Arc<Mutex<Option<Sender<Command>>>> = Arc::default();
    let sink_link = Arc::clone(&link);
    let trace: Arc<Mutex<Trace>> = Arc::default();
    let sink_trace = Arc::clone(&trace);
    let engine = Engine::spawn(trainer, move |e| {
        let mut t = sink_trace.lock().unwrap();
        match e {
            RunEvent::Step(m) => {
                t.0.insert((m.run, m.step), m.loss);
                if root && m.run == 0 && m.step == 5 {
                    // On the engine thread: the command is queued before the next boundary.
                    let tx = loop {
                        if let Some(tx) = sink_link.lock().unwrap().clone() {
                            break tx;
                        }
                        std::thread::yield_now();
                    };
                    tx.send(Command::Fork(ForkRequest {
                        parent: 0,
                        length: ForkLength::Steps(3),
                        shape: DecayShape::Linear,
                        floor: 0.0,
                        at_step: None,
                    }))
                    .unwrap();
                }
            }
            RunEvent::Forked { step, .. } => t.1.push(step),
            _ => {}
        }
    })
    .unwrap();
    *link.lock().unwrap() = Some(engine.commands());
    engine.join();
    let t = trace.lock().unwrap();
    t.clone()
}

#[test]
fn ranks_on_threads_train_what_one_process_trains_and_fork_at_the_same_step() {
    let one = train(None, 16);
    for n in [2, 3] {
        let hub = Hub::new(n);
        let ranks: Vec<_> = (0..n)
            .map(|r| {
                let c: Arc<dyn Collective> = Arc::new(Rank(Arc::clone(&hub), r));
                std::thread::spawn(move || train(Some(c), 16))
            })
            .collect();
        let traces: Vec<Trace> = ranks.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(one.1, [5], "one process forks after step 5");
        for (r, t) in traces.iter().enumerate() {
            assert_eq!(
                t.1, one.1,
                "{n} ranks: rank {r} forks where one process does"
            );
            // Every rank holds the same global loss, to the bit.
            assert_eq!(t.0, traces[0].0, "{n} ranks: rank {r}");
        }
        let many = &traces[0].0;
        assert_eq!(
            many.keys().collect::<Vec<_>>(),
            one.0.keys().collect::<Vec<_>>()
        );
        for (k, a) in &one.0 {
            let b = many[k];
            assert!(
                (a - b).abs() <= 1e-5 * a.abs(),
                "{n} ranks, run {} step {}: {a} with one process, {b} split",
                k.0,
                k.1
            );
        }
    }
}

#[test]
fn a_batch_smaller_than_the_ranks_is_refused() {
    let mut trainer = Trainer::new(common::small_run(4)).unwrap(); // batch 4
    let hub = Hub::new(5);
    let err = trainer
        .set_collective(Arc::new(Rank(hub, 0)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--batch 4") && err.contains("5 ranks"),
        "{err}"
    );
}
