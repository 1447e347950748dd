//! Wiring: topics and tables ensured, one batching sink task (over the configured backend),
//! N workers, the idle monitor, and the shutdown sequence.
//!
//! Shutdown: `shutdown` fires (signal or `--until-idle`) → workers stop taking messages and
//! drain in-flight work → the sink flushes what they hand it → workers commit and leave the
//! group → the sink's channel closes and it exits. If draining outlives the drain deadline,
//! `hard_stop` fires: produce retries and sink retries give up and the unfinished messages stay
//! uncommitted (redelivered on restart).

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::kafka::{self, KafkaClientError};
use crate::lag::{total, LagReader};
use crate::metrics::{self, GroupSample, Health, Metrics, ServeError};
use crate::model::{epoch_ms, LogEvent};
use crate::privacy::Pseudonymizer;
use crate::publish::StatePublisher;
use crate::sink::batcher::{Batcher, BatcherStats};
use crate::sink::{self, Backend, SinkError, SinkHandle};
use crate::storage::StorageRoots;
use crate::workers::compute_pool::ComputePool;
use crate::workers::group::{PartitionView, StuckDetector};
use crate::workers::outage::Outages;
use crate::workers::{run_worker, Liveness, ProcessContext, Processor, WorkerError, WorkerStats};

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("worker {worker}: {source}")]
    Worker {
        worker: usize,
        #[source]
        source: WorkerError,
    },
    #[error("worker task {0} panicked")]
    WorkerPanicked(usize),
    #[error(transparent)]
    Metrics(#[from] ServeError),
    #[error("starting the compute threads: {0}")]
    ComputePool(#[source] std::io::Error),
    #[error("opening the storage roots: {0}")]
    StorageRoots(#[source] std::io::Error),
}

/// How often the readiness probe asks the sink backend whether it answers.
const SINK_PROBE_EVERY: Duration = Duration::from_secs(5);

/// Totals of one `run`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunSummary {
    pub workers: WorkerStats,
    pub sink: BatcherStats,
}

/// Create topics and the selected sink backend's tables (idempotent): the `schema` command.
pub async fn ensure_schema(cfg: &Config) -> Result<(), PipelineError> {
    kafka::reach_async(&cfg.kafka).await?;
    kafka::ensure_topics(&cfg.kafka).await?;
    // The DDL's own errors name the address (ClickHouse's URL, Doris's MySQL port).
    sink::apply_schema(cfg).await?;
    Ok(())
}

/// Run the pipeline until `shutdown` fires, or — with `until_idle` — until the input topic is
/// fully committed and nothing has moved for that long.
pub async fn run(
    cfg: Config,
    until_idle: Option<Duration>,
    shutdown: CancellationToken,
) -> Result<RunSummary, PipelineError> {
    // Bind first: a taken metrics port fails the start, before anything is consumed.
    let listener = match cfg.metrics.listen.as_str() {
        "" => None,
        addr => Some(metrics::bind(addr).await?),
    };
    // Start-up: the broker and the sink answer (each failing within ~10 s, naming its
    // address), the topics and tables exist. A stop (SIGTERM) meanwhile ends it at once.
    let startup = async {
        kafka::reach_async(&cfg.kafka).await?;
        sink::reach(&cfg).await?;
        kafka::ensure_topics(&cfg.kafka).await?;
        sink::prepare_run(&cfg).await?;
        Ok::<(), PipelineError>(())
    };
    tokio::select! {
        r = startup => r?,
        _ = shutdown.cancelled() => {
            tracing::info!("stopped during start-up; nothing was consumed");
            return Ok(RunSummary::default());
        }
    }
    let cfg = Arc::new(cfg);
    let hard_stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let metrics = Metrics::new(&cfg.kafka.input_topic);
    let progress = Arc::new(Liveness::new(metrics.clone()));
    let server_stop = CancellationToken::new();
    if let Some(listener) = listener {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(addr = %addr, "metrics endpoint listening (/metrics, /healthz, /readyz)");
        let health = Health {
            metrics: metrics.clone(),
        };
        tasks.spawn(metrics::serve(listener, health, server_stop.clone()));
    }

    // One producer for the process, cloned into the publisher and every worker: each
    // librdkafka producer keeps a polling thread (which wakes and spins through the last
    // millisecond of every 100 ms poll: about 2 % of a core each, idle or not) and a
    // connection per broker; one client also packs every worker's records into the same
    // produce requests.
    let producer = kafka::producer(&cfg.kafka, kafka::OUTPUT_LINGER_MS)?;
    let publisher = StatePublisher::new(
        producer.clone(),
        &cfg.kafka.state_topic,
        &cfg.kafka.log_topic,
        metrics.clone(),
    );
    let (sink_handle, sink_rx) = SinkHandle::channel(cfg.sink.channel_capacity);
    // A batch can never hold more messages than are in flight, and most of those are still
    // being read, parsed or produced: flush at half of what can be in flight rather than wait
    // for the timer with the workers blocked on the sink (docs/BENCHMARKS.md, "Sink
    // flushes").
    let mut sink_cfg = cfg.sink.clone();
    sink_cfg.max_rows = sink_rows(sink_cfg.max_rows, cfg.workers(), cfg.pipeline.max_in_flight);
    // The one place that knows which backend: workers and batcher see a `Sink`.
    tracing::info!(backend = %cfg.sink.backend, workers = cfg.workers(), "starting the pipeline");
    let backend = Backend::new(&cfg);
    tasks.spawn(sink_probe(
        backend.clone(),
        metrics.clone(),
        server_stop.clone(),
    ));
    let batcher = Batcher::new(backend, sink_cfg, hard_stop.clone())
        .with_listener(publisher.clone())
        .with_metrics(metrics.clone());
    let sink_task = tasks.spawn(batcher.run(sink_rx));

    let secondary = &cfg.pipeline.secondary_storage_root;
    let roots = StorageRoots::new(
        &cfg.pipeline.storage_roots,
        (!secondary.as_os_str().is_empty()).then_some(secondary.as_path()),
    )
    .map_err(PipelineError::StorageRoots)?;
    let shared = Arc::new(ProcessContext {
        storage: Arc::new(Outages::new(
            Arc::new(roots),
            metrics.clone(),
            server_stop.clone(),
        )),
        image_topic: cfg.kafka.image_topic.clone(),
        dlq_topic: cfg.kafka.dlq_topic.clone(),
        mode: cfg.pipeline.mode,
        limits: cfg.limits(),
        compute: ComputePool::new(cfg.compute_threads()).map_err(PipelineError::ComputePool)?,
        hard_stop: hard_stop.clone(),
        metrics: metrics.clone(),
        privacy: Pseudonymizer::new(&cfg.privacy),
    });
    if cfg.privacy.pseudonymize {
        tracing::info!("pseudonymizing PatientID, PatientName and AccessionNumber (HMAC-SHA256)");
    }
    let (rejoin_tx, rejoin_rx) = tokio::sync::watch::channel(0u64);
    let mut workers = FuturesUnordered::new();
    for id in 0..cfg.workers() {
        let processor = Arc::new(Processor::new(
            producer.clone(),
            sink_handle.clone(),
            shared.clone(),
        ));
        publisher.audit(&LogEvent::WorkerStarted {
            worker: id,
            group_id: cfg.kafka.group_id.clone(),
            at_ms: epoch_ms(time::OffsetDateTime::now_utc()),
        });
        let handle = tasks.spawn(run_worker(
            id,
            cfg.clone(),
            processor,
            shutdown.clone(),
            progress.clone(),
            rejoin_rx.clone(),
        ));
        workers.push(async move { (id, handle.await) });
    }
    // Workers hold the only handles now: the sink ends when the last worker is done.
    drop(sink_handle);

    tasks.spawn(group_watchdog(
        cfg.clone(),
        progress.clone(),
        metrics.clone(),
        rejoin_tx,
        shutdown.clone(),
    ));
    if let Some(idle) = until_idle {
        tasks.spawn(idle_monitor(
            cfg.clone(),
            idle,
            progress.clone(),
            shutdown.clone(),
        ));
    }
    // Escalate to a hard stop if draining outlives its deadline.
    {
        let (shutdown, hard_stop, drain) =
            (shutdown.clone(), hard_stop.clone(), cfg.drain_timeout());
        tasks.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    tokio::select! {
                        _ = tokio::time::sleep(drain + Duration::from_secs(1)) => hard_stop.cancel(),
                        _ = hard_stop.cancelled() => {}
                    }
                }
                _ = hard_stop.cancelled() => {}
            }
        });
    }

    let mut summary = RunSummary::default();
    let mut first_error = None;
    while let Some((id, result)) = workers.next().await {
        match result {
            Ok(Ok(stats)) => {
                publisher.audit(&LogEvent::WorkerStopped {
                    worker: id,
                    consumed: stats.consumed,
                    at_ms: epoch_ms(time::OffsetDateTime::now_utc()),
                });
                add(&mut summary.workers, &stats);
            }
            Ok(Err(source)) => {
                tracing::error!(worker = id, error = %source, "worker failed; stopping the pipeline");
                shutdown.cancel();
                first_error.get_or_insert(PipelineError::Worker { worker: id, source });
            }
            Err(_) => {
                shutdown.cancel();
                first_error.get_or_insert(PipelineError::WorkerPanicked(id));
            }
        }
    }
    summary.sink = sink_task.await.unwrap_or_default();
    // Everything is drained: release the escalation, idle, probe and endpoint tasks.
    shutdown.cancel();
    hard_stop.cancel();
    server_stop.cancel();
    tasks.close();
    tasks.wait().await;
    // Let fire-and-forget audit events go out.
    publisher.flush(Duration::from_secs(5)).await;
    match first_error {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

/// The sink's flush size: `max_rows`, but at most half of the messages that can be in flight
/// (at least 1).
fn sink_rows(max_rows: usize, workers: usize, max_in_flight: usize) -> usize {
    max_rows.min((workers * max_in_flight / 2).max(1))
}

fn add(total: &mut WorkerStats, s: &WorkerStats) {
    total.consumed += s.consumed;
    total.indexed += s.indexed;
    total.dead_lettered += s.dead_lettered;
    total.abandoned += s.abandoned;
    total.consume_errors += s.consume_errors;
    total.rejoins += s.rejoins;
    total.pauses += s.pauses;
    total.unowned_dropped += s.unowned_dropped;
}

/// Ask the backend every [`SINK_PROBE_EVERY`] whether it answers, for `/readyz`; a change is
/// logged once, not every probe.
async fn sink_probe(backend: Backend, metrics: Metrics, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SINK_PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<bool> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let answer = backend.ping(SINK_PROBE_EVERY).await;
        let ok = answer.is_ok();
        if last != Some(ok) {
            match &answer {
                Ok(()) => tracing::info!("sink reachable"),
                Err(e) => tracing::warn!(error = %e, "sink unreachable; /readyz answers 503"),
            }
        }
        last = Some(ok);
        metrics.set_sink_reachable(ok);
    }
}

