//! What a backfill is asked to do ([`Options`], one [`Source`] per named source) and the run
//! that does it, phase by phase: check and resolve, reach the broker, resume from the
//! checkpoint, walk and publish every source, wait for the deliveries, write the checkpoint
//! a last time, and sum up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{
    args, checkpoint, checkpointing, setup, skip_indexed, source, summary, BackfillError,
    BackfillSummary, Report,
};
use crate::config::Config;
use crate::kafka::{self, Producer};

/// Default of `--max-unacked`: most messages awaiting a broker acknowledgement at once.
pub const MAX_UNACKED: usize = 10_000;

/// One named source: its roots, walked in order, and its rate limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// The store messages' `source`.
    pub name: String,
    /// Files or directories.
    pub roots: Vec<PathBuf>,
    /// Files per second (`None`: as fast as the broker takes them).
    pub rate: Option<f64>,
}

/// How to backfill.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub sources: Vec<Source>,
    /// Most messages awaiting acknowledgement, over all sources.
    pub max_unacked: usize,
    /// Skip files `dicom_image` already has.
    pub skip_indexed: bool,
    /// Checkpoint file to resume from and keep up to date.
    pub checkpoint: Option<PathBuf>,
    /// Ignore (and overwrite) an existing checkpoint.
    pub reset_checkpoint: bool,
    /// Count entries alongside the walk (for the ETA).
    pub count: bool,
}

impl Options {
    pub fn new(sources: Vec<Source>) -> Options {
        Options {
            sources,
            max_unacked: MAX_UNACKED,
            skip_indexed: false,
            checkpoint: None,
            reset_checkpoint: false,
            count: true,
        }
    }
}

/// Publish a store message for every regular file under `paths`, as the source
/// `pipeline.source`, with the default options.
pub async fn backfill(cfg: &Config, paths: &[PathBuf]) -> Result<BackfillSummary, BackfillError> {
    let sources = args::plan_sources(&cfg.pipeline.source, paths, &[], &[])?;
    let report = run(cfg, &Options::new(sources), CancellationToken::new()).await?;
    Ok(report.total)
}

/// Run a backfill until every source is walked and every message settled, or until `cancel`
/// fires (then what was sent is still awaited, and the checkpoint written).
pub async fn run(
    cfg: &Config,
    opts: &Options,
    cancel: CancellationToken,
) -> Result<Report, BackfillError> {
    let started = Instant::now();
    setup::check_options(opts)?;
    let resolved = setup::resolve_roots(&opts.sources)?;
    let topic = &cfg.kafka.input_topic;
    let fingerprint = checkpoint::fingerprint(topic, &resolved);
    let starts = checkpointing::starts(opts, &fingerprint, topic, &resolved)?;
    // The arguments are sound: now the broker must answer (within ~10 s, named if not).
    setup::reach_broker(cfg, &cancel).await?;
    let lookup = skip_indexed::open(cfg, opts).await?;
    let runs = setup::source_runs(&resolved, &opts.sources, starts);

    // The checkpoint, written once now (so an unwritable path fails before any publish).
    let snapshot = checkpointing::snapshotter(&runs, fingerprint, topic);
    if let Some(path) = &opts.checkpoint {
        checkpoint::save(path, &snapshot())?;
    }

    let producer = kafka::producer(&cfg.kafka, kafka::BACKFILL_LINGER_MS)
        .map_err(BackfillError::CreateProducer)?;
    warm_up(&producer, topic).await;
    let stop = cancel.child_token();
    let shared = Arc::new(setup::shared(cfg, opts, producer.clone(), lookup, stop));
    let reporter_stop = CancellationToken::new();
    let reporter = summary::spawn_progress(
        &runs,
        &shared.permits,
        opts.max_unacked,
        reporter_stop.clone(),
    );
    let writer = opts
        .checkpoint
        .clone()
        .map(|path| checkpointing::spawn_writer(path, snapshot.clone(), reporter_stop.clone()));

    let counters = summary::counters(&runs);
    let mut first_error = source::run_all(&shared, runs).await;
    // Everything sent was awaited by its source; flush what librdkafka may still hold.
    let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(30))).await;
    reporter_stop.cancel();
    let _ = reporter.await;
    if let Some(w) = writer {
        let _ = w.await;
    }
    if let Some(path) = &opts.checkpoint {
        if let Some(e) = checkpointing::save_final(path, &snapshot).await {
            first_error.get_or_insert(e);
        }
    }

    let elapsed = started.elapsed();
    let index_queries = skip_indexed::queries(shared.lookup.as_ref());
    let report = summary::finish(&counters, elapsed, index_queries, &cancel);
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(report)
}

/// Connect the producer before the first store message is stamped and sent (see
/// [`Producer::warm_up`]); a failure here is only logged, as publishing retries anyway.
async fn warm_up(producer: &Producer, topic: &str) {
    let (p, t) = (producer.clone(), topic.to_string());
    let warmed = tokio::task::spawn_blocking(move || p.warm_up(&t, Duration::from_secs(10))).await;
    if let Ok(Err(e)) = warmed {
        tracing::warn!(error = %e, "producer not connected before publishing");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_to_the_existing_bounds() {
        let o = Options::new(vec![]);
        assert_eq!(o.max_unacked, MAX_UNACKED);
        assert!(o.count && !o.skip_indexed && o.checkpoint.is_none());
    }
}
