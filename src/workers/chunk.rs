//! Chunks: the messages a worker takes together, dispatched as one task (one compute job,
//! one produce wait, one sink envelope), and the set of running chunk tasks.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::liveness::Liveness;
use super::offsets::{Completion, Ticket};
use super::process::{Outcome, Processor};
use super::rebalance::SharedTracker;
use super::stats::WorkerStats;
use crate::metrics::Metrics;

/// What became of one message of a finished chunk.
pub(super) type Done = (Ticket, Outcome, Option<Completion>);

/// The worker's chunk tasks, and how many messages each holds (for the in-flight count and
/// for what a drain abandons).
pub(super) struct ChunkTasks {
    pub(super) set: JoinSet<Vec<Done>>,
    pub(super) sizes: HashMap<tokio::task::Id, usize>,
    pub(super) messages: usize,
}

impl ChunkTasks {
    pub(super) fn new() -> Self {
        ChunkTasks {
            set: JoinSet::new(),
            sizes: HashMap::new(),
            messages: 0,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    pub(super) fn spawn(
        &mut self,
        messages: usize,
        task: impl std::future::Future<Output = Vec<Done>> + Send + 'static,
    ) {
        let handle = self.set.spawn(task);
        self.sizes.insert(handle.id(), messages);
        self.messages += messages;
    }

    /// The next finished chunk: how many messages it held, and their outcomes (an error if
    /// the task panicked).
    pub(super) async fn join_next(
        &mut self,
    ) -> Option<(usize, Result<Vec<Done>, tokio::task::JoinError>)> {
        let (id, result) = match self.set.join_next_with_id().await? {
            Ok((id, done)) => (id, Ok(done)),
            Err(e) => (e.id(), Err(e)),
        };
        let n = self.sizes.remove(&id).unwrap_or(0);
        self.messages -= n;
        Some((n, result))
    }

    /// Stop every chunk; the number of messages they held.
    pub(super) fn abort_all(&mut self) -> usize {
        self.set.abort_all();
        self.sizes.clear();
        std::mem::take(&mut self.messages)
    }
}

/// Starts the processing of taken messages.
pub(super) struct Dispatcher {
    pub(super) tracker: Arc<SharedTracker>,
    pub(super) processor: Arc<Processor>,
    pub(super) progress: Arc<Liveness>,
}

impl Dispatcher {
    /// Dispatch a chunk of taken messages (each with its in-flight permit) as one task.
    /// Messages of partitions not assigned here are dropped (their owner processes them).
    pub(super) fn spawn(
        &self,
        msgs: Vec<(OwnedMessage, Option<OwnedSemaphorePermit>)>,
        tasks: &mut ChunkTasks,
        stats: &mut WorkerStats,
    ) {
        let mut chunk = Vec::with_capacity(msgs.len());
        let mut tickets = Vec::with_capacity(msgs.len());
        let mut permits = Vec::with_capacity(msgs.len());
        {
            let mut t = self.tracker.lock();
            for (msg, permit) in msgs {
                let Some(ticket) = t.dispatch(msg.partition(), msg.offset()) else {
                    // Not assigned here (delivered around a revoke).
                    stats.unowned_dropped += 1;
                    tracing::debug!(
                        partition = msg.partition(),
                        offset = msg.offset(),
                        "message of a partition not owned here; dropped"
                    );
                    continue;
                };
                tickets.push(ticket);
                chunk.push(msg);
                permits.push(permit);
            }
        }
        let n = chunk.len();
        if n == 0 {
            return;
        }
        let processor = self.processor.clone();
        let task_tracker = self.tracker.clone();
        stats.consumed += n as u64;
        self.processor.metrics().consumed(n);
        self.progress.took(n);
        tasks.spawn(n, async move {
            let outcomes = processor.process_chunk(chunk).await;
            drop(permits);
            let done: Vec<(Ticket, Outcome)> = tickets.into_iter().zip(outcomes).collect();
            // Recorded here, not in the worker loop, so a revoke waiting in the rebalance
            // callback sees it.
            let completions = task_tracker.complete_all(&done);
            done.into_iter()
                .zip(completions)
                .map(|((ticket, outcome), completion)| (ticket, outcome, completion))
                .collect()
        });
    }
}

/// Most messages one chunk takes (one compute job, one sink submission): enough to pay the
/// per-chunk costs once for many messages, few enough that one compute thread's share of
/// a chunk stays short (a full-mode 512² CT file is ≈ 0.3 ms).
pub(super) const CHUNK_MAX: usize = 32;

/// Take the messages the consumer has ready now (without waiting), each with an in-flight
/// permit, until `taken` holds `limit` messages or nothing is ready or no permit is free. True if
/// the stream ended.
pub(super) fn take_ready<'a, S>(
    stream: &mut S,
    in_flight: &Arc<Semaphore>,
    limit: usize,
    taken: &mut Vec<(OwnedMessage, Option<OwnedSemaphorePermit>)>,
    stats: &mut WorkerStats,
    metrics: &Metrics,
    worker: usize,
) -> bool
where
    S: futures::Stream<Item = Result<rdkafka::message::BorrowedMessage<'a>, KafkaError>> + Unpin,
{
    use futures::FutureExt;
    while taken.len() < limit {
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            return false;
        };
        match stream.next().now_or_never() {
            Some(Some(Ok(m))) => taken.push((m.detach(), Some(permit))),
            Some(Some(Err(e))) => {
                consume_error(&e, worker, stats, metrics);
                return false;
            }
            Some(None) => return true,
            None => return false,
        }
    }
    false
}

