//! Batching the frames of several callers (element instances, threads) into one run of a
//! shared executor, such as one CUDA engine that several streams share.
//!
//! No dispatcher thread and no waiting window: a caller queues its job and, when no batch is
//! running, becomes the leader — it takes every queued job with the same key as the oldest
//! (up to the batch limit), runs them in one call, hands each caller its result and goes on
//! until its own job is done; then it steps down and a waiting caller takes over. While a
//! batch runs, the other callers' jobs queue up, so with N streams at the same frame rate the
//! batches grow to about N frames by themselves, and a lone caller never waits for anyone.
//!
//! With several executors ([`Batcher::with_executors`], e.g. CUDA engines on their own device
//! streams and buffers) up to that many batches run at once, one per executor: one batch's
//! transfers and host work overlap another's compute.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Condvar, Mutex};

/// What a [`Batcher`] runs.
pub trait BatchExec: Send {
    type Job: Send;
    type Out: Send;
    /// Jobs with equal keys can share a run (e.g. frames of the same size).
    type Key: PartialEq;
    fn key(job: &Self::Job) -> Self::Key;
    /// Runs `jobs` together; one output per job, in order.
    fn run(&mut self, jobs: Vec<Self::Job>) -> Vec<Self::Out>;
    /// The output each job of a run gets when the run panicked or returned too few outputs.
    fn failed(why: &str) -> Self::Out;
}

struct Queue<J, O> {
    next_id: u64,
    pending: VecDeque<(u64, J)>,
    done: Vec<(u64, O)>,
    /// Executors not running a batch (indices into `Batcher::execs`).
    free: Vec<usize>,
    /// Sizes of the runs so far (for tests and statistics), capped at the last 1024.
    sizes: VecDeque<usize>,
}

/// Several callers, one executor (or a few): see the module documentation.
pub struct Batcher<E: BatchExec> {
    queue: Mutex<Queue<E::Job, E::Out>>,
    cv: Condvar,
    execs: Vec<Mutex<E>>,
    max_batch: usize,
}

impl<E: BatchExec> Batcher<E> {
    /// `max_batch` ≥ 1 jobs per run.
    pub fn new(exec: E, max_batch: usize) -> Self {
        Self::with_executors(vec![exec], max_batch)
    }

    /// Up to `execs.len()` (≥ 1) runs at once, each on its own executor.
    pub fn with_executors(execs: Vec<E>, max_batch: usize) -> Self {
        assert!(!execs.is_empty(), "a batcher needs an executor");
        Self {
            queue: Mutex::new(Queue {
                next_id: 0,
                pending: VecDeque::new(),
                done: Vec::new(),
                free: (0..execs.len()).rev().collect(),
                sizes: VecDeque::new(),
            }),
            cv: Condvar::new(),
            execs: execs.into_iter().map(Mutex::new).collect(),
            max_batch: max_batch.max(1),
        }
    }

