//! `backfill`: walk directories (a PACS export share, an archive) and publish one store
//! message per regular file.
//!
//! - **Sources.** A backfill walks one or more named sources (`--source NAME=PATH`, plain
//!   PATHs form the source `pipeline.source`); every message carries its source's name in
//!   `source`. Sources are walked concurrently, at most [`MAX_CONCURRENT_SOURCES`] at once,
//!   each by its own task with its own walker thread (directory reads and `stat` block, and a
//!   network share can be slow), all sharing one producer.
//! - **Bounded.** Per source, at most [`WALK_CHANNEL`] walked entries wait to be published;
//!   over all sources, at most `--max-unacked` messages await the broker's acknowledgement.
//!   `--rate` limits files per second per source (token bucket, small bursts: [`bucket`]).
//! - **Deterministic order, restartable.** Each directory's entries are walked sorted by
//!   file name, depth first, so a walk's order is fixed; `--checkpoint FILE` records per
//!   source how far everything was acknowledged and a resumed run skips that far
//!   ([`checkpoint`]). The sort holds one directory's entries in memory at a time.
//! - **Already indexed.** `--skip-indexed` asks ClickHouse which files `dicom_image` already
//!   has, one query per batch ([`indexed`]): the way to resume when no checkpoint was kept,
//!   or to add only new and changed files to an indexed archive.
//! - **Progress** ([`progress`]): the total number of entries comes from a counting pass
//!   that runs *alongside* the publishing walk, not before it. It only lists directories (no
//!   `stat`, no publishing, no rate limit), so on any share it finishes long before the
//!   publishing walk and the ETA appears early, while publishing starts at once instead of
//!   waiting for a second full listing of a possibly huge tree; the counted total also
//!   excludes what a checkpoint skips. `--no-count` turns it off when listing the share twice
//!   is too expensive (the line then shows no ETA).
//!
//! Unreadable entries and non-UTF-8 paths are counted as errors and reported, never fatal;
//! neither file paths nor their contents are logged (paths may hold patient names).

pub mod args;
pub mod bucket;
pub mod checkpoint;
pub mod indexed;
pub mod progress;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use thiserror::Error;
use time::OffsetDateTime;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::kafka::{self, KafkaClientError};
use crate::model::DicomStoreMeta;

pub use args::{ArgError, RateArg, SourceArg};
use checkpoint::{CheckpointError, CheckpointFile, Pos, Resume, SourceMark, Watermark};
use indexed::{Candidate, IndexLookup};
use progress::Counters;

/// Default of `--max-unacked`: most messages awaiting a broker acknowledgement at once.
pub const MAX_UNACKED: usize = 10_000;
/// Most sources walked at once; the others wait for a slot.
pub const MAX_CONCURRENT_SOURCES: usize = 8;
/// Walked entries waiting to be published, per source.
pub const WALK_CHANNEL: usize = 1024;
/// How often the checkpoint file is rewritten while running.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);
/// With `--skip-indexed`, how long a batch waits to fill before it is looked up anyway.
const BATCH_WAIT: Duration = Duration::from_millis(200);
/// Unreadable entries and failed publishes logged per source (all are counted): a share with thousands of them
/// must not flood the log.
const MAX_ERRORS_LOGGED: u64 = 20;
/// How long librdkafka may wait for room in its queue for one message.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum BackfillError {
    #[error(transparent)]
    Args(#[from] ArgError),
    #[error("source `{name}`: {path}: {source}")]
    ResolveRoot {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("source `{name}`: {path} is not valid UTF-8 (store messages carry UTF-8 paths)")]
    RootNotUtf8 { name: String, path: PathBuf },
    #[error(
        "--skip-indexed: querying dicom_image at {target}: {source} (is the sink's database up, \
         and was `dicom-pipeline schema` run for it?); stopped rather than republish unchecked"
    )]
    QueryIndexed {
        target: String,
        #[source]
        source: crate::sink::SinkError,
    },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("creating the producer: {0}")]
    CreateProducer(#[source] KafkaClientError),
    #[error("{0}")]
    Unreachable(#[source] KafkaClientError),
    #[error("stopped before the broker answered; nothing was published")]
    StoppedBeforeStart,
    #[error("source `{name}`: its walk stopped unexpectedly: {source}")]
    JoinWalk {
        name: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl BackfillError {
    /// Whether running the same command again may succeed without changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            BackfillError::QueryIndexed { source, .. } => source.is_retryable(),
            BackfillError::Checkpoint(e) => e.is_retryable(),
            BackfillError::CreateProducer(_)
            | BackfillError::JoinWalk { .. }
            | BackfillError::Unreachable(_)
            | BackfillError::StoppedBeforeStart => true,
            BackfillError::Args(_)
            | BackfillError::ResolveRoot { .. }
            | BackfillError::RootNotUtf8 { .. } => false,
        }
    }
}

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

/// What a backfill did, per source and in total.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub sources: Vec<(String, BackfillSummary)>,
    pub total: BackfillSummary,
    /// Stopped early by the cancellation token (SIGINT/SIGTERM): not everything was walked.
    pub interrupted: bool,
    /// `--skip-indexed` queries sent to ClickHouse (one per batch of files, plus the probe).
    pub index_queries: u64,
    pub elapsed: Duration,
}

