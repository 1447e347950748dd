//! A fixed set of threads for the CPU work (reading and deriving files).
//!
//! Not tokio's blocking pool: that one grows a thread whenever none is idle at the instant
//! of a spawn, so at thousands of files per second its thread count follows the backlog
//! (docs/BENCHMARKS.md, "Memory"). Each thread keeps its own full-mode read buffer
//! (`compute`'s thread-local, up to 16 MiB) and its own allocator arena, so memory would
//! grow with the backlog instead of being bounded. Here exactly
//! `compute_threads` threads exist for the process's life, so file memory is bounded by
//! `compute_threads × max_file_size` as ARCHITECTURE.md says.
//!
//! Submission is bounded too: at most as many jobs wait as there are threads; `run` waits
//! (asynchronously) for room.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("the compute pool has stopped")]
    Stopped,
    #[error("the computation panicked")]
    Panicked,
}

/// The pool's submitting end; cheap to clone. Its threads end when every clone is dropped.
#[derive(Clone)]
pub struct ComputePool {
    tx: mpsc::Sender<Job>,
}

impl ComputePool {
    /// Start `threads` (at least one) threads named `compute-N`.
    pub fn new(threads: usize) -> std::io::Result<ComputePool> {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("compute-{i}"))
                .stack_size(crate::compute::THREAD_STACK_BYTES)
                .spawn(move || loop {
                    // One thread waits in recv while holding the lock; the others wait for
                    // the lock. A job runs after the lock is released.
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).blocking_recv();
                    match job {
                        Some(job) => job(),
                        None => return,
                    }
                })?;
        }
        Ok(ComputePool { tx })
    }

    /// Run `f` on a pool thread, inside the caller's tracing span; a panic is caught and
    /// reported as [`PoolError::Panicked`] (the thread lives on).
    pub async fn run<T, F>(&self, f: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move || {
            let out = std::panic::catch_unwind(AssertUnwindSafe(|| span.in_scope(f)));
            let _ = done.send(out);
        });
        self.tx.send(job).await.map_err(|_| PoolError::Stopped)?;
        match result.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(PoolError::Panicked),
            Err(_) => Err(PoolError::Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_jobs_on_exactly_its_threads_and_survives_panics() {
        let pool = ComputePool::new(3).unwrap();
        let mut handles = Vec::new();
        for i in 0..200u32 {
            let pool = pool.clone();
            handles.push(tokio::spawn(async move {
                pool.run(move || {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                    (i, std::thread::current().name().unwrap_or("").to_string())
                })
                .await
            }));
        }
        let mut names = HashSet::new();
        for (i, h) in handles.into_iter().enumerate() {
            let (n, name) = h.await.unwrap().unwrap();
            assert_eq!(n as usize, i);
            names.insert(name);
        }
        assert!(names.iter().all(|n| n.starts_with("compute-")), "{names:?}");
        assert!(names.len() <= 3, "{names:?}");
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r: Result<(), _> = pool.run(|| panic!("boom")).await;
        std::panic::set_hook(prev);
        assert_eq!(r, Err(PoolError::Panicked));
        // The thread that panicked lives on.
        assert_eq!(pool.run(|| 7).await, Ok(7));
    }
}
