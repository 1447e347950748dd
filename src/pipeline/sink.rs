//! The pipeline's sink side: the one batcher task over the configured backend (its flush
//! size bounded by what can be in flight) and the readiness probe that asks the backend
//! whether it answers.

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::publish::StatePublisher;
use crate::sink::batcher::{Batcher, BatcherStats};
use crate::sink::{Backend, SinkHandle};

use super::Running;

/// How often the readiness probe asks the sink backend whether it answers.
const SINK_PROBE_EVERY: Duration = Duration::from_secs(5);

impl Running {
    /// Start the backend's probe and the batcher; the workers' handle to it, and the task
    /// that returns its totals once every handle is dropped.
    pub(super) fn start_sink(
        &self,
        publisher: &StatePublisher,
    ) -> (SinkHandle, JoinHandle<BatcherStats>) {
        let cfg = &self.cfg;
        let (sink_handle, sink_rx) = SinkHandle::channel(cfg.sink.channel_capacity);
        // A batch can never hold more messages than are in flight, and most of those are
        // still being read, parsed or produced: flush at half of what can be in flight rather
        // than wait for the timer with the workers blocked on the sink (docs/BENCHMARKS.md,
        // "Sink flushes").
        let mut sink_cfg = cfg.sink.clone();
        sink_cfg.max_rows = sink_rows(sink_cfg.max_rows, cfg.workers(), cfg.pipeline.max_in_flight);
        // The one place that knows which backend: workers and batcher see a `Sink`.
        tracing::info!(backend = %cfg.sink.backend, workers = cfg.workers(), "starting the pipeline");
        let backend = Backend::new(cfg);
        self.tasks.spawn(sink_probe(
            backend.clone(),
            self.metrics.clone(),
            self.server_stop.clone(),
        ));
        let batcher = Batcher::new(backend, sink_cfg, self.hard_stop.clone())
            .with_listener(publisher.clone())
            .with_metrics(self.metrics.clone());
        let sink_task = self.tasks.spawn(batcher.run(sink_rx));
        (sink_handle, sink_task)
    }
}

/// The sink's flush size: `max_rows`, but at most half of the messages that can be in flight
/// (at least 1).
fn sink_rows(max_rows: usize, workers: usize, max_in_flight: usize) -> usize {
    max_rows.min((workers * max_in_flight / 2).max(1))
}

/// Ask the backend every [`SINK_PROBE_EVERY`] whether it answers, for `/readyz`; a change is
/// logged once, not every probe.
async fn sink_probe(backend: Backend, metrics: Metrics, stop: tokio_util::sync::CancellationToken) {
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