/// Publish a store message for every regular file under `paths`, as the source
/// `pipeline.source`, with the default options.
pub async fn backfill(cfg: &Config, paths: &[PathBuf]) -> Result<BackfillSummary, BackfillError> {
    let sources = args::plan_sources(&cfg.pipeline.source, paths, &[], &[])?;
    let report = run(cfg, &Options::new(sources), CancellationToken::new()).await?;
    Ok(report.total)
}

/// What the walker found.
#[derive(Debug)]
enum Walked {
    File {
        pos: Pos,
        candidate: Candidate,
    },
    NotFile {
        pos: Option<Pos>,
    },
    Unreadable {
        pos: Option<Pos>,
        kind: Option<std::io::ErrorKind>,
    },
    NotUtf8,
}

/// A source's watermark, shared by its task and the checkpoint writer.
type SharedMark = Arc<Mutex<Watermark<Pos>>>;

/// One source, resolved.
struct SourceRun {
    name: String,
    /// Absolute.
    roots: Vec<PathBuf>,
    rate: Option<f64>,
    /// Resume after this position (from the checkpoint).
    start: Option<Pos>,
    counters: Arc<Counters>,
    mark: SharedMark,
}

/// What every source task shares.
struct Shared {
    producer: FutureProducer,
    topic: String,
    tenant: String,
    permits: Arc<Semaphore>,
    lookup: Option<IndexLookup>,
    count: bool,
    slots: Semaphore,
    /// Stops every source: the caller's token, or a source's fatal error.
    stop: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run a backfill until every source is walked and every message settled, or until `cancel`
/// fires (then what was sent is still awaited, and the checkpoint written).
pub async fn run(
    cfg: &Config,
    opts: &Options,
    cancel: CancellationToken,
) -> Result<Report, BackfillError> {
    let started = Instant::now();
    if opts.sources.is_empty() {
        return Err(ArgError::NoSources.into());
    }
    if opts.max_unacked == 0 {
        return Err(ArgError::MaxUnacked.into());
    }
    let resolved = resolve_roots(&opts.sources)?;
    let fingerprint = checkpoint::fingerprint(&cfg.kafka.input_topic, &resolved);
    let starts = match &opts.checkpoint {
        Some(path) if !opts.reset_checkpoint => {
            resume_positions(path, &fingerprint, &cfg.kafka.input_topic, &resolved)?
        }
        _ => vec![None; resolved.len()],
    };
    // The arguments are sound: now the broker must answer (within ~10 s, named if not).
    tokio::select! {
        r = crate::kafka::reach_async(&cfg.kafka) => r.map_err(BackfillError::Unreachable)?,
        _ = cancel.cancelled() => return Err(BackfillError::StoppedBeforeStart),
    }

    let lookup = if opts.skip_indexed {
        let l = IndexLookup::new(cfg);
        l.probe()
            .await
            .map_err(|source| BackfillError::QueryIndexed {
                target: l.target.clone(),
                source,
            })?;
        Some(l)
    } else {
        None
    };

    let runs: Vec<SourceRun> = resolved
        .iter()
        .zip(&opts.sources)
        .zip(starts)
        .map(|(((name, roots), s), start)| SourceRun {
            name: name.clone(),
            roots: roots.clone(),
            rate: s.rate,
            mark: Arc::new(Mutex::new(Watermark::new(start.clone()))),
            start,
            counters: Arc::new(Counters::default()),
        })
        .collect();

    // The checkpoint, written once now (so an unwritable path fails before any publish).
    let snapshot = {
        let marks: Vec<(String, Vec<PathBuf>, SharedMark)> = runs
            .iter()
            .map(|r| (r.name.clone(), r.roots.clone(), r.mark.clone()))
            .collect();
        let topic = cfg.kafka.input_topic.clone();
        move || CheckpointFile {
            version: checkpoint::FORMAT_VERSION,
            fingerprint: fingerprint.clone(),
            topic: topic.clone(),
            sources: marks
                .iter()
                .map(|(name, roots, mark)| SourceMark {
                    name: name.clone(),
                    roots: roots.clone(),
                    done: lock(mark).position(),
                })
                .collect(),
            updated_at: OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        }
    };
    let snapshot: Arc<dyn Fn() -> CheckpointFile + Send + Sync> = Arc::new(snapshot);
    if let Some(path) = &opts.checkpoint {
        checkpoint::save(path, &snapshot())?;
    }

    let producer = kafka::producer(&cfg.kafka, kafka::BACKFILL_LINGER_MS)
        .map_err(BackfillError::CreateProducer)?;
    let stop = cancel.child_token();
    let shared = Arc::new(Shared {
        producer: producer.clone(),
        topic: cfg.kafka.input_topic.clone(),
        tenant: cfg.pipeline.tenant_id.clone(),
        permits: Arc::new(Semaphore::new(opts.max_unacked)),
        lookup,
        count: opts.count,
        slots: Semaphore::new(MAX_CONCURRENT_SOURCES),
        stop: stop.clone(),
    });

    let reporter_stop = CancellationToken::new();
    let reporter = {
        let counters: Vec<Arc<Counters>> = runs.iter().map(|r| r.counters.clone()).collect();
        let permits = shared.permits.clone();
        let max = opts.max_unacked;
        tokio::spawn(progress::report(
            counters,
            move || max.saturating_sub(permits.available_permits()),
            reporter_stop.clone(),
        ))
    };
    let writer = opts.checkpoint.clone().map(|path| {
        let snapshot = snapshot.clone();
        let stop = reporter_stop.clone();
        tokio::spawn(async move {
            let mut last: Option<Vec<SourceMark>> = None;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(CHECKPOINT_INTERVAL) => {}
                    _ = stop.cancelled() => break,
                }
                let file = snapshot();
                if last.as_ref() == Some(&file.sources) {
                    continue;
                }
                let marks = file.sources.clone();
                let path = path.clone();
                match tokio::task::spawn_blocking(move || checkpoint::save(&path, &file)).await {
                    Ok(Ok(())) => last = Some(marks),
                    Ok(Err(e)) => tracing::warn!(error = %e, "checkpoint not written; retrying"),
                    Err(e) => tracing::warn!(error = %e, "checkpoint writer failed; retrying"),
                }
            }
        })
    });

    let counters: Vec<(String, Arc<Counters>)> = runs
        .iter()
        .map(|r| (r.name.clone(), r.counters.clone()))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for run in runs {
        let shared = shared.clone();
        tasks.spawn(async move {
            let name = run.name.clone();
            let result = run_source(&shared, run).await;
            if result.is_err() {
                shared.stop.cancel();
            }
            (name, result)
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (name, result) = match joined {
            Ok(done) => done,
            Err(source) => {
                stop.cancel();
                let name = "(a source)".to_string();
                let e = BackfillError::JoinWalk {
                    name: name.clone(),
                    source,
                };
                (name, Err(e))
            }
        };
        if let Err(e) = result {
            tracing::error!(source = name.as_str(), error = %e, "source stopped");
            first_error.get_or_insert(e);
        }
    }
    // Everything sent was awaited by its source; flush what librdkafka may still hold.
    let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(30))).await;
    reporter_stop.cancel();
    let _ = reporter.await;
    if let Some(w) = writer {
        let _ = w.await;
    }
    if let Some(path) = &opts.checkpoint {
        let file = snapshot();
        let path = path.clone();
        let saved = tokio::task::spawn_blocking(move || checkpoint::save(&path, &file)).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e.into());
            }
            Err(e) => tracing::error!(error = %e, "final checkpoint write failed"),
        }
    }

    let sources: Vec<(String, BackfillSummary)> = counters
        .iter()
        .map(|(n, c)| (n.clone(), c.summary()))
        .collect();
    let total = sources
        .iter()
        .fold(BackfillSummary::default(), |acc, (_, s)| acc.plus(s));
    let elapsed = started.elapsed();
    let index_queries = shared.lookup.as_ref().map_or(0, IndexLookup::queries);
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
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(Report {
        sources,
        total,
        interrupted: cancel.is_cancelled(),
        index_queries,
        elapsed,
    })
}

