//! Per-partition windows (`pipeline.max_partition_gap`): a partition whose window is full is
//! paused and its further messages parked; it resumes when half of the window has drained.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::TopicPartitionList;
use tokio::sync::Semaphore;

use super::chunk::{ChunkTasks, Dispatcher};
use super::rebalance::{SharedTracker, WorkerContext};
use super::stats::WorkerStats;

/// A partition paused because its window is full: the messages taken for it since (in
/// offset order, not dispatched) and the assignment generation they belong to.
pub(super) struct PausedPartition {
    pub(super) generation: Option<u64>,
    pub(super) parked: VecDeque<OwnedMessage>,
}

/// Per-partition windows (`pipeline.max_partition_gap`): pause a partition whose window is
/// full, resume it when half of the window has drained.
pub(super) struct Windows {
    pub(super) max_gap: i64,
    pub(super) worker: usize,
    /// Most messages of one chunk.
    pub(super) chunk_max: usize,
    pub(super) paused: HashMap<i32, PausedPartition>,
}

impl Windows {
    pub(super) fn new(max_gap: i64, worker: usize, chunk_max: usize) -> Self {
        Windows {
            max_gap,
            worker,
            chunk_max,
            paused: HashMap::new(),
        }
    }

    /// Whether messages of `partition` are parked (taken from the consumer, not dispatched).
    pub(super) fn holds(&self, partition: i32) -> bool {
        self.paused.contains_key(&partition)
    }

    /// The message back if it may be dispatched now; otherwise it is parked (and its
    /// partition paused if it was not).
    pub(super) fn admit(
        &mut self,
        msg: OwnedMessage,
        fetch: &impl Fetch,
        tracker: &SharedTracker,
        stats: &mut WorkerStats,
    ) -> Option<OwnedMessage> {
        let p = msg.partition();
        let (gap, generation) = {
            let t = tracker.lock();
            (t.gap(p), t.generation(p))
        };
        if let Some(paused) = self.paused.get_mut(&p) {
            if paused.generation == generation {
                paused.parked.push_back(msg);
                return None;
            }
            // Revoked (and maybe reassigned) since it was paused: what was parked belongs to
            // the old assignment and is fetched again from the commit point. Forget it before
            // anything of the new assignment is dispatched — parking a new message under the
            // old entry would let `release` drop it while later offsets commit past it.
            self.paused.remove(&p);
            let _ = fetch.resume(p);
        }
        if gap.is_none_or(|g| g < self.max_gap) {
            return Some(msg);
        }
        stats.pauses += 1;
        tracing::debug!(
            worker = self.worker,
            partition = p,
            gap,
            "partition window full; pausing it"
        );
        if let Err(e) = fetch.pause(p) {
            // Not paused: its messages keep coming and are parked (bounded by the prefetch).
            tracing::warn!(worker = self.worker, partition = p, error = %e, "cannot pause partition");
        }
        self.paused.insert(
            p,
            PausedPartition {
                generation,
                parked: VecDeque::from([msg]),
            },
        );
        // Messages of it are taken but not dispatched: the consumer's position is past them,
        // so the position must not be committed (also not by a revoke) until they are.
        tracker.lock().set_held(p, true);
        None
    }

