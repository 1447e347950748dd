//! Publishing one source's walked entries: each entry is counted, skipped (not a file,
//! already indexed) or published as a store message once the rate limit and a permit for an
//! unacknowledged message allow, and each delivery is settled as the broker answers. The
//! source's watermark moves with both.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::KafkaError;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::checkpoint::Pos;
use super::indexed::{self, Candidate, IndexLookup};
use super::progress::Counters;
use super::shared::{lock, Shared, SharedMark, SourceRun};
use super::walk::Walked;
use super::{bucket, BackfillError};
use crate::model::DicomStoreMeta;

/// With `--skip-indexed`, how long a batch waits to fill before it is looked up anyway.
const BATCH_WAIT: Duration = Duration::from_millis(200);
/// Unreadable entries and failed publishes logged per source (all are counted): a share with thousands of them
/// must not flood the log.
const MAX_ERRORS_LOGGED: u64 = 20;
/// How long librdkafka may wait for room in its queue for one message.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// A publish in flight: resolves to (sequence number, file size, outcome).
type Delivery = BoxFuture<'static, (u64, u64, Result<(), KafkaError>)>;

/// For each file of `batch`, in order, whether it is already indexed (empty without a
/// lookup or without files). Deliveries are settled while the query runs; `Ok(None)` if
/// `stop` fired first.
async fn indexed_flags(
    lookup: Option<&IndexLookup>,
    p: &mut Deliveries,
    batch: &[Walked],
    stop: &CancellationToken,
) -> Result<Option<Vec<bool>>, BackfillError> {
    let Some(l) = lookup else {
        return Ok(Some(Vec::new()));
    };
    let candidates: Vec<&Candidate> = batch
        .iter()
        .filter_map(|w| match w {
            Walked::File { candidate, .. } => Some(candidate),
            _ => None,
        })
        .collect();
    if candidates.is_empty() {
        return Ok(Some(Vec::new()));
    }
    match p.drive(l.indexed(&candidates), stop).await {
        None => Ok(None),
        Some(Ok(flags)) => Ok(Some(flags)),
        Some(Err(source)) => Err(BackfillError::QueryIndexed {
            target: l.target.clone(),
            source,
        }),
    }
}

/// One source's publishing side: its deliveries in flight and where their outcomes go.
pub(super) struct Deliveries {
    /// The source's name (for the log).
    name: String,
    pending: FuturesUnordered<Delivery>,
    counters: Arc<Counters>,
    mark: SharedMark,
}

impl Deliveries {
    pub(super) fn new(run: &SourceRun) -> Deliveries {
        Deliveries {
            name: run.name.clone(),
            pending: FuturesUnordered::new(),
            counters: run.counters.clone(),
            mark: run.mark.clone(),
        }
    }

    fn settle(&mut self, (seq, size, result): (u64, u64, Result<(), KafkaError>)) {
        match result {
            Ok(()) => {
                lock(&self.mark).acked(seq);
                self.counters.published.fetch_add(1, Ordering::Relaxed);
                self.counters.bytes.fetch_add(size, Ordering::Relaxed);
            }
            Err(e) => {
                lock(&self.mark).failed(seq);
                let n = self.counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
                if n <= MAX_ERRORS_LOGGED {
                    tracing::warn!(source = self.name.as_str(), error = %e, "publish failed");
                } else if n == MAX_ERRORS_LOGGED + 1 {
                    tracing::warn!(
                        source = self.name.as_str(),
                        "further failed publishes of this source are counted, not logged"
                    );
                }
            }
        }
    }

    /// Wait for `fut` while settling deliveries as they complete (a delivery's permit is
    /// released only when it is settled, so every wait must keep settling). `None` if `stop`
    /// fired first.
    pub(super) async fn drive<T>(
        &mut self,
        fut: impl std::future::Future<Output = T>,
        stop: &CancellationToken,
    ) -> Option<T> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                out = &mut fut => return Some(out),
                Some(done) = self.pending.next(), if !self.pending.is_empty() => self.settle(done),
            }
        }
    }

    /// The next entries: at least one (waiting for it), then what is ready — with `fill`,
    /// waiting up to [`BATCH_WAIT`] for a full lookup batch. `None` when the walk is over or
    /// `stop` fired.
    async fn next_batch(
        &mut self,
        rx: &mut mpsc::Receiver<Walked>,
        fill: bool,
        stop: &CancellationToken,
    ) -> Option<Vec<Walked>> {
        let first = self.drive(rx.recv(), stop).await??;
        let mut files = 0;
        let mut bytes = 0;
        let mut batch = Vec::new();
        let mut add = |w: Walked, batch: &mut Vec<Walked>| {
            if let Walked::File { candidate, .. } = &w {
                files += 1;
                bytes += indexed::batch_cost(&candidate.file_path);
            }
            batch.push(w);
            files < indexed::MAX_BATCH && bytes < indexed::MAX_BATCH_BYTES
        };
        if !add(first, &mut batch) {
            return Some(batch);
        }
        let deadline = tokio::time::Instant::now() + BATCH_WAIT;
        loop {
            let next = match rx.try_recv() {
                Ok(w) => Some(w),
                Err(mpsc::error::TryRecvError::Empty) if fill => {
                    match self
                        .drive(tokio::time::timeout_at(deadline, rx.recv()), stop)
                        .await
                    {
                        Some(Ok(Some(w))) => Some(w),
                        _ => None,
                    }
                }
                Err(_) => None,
            };
            let Some(w) = next else {
                return Some(batch);
            };
            if !add(w, &mut batch) {
                return Some(batch);
            }
        }
    }

    /// Wait for every delivery in flight, settling each.
    pub(super) async fn settle_all(&mut self) {
        while let Some(done) = self.pending.next().await {
            self.settle(done);
        }
    }
}

