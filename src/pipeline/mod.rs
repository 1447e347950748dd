//! Wiring: topics and tables ensured, one batching sink task (over the configured backend),
//! N workers, the idle monitor, and the shutdown sequence.
//!
//! Shutdown: `shutdown` fires (signal or `--until-idle`) → workers stop taking messages and
//! drain in-flight work → the sink flushes what they hand it → workers commit and leave the
//! group → the sink's channel closes and it exits. If draining outlives the drain deadline,
//! `hard_stop` fires: produce retries and sink retries give up and the unfinished messages stay
//! uncommitted (redelivered on restart).
//!
//! - `mod.rs`: start-up checks, the run's sequence from start to stop, the shutdown.
//! - `sink.rs`: the batcher task and the sink's readiness probe.
//! - `workers.rs`: what the workers share, their tasks, their totals.
//! - `monitors.rs`: the idle monitor, the group watchdog (and lag gauges), the hard-stop
//!   escalation.

mod monitors;
mod sink;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::kafka::{self, KafkaClientError};
use crate::metrics::{self, Health, Metrics, ServeError};
use crate::publish::StatePublisher;
use crate::sink::batcher::BatcherStats;
use crate::sink::SinkError;
use crate::workers::{Liveness, WorkerError, WorkerStats};

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

/// Totals of one `run`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunSummary {
    pub workers: WorkerStats,
    pub sink: BatcherStats,
}

/// Create topics and the selected sink backend's tables (idempotent): the `schema` command.
pub async fn ensure_schema(cfg: &Config) -> Result<(), PipelineError> {
    let topics = kafka::reach_topics_async(&cfg.kafka).await?;
    kafka::ensure_topics_among(&cfg.kafka, &topics).await?;
    // The DDL's own errors name the address (ClickHouse's URL, Doris's MySQL port).
    crate::sink::apply_schema(cfg).await?;
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
    if !start_up(&cfg, &shutdown).await? {
        tracing::info!("stopped during start-up; nothing was consumed");
        return Ok(RunSummary::default());
    }
    let run = Running::new(Arc::new(cfg), shutdown);
    if let Some(listener) = listener {
        run.serve_metrics(listener);
    }
    // One producer for the process, cloned into the publisher and every worker: each
    // librdkafka producer has its own threads (the one serving its acknowledgements, librdkafka's
    // main thread, one per broker) and a connection per broker; one client also packs every
    // worker's records into the same produce requests.
    let producer = kafka::producer(&run.cfg.kafka, kafka::OUTPUT_LINGER_MS)?;
    let publisher = StatePublisher::new(
        producer.clone(),
        &run.cfg.kafka.state_topic,
        &run.cfg.kafka.log_topic,
        run.metrics.clone(),
    );
    let (sink_handle, sink_task) = run.start_sink(&publisher);
    let shared = run.process_context()?;
    let (rejoin_tx, rejoin_rx) = tokio::sync::watch::channel(0u64);
    let workers = run.spawn_workers(&producer, &sink_handle, &shared, &publisher, rejoin_rx);
    // Workers hold the only handles now: the sink ends when the last worker is done.
    drop(sink_handle);
    run.spawn_monitors(until_idle, rejoin_tx);

    let (workers, first_error) = run.collect_workers(workers, &publisher).await;
    let summary = RunSummary {
        workers,
        sink: sink_task.await.unwrap_or_default(),
    };
    run.wind_down(publisher).await;
    match first_error {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

/// Start-up: the broker and the sink answer (each failing within ~10 s, naming its address),
/// the topics and tables exist. False if a stop (SIGTERM) came meanwhile: it ends the
/// start-up at once.
async fn start_up(cfg: &Config, shutdown: &CancellationToken) -> Result<bool, PipelineError> {
    let startup = async {
        // The reachability probe's metadata answer says which topics exist: asked once.
        let topics = kafka::reach_topics_async(&cfg.kafka).await?;
        crate::sink::reach(cfg).await?;
        kafka::ensure_topics_among(&cfg.kafka, &topics).await?;
        crate::sink::prepare_run(cfg).await?;
        Ok::<(), PipelineError>(())
    };
    tokio::select! {
        r = startup => r.map(|()| true),
        _ = shutdown.cancelled() => Ok(false),
    }
}

/// What the running pipeline's parts share: the settings, the metrics, the tasks waited for
/// at the end, and the stops.
struct Running {
    cfg: Arc<Config>,
    tasks: TaskTracker,
    metrics: Metrics,
    progress: Arc<Liveness>,
    /// A signal, `--until-idle` or a failed worker: stop taking messages and drain.
    shutdown: CancellationToken,
    /// The drain deadline passed: produce and sink retries give up.
    hard_stop: CancellationToken,
    /// Everything drained: the endpoint, the probes and the outage probers end.
    server_stop: CancellationToken,
}

impl Running {
    fn new(cfg: Arc<Config>, shutdown: CancellationToken) -> Self {
        let metrics = Metrics::new(&cfg.kafka.input_topic);
        Running {
            progress: Arc::new(Liveness::new(metrics.clone())),
            cfg,
            tasks: TaskTracker::new(),
            metrics,
            shutdown,
            hard_stop: CancellationToken::new(),
            server_stop: CancellationToken::new(),
        }
    }

    /// `/metrics`, `/healthz`, `/readyz` on the bound listener until everything drained.
    fn serve_metrics(&self, listener: tokio::net::TcpListener) {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(addr = %addr, "metrics endpoint listening (/metrics, /healthz, /readyz)");
        let health = Health {
            metrics: self.metrics.clone(),
        };
        self.tasks
            .spawn(metrics::serve(listener, health, self.server_stop.clone()));
    }

    /// The group watchdog, the idle monitor (with `--until-idle`) and the escalation to a
    /// hard stop if draining outlives its deadline.
    fn spawn_monitors(
        &self,
        until_idle: Option<Duration>,
        rejoin: tokio::sync::watch::Sender<u64>,
    ) {
        self.tasks.spawn(monitors::group_watchdog(
            self.cfg.clone(),
            self.progress.clone(),
            self.metrics.clone(),
            rejoin,
            self.shutdown.clone(),
        ));
        if let Some(idle) = until_idle {
            self.tasks.spawn(monitors::idle_monitor(
                self.cfg.clone(),
                idle,
                self.progress.clone(),
                self.shutdown.clone(),
            ));
        }
        self.tasks.spawn(monitors::escalate_to_hard_stop(
            self.shutdown.clone(),
            self.hard_stop.clone(),
            self.cfg.drain_timeout(),
        ));
    }

    /// Everything is drained: release the escalation, idle, probe and endpoint tasks, wait
    /// for them, and give fire-and-forget audit events 5 s to go out.
    async fn wind_down(self, publisher: StatePublisher) {
        self.shutdown.cancel();
        self.hard_stop.cancel();
        self.server_stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        publisher.flush(Duration::from_secs(5)).await;
    }
}
