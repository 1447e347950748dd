//! One consumer worker: a `StreamConsumer` and a `FutureProducer`, both created once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::chunk::{take_ready, ChunkTasks, Dispatcher, Done, CHUNK_MAX};
use super::liveness::Liveness;
use super::offsets::Completion;
use super::process::{Outcome, Processor};
use super::rebalance::{SharedTracker, WorkerContext};
pub use super::stats::WorkerStats;
use super::windows::{TopicFetch, Windows};
use crate::config::{Config, GroupProtocol};
use crate::kafka::client_config;
use crate::metrics::{Metrics, PartitionSample};

#[derive(Debug, Error)]
pub enum WorkerError {
    #[error("creating the consumer: {0}")]
    CreateConsumer(#[source] KafkaError),
    #[error("subscribing to {topic}: {source}")]
    Subscribe {
        topic: String,
        #[source]
        source: KafkaError,
    },
}

/// Messages librdkafka keeps fetched ahead per partition (`queued.min.messages`).
const PREFETCH_MESSAGES: usize = 2_000;
/// Kilobytes librdkafka keeps fetched ahead per consumer (`queued.max.messages.kbytes`).
const PREFETCH_KBYTES: usize = 8 * 1024;
/// Largest fetch response (`fetch.max.bytes`).
const FETCH_MAX_BYTES: usize = 1024 * 1024;
/// Largest part of a fetch response per partition (`max.partition.fetch.bytes`).
const FETCH_PARTITION_BYTES: usize = 256 * 1024;

fn consumer_config(cfg: &Config, worker: usize) -> ClientConfig {
    let k = &cfg.kafka;
    let mut settings = vec![
        ("group.id", k.group_id.clone()),
        ("enable.auto.commit", "false".into()),
        ("enable.auto.offset.store", "false".into()),
        ("auto.offset.reset", "earliest".into()),
        ("enable.partition.eof", "false".into()),
        // tansu (and some proxies) hold a fetch for the whole wait even when data is ready.
        ("fetch.wait.max.ms", "10".into()),
        // librdkafka prefetches up to 100,000 messages per partition and 64 MB per consumer by
        // default: a bound far above what `max_in_flight` can use, paid per worker when
        // messages are large. A few thousand store messages per partition keep the window
        // fed (side by side at a 100k backlog: same rate and peak RSS as the defaults,
        // docs/BENCHMARKS.md "Memory"); `kafka.extra` can still raise them.
        ("queued.min.messages", PREFETCH_MESSAGES.to_string()),
        ("queued.max.messages.kbytes", PREFETCH_KBYTES.to_string()),
        // Fetch responses of at most 1 MB, 256 KB per partition (librdkafka: 50 MB and 1 MB).
        // With the defaults the peak RSS grew with the backlog (116 MiB at 100k messages,
        // 181–190 at 200k); with these it stayed at 113 and 118, at 0.89–0.91× the rate, and
        // neither setting alone changed it (docs/BENCHMARKS.md, "Memory"). Store messages are
        // a few hundred bytes: 256 KB is hundreds of them per partition per fetch.
        ("fetch.max.bytes", FETCH_MAX_BYTES.to_string()),
        (
            "max.partition.fetch.bytes",
            FETCH_PARTITION_BYTES.to_string(),
        ),
    ];
    match k.group_protocol {
        GroupProtocol::Classic => settings.extend([
            ("session.timeout.ms", k.session_timeout_ms.to_string()),
            ("heartbeat.interval.ms", k.heartbeat_interval_ms.to_string()),
            (
                "partition.assignment.strategy",
                k.assignment_strategy.clone(),
            ),
        ]),
        // librdkafka refuses the three above with this protocol: the broker owns them.
        GroupProtocol::Consumer => settings.push(("group.protocol", "consumer".into())),
    }
    if !k.instance_id.is_empty() {
        settings.push(("group.instance.id", format!("{}-w{worker}", k.instance_id)));
    }
    client_config(k, &settings)
}

/// Run one worker until `shutdown`, then drain in-flight work (up to the drain deadline) and
/// make a final commit.
pub async fn run_worker(
    worker: usize,
    cfg: Arc<Config>,
    processor: Arc<Processor>,
    shutdown: CancellationToken,
    progress: Arc<Liveness>,
    mut rejoin: tokio::sync::watch::Receiver<u64>,
) -> Result<WorkerStats, WorkerError> {
    let topic = cfg.kafka.input_topic.clone();
    let tracker = Arc::new(SharedTracker::new());
    let context = WorkerContext {
        worker,
        topic: topic.clone(),
        tracker: tracker.clone(),
        revoke_timeout: cfg.drain_timeout(),
        progress: progress.clone(),
        cooperative: cfg.kafka.incremental_rebalances(),
        metrics: processor.metrics().clone(),
    };
    let metrics = processor.metrics().clone();
    let consumer: StreamConsumer<WorkerContext> = consumer_config(&cfg, worker)
        .create_with_context(context)
        .map_err(WorkerError::CreateConsumer)?;
    let consumer = Arc::new(consumer);
    subscribe(&consumer, &topic)?;
    tracing::info!(worker, topic = %topic, group = %cfg.kafka.group_id, "worker started");

    let mut stats = WorkerStats::default();
    let in_flight = Arc::new(Semaphore::new(cfg.pipeline.max_in_flight));
    let mut permit = None;
    let mut tasks = ChunkTasks::new();
    let mut commit_tick = tokio::time::interval(cfg.commit_interval());
    commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let dispatcher = Dispatcher {
        tracker: tracker.clone(),
        processor,
        progress: progress.clone(),
    };
    // A chunk never holds more messages than a sink batch (`sink.max_rows`): an envelope is
    // never split between batches.
    let chunk_max = CHUNK_MAX.min(cfg.sink.max_rows.max(1));
    let mut windows = Windows::new(cfg.pipeline.max_partition_gap, worker, chunk_max);
    let fetch = TopicFetch {
        consumer: &consumer,
        topic: &topic,
    };
    {
        let mut stream = consumer.stream();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    finish(done, &mut stats, &progress);
                    windows.release(&fetch, &in_flight, &dispatcher, &mut tasks, &mut stats);
                }
                _ = commit_tick.tick() => {
                    skip_undelivered(&consumer, &tracker, &topic, &windows);
                    commit(&consumer, &tracker, &topic, worker).await;
                    observe_partitions(&tracker, &metrics);
                    windows.release(&fetch, &in_flight, &dispatcher, &mut tasks, &mut stats);
                }
                Ok(()) = rejoin.changed() => {
                    stats.rejoins += 1;
                    leave_group(&consumer).await;
                    subscribe(&consumer, &topic)?;
                    tracing::info!(worker, "rejoined the group");
                }
                p = in_flight.clone().acquire_owned(), if permit.is_none() => {
                    // The semaphore is never closed.
                    permit = p.ok();
                }
                msg = stream.next(), if permit.is_some() => match msg {
                    Some(Ok(m)) => {
                        // This message and whatever else the consumer has ready (as permits
                        // allow, up to CHUNK_MAX) go as one chunk. They are all taken before
                        // any is dispatched: a poll can run the rebalance callback, which
                        // waits for dispatched messages, and those must be running by then.
                        let mut taken = vec![(m.detach(), permit.take())];
                        let ended = take_ready(&mut stream, &in_flight, chunk_max, &mut taken, &mut stats, &metrics, worker);
                        let mut chunk = Vec::with_capacity(taken.len());
                        for (owned, p) in taken {
                            if let Some(owned) = windows.admit(owned, &fetch, &tracker, &mut stats) {
                                chunk.push((owned, p));
                            }
                        }
                        dispatcher.spawn(chunk, &mut tasks, &mut stats);
                        if ended {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        stats.consume_errors += 1;
                        metrics.consume_error();
                        tracing::warn!(worker, error = %e, "consume error");
                    }
                    None => break,
                },
            }
        }
    }

    // Drain: no new messages; wait for in-flight work up to the deadline.
    let deadline = tokio::time::Instant::now() + cfg.drain_timeout();
    let draining = tasks.messages;
    while !tasks.is_empty() {
        tokio::select! {
            Some(done) = tasks.join_next() => finish(done, &mut stats, &progress),
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(worker, left = tasks.messages, "drain deadline passed; abandoning in-flight messages (they will be redelivered)");
                let left = tasks.abort_all();
                stats.abandoned += left as u64;
                progress.finished(left);
                break;
            }
        }
    }
    skip_undelivered(&consumer, &tracker, &topic, &windows);
    if tokio::time::timeout(CLOSE_WITHIN, commit(&consumer, &tracker, &topic, worker))
        .await
        .is_err()
    {
        tracing::warn!(
            worker,
            "final commit unanswered; what it covered will be redelivered"
        );
    }
    // Nothing is in flight any more (or it was abandoned): the revoke that leaving triggers
    // must not wait for it.
    tracker.closing.store(true, Ordering::Relaxed);
    tracker.changed.notify_all();
    // Leave the group cleanly so the partitions are reassigned at once.
    leave_group(&consumer).await;
    close(consumer, worker).await;
    tracing::info!(
        worker,
        drained = draining,
        consumed = stats.consumed,
        indexed = stats.indexed,
        dead_lettered = stats.dead_lettered,
        abandoned = stats.abandoned,
        pauses = stats.pauses,
        rejoins = stats.rejoins,
        unowned_dropped = stats.unowned_dropped,
        "worker stopped"
    );
    Ok(stats)
}