    /// Dispatch parked messages of partitions whose window has drained to half (as in-flight
    /// permits allow) and resume those partitions; forget partitions that were revoked (their
    /// parked messages lie above the commit point and are fetched again by the next owner).
    pub(super) fn release(
        &mut self,
        fetch: &impl Fetch,
        in_flight: &Arc<Semaphore>,
        dispatcher: &Dispatcher,
        tasks: &mut ChunkTasks,
        stats: &mut WorkerStats,
    ) {
        if self.paused.is_empty() {
            return;
        }
        let partitions: Vec<i32> = self.paused.keys().copied().collect();
        for p in partitions {
            let Some(paused) = self.paused.get_mut(&p) else {
                continue;
            };
            let (gap, generation) = {
                let t = dispatcher.tracker.lock();
                (t.gap(p), t.generation(p))
            };
            if generation != paused.generation {
                self.paused.remove(&p);
                let _ = fetch.resume(p);
                continue;
            }
            if gap.is_some_and(|g| g > self.max_gap / 2) {
                continue;
            }
            // Up to the window and the free permits, as chunks.
            let room = self.max_gap - dispatcher.tracker.lock().gap(p).unwrap_or(0);
            let mut chunk = Vec::new();
            let mut taken = 0;
            while taken < room && !paused.parked.is_empty() {
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    break;
                };
                if let Some(msg) = paused.parked.pop_front() {
                    chunk.push((msg, Some(permit)));
                    taken += 1;
                }
                if chunk.len() == self.chunk_max {
                    dispatcher.spawn(std::mem::take(&mut chunk), tasks, stats);
                }
            }
            dispatcher.spawn(chunk, tasks, stats);
            if paused.parked.is_empty() {
                self.paused.remove(&p);
                dispatcher.tracker.lock().set_held(p, false);
                tracing::debug!(
                    worker = self.worker,
                    partition = p,
                    "partition window half empty; resuming it"
                );
                if let Err(e) = fetch.resume(p) {
                    tracing::warn!(worker = self.worker, partition = p, error = %e, "cannot resume partition");
                }
            }
        }
    }
}

/// Pausing and resuming the fetch of one input partition (the consumer; a fake in tests).
pub(super) trait Fetch {
    fn pause(&self, partition: i32) -> Result<(), KafkaError>;
    fn resume(&self, partition: i32) -> Result<(), KafkaError>;
}

/// The worker's consumer on its input topic.
pub(super) struct TopicFetch<'a> {
    pub(super) consumer: &'a StreamConsumer<WorkerContext>,
    pub(super) topic: &'a str,
}

impl TopicFetch<'_> {
    pub(super) fn one(&self, partition: i32) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(self.topic, partition);
        tpl
    }
}

impl Fetch for TopicFetch<'_> {
    fn pause(&self, partition: i32) -> Result<(), KafkaError> {
        self.consumer.pause(&self.one(partition))
    }

    fn resume(&self, partition: i32) -> Result<(), KafkaError> {
        self.consumer.resume(&self.one(partition))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workers::chunk::CHUNK_MAX;
    use std::sync::Mutex;

    /// Records pause/resume calls.
    #[derive(Default)]
    struct FakeFetch {
        calls: Mutex<Vec<(&'static str, i32)>>,
    }

    impl Fetch for FakeFetch {
        fn pause(&self, partition: i32) -> Result<(), KafkaError> {
            self.calls.lock().unwrap().push(("pause", partition));
            Ok(())
        }
        fn resume(&self, partition: i32) -> Result<(), KafkaError> {
            self.calls.lock().unwrap().push(("resume", partition));
            Ok(())
        }
    }

    fn message(partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            "in".into(),
            rdkafka::Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    #[test]
    fn a_full_window_parks_its_partition_and_a_reassignment_forgets_what_was_parked() {
        let tracker = SharedTracker::new();
        let fetch = FakeFetch::default();
        let mut stats = WorkerStats::default();
        let mut windows = Windows::new(4, 0, CHUNK_MAX);
        tracker.lock().assign(0);
        for o in 0..4 {
            tracker.lock().dispatch(0, o);
        }
        // Window full (0..=3 unfinished): offsets 4 and 5 are parked, the partition paused once.
        assert!(windows
            .admit(message(0, 4), &fetch, &tracker, &mut stats)
            .is_none());
        assert!(windows
            .admit(message(0, 5), &fetch, &tracker, &mut stats)
            .is_none());
        assert_eq!(stats.pauses, 1);
        // Another partition is not held up.
        assert!(windows
            .admit(message(1, 0), &fetch, &tracker, &mut stats)
            .is_some());
        // Revoked and assigned again: a message of the new assignment is dispatched at once,
        // and the old parked ones are dropped (they are fetched again from the commit point).
        tracker.lock().revoke(0);
        tracker.lock().assign(0);
        let m = windows.admit(message(0, 2), &fetch, &tracker, &mut stats);
        assert_eq!(m.map(|m| m.offset()), Some(2));
        assert!(windows.paused.is_empty());
        assert_eq!(
            *fetch.calls.lock().unwrap(),
            vec![("pause", 0), ("resume", 0)]
        );
    }
}
