//! One consumer worker: a `StreamConsumer` and a `FutureProducer`, both created once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
    StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::offsets::{Completion, OffsetTracker, Ticket};
use super::process::{Outcome, Processor};
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

/// Liveness shared by all workers of a process (for `--until-idle`, the watchdog and the
/// metrics: the in-flight and assigned-partitions gauges are kept here, not beside it).
pub struct Progress {
    started: Instant,
    last_activity_ms: AtomicU64,
    metrics: Metrics,
    /// Input partitions owned by the process's workers (partition → owning workers; more than
    /// one only for a moment during a rebalance).
    owned: Mutex<HashMap<i32, usize>>,
}

impl Progress {
    /// Progress reported through `metrics` (`in_flight`, `assigned_partitions`).
    pub fn new(metrics: Metrics) -> Self {
        Progress {
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            metrics,
            owned: Mutex::new(HashMap::new()),
        }
    }

    /// `n` messages were taken.
    fn took(&self, n: usize) {
        self.metrics.in_flight_add(n as i64);
        self.touch();
    }

    /// `n` messages finished (or were abandoned).
    fn finished(&self, n: usize) {
        self.metrics.in_flight_add(-(n as i64));
        self.touch();
    }

    fn touch(&self) {
        self.last_activity_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long since the last message was taken or finished.
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    pub fn in_flight(&self) -> usize {
        usize::try_from(self.metrics.in_flight()).unwrap_or(0)
    }

    /// Input partitions the process's workers own now.
    pub fn owned_partitions(&self) -> Vec<i32> {
        let owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<i32> = owned.keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn owned_changed(&self, assigned: &[i32], revoked: &[i32]) {
        let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        for &p in assigned {
            *owned.entry(p).or_insert(0) += 1;
        }
        let mut given_up = 0;
        for p in revoked {
            if let Some(n) = owned.get_mut(p) {
                given_up += 1;
                *n -= 1;
                if *n == 0 {
                    owned.remove(p);
                }
            }
        }
        self.metrics.assigned_add(assigned.len() as i64 - given_up);
    }
}

/// Counts over a worker's life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorkerStats {
    pub consumed: u64,
    pub indexed: u64,
    pub dead_lettered: u64,
    pub abandoned: u64,
    pub consume_errors: u64,
    /// Times a partition was paused because its window (`max_partition_gap`) was full.
    pub pauses: u64,
    /// Times the worker left and rejoined its group because a partition nobody consumed was
    /// seen (see `group.rs`).
    pub rejoins: u64,
    /// Messages of partitions not assigned to this worker when they arrived: dropped, never
    /// processed or tracked (the owner takes them).
    pub unowned_dropped: u64,
}

/// The worker's tracker, shared with its message tasks (which record their own completion)
/// and with the rebalance callback (which waits for revoked partitions to finish).
struct SharedTracker {
    inner: Mutex<OffsetTracker>,
    changed: Condvar,
    /// Set once the worker has drained: revokes after that do not wait.
    closing: AtomicBool,
}

impl SharedTracker {
    fn new() -> Self {
        SharedTracker {
            inner: Mutex::new(OffsetTracker::new()),
            changed: Condvar::new(),
            closing: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OffsetTracker> {
        // The tracker has no invariants a panicking holder could break half-way (every
        // method is a single map update), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record the outcomes of a chunk's messages under one lock: every one but the abandoned
    /// is finished. Completions in the order of `done`.
    fn complete_all(&self, done: &[(Ticket, Outcome)]) -> Vec<Option<Completion>> {
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
    fn wait_drained(&self, partitions: &[i32], deadline: Instant) -> bool {
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
struct WorkerContext {
    worker: usize,
    topic: String,
    tracker: Arc<SharedTracker>,
    revoke_timeout: Duration,
    progress: Arc<Progress>,
    /// The configuration allows incremental rebalances only (`cooperative-sticky`, or the
    /// KIP-848 protocol). Used when librdkafka reports no protocol (during close).
    cooperative: bool,
    metrics: Metrics,
}

/// Wait in the rebalance callback without starving the runtime: the callback runs inside the
/// worker task's poll, and the messages it waits for need runtime threads to finish.
fn wait_in_callback(tracker: &SharedTracker, partitions: &[i32], deadline: Instant) -> bool {
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
    /// polls forever (librdkafka #4527, node-rdkafka #1144). A SIGTERM'd cooperative process
    /// hung that way in CI. Here `None` falls back to the configured protocol, and a refused
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
    progress: Arc<Progress>,
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

/// What became of one message of a finished chunk.
type Done = (Ticket, Outcome, Option<Completion>);

/// The worker's chunk tasks, and how many messages each holds (for the in-flight count and
/// for what a drain abandons).
struct ChunkTasks {
    set: JoinSet<Vec<Done>>,
    sizes: HashMap<tokio::task::Id, usize>,
    messages: usize,
}

impl ChunkTasks {
    fn new() -> Self {
        ChunkTasks {
            set: JoinSet::new(),
            sizes: HashMap::new(),
            messages: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    fn spawn(
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
    async fn join_next(&mut self) -> Option<(usize, Result<Vec<Done>, tokio::task::JoinError>)> {
        let (id, result) = match self.set.join_next_with_id().await? {
            Ok((id, done)) => (id, Ok(done)),
            Err(e) => (e.id(), Err(e)),
        };
        let n = self.sizes.remove(&id).unwrap_or(0);
        self.messages -= n;
        Some((n, result))
    }

    /// Stop every chunk; the number of messages they held.
    fn abort_all(&mut self) -> usize {
        self.set.abort_all();
        self.sizes.clear();
        std::mem::take(&mut self.messages)
    }
}

/// Starts the processing of taken messages.
struct Dispatcher {
    tracker: Arc<SharedTracker>,
    processor: Arc<Processor>,
    progress: Arc<Progress>,
}

impl Dispatcher {
    /// Dispatch a chunk of taken messages (each with its in-flight permit) as one task.
    /// Messages of partitions not assigned here are dropped (their owner processes them).
    fn spawn(
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

/// A partition paused because its window is full: the messages taken for it since (in
/// offset order, not dispatched) and the assignment generation they belong to.
struct PausedPartition {
    generation: Option<u64>,
    parked: VecDeque<OwnedMessage>,
}

/// Per-partition windows (`pipeline.max_partition_gap`): pause a partition whose window is
/// full, resume it when half of the window has drained.
struct Windows {
    max_gap: i64,
    worker: usize,
    /// Most messages of one chunk.
    chunk_max: usize,
    paused: HashMap<i32, PausedPartition>,
}

impl Windows {
    fn new(max_gap: i64, worker: usize, chunk_max: usize) -> Self {
        Windows {
            max_gap,
            worker,
            chunk_max,
            paused: HashMap::new(),
        }
    }

    /// Whether messages of `partition` are parked (taken from the consumer, not dispatched).
    fn holds(&self, partition: i32) -> bool {
        self.paused.contains_key(&partition)
    }

    /// The message back if it may be dispatched now; otherwise it is parked (and its
    /// partition paused if it was not).
    fn admit(
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
        None
    }

    /// Dispatch parked messages of partitions whose window has drained to half (as in-flight
    /// permits allow) and resume those partitions; forget partitions that were revoked (their
    /// parked messages lie above the commit point and are fetched again by the next owner).
    fn release(
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
trait Fetch {
    fn pause(&self, partition: i32) -> Result<(), KafkaError>;
    fn resume(&self, partition: i32) -> Result<(), KafkaError>;
}

/// The worker's consumer on its input topic.
struct TopicFetch<'a> {
    consumer: &'a StreamConsumer<WorkerContext>,
    topic: &'a str,
}

impl TopicFetch<'_> {
    fn one(&self, partition: i32) -> TopicPartitionList {
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
    progress: &Progress,
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

/// Most messages one chunk takes (one compute job, one sink submission): enough to pay the
/// per-chunk costs once for many messages, few enough that one compute thread's share of
/// a chunk stays short (a full-mode 512² CT file is ≈ 0.3 ms).
const CHUNK_MAX: usize = 32;

/// Take the messages the consumer has ready now (without waiting), each with an in-flight
/// permit, until `taken` holds `limit` messages or nothing is ready or no permit is free. True if
/// the stream ended.
fn take_ready<'a, S>(
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
                stats.consume_errors += 1;
                metrics.consume_error();
                tracing::warn!(worker, error = %e, "consume error");
                return false;
            }
            Some(None) => return true,
            None => return false,
        }
    }
    false
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
            progress: Arc::new(Progress::new(metrics.clone())),
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
