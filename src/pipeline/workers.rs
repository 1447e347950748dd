//! The pipeline's workers: what their processors share (storage roots, compute threads,
//! topics, privacy), one task per worker with its start and stop events on the log topic,
//! and their results gathered into the run's totals.

use std::future::Future;
use std::sync::Arc;

use crate::kafka::Producer;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::task::JoinError;

use crate::model::{epoch_ms, LogEvent};
use crate::privacy::Pseudonymizer;
use crate::publish::StatePublisher;
use crate::sink::SinkHandle;
use crate::storage::StorageRoots;
use crate::workers::compute_pool::ComputePool;
use crate::workers::outage::Outages;
use crate::workers::{run_worker, ProcessContext, Processor, WorkerError, WorkerStats};

use super::{PipelineError, Running};

/// How a worker task ended: its id, and its totals or why it failed.
type WorkerEnd = (usize, Result<Result<WorkerStats, WorkerError>, JoinError>);

impl Running {
    /// What every worker's processor shares: the storage roots opened, the compute threads
    /// started.
    pub(super) fn process_context(&self) -> Result<Arc<ProcessContext>, PipelineError> {
        let cfg = &self.cfg;
        let secondary = &cfg.pipeline.secondary_storage_root;
        let roots = StorageRoots::new(
            &cfg.pipeline.storage_roots,
            (!secondary.as_os_str().is_empty()).then_some(secondary.as_path()),
        )
        .map_err(PipelineError::StorageRoots)?;
        let shared = Arc::new(ProcessContext {
            storage: Arc::new(Outages::new(
                Arc::new(roots),
                self.metrics.clone(),
                self.server_stop.clone(),
            )),
            image_topic: cfg.kafka.image_topic.clone(),
            dlq_topic: cfg.kafka.dlq_topic.clone(),
            mode: cfg.pipeline.mode,
            limits: cfg.limits(),
            compute: ComputePool::new(cfg.compute_threads()).map_err(PipelineError::ComputePool)?,
            hard_stop: self.hard_stop.clone(),
            metrics: self.metrics.clone(),
            privacy: Pseudonymizer::new(&cfg.privacy),
        });
        if cfg.privacy.pseudonymize {
            tracing::info!(
                "pseudonymizing PatientID, PatientName and AccessionNumber (HMAC-SHA256)"
            );
        }
        Ok(shared)
    }

    /// One task per worker, each with its processor (the process's producer, the sink's
    /// handle); its start announced on the log topic.
    pub(super) fn spawn_workers(
        &self,
        producer: &Producer,
        sink_handle: &SinkHandle,
        shared: &Arc<ProcessContext>,
        publisher: &StatePublisher,
        rejoin: tokio::sync::watch::Receiver<u64>,
    ) -> FuturesUnordered<impl Future<Output = WorkerEnd>> {
        let cfg = &self.cfg;
        let workers = FuturesUnordered::new();
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
            let handle = self.tasks.spawn(run_worker(
                id,
                cfg.clone(),
                processor,
                self.shutdown.clone(),
                self.progress.clone(),
                rejoin.clone(),
            ));
            workers.push(async move { (id, handle.await) });
        }
        workers
    }

    /// Wait for every worker; their totals, and the first failure (a failed worker stops the
    /// others: `shutdown` fires). Each stop is announced on the log topic.
    pub(super) async fn collect_workers(
        &self,
        mut workers: FuturesUnordered<impl Future<Output = WorkerEnd>>,
        publisher: &StatePublisher,
    ) -> (WorkerStats, Option<PipelineError>) {
        let mut summary = WorkerStats::default();
        let mut first_error = None;
        while let Some((id, result)) = workers.next().await {
            match result {
                Ok(Ok(stats)) => {
                    publisher.audit(&LogEvent::WorkerStopped {
                        worker: id,
                        consumed: stats.consumed,
                        at_ms: epoch_ms(time::OffsetDateTime::now_utc()),
                    });
                    add(&mut summary, &stats);
                }
                Ok(Err(source)) => {
                    tracing::error!(worker = id, error = %source, "worker failed; stopping the pipeline");
                    self.shutdown.cancel();
                    first_error.get_or_insert(PipelineError::Worker { worker: id, source });
                }
                Err(_) => {
                    self.shutdown.cancel();
                    first_error.get_or_insert(PipelineError::WorkerPanicked(id));
                }
            }
        }
        (summary, first_error)
    }
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