/// Fire `shutdown` once nothing is in flight, nothing moved for `idle`, and the group's
/// committed offset equals the end offset on every partition of the input topic.
async fn idle_monitor(
    cfg: Arc<Config>,
    idle: Duration,
    progress: Arc<Liveness>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut reader: Option<Arc<LagReader>> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if progress.in_flight() > 0 || progress.idle_for() < idle {
            continue;
        }
        // One reader for the monitor's life (a consumer per check would open connections
        // every 250 ms).
        let Some(reader) = lag_reader(&cfg, &mut reader) else {
            continue;
        };
        let drained =
            tokio::task::spawn_blocking(move || reader.partition_lags().map(|l| total(&l))).await;
        match drained {
            Ok(Ok(0)) => {
                tracing::info!(
                    idle_ms = idle.as_millis() as u64,
                    "input drained and idle; stopping"
                );
                shutdown.cancel();
                return;
            }
            Ok(Ok(lag)) => tracing::debug!(lag, "idle but not drained yet"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read group lag"),
            Err(e) => tracing::warn!(error = %e, "lag check failed"),
        }
    }
}

/// Also the source of the `partition_lag` gauges of the partitions owned here (each reading is
/// one metadata, one committed-offsets and one end-offset request per partition).
///
/// Rejoin the group when a partition this process does not own has had lag and no commit for
/// long while this process's own partitions move: the way out of a broker that left
/// partitions assigned to nobody alive (see `workers::group`).
/// How often the watchdog looks whether the owned partitions changed.
const ASSIGNMENT_CHECK: Duration = Duration::from_secs(1);