fn subscribe(consumer: &StreamConsumer<WorkerContext>, topic: &str) -> Result<(), WorkerError> {
    consumer
        .subscribe(&[topic])
        .map_err(|source| WorkerError::Subscribe {
            topic: topic.to_owned(),
            source,
        })
}

/// Unsubscribe and serve the revoke that leaving triggers while the consumer is still open.
/// Left to the consumer's drop (rd_kafka_consumer_close), the rebalance callback's
/// rd_kafka_rebalance_protocol() can wait forever (librdkafka #4041, rust-rdkafka #509): a
/// SIGTERM'd process hung that way, idle, in one CI run. Messages received here were never
/// dispatched, so they lie above every commit point and are redelivered.
async fn leave_group(consumer: &StreamConsumer<WorkerContext>) {
    consumer.unsubscribe();
    let leave_by = tokio::time::Instant::now() + Duration::from_secs(2);
    while consumer.assignment().is_ok_and(|a| a.count() > 0)
        && tokio::time::Instant::now() < leave_by
    {
        let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
    }
}

/// How long the final commit and the consumer's close may take at shutdown.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Close the consumer (rd_kafka_consumer_close, in its drop) on a thread of its own, waiting
/// at most [`CLOSE_WITHIN`]. rdkafka's drop polls until librdkafka reports the consumer closed,
/// with no deadline; a librdkafka defect there would otherwise keep a stopped process alive
/// forever. Past the deadline the thread is left behind (the process exits without it) and
/// the group expires the member after the session timeout, as after a crash: everything
/// above the last commit is redelivered, nothing is lost.
async fn close(consumer: Arc<StreamConsumer<WorkerContext>>, worker: usize) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("close-w{worker}"))
        .spawn(move || {
            drop(consumer);
            let _ = tx.send(());
        });
    if let Err(e) = spawned {
        tracing::warn!(worker, error = %e, "no thread to close the consumer on; leaving it open");
        return;
    }
    if tokio::time::timeout(CLOSE_WITHIN, rx).await.is_err() {
        tracing::warn!(
            worker,
            within_s = CLOSE_WITHIN.as_secs(),
            "the consumer did not close in time; leaving it (the group expires it after the session timeout)"
        );
    }
}