/// Publish what the walk hands over, batch by batch, until the walk is over or `stop` fires;
/// the `--skip-indexed` lookup failing ends it with an error.
pub(super) async fn publish_walked(
    shared: &Shared,
    run: &SourceRun,
    p: &mut Deliveries,
    bucket: &mut Option<bucket::TokenBucket>,
    rx: &mut mpsc::Receiver<Walked>,
) -> Result<(), BackfillError> {
    let stop = &shared.stop;
    while let Some(batch) = p.next_batch(rx, shared.lookup.is_some(), stop).await {
        let Some(flags) = indexed_flags(shared.lookup.as_ref(), p, &batch, stop).await? else {
            return Ok(());
        };
        let mut flags = flags.into_iter();
        for w in batch {
            if stop.is_cancelled() {
                return Ok(());
            }
            if !handle(shared, run, p, bucket, w, &mut flags).await {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Count, skip or publish one walked entry (`flags`: the batch's indexed flags, one per
/// file). `false` if stopped.
async fn handle(
    shared: &Shared,
    run: &SourceRun,
    p: &mut Deliveries,
    bucket: &mut Option<bucket::TokenBucket>,
    w: Walked,
    flags: &mut std::vec::IntoIter<bool>,
) -> bool {
    let c = &run.counters;
    match w {
        Walked::NotUtf8 => {
            let n = c.errors.fetch_add(1, Ordering::Relaxed) + 1;
            if n <= MAX_ERRORS_LOGGED {
                tracing::warn!(
                    source = run.name.as_str(),
                    "skipping a path that is not valid UTF-8"
                );
            }
            log_error_cap(&run.name, n);
        }
        Walked::Unreadable { pos, kind } => {
            let n = c.errors.fetch_add(1, Ordering::Relaxed) + 1;
            if n <= MAX_ERRORS_LOGGED {
                // The kind only: walkdir's error text holds the path.
                let kind = kind.map_or("walk error".to_string(), |k| k.to_string());
                tracing::warn!(
                    source = run.name.as_str(),
                    error = kind.as_str(),
                    "cannot read directory entry"
                );
            }
            log_error_cap(&run.name, n);
            if let Some(pos) = pos {
                lock(&run.mark).done(pos);
            }
        }
        Walked::NotFile { pos } => {
            c.skipped.fetch_add(1, Ordering::Relaxed);
            if let Some(pos) = pos {
                lock(&run.mark).done(pos);
            }
        }
        Walked::File { pos, candidate } => {
            if flags.next() == Some(true) {
                c.indexed.fetch_add(1, Ordering::Relaxed);
                lock(&run.mark).done(pos);
                return true;
            }
            if !publish(shared, run, p, bucket, pos, candidate).await {
                return false;
            }
        }
    }
    true
}

/// Say once per source that further errors are only counted.
fn log_error_cap(source: &str, errors: u64) {
    if errors == MAX_ERRORS_LOGGED {
        tracing::warn!(
            source,
            logged = MAX_ERRORS_LOGGED,
            "further unreadable entries of this source are counted, not logged"
        );
    }
}

/// Publish one file: wait for the rate limit and a permit, then send. `false` if stopped.
async fn publish(
    shared: &Shared,
    run: &SourceRun,
    p: &mut Deliveries,
    bucket: &mut Option<bucket::TokenBucket>,
    pos: Pos,
    file: Candidate,
) -> bool {
    let stop = &shared.stop;
    if let Some(b) = bucket {
        while let Some(wait) = b.take(Instant::now()) {
            if p.drive(tokio::time::sleep(wait), stop).await.is_none() {
                return false;
            }
        }
    }
    let Some(Ok(permit)) = p.drive(shared.permits.clone().acquire_owned(), stop).await else {
        return false;
    };
    // Stamped once the rate limit and a permit let it go: `received_at` is when the store
    // message was published, and a latency run measures from there.
    let meta = DicomStoreMeta {
        trace_id: uuid::Uuid::new_v4().to_string(),
        tenant_id: shared.tenant.clone(),
        source: run.name.clone(),
        file_path: file.file_path,
        file_size: file.size,
        file_mtime: file.mtime,
        received_at: OffsetDateTime::now_utc(),
        patient_id: None,
        study_uid: None,
        series_uid: None,
        sop_uid: None,
    };
    let payload = match serde_json::to_vec(&meta) {
        Ok(p) => p,
        Err(e) => {
            run.counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "cannot encode store message");
            lock(&run.mark).done(pos);
            return true;
        }
    };
    let seq = lock(&run.mark).sent(pos);
    let producer = shared.producer.clone();
    let topic = shared.topic.clone();
    let size = meta.file_size;
    p.pending.push(Box::pin(async move {
        let result = producer
            .send(&topic, Some(&meta.trace_id), &payload, QUEUE_TIMEOUT)
            .await
            .map(|_| ());
        drop(permit);
        (seq, size, result)
    }));
    true
}
