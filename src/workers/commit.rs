//! Committing a worker's watermarks: what the tracker says is finished, per partition, and
//! the skip past offsets librdkafka never delivers. Kept apart from the loop because a commit
//! is where invariant 1 (no commit past unfinished work) meets the broker.

use std::sync::Arc;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::rebalance::{SharedTracker, WorkerContext};
use super::windows::Windows;

/// Move idle partitions' commit points up to the consumer's position where librdkafka
/// stepped over offsets it never delivers (transaction markers, aborted transactions), see
/// [`OffsetTracker::skip_to_position`]. Partitions with parked messages are left alone: those
/// messages were delivered (the position counts them) but not dispatched.
pub(super) fn skip_undelivered(
    consumer: &StreamConsumer<WorkerContext>,
    tracker: &SharedTracker,
    topic: &str,
    windows: &Windows,
) {
    let Ok(positions) = consumer.position() else {
        return;
    };
    let mut t = tracker.lock();
    for e in positions.elements_for_topic(topic) {
        if let Offset::Offset(position) = e.offset() {
            if !windows.holds(e.partition()) {
                t.skip_to_position(e.partition(), position);
            }
        }
    }
}

/// Commit every partition whose watermark moved, synchronously (on the blocking pool, so a
/// slow broker does not stall a runtime thread). A failed commit is retried next tick.
pub(super) async fn commit(
    consumer: &Arc<StreamConsumer<WorkerContext>>,
    tracker: &Arc<SharedTracker>,
    topic: &str,
    worker: usize,
) {
    let points = tracker.lock().commit_points();
    if points.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for &(p, offset) in &points {
        let _ = tpl.add_partition_offset(topic, p, Offset::Offset(offset));
    }
    let c = consumer.clone();
    let result = tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync)).await;
    match result {
        Ok(Ok(())) => {
            let mut t = tracker.lock();
            for (p, offset) in points {
                t.mark_committed(p, offset);
            }
        }
        Ok(Err(e)) => tracing::warn!(worker, error = %e, "commit failed; will retry"),
        Err(e) => tracing::warn!(worker, error = %e, "commit task failed; will retry"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use rdkafka::config::ClientConfig;
    use rdkafka::types::RDKafkaRespErr;

    use crate::workers::liveness::Liveness;

    /// A commit the broker refuses leaves the tracker's committed offsets where they were, so
    /// the next tick commits the same partitions again (librdkafka reports a refusal of any
    /// partition as the commit's error). Against librdkafka's mock cluster with an injected
    /// OffsetCommit error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_commit_is_retried_at_the_next_tick() {
        use rdkafka::mocking::MockCluster;
        use rdkafka::types::RDKafkaApiKey;
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("in", 2, 1).unwrap();
        let tracker = Arc::new(SharedTracker::new());
        let metrics = crate::metrics::Metrics::new("in");
        let context = WorkerContext {
            worker: 0,
            topic: "in".into(),
            tracker: tracker.clone(),
            revoke_timeout: Duration::from_secs(1),
            progress: Arc::new(Liveness::new(metrics.clone())),
            cooperative: false,
            metrics,
        };
        let consumer: StreamConsumer<WorkerContext> = ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .set("group.id", "g")
            .set("enable.auto.commit", "false")
            .create_with_context(context)
            .unwrap();
        let consumer = Arc::new(consumer);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("in", 0);
        tpl.add_partition("in", 1);
        consumer.assign(&tpl).unwrap();
        for p in 0..2 {
            let mut t = tracker.lock();
            t.assign(p);
            let done = t.dispatch(p, 4).unwrap();
            t.complete(done);
        }
        mock.request_errors(
            RDKafkaApiKey::OffsetCommit,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE],
        );
        let committed = || {
            let t = tracker.lock();
            (t.committed(0), t.committed(1))
        };
        tokio::time::timeout(
            Duration::from_secs(20),
            commit(&consumer, &tracker, "in", 0),
        )
        .await
        .expect("first commit answered");
        assert_eq!(
            committed(),
            (None, None),
            "a refused commit counted as done"
        );
        assert_eq!(tracker.lock().commit_points(), vec![(0, 5), (1, 5)]);
        // The error was used up: the next tick commits both.
        tokio::time::timeout(
            Duration::from_secs(20),
            commit(&consumer, &tracker, "in", 0),
        )
        .await
        .expect("second commit answered");
        assert_eq!(committed(), (Some(5), Some(5)));
        let c = consumer.clone();
        let on_broker = tokio::task::spawn_blocking(move || {
            c.committed_offsets(tpl, Duration::from_secs(5)).unwrap()
        })
        .await
        .unwrap();
        for e in on_broker.elements() {
            assert_eq!(e.offset(), Offset::Offset(5), "{e:?}");
        }
    }
}