fn finish(
    done: (usize, Result<Vec<Done>, tokio::task::JoinError>),
    stats: &mut WorkerStats,
    progress: &Liveness,
) {
    let (n, result) = done;
    progress.finished(n);
    let done = match result {
        Ok(d) => d,
        Err(e) => {
            // The chunk's work catches panics of the CPU work; reaching here is a bug. The
            // offsets stay unfinished, so commits for their partitions stop advancing
            // (visible as lag) rather than skipping them.
            tracing::error!(messages = n, error = %e, "message task failed");
            stats.abandoned += n as u64;
            return;
        }
    };
    for (ticket, outcome, completion) in done {
        match outcome {
            Outcome::Indexed => stats.indexed += 1,
            Outcome::DeadLettered(_) => stats.dead_lettered += 1,
            Outcome::Abandoned => stats.abandoned += 1,
        }
        if completion == Some(Completion::Stale) {
            tracing::debug!(
                partition = ticket.partition,
                offset = ticket.offset,
                "completion for a partition no longer owned; ignored"
            );
        }
    }
}

/// Update the committed-offset and window gauges of the partitions this worker tracks (lag
/// comes from the process's lag reader, see `pipeline::group_watchdog`).
fn observe_partitions(tracker: &SharedTracker, metrics: &Metrics) {
    let samples: Vec<PartitionSample> = {
        let t = tracker.lock();
        t.partitions()
            .map(|p| PartitionSample {
                partition: p,
                committed: t.committed(p),
                gap: t.gap(p).unwrap_or(0),
            })
            .collect()
    };
    metrics.partitions_observed(&samples);
}

