//! One consumer worker: a `StreamConsumer` and a `kafka::Producer`, both created once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::chunk::{consume_error, take_ready, ChunkTasks, Dispatcher, Done, CHUNK_MAX};
use super::commit::{commit, skip_undelivered};
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

/// Messages librdkafka keeps fetched ahead per partition (`queued.min.messages`); the
/// consumer-wide [`PREFETCH_KBYTES`] bounds the memory whatever the partition count.
const PREFETCH_MESSAGES: usize = 10_000;
/// Kilobytes librdkafka keeps fetched ahead per consumer (`queued.max.messages.kbytes`).
const PREFETCH_KBYTES: usize = 8 * 1024;
/// Largest fetch response (`fetch.max.bytes`).
const FETCH_MAX_BYTES: usize = 1024 * 1024;
/// Largest part of a fetch response per partition (`max.partition.fetch.bytes`): a whole
/// response, so one partition alone can fill it.
const FETCH_PARTITION_BYTES: usize = FETCH_MAX_BYTES;

fn consumer_config(cfg: &Config, worker: usize) -> ClientConfig {
    let k = &cfg.kafka;
    let mut settings = vec![
        ("group.id", k.group_id.clone()),
        ("enable.auto.commit", "false".into()),
        ("enable.auto.offset.store", "false".into()),
        ("auto.offset.reset", "earliest".into()),
        ("enable.partition.eof", "false".into()),
        ("fetch.wait.max.ms", k.fetch_wait_max_ms.to_string()),
        // librdkafka prefetches up to 100,000 messages per partition and 64 MB per consumer by
        // default: a bound far above what `max_in_flight` can use, paid per worker when
        // messages are large. 8 MB per consumer keeps the window fed; per partition, enough
        // that a single partition is not starved (docs/BENCHMARKS.md, "Memory" and "One
        // partition"). `kafka.extra` can still change them.
        ("queued.min.messages", PREFETCH_MESSAGES.to_string()),
        ("queued.max.messages.kbytes", PREFETCH_KBYTES.to_string()),
        // Fetch responses of at most 1 MB (librdkafka: 50 MB), which one partition may fill:
        // with librdkafka's defaults the peak RSS grew with the backlog (docs/BENCHMARKS.md,
        // "Memory"). Store messages are a few hundred bytes: thousands per fetch.
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
    rejoin: tokio::sync::watch::Receiver<u64>,
) -> Result<WorkerStats, WorkerError> {
    let topic = cfg.kafka.input_topic.clone();
    let tracker = Arc::new(SharedTracker::new());
    let metrics = processor.metrics().clone();
    let consumer = start_consumer(worker, &cfg, &tracker, &progress, &metrics)?;
    // A chunk never holds more messages than a sink batch (`sink.max_rows`): an envelope is
    // never split between batches.
    let chunk_max = CHUNK_MAX.min(cfg.sink.max_rows.max(1));
    let mut consuming = Consuming {
        worker,
        topic: &topic,
        consumer: &consumer,
        tracker: &tracker,
        metrics: &metrics,
        progress: &progress,
        dispatcher: Dispatcher {
            tracker: tracker.clone(),
            processor,
            progress: progress.clone(),
        },
        in_flight: Arc::new(Semaphore::new(cfg.pipeline.max_in_flight)),
        chunk_max,
        windows: Windows::new(cfg.pipeline.max_partition_gap, worker, chunk_max),
        tasks: ChunkTasks::new(),
        stats: WorkerStats::default(),
    };
    consuming
        .run(cfg.commit_interval(), &shutdown, rejoin)
        .await?;
    let draining = consuming.tasks.messages;
    consuming.drain(cfg.drain_timeout()).await;
    let Consuming { windows, stats, .. } = consuming;
    leave(consumer, &tracker, &topic, &windows, worker).await;
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

/// The worker's consumer (its rebalance callback sharing `tracker`), subscribed to the
/// input topic.
fn start_consumer(
    worker: usize,
    cfg: &Config,
    tracker: &Arc<SharedTracker>,
    progress: &Arc<Liveness>,
    metrics: &Metrics,
) -> Result<Arc<StreamConsumer<WorkerContext>>, WorkerError> {
    let topic = &cfg.kafka.input_topic;
    let context = WorkerContext {
        worker,
        topic: topic.clone(),
        tracker: tracker.clone(),
        revoke_timeout: cfg.drain_timeout(),
        progress: progress.clone(),
        cooperative: cfg.kafka.incremental_rebalances(),
        metrics: metrics.clone(),
    };
    let consumer: StreamConsumer<WorkerContext> = consumer_config(cfg, worker)
        .create_with_context(context)
        .map_err(WorkerError::CreateConsumer)?;
    let consumer = Arc::new(consumer);
    subscribe(&consumer, topic)?;
    tracing::info!(worker, topic = %topic, group = %cfg.kafka.group_id, "worker started");
    Ok(consumer)
}

/// What the worker's loop works with while it consumes and drains: its consumer and tracker
/// (borrowed: they outlive the loop for the final commit and the close) and its running state.
struct Consuming<'a> {
    worker: usize,
    topic: &'a str,
    consumer: &'a Arc<StreamConsumer<WorkerContext>>,
    tracker: &'a Arc<SharedTracker>,
    metrics: &'a Metrics,
    progress: &'a Liveness,
    dispatcher: Dispatcher,
    /// One permit per message in flight (`max_in_flight`).
    in_flight: Arc<Semaphore>,
    chunk_max: usize,
    windows: Windows,
    tasks: ChunkTasks,
    stats: WorkerStats,
}

impl<'a> Consuming<'a> {
    /// Take, dispatch, finish and commit until `shutdown` (or the stream ends).
    async fn run(
        &mut self,
        commit_interval: Duration,
        shutdown: &CancellationToken,
        mut rejoin: tokio::sync::watch::Receiver<u64>,
    ) -> Result<(), WorkerError> {
        let mut permit = None;
        let mut commit_tick = tokio::time::interval(commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let consumer: &'a StreamConsumer<WorkerContext> = self.consumer;
        let mut stream = consumer.stream();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    finish(done, &mut self.stats, self.progress);
                    self.release();
                }
                _ = commit_tick.tick() => {
                    skip_undelivered(self.consumer, self.tracker, self.topic, &self.windows);
                    commit(self.consumer, self.tracker, self.topic, self.worker).await;
                    observe_partitions(self.tracker, self.metrics);
                    self.release();
                }
                Ok(()) = rejoin.changed() => {
                    self.stats.rejoins += 1;
                    leave_group(self.consumer).await;
                    subscribe(self.consumer, self.topic)?;
                    tracing::info!(worker = self.worker, "rejoined the group");
                }
                p = self.in_flight.clone().acquire_owned(), if permit.is_none() => {
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
                        let ended = take_ready(&mut stream, &self.in_flight, self.chunk_max, &mut taken, &mut self.stats, self.metrics, self.worker);
                        self.dispatch(taken);
                        if ended {
                            break;
                        }
                    }
                    Some(Err(e)) => consume_error(&e, self.worker, &mut self.stats, self.metrics),
                    None => break,
                },
            }
        }
        Ok(())
    }

    /// Dispatch the taken messages as one chunk, but for those their partition's window
    /// parks.
    fn dispatch(&mut self, taken: Vec<(OwnedMessage, Option<OwnedSemaphorePermit>)>) {
        let fetch = self.fetch();
        let mut chunk = Vec::with_capacity(taken.len());
        for (owned, p) in taken {
            if let Some(owned) = self
                .windows
                .admit(owned, &fetch, self.tracker, &mut self.stats)
            {
                chunk.push((owned, p));
            }
        }
        self.dispatcher
            .spawn(chunk, &mut self.tasks, &mut self.stats);
    }

    /// Resume the partitions whose windows have room again (their parked messages first).
    fn release(&mut self) {
        let fetch = self.fetch();
        self.windows.release(
            &fetch,
            &self.in_flight,
            &self.dispatcher,
            &mut self.tasks,
            &mut self.stats,
        );
    }

    fn fetch(&self) -> TopicFetch<'a> {
        TopicFetch {
            consumer: self.consumer,
            topic: self.topic,
        }
    }

    /// No new messages; wait for in-flight work up to the deadline, then abandon what is left
    /// (redelivered after the restart).
    async fn drain(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while !self.tasks.is_empty() {
            tokio::select! {
                Some(done) = self.tasks.join_next() => finish(done, &mut self.stats, self.progress),
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(worker = self.worker, left = self.tasks.messages, "drain deadline passed; abandoning in-flight messages (they will be redelivered)");
                    let left = self.tasks.abort_all();
                    self.stats.abandoned += left as u64;
                    self.progress.finished(left);
                    break;
                }
            }
        }
    }
}

/// After the drain: the final commit (bounded), then leave the group and close the consumer.
async fn leave(
    consumer: Arc<StreamConsumer<WorkerContext>>,
    tracker: &Arc<SharedTracker>,
    topic: &str,
    windows: &Windows,
    worker: usize,
) {
    skip_undelivered(&consumer, tracker, topic, windows);
    if tokio::time::timeout(CLOSE_WITHIN, commit(&consumer, tracker, topic, worker))
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
/// rd_kafka_rebalance_protocol() can wait forever (librdkafka #4041, rust-rdkafka #509), and
/// a SIGTERM'd process would hang idle. Messages received here were never
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
/// comes from the process's lag reader, see `pipeline::monitors::group_watchdog`).
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

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::BaseConsumer;

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
        assert_eq!(
            consumer_config(&cfg, 0).get("fetch.wait.max.ms"),
            Some("500")
        );
        cfg.kafka.fetch_wait_max_ms = 10;
        assert_eq!(
            consumer_config(&cfg, 0).get("fetch.wait.max.ms"),
            Some("10")
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
}
