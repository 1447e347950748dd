//! The worker's offset tracker as the rebalance callback sees it, and the consumer context
//! that keeps the tracker in step with rebalances (wait for revoked partitions' in-flight
//! messages, commit their watermarks, then let them go).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::error::KafkaError;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::liveness::Liveness;
use super::offsets::{Completion, OffsetTracker, Ticket};
use super::process::Outcome;
use crate::metrics::Metrics;

/// The worker's tracker, shared with its message tasks (which record their own completion)
/// and with the rebalance callback (which waits for revoked partitions to finish).
pub(super) struct SharedTracker {
    pub(super) inner: Mutex<OffsetTracker>,
    pub(super) changed: Condvar,
    /// Set once the worker has drained: revokes after that do not wait.
    pub(super) closing: AtomicBool,
}

impl SharedTracker {
    pub(super) fn new() -> Self {
        SharedTracker {
            inner: Mutex::new(OffsetTracker::new()),
            changed: Condvar::new(),
            closing: AtomicBool::new(false),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, OffsetTracker> {
        // The tracker has no invariants a panicking holder could break half-way (every
        // method is a single map update), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record the outcomes of a chunk's messages under one lock: every one but the abandoned
    /// is finished. Completions in the order of `done`.
    pub(super) fn complete_all(&self, done: &[(Ticket, Outcome)]) -> Vec<Option<Completion>> {
        let completions = {
            let mut t = self.lock();
            done.iter()
                .map(|(ticket, outcome)| match outcome {
                    Outcome::Abandoned => None,
                    _ => Some(t.complete(*ticket)),
                })
                .collect()
        };
        self.changed.notify_all();
        completions
    }

    /// Block until none of `partitions` has unfinished offsets, or until `deadline`.
    /// Returns whether they drained.
    pub(super) fn wait_drained(&self, partitions: &[i32], deadline: Instant) -> bool {
        let mut t = self.lock();
        loop {
            if self.closing.load(Ordering::Relaxed) {
                return false;
            }
            if partitions.iter().all(|&p| t.in_flight_for(p) == 0) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            t = match self.changed.wait_timeout(t, deadline - now) {
                Ok((guard, _)) => guard,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// The consumer's context: keeps the tracker in step with rebalances. Before revoked
/// partitions are given up, their in-flight messages get up to `revoke_timeout` to finish,
/// and their watermarks are committed synchronously — so the next owner starts where this
/// one stopped instead of redoing everything that was in flight.
pub(super) struct WorkerContext {
    pub(super) worker: usize,
    pub(super) topic: String,
    pub(super) tracker: Arc<SharedTracker>,
    pub(super) revoke_timeout: Duration,
    pub(super) progress: Arc<Liveness>,
    /// The configuration allows incremental rebalances only (`cooperative-sticky`, or the
    /// KIP-848 protocol). Used when librdkafka reports no protocol (during close).
    pub(super) cooperative: bool,
    pub(super) metrics: Metrics,
}

/// Wait in the rebalance callback without starving the runtime: the callback runs inside the
/// worker task's poll, and the messages it waits for need runtime threads to finish.
pub(super) fn wait_in_callback(
    tracker: &SharedTracker,
    partitions: &[i32],
    deadline: Instant,
) -> bool {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => {
            tokio::task::block_in_place(|| tracker.wait_drained(partitions, deadline))
        }
        // A single-threaded runtime would deadlock: the tasks cannot run while we wait.
        Ok(_) => false,
        Err(_) => tracker.wait_drained(partitions, deadline),
    }
}

impl ClientContext for WorkerContext {}

impl ConsumerContext for WorkerContext {
    /// rdkafka's default, except for the protocol: during close librdkafka may report
    /// `None`, and the default then answers a cooperative revoke with a full (eager)
    /// unassign, which librdkafka refuses: the close never completes and the consumer's drop
    /// polls forever (librdkafka #4527, node-rdkafka #1144), so a SIGTERM'd cooperative
    /// process would never exit. Here `None` falls back to the configured protocol, and a refused
    /// (un)assign is logged instead of ignored.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::warn!(worker = self.worker, error = %code, "rebalance error");
                Rebalance::Error(KafkaError::Rebalance(code))
            }
        };
        self.pre_rebalance(consumer, &rebalance);
        let cooperative = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => true,
            RebalanceProtocol::Eager => false,
            RebalanceProtocol::None => self.cooperative,
        };
        let assign = matches!(rebalance, Rebalance::Assign(_));
        let applied = match (assign, cooperative) {
            (true, true) => consumer.incremental_assign(tpl),
            (true, false) => consumer.assign(tpl),
            (false, true) => consumer.incremental_unassign(tpl),
            (false, false) => consumer.unassign(),
        };
        if let Err(e) = applied {
            tracing::warn!(worker = self.worker, assign, cooperative, error = %e, "applying the rebalance failed");
        }
        self.post_rebalance(consumer, &rebalance);
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        self.progress.owned_changed(&[], &partitions);
        // A revoked partition's lag is the next owner's to report.
        self.metrics.partitions_removed(&partitions);
        let started = Instant::now();
        let drained = wait_in_callback(&self.tracker, &partitions, started + self.revoke_timeout);
        let mut commit = TopicPartitionList::new();
        {
            let mut tracker = self.tracker.lock();
            for elem in tpl.elements_for_topic(&self.topic) {
                if let Some(point) = tracker.revoke(elem.partition()) {
                    let _ = commit.add_partition_offset(
                        &self.topic,
                        elem.partition(),
                        Offset::Offset(point),
                    );
                }
            }
        }
        tracing::info!(
            worker = self.worker,
            revoked = tpl.count(),
            committing = commit.count(),
            drained,
            waited_ms = started.elapsed().as_millis() as u64,
            "partitions revoked"
        );
        if commit.count() > 0 {
            if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                tracing::warn!(worker = self.worker, error = %e, "commit on revoke failed; the next owner may redo some messages");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut tracker = self.tracker.lock();
            let assigned: Vec<i32> = tpl
                .elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition())
                .collect();
            for &p in &assigned {
                tracker.assign(p);
            }
            // The positions librdkafka reports now (none, or left over from an earlier
            // assignment): a later, different one was reached in this assignment.
            if let Ok(positions) = consumer.position() {
                for e in positions.elements_for_topic(&self.topic) {
                    if assigned.contains(&e.partition()) {
                        let at = match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        };
                        tracker.note_assigned_position(e.partition(), at);
                    }
                }
            }
            self.progress.owned_changed(&assigned, &[]);
            tracing::info!(
                worker = self.worker,
                protocol = match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => "Cooperative",
                    RebalanceProtocol::Eager => "Eager",
                    RebalanceProtocol::None => "None",
                },
                assigned = tpl.count(),
                "partitions assigned"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_waits_for_in_flight_work_of_the_revoked_partitions_only() {
        let t = Arc::new(SharedTracker::new());
        t.lock().assign(0);
        t.lock().assign(1);
        let a = t.lock().dispatch(0, 10).unwrap();
        let _other = t.lock().dispatch(1, 5); // never completes
        let t2 = t.clone();
        let finisher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            t2.complete_all(&[(a, Outcome::Indexed)])[0]
        });
        let started = Instant::now();
        assert!(t.wait_drained(&[0], started + Duration::from_secs(5)));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(finisher.join().unwrap(), Some(Completion::Accepted));
        // partition 1 never drains: the deadline bounds the wait
        let started = Instant::now();
        assert!(!t.wait_drained(&[1], started + Duration::from_millis(100)));
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[test]
    fn a_closing_tracker_does_not_wait() {
        let t = SharedTracker::new();
        t.lock().assign(0);
        t.lock().dispatch(0, 1);
        t.closing.store(true, Ordering::Relaxed);
        let started = Instant::now();
        assert!(!t.wait_drained(&[0], started + Duration::from_secs(5)));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