async fn group_watchdog(
    cfg: Arc<Config>,
    progress: Arc<Liveness>,
    metrics: Metrics,
    rejoin: tokio::sync::watch::Sender<u64>,
    shutdown: CancellationToken,
) {
    let every = (cfg.session_timeout() / 2).max(Duration::from_millis(500));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut detector = StuckDetector::new(cfg.session_timeout() * 2);
    let mut reader: Option<Arc<LagReader>> = None;
    // The lag gauges also follow the assignment: read at once when the owned partitions
    // change (a dashboard has lag from the first assignment, not a tick later).
    let mut assignment = tokio::time::interval(ASSIGNMENT_CHECK);
    let mut owned_before = Vec::new();
    loop {
        let full_check = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => true,
            _ = assignment.tick() => {
                let owned = progress.owned_partitions();
                if owned == owned_before {
                    continue;
                }
                owned_before = owned;
                false
            }
        };
        let Some(reader) = lag_reader(&cfg, &mut reader) else {
            continue;
        };
        let lags = match tokio::task::spawn_blocking(move || reader.partition_lags()).await {
            Ok(Ok(lags)) => lags,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read group lag");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "lag check failed");
                continue;
            }
        };
        let owned = progress.owned_partitions();
        let group: Vec<GroupSample> = lags
            .iter()
            .map(|l| GroupSample {
                partition: l.partition,
                owned_here: owned.contains(&l.partition),
                lag: l.lag,
                committed: l.committed,
            })
            .collect();
        metrics.group_observed(&group);
        if !full_check {
            continue;
        }
        let view: Vec<PartitionView> = lags
            .iter()
            .map(|l| PartitionView {
                partition: l.partition,
                lag: l.lag,
                committed: l.committed,
                owned_here: owned.contains(&l.partition),
            })
            .collect();
        let in_flight = progress.in_flight();
        let idle = progress.idle_for();
        let idle_here = in_flight == 0 && idle >= every;
        let lagging: Vec<i32> = lags
            .iter()
            .filter(|l| l.lag > 0)
            .map(|l| l.partition)
            .collect();
        if !lagging.is_empty() && idle >= cfg.session_timeout() * 2 {
            // What an operator (or a test log) needs to tell a stalled fetch from a stalled
            // task from a partition nobody owns.
            tracing::info!(
                idle_s = idle.as_secs(),
                in_flight,
                owned = ?owned,
                lagging = ?lagging,
                "no progress while the input has lag"
            );
        }
        if let Some(stalled) = detector.observe(&view, idle_here, std::time::Instant::now()) {
            tracing::warn!(
                partitions = ?stalled,
                owned = ?owned,
                in_flight,
                next_wait_s = detector.wait().as_secs(),
                "partitions with lag whose commit has not moved for twice the session timeout and that nobody here works on; rejoining the group"
            );
            rejoin.send_modify(|n| *n += 1);
        }
    }
}

/// The monitor's lag reader, created on first use (None, logged, if the client cannot be
/// created; the next tick tries again).
fn lag_reader(cfg: &Config, slot: &mut Option<Arc<LagReader>>) -> Option<Arc<LagReader>> {
    if slot.is_none() {
        match LagReader::new(cfg) {
            Ok(r) => *slot = Some(Arc::new(r)),
            Err(e) => tracing::warn!(error = %e, "cannot create the lag reader"),
        }
    }
    slot.clone()
}

#[cfg(test)]
mod tests {
    use super::sink_rows;

    #[test]
    fn the_sink_flushes_at_half_of_what_can_be_in_flight() {
        assert_eq!(sink_rows(5_000, 2, 1_000), 1_000);
        assert_eq!(sink_rows(500, 2, 1_000), 500); // a smaller configured size stands
        assert_eq!(sink_rows(5_000, 1, 1), 1); // never zero
        assert_eq!(sink_rows(5_000, 4, 4_000), 5_000);
    }
}