    /// Runs `job`, batched with whatever other callers queued meanwhile; returns its output.
    pub fn run(&self, job: E::Job) -> E::Out {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let id = q.next_id;
        q.next_id += 1;
        q.pending.push_back((id, job));
        loop {
            if let Some(i) = q.done.iter().position(|(d, _)| *d == id) {
                let out = q.done.swap_remove(i).1;
                return out;
            }
            // A free executor and still jobs to take (another leader may have taken ours:
            // then wait for its result).
            if q.free.is_empty() || q.pending.is_empty() {
                q = self.cv.wait(q).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Lead one run: the oldest job's key, every queued job with it, up to the limit.
            let slot = q.free.pop().expect("a free executor");
            let key = E::key(&q.pending.front().expect("a queued job").1);
            let mut ids = Vec::new();
            let mut jobs = Vec::new();
            let mut rest = VecDeque::new();
            while let Some((d, j)) = q.pending.pop_front() {
                if jobs.len() < self.max_batch && E::key(&j) == key {
                    ids.push(d);
                    jobs.push(j);
                } else {
                    rest.push_back((d, j));
                }
            }
            q.pending = rest;
            if q.sizes.len() == 1024 {
                q.sizes.pop_front();
            }
            q.sizes.push_back(jobs.len());
            drop(q);
            let outs = {
                let mut exec = self.execs[slot].lock().unwrap_or_else(|e| e.into_inner());
                catch_unwind(AssertUnwindSafe(|| exec.run(jobs)))
            };
            let mut outs: Vec<E::Out> = match outs {
                Ok(v) => v,
                Err(p) => {
                    let why = p
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| p.downcast_ref::<&str>().copied())
                        .unwrap_or("a panic");
                    let why = format!("the shared executor panicked: {why}");
                    ids.iter().map(|_| E::failed(&why)).collect()
                }
            };
            while outs.len() < ids.len() {
                outs.push(E::failed("the shared executor returned too few outputs"));
            }
            q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.done.extend(ids.into_iter().zip(outs));
            q.free.push(slot);
            self.cv.notify_all();
        }
    }

    /// Sizes of the most recent runs (up to 1024), oldest first.
    pub fn run_sizes(&self) -> Vec<usize> {
        let q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.sizes.iter().copied().collect()
    }