/// Move idle partitions' commit points up to the consumer's position where librdkafka
/// stepped over offsets it never delivers (transaction markers, aborted transactions), see
/// [`OffsetTracker::skip_to_position`]. Partitions with parked messages are left alone: those
/// messages were delivered (the position counts them) but not dispatched.
fn skip_undelivered(
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
async fn commit(
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
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::types::RDKafkaRespErr;

    #[test]
    fn static_membership_gives_each_worker_its_own_instance_id() {
        let mut cfg = Config::default();
        assert_eq!(consumer_config(&cfg, 0).get("group.instance.id"), None);
        assert_eq!(
            consumer_config(&cfg, 0).get("partition.assignment.strategy"),
            Some("range,roundrobin")
        );
        cfg.kafka.instance_id = "pod-7".into();
        assert_eq!(
            consumer_config(&cfg, 0).get("group.instance.id"),
            Some("pod-7-w0")
        );
        assert_eq!(
            consumer_config(&cfg, 3).get("group.instance.id"),
            Some("pod-7-w3")
        );
    }

    #[test]
    fn the_consumer_protocol_leaves_session_heartbeat_and_assignor_to_the_broker() {
        let mut cfg = Config::default();
        let classic = consumer_config(&cfg, 0);
        assert_eq!(classic.get("group.protocol"), None);
        assert_eq!(classic.get("session.timeout.ms"), Some("30000"));
        assert_eq!(classic.get("heartbeat.interval.ms"), Some("500"));
        cfg.kafka.group_protocol = GroupProtocol::Consumer;
        let kip848 = consumer_config(&cfg, 0);
        assert_eq!(kip848.get("group.protocol"), Some("consumer"));
        // librdkafka refuses to create a consumer with any of these under KIP-848.
        for key in [
            "session.timeout.ms",
            "heartbeat.interval.ms",
            "partition.assignment.strategy",
        ] {
            assert_eq!(kip848.get(key), None, "{key}");
        }
        // and the config it gets is one librdkafka accepts
        let consumer: Result<BaseConsumer, _> = kip848.create();
        assert!(consumer.is_ok(), "{:?}", consumer.err());
    }

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