/// Each source's name and absolute roots; a root must exist and be UTF-8.
fn resolve_roots(sources: &[Source]) -> Result<Vec<(String, Vec<PathBuf>)>, BackfillError> {
    let mut resolved = Vec::new();
    for s in sources {
        let mut roots = Vec::new();
        for r in &s.roots {
            let err = |source| BackfillError::ResolveRoot {
                name: s.name.clone(),
                path: r.clone(),
                source,
            };
            let abs = std::path::absolute(r).map_err(err)?;
            if abs.to_str().is_none() {
                return Err(BackfillError::RootNotUtf8 {
                    name: s.name.clone(),
                    path: r.clone(),
                });
            }
            // A mistyped or unmounted root is an error of the command, not an unreadable
            // entry of the walk.
            std::fs::metadata(&abs).map_err(err)?;
            roots.push(abs);
        }
        resolved.push((s.name.clone(), roots));
    }
    Ok(resolved)
}

/// Where each source resumes, from the checkpoint at `path` (none yet: from the start). A
/// checkpoint of other sources, paths or topic is refused.
fn resume_positions(
    path: &Path,
    fingerprint: &str,
    topic: &str,
    resolved: &[(String, Vec<PathBuf>)],
) -> Result<Vec<Option<Pos>>, BackfillError> {
    let Some(file) = checkpoint::load(path)? else {
        return Ok(vec![None; resolved.len()]);
    };
    let mismatch = |recorded: String| CheckpointError::Mismatch {
        path: path.into(),
        recorded,
        given: format!("{} to {topic}", checkpoint::describe(resolved)),
    };
    if file.fingerprint != fingerprint {
        let recorded: Vec<(String, Vec<PathBuf>)> = file
            .sources
            .iter()
            .map(|m| (m.name.clone(), m.roots.clone()))
            .collect();
        let recorded = format!("{} to {}", checkpoint::describe(&recorded), file.topic);
        return Err(mismatch(recorded).into());
    }
    let mut starts = Vec::new();
    for (name, roots) in resolved {
        let done = file
            .sources
            .iter()
            .find(|m| &m.name == name)
            .and_then(|m| m.done.clone());
        if done.as_ref().is_some_and(|p| p.root >= roots.len()) {
            return Err(mismatch(format!("a position past the roots of `{name}`")).into());
        }
        starts.push(done);
    }
    tracing::info!(
        sources = resolved.len(),
        resumed = starts.iter().filter(|s| s.is_some()).count(),
        "resuming from the checkpoint"
    );
    Ok(starts)
}

