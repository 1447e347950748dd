//! `backfill`: walk directories and publish one store message per regular file.
//!
//! Publishing is batched by librdkafka (linger, large batches, compression) with a bounded number
//! of unacknowledged messages. Unreadable entries are counted and reported, never fatal.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::{FutureRecord, Producer};
use time::OffsetDateTime;

use crate::config::Config;
use crate::kafka::{self, KafkaClientError};
use crate::model::DicomStoreMeta;

/// Most messages awaiting a broker acknowledgement at once.
const MAX_UNACKED: usize = 10_000;

/// What a backfill did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BackfillSummary {
    pub published: u64,
    /// Entries that are not regular files (directories are walked, not counted).
    pub skipped: u64,
    /// Unreadable entries (reported; the walk goes on).
    pub errors: u64,
    /// Messages the broker did not acknowledge (after librdkafka's retries).
    pub failed: u64,
    pub bytes: u64,
}

/// Publish a store message for every regular file under `paths`.
pub async fn backfill(
    cfg: &Config,
    paths: &[PathBuf],
) -> Result<BackfillSummary, KafkaClientError> {
    let producer = kafka::producer(&cfg.kafka, kafka::BACKFILL_LINGER_MS)?;
    let topic = cfg.kafka.input_topic.clone();
    let mut summary = BackfillSummary::default();
    let mut pending = FuturesUnordered::new();
    let started = Instant::now();
    let mut last_report = Instant::now();

    for root in paths {
        for entry in walkdir::WalkDir::new(root).follow_links(false) {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    summary.errors += 1;
                    tracing::warn!(error = %e, "cannot read directory entry");
                    continue;
                }
            };
            if entry.file_type().is_dir() {
                continue;
            }
            // Follow a symlink to see what it points at; `run` decides whether its target is
            // inside a storage root.
            let md = match std::fs::metadata(entry.path()) {
                Ok(md) => md,
                Err(e) => {
                    summary.errors += 1;
                    tracing::warn!(error = %e, "cannot stat entry");
                    continue;
                }
            };
            if !md.is_file() {
                summary.skipped += 1;
                continue;
            }
            let Some(meta) = store_meta(cfg, entry.path(), md.len()) else {
                // Not representable in a JSON string (non-UTF-8 path).
                summary.errors += 1;
                tracing::warn!("skipping a path that is not valid UTF-8");
                continue;
            };
            let payload = match serde_json::to_vec(&meta) {
                Ok(p) => p,
                Err(e) => {
                    summary.errors += 1;
                    tracing::warn!(error = %e, "cannot encode store message");
                    continue;
                }
            };
            while pending.len() >= MAX_UNACKED {
                settle(pending.next().await, &mut summary);
            }
            let producer = producer.clone();
            let topic = topic.clone();
            let size = md.len();
            pending.push(async move {
                let record = FutureRecord::to(&topic)
                    .key(&meta.trace_id)
                    .payload(&payload);
                producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .map(|_| size)
                    .map_err(|(e, _)| e)
            });
            if last_report.elapsed() >= Duration::from_secs(5) {
                last_report = Instant::now();
                tracing::info!(
                    published = summary.published,
                    pending = pending.len(),
                    "backfill progress"
                );
            }
        }
    }
    while let Some(done) = pending.next().await {
        settle(Some(done), &mut summary);
    }
    let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(30))).await;
    tracing::info!(
        published = summary.published,
        skipped = summary.skipped,
        errors = summary.errors,
        failed = summary.failed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "backfill done"
    );
    Ok(summary)
}

fn settle(done: Option<Result<u64, rdkafka::error::KafkaError>>, summary: &mut BackfillSummary) {
    match done {
        Some(Ok(size)) => {
            summary.published += 1;
            summary.bytes += size;
        }
        Some(Err(e)) => {
            summary.failed += 1;
            tracing::warn!(error = %e, "publish failed");
        }
        None => {}
    }
}

/// The store message for one file: absolute path (not canonicalised: the path as found in
/// the archive), size, a fresh trace id.
fn store_meta(cfg: &Config, path: &Path, size: u64) -> Option<DicomStoreMeta> {
    let abs = std::path::absolute(path).ok()?;
    let file_path = abs.to_str()?.to_string();
    Some(DicomStoreMeta {
        trace_id: uuid::Uuid::new_v4().to_string(),
        tenant_id: cfg.pipeline.tenant_id.clone(),
        source: cfg.pipeline.source.clone(),
        file_path,
        file_size: size,
        file_mtime: None,
        received_at: OffsetDateTime::now_utc(),
        patient_id: None,
        study_uid: None,
        series_uid: None,
        sop_uid: None,
    })
}
