//! Telling what a backfill does: the progress line while it runs, and at the end what it did
//! per source and in total ([`BackfillSummary`], [`Report`]), also logged.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::progress::{self, Counters};
use super::shared::SourceRun;

/// What a backfill (or one of its sources) did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BackfillSummary {
    /// Store messages the broker acknowledged.
    pub published: u64,
    /// Entries that are not regular files (directories are walked, not counted).
    pub skipped: u64,
    /// Files not published because `dicom_image` already has them (`--skip-indexed`).
    pub indexed: u64,
    /// Unreadable entries and non-UTF-8 paths (reported; the walk goes on).
    pub errors: u64,
    /// Messages the broker did not acknowledge (after librdkafka's retries).
    pub failed: u64,
    /// Bytes of the published files.
    pub bytes: u64,
}

impl BackfillSummary {
    pub fn plus(&self, o: &BackfillSummary) -> BackfillSummary {
        BackfillSummary {
            published: self.published + o.published,
            skipped: self.skipped + o.skipped,
            indexed: self.indexed + o.indexed,
            errors: self.errors + o.errors,
            failed: self.failed + o.failed,
            bytes: self.bytes + o.bytes,
        }
    }
}

/// What a backfill did, per source and in total.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub sources: Vec<(String, BackfillSummary)>,
    pub total: BackfillSummary,
    /// Stopped early by the cancellation token (SIGINT/SIGTERM): not everything was walked.
    pub interrupted: bool,
    /// `--skip-indexed` queries sent to the sink (one per batch of files, plus the probe).
    pub index_queries: u64,
    pub elapsed: Duration,
}

/// Each source's name and counters, kept for the summary once the runs are handed out.
pub(super) fn counters(runs: &[SourceRun]) -> Vec<(String, Arc<Counters>)> {
    runs.iter()
        .map(|r| (r.name.clone(), r.counters.clone()))
        .collect()
}

/// Show the progress line until `stop` fires: every source's counters, and the messages
/// awaiting acknowledgement (of at most `max`).
pub(super) fn spawn_progress(
    runs: &[SourceRun],
    permits: &Arc<Semaphore>,
    max: usize,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let counters: Vec<Arc<Counters>> = runs.iter().map(|r| r.counters.clone()).collect();
    let permits = permits.clone();
    tokio::spawn(progress::report(
        counters,
        move || max.saturating_sub(permits.available_permits()),
        stop,
    ))
}

/// The report of a finished run, logged per source and in total.
pub(super) fn finish(
    counters: &[(String, Arc<Counters>)],
    elapsed: Duration,
    index_queries: u64,
    cancel: &CancellationToken,
) -> Report {
    let sources: Vec<(String, BackfillSummary)> = counters
        .iter()
        .map(|(n, c)| (n.clone(), c.summary()))
        .collect();
    let total = sources
        .iter()
        .fold(BackfillSummary::default(), |acc, (_, s)| acc.plus(s));
    for (name, s) in &sources {
        tracing::info!(
            source = name.as_str(),
            published = s.published,
            skipped = s.skipped,
            indexed = s.indexed,
            errors = s.errors,
            failed = s.failed,
            bytes = s.bytes,
            "backfill source done"
        );
    }
    tracing::info!(
        published = total.published,
        skipped = total.skipped,
        indexed = total.indexed,
        errors = total.errors,
        failed = total.failed,
        bytes = total.bytes,
        elapsed_ms = elapsed.as_millis() as u64,
        interrupted = cancel.is_cancelled(),
        index_queries,
        "backfill done"
    );
    Report {
        sources,
        total,
        interrupted: cancel.is_cancelled(),
        index_queries,
        elapsed,
    }
}