/// A publish in flight: resolves to (sequence number, file size, outcome).
type Delivery = BoxFuture<'static, (u64, u64, Result<(), KafkaError>)>;

/// One source's publishing side: its deliveries in flight and where their outcomes go.
struct Publisher {
    /// The source's name (for the log).
    name: String,
    pending: FuturesUnordered<Delivery>,
    counters: Arc<Counters>,
    mark: SharedMark,
}

impl Publisher {
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
    async fn drive<T>(
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
}

/// Walk and publish one source.
async fn run_source(shared: &Shared, run: SourceRun) -> Result<(), BackfillError> {
    let stop = &shared.stop;
    let slot = tokio::select! {
        slot = shared.slots.acquire() => slot.ok(),
        _ = stop.cancelled() => None,
    };
    let Some(_slot) = slot else {
        return Ok(());
    };
    let done_counting = CancellationToken::new();
    let _stop_counting = done_counting.clone().drop_guard();
    if shared.count {
        let (roots, start, counters, done) = (
            run.roots.clone(),
            run.start.clone(),
            run.counters.clone(),
            done_counting.clone(),
        );
        tokio::task::spawn_blocking(move || count(&roots, start.as_ref(), &counters, &done));
    }
    let (tx, mut rx) = mpsc::channel(WALK_CHANNEL);
    let walker = {
        let (roots, start) = (run.roots.clone(), run.start.clone());
        tokio::task::spawn_blocking(move || walk(&roots, start.as_ref(), &tx))
    };
    let mut bucket = run
        .rate
        .map(|r| bucket::TokenBucket::new(r, Instant::now()));
    let mut p = Publisher {
        name: run.name.clone(),
        pending: FuturesUnordered::new(),
        counters: run.counters.clone(),
        mark: run.mark.clone(),
    };
    let c = &run.counters;
    let mut failure = None;
    'walk: while let Some(batch) = p.next_batch(&mut rx, shared.lookup.is_some(), stop).await {
        let candidates: Vec<Candidate> = batch
            .iter()
            .filter_map(|w| match w {
                Walked::File { candidate, .. } => Some(candidate.clone()),
                _ => None,
            })
            .collect();
        let flags = match &shared.lookup {
            Some(l) if !candidates.is_empty() => {
                match p.drive(l.indexed(&candidates), stop).await {
                    None => break 'walk,
                    Some(Ok(flags)) => flags,
                    Some(Err(source)) => {
                        failure = Some(BackfillError::QueryIndexed {
                            target: l.target.clone(),
                            source,
                        });
                        break 'walk;
                    }
                }
            }
            _ => Vec::new(),
        };
        let mut flags = flags.into_iter();
        for w in batch {
            if stop.is_cancelled() {
                break 'walk;
            }
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
                        continue;
                    }
                    if !publish(shared, &run, &mut p, &mut bucket, pos, candidate).await {
                        break 'walk;
                    }
                }
            }
        }
    }
    // Stopped or finished: no more entries (the walker ends at its next send), and every
    // message sent is awaited (bounded by `kafka.message_timeout_ms`).
    drop(rx);
    while let Some(done) = p.pending.next().await {
        p.settle(done);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if !stop.is_cancelled() {
        walker.await.map_err(|source| BackfillError::JoinWalk {
            name: run.name.clone(),
            source,
        })?;
    }
    Ok(())
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
    p: &mut Publisher,
    bucket: &mut Option<bucket::TokenBucket>,
    pos: Pos,
    file: Candidate,
) -> bool {
    let stop = &shared.stop;
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
    let seq = lock(&run.mark).sent(pos);
    let producer = shared.producer.clone();
    let topic = shared.topic.clone();
    let size = meta.file_size;
    p.pending.push(Box::pin(async move {
        let record = FutureRecord::to(&topic)
            .key(&meta.trace_id)
            .payload(&payload);
        let result = producer
            .send(record, QUEUE_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(e, _)| e);
        drop(permit);
        (seq, size, result)
    }));
    true
}