    /// Locks executor `i` (between runs) for something other than a batch.
    pub fn with_exec<T>(&self, i: usize, f: impl FnOnce(&mut E) -> T) -> T {
        f(&mut self.execs[i].lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// How many runs can be in flight at once.
    pub fn executors(&self) -> usize {
        self.execs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::random::{quantize_on_synthetic, random_model, test_image};
    use crate::engine::{EdsrConfig, Engine, Image, Options, QuantMode};
    use std::sync::Arc;
    use std::time::Duration;

    /// A real executor: the CPU engine upscales each frame of a run with that frame's own
    /// options, and records which keys met in one run.
    struct CpuExec {
        engine: Engine,
        runs: Vec<Vec<(usize, usize)>>,
        panic_on: Option<u64>,
    }

    struct Job {
        img: Image,
        opts: Options,
        seed: u64,
    }

    impl BatchExec for CpuExec {
        type Job = Job;
        type Out = Result<(Vec<f32>, i32), String>;
        type Key = (usize, usize);
        fn key(j: &Job) -> (usize, usize) {
            (j.img.width, j.img.height)
        }
        fn run(&mut self, jobs: Vec<Job>) -> Vec<Self::Out> {
            if jobs.iter().any(|j| Some(j.seed) == self.panic_on) {
                panic!("job {} is poison", self.panic_on.unwrap());
            }
            self.runs.push(jobs.iter().map(Self::key).collect());
            // Long enough for the other callers to queue behind the running batch.
            std::thread::sleep(Duration::from_millis(5));
            jobs.iter()
                .map(|j| {
                    self.engine
                        .upscale(&j.img, &j.opts)
                        .map(|(o, st)| (o.data, st.image_bits))
                        .map_err(|e| e.to_string())
                })
                .collect()
        }
        fn failed(why: &str) -> Self::Out {
            Err(why.to_string())
        }
    }

    #[test]
    fn several_callers_get_their_own_results_in_shared_runs() {
        let fp = random_model(
            EdsrConfig {
                n_resblocks: 1,
                n_feats: 8,
                ..EdsrConfig::baseline(2)
            },
            1,
        )
        .unwrap();
        let model = quantize_on_synthetic(&fp, QuantMode::Fq, 4, 4, 2).unwrap();
        let engine = Engine::new(&model, 1).unwrap();
        let reference = Engine::new(&model, 1).unwrap();
        let b = Arc::new(Batcher::new(
            CpuExec {
                engine,
                runs: Vec::new(),
                panic_on: Some(999),
            },
            3,
        ));
        // Four callers (two frame sizes), each with its own options, eight frames each.
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let (w, h) = if t % 2 == 0 { (9, 7) } else { (6, 5) };
                    let opts = Options {
                        base_bits: Some(3 + t as u8),
                        adaptive: t != 1,
                        ..Options::default()
                    };
                    (0..8u64)
                        .map(|i| {
                            let seed = 100 * t + i;
                            let img = test_image(w, h, seed);
                            let out = b.run(Job {
                                img: img.clone(),
                                opts,
                                seed,
                            });
                            (img, opts, out)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (img, opts, out) in h.join().unwrap() {
                let (want, st) = reference.upscale(&img, &opts).unwrap();
                let (got, b_i) = out.unwrap();
                assert_eq!(got, want.data, "a caller got another frame's output");
                assert_eq!(b_i, st.image_bits);
            }
        }
        let sizes = b.run_sizes();
        assert_eq!(sizes.iter().sum::<usize>(), 32, "every job ran once");
        assert!(sizes.iter().all(|&s| (1..=3).contains(&s)), "{sizes:?}");
        assert!(
            sizes.iter().any(|&s| s > 1),
            "four callers never shared a run: {sizes:?}"
        );
        b.with_exec(0, |e| {
            for run in &e.runs {
                assert!(run.iter().all(|k| *k == run[0]), "sizes mixed: {run:?}");
            }
        });
        // A run that panics fails its own jobs only; the batcher keeps working.
        let img = test_image(9, 7, 5);
        let err = b
            .run(Job {
                img: img.clone(),
                opts: Options::default(),
                seed: 999,
            })
            .unwrap_err();
        assert!(err.contains("poison"), "{err}");
        assert!(
            b.run(Job {
                img,
                opts: Options::default(),
                seed: 5,
            })
            .is_ok()
        );
    }

    /// An executor that records how many runs were inside `run` at once: until two have been
    /// in together, each run waits (up to 2 s) for another to come in.
    struct Overlap {
        inside: Arc<(Mutex<(usize, usize)>, std::sync::Condvar)>,
    }

    impl BatchExec for Overlap {
        type Job = (usize, u64);
        type Out = u64;
        type Key = usize;
        fn key(j: &(usize, u64)) -> usize {
            j.0
        }
        fn run(&mut self, jobs: Vec<(usize, u64)>) -> Vec<u64> {
            let (m, cv) = &*self.inside;
            let mut g = m.lock().unwrap();
            g.0 += 1;
            g.1 = g.1.max(g.0);
            cv.notify_all();
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while g.1 < 2 && std::time::Instant::now() < deadline {
                g = cv.wait_timeout(g, Duration::from_millis(20)).unwrap().0;
            }
            g.0 -= 1;
            jobs.iter().map(|j| j.1 * 2).collect()
        }
        fn failed(_: &str) -> u64 {
            u64::MAX
        }
    }

    #[test]
    fn several_executors_run_batches_at_once() {
        let inside = Arc::new((Mutex::new((0, 0)), std::sync::Condvar::new()));
        let execs = (0..2)
            .map(|_| Overlap {
                inside: inside.clone(),
            })
            .collect();
        let b = Arc::new(Batcher::with_executors(execs, 4));
        assert_eq!(b.executors(), 2);
        // Two callers with different keys (their frames cannot share a run), several jobs each.
        let handles: Vec<_> = (0..2usize)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    (0..5u64)
                        .map(|i| (i, b.run((t, 10 * t as u64 + i))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (t, h) in handles.into_iter().enumerate() {
            for (i, out) in h.join().unwrap() {
                assert_eq!(
                    out,
                    2 * (10 * t as u64 + i),
                    "a caller got another job's output"
                );
            }
        }
        assert_eq!(
            b.run_sizes().iter().sum::<usize>(),
            10,
            "every job ran once"
        );
        assert_eq!(
            inside.0.lock().unwrap().1,
            2,
            "two executors never ran at the same time"
        );
    }
}