/// A consume error: counted, exported and logged; the worker goes on consuming.
pub(super) fn consume_error(
    e: &KafkaError,
    worker: usize,
    stats: &mut WorkerStats,
    metrics: &Metrics,
) {
    stats.consume_errors += 1;
    metrics.consume_error();
    tracing::warn!(worker, error = %e, "consume error");
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Chunked completion: messages taken in consumption order (partitions interleaved)
        /// are cut into chunks of any size, the chunks finish in any order, and inside a chunk
        /// some messages are abandoned (never finished). After every chunk the commit point of
        /// each partition is its lowest unfinished offset — never past an abandoned one, never
        /// past a chunk still running.
        #[test]
        fn chunked_completion_never_commits_past_unfinished_work(
            n in 1usize..300,
            partitions in 1i32..4,
            cuts_seed in proptest::prelude::any::<u64>(),
            order_seed in proptest::prelude::any::<u64>(),
            abandon_every in 0usize..20,
        ) {
            use rand::{seq::SliceRandom, Rng, SeedableRng};
            let t = SharedTracker::new();
            for p in 0..partitions {
                t.lock().assign(p);
            }
            let mut next = vec![0i64; partitions as usize];
            let mut rng = rand::rngs::StdRng::seed_from_u64(cuts_seed);
            let mut taken = Vec::new();
            for _ in 0..n {
                let p = rng.random_range(0..partitions);
                let offset = next[p as usize];
                next[p as usize] += 1;
                taken.push(t.lock().dispatch(p, offset).unwrap());
            }
            let mut chunks: Vec<Vec<(Ticket, Outcome)>> = Vec::new();
            let mut i = 0;
            while i < taken.len() {
                let len = rng.random_range(1..=CHUNK_MAX).min(taken.len() - i);
                chunks.push(
                    taken[i..i + len]
                        .iter()
                        .enumerate()
                        .map(|(k, ticket)| {
                            let abandoned = abandon_every > 0 && (i + k) % abandon_every == 0;
                            let outcome = if abandoned { Outcome::Abandoned } else { Outcome::Indexed };
                            (*ticket, outcome)
                        })
                        .collect(),
                );
                i += len;
            }
            chunks.shuffle(&mut rand::rngs::StdRng::seed_from_u64(order_seed));
            let mut unfinished: std::collections::BTreeSet<(i32, i64)> =
                taken.iter().map(|t| (t.partition, t.offset)).collect();
            for chunk in &chunks {
                let completions = t.complete_all(chunk);
                for ((ticket, outcome), completion) in chunk.iter().zip(&completions) {
                    if *outcome == Outcome::Abandoned {
                        proptest::prop_assert_eq!(*completion, None);
                    } else {
                        proptest::prop_assert_eq!(*completion, Some(Completion::Accepted));
                        unfinished.remove(&(ticket.partition, ticket.offset));
                    }
                }
                for p in 0..partitions {
                    let lowest = unfinished.range((p, i64::MIN)..(p + 1, i64::MIN)).next();
                    let point = t.lock().commit_point(p);
                    match lowest {
                        Some(&(_, low)) => proptest::prop_assert_eq!(point, Some(low)),
                        None if next[p as usize] > 0 => {
                            proptest::prop_assert_eq!(point, Some(next[p as usize]))
                        }
                        None => {}
                    }
                }
            }
        }
    }
}