/// Modification time in epoch milliseconds, if the filesystem has one.
fn mtime_ms(md: &std::fs::Metadata) -> Option<i64> {
    let t = md.modified().ok()?;
    let ms = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).ok()?,
        Err(before) => -i64::try_from(before.duration().as_millis()).ok()?,
    };
    Some(ms)
}

/// Where root `index` resumes: `None` = from its start, `Some(None)` = skip it entirely
/// (the watermark is in a later root), `Some(Some(rel))` = after `rel`.
fn root_resume(index: usize, start: Option<&Pos>) -> Option<Option<&Path>> {
    match start {
        Some(p) if p.root > index => Some(None),
        Some(p) if p.root == index => Some(Some(p.path.as_path())),
        _ => None,
    }
}

/// The publishing walk of one source (blocking: runs on the blocking pool), in the
/// deterministic order; ends early when the receiver is gone.
fn walk(roots: &[PathBuf], start: Option<&Pos>, tx: &mpsc::Sender<Walked>) {
    for (index, root) in roots.iter().enumerate() {
        let resume = match root_resume(index, start) {
            Some(None) => continue,
            Some(Some(rel)) => Some(rel),
            None => None,
        };
        let mut it = walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter();
        while let Some(entry) = it.next() {
            let walked = match entry {
                Err(e) => Walked::Unreadable {
                    pos: None,
                    kind: e.io_error().map(|io| io.kind()),
                },
                Ok(e) => {
                    let is_dir = e.file_type().is_dir();
                    let rel = e.path().strip_prefix(root).unwrap_or(e.path());
                    if resumed_past(&mut it, rel, is_dir, resume) {
                        continue;
                    }
                    if is_dir {
                        continue;
                    }
                    let pos = rel.to_str().map(|r| Pos {
                        root: index,
                        path: PathBuf::from(r),
                    });
                    // Follow a symlink to see what it points at; `run` decides whether its
                    // target is inside a storage root.
                    match std::fs::metadata(e.path()) {
                        Err(err) => Walked::Unreadable {
                            pos,
                            kind: Some(err.kind()),
                        },
                        Ok(md) if !md.is_file() => Walked::NotFile { pos },
                        Ok(md) => match (pos, e.path().to_str()) {
                            (Some(pos), Some(path)) => Walked::File {
                                pos,
                                candidate: Candidate {
                                    file_path: path.to_string(),
                                    size: md.len(),
                                    mtime: mtime_ms(&md),
                                },
                            },
                            _ => Walked::NotUtf8,
                        },
                    }
                }
            };
            if tx.blocking_send(walked).is_err() {
                return;
            }
        }
    }
}

/// Whether the checkpoint `resume` (a path relative to the root) says this entry was already
/// published; a directory wholly before it is not descended into.
fn resumed_past(
    it: &mut walkdir::IntoIter,
    rel: &Path,
    is_dir: bool,
    resume: Option<&Path>,
) -> bool {
    let Some(at) = resume else {
        return false;
    };
    match checkpoint::resume_action(rel, is_dir, at) {
        Resume::Prune => {
            it.skip_current_dir();
            true
        }
        Resume::Skip => true,
        Resume::Visit => false,
    }
}

/// The counting pass of one source (blocking): entries the walk will hand over, by listing
/// directories only (no `stat`), skipping what the checkpoint skips.
fn count(roots: &[PathBuf], start: Option<&Pos>, counters: &Counters, done: &CancellationToken) {
    let mut n = 0u64;
    for (index, root) in roots.iter().enumerate() {
        let resume = match root_resume(index, start) {
            Some(None) => continue,
            Some(Some(rel)) => Some(rel),
            None => None,
        };
        let mut it = walkdir::WalkDir::new(root).follow_links(false).into_iter();
        while let Some(entry) = it.next() {
            if n.is_multiple_of(1024) && done.is_cancelled() {
                return;
            }
            let Ok(e) = entry else {
                n += 1;
                continue;
            };
            let is_dir = e.file_type().is_dir();
            let rel = e.path().strip_prefix(root).unwrap_or(e.path());
            if resumed_past(&mut it, rel, is_dir, resume) {
                continue;
            }
            if !is_dir {
                n += 1;
            }
        }
    }
    counters.total.store(n, Ordering::Relaxed);
    counters.counted.store(true, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_walk_yields_exactly_what_follows_the_position() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for p in ["a/1", "a/2", "b/c/1", "b/c/2", "b/d", "c", "z/9"] {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, p).unwrap();
        }
        std::fs::create_dir_all(root.join("e")).unwrap(); // empty directory: nothing
        let walked = |start: Option<Pos>| {
            let (tx, mut rx) = mpsc::channel(100);
            walk(&[root.to_path_buf()], start.as_ref(), &tx);
            drop(tx);
            let mut out = Vec::new();
            while let Ok(w) = rx.try_recv() {
                match w {
                    Walked::File { pos, candidate } => {
                        assert!(candidate.mtime.is_some());
                        assert_eq!(candidate.size as usize, pos.path.to_str().unwrap().len());
                        out.push(pos.path.to_str().unwrap().to_string());
                    }
                    other => panic!("{other:?}"),
                }
            }
            let counters = Counters::default();
            count(
                &[root.to_path_buf()],
                start.as_ref(),
                &counters,
                &CancellationToken::new(),
            );
            assert_eq!(counters.total.load(Ordering::Relaxed), out.len() as u64);
            out
        };
        let all = walked(None);
        assert_eq!(all, ["a/1", "a/2", "b/c/1", "b/c/2", "b/d", "c", "z/9"]);
        for (i, at) in all.iter().enumerate() {
            let rest = walked(Some(Pos {
                root: 0,
                path: at.into(),
            }));
            assert_eq!(rest, all[i + 1..], "after {at}");
        }
        // A later root's watermark skips this root entirely.
        assert!(walked(Some(Pos {
            root: 1,
            path: "".into()
        }))
        .is_empty());
    }

    #[test]
    fn options_default_to_the_existing_bounds() {
        let o = Options::new(vec![]);
        assert_eq!(o.max_unacked, MAX_UNACKED);
        assert!(o.count && !o.skip_indexed && o.checkpoint.is_none());
    }
}
