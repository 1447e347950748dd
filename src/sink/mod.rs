//! Sinks: where indexed rows go, behind one seam.
//!
//! Workers hand each finished message to a [`SinkHandle`] and wait for its acknowledgement;
//! only then is the message's offset done. One [`batcher`] task owns the buffer (fed by a
//! bounded channel, so a slow sink pushes back on the workers), flushes by rows / bytes / time,
//! coalesces series state to one record per series per flush, writes the batch through a
//! [`Sink`] backend with retry and backoff, publishes the coalesced state records, and only
//! then acknowledges every message of the batch. Nothing is acknowledged that was not written;
//! a batch is never dropped — on a hard stop its messages stay unacknowledged and are
//! redelivered after restart.
//!
//! The workers and the batcher never know which backend they talk to: [`Backend`] is the
//! one concrete [`Sink`] the pipeline builds from `sink.backend`.
//!
//! - `batcher.rs`: the buffer-owning task (backend-agnostic).
//! - `clickhouse/`: the ClickHouse backend (schema, service).
//! - `doris/`: the Apache Doris backend (schema over MySQL, Stream Load, service).

pub mod batcher;
pub mod clickhouse;
pub mod doris;
pub mod sql;

use std::future::Future;

use futures::FutureExt;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, SinkBackend};
use crate::model::{DlqRecord, ImageRecord, StateRecord, StoreRecord};

/// A failed sink operation, named after the operation. Backend-neutral: the backend's own
/// error travels inside a [`BackendError`] with whether a retry may succeed.
#[derive(Debug, Error)]
pub enum SinkError {
    #[error("writing {table} to {backend}: {source}")]
    Write {
        backend: &'static str,
        table: &'static str,
        #[source]
        source: BackendError,
    },
    #[error("querying {backend} for {what}: {source}")]
    Query {
        backend: &'static str,
        what: &'static str,
        #[source]
        source: BackendError,
    },
    #[error("applying the {backend} schema at {target}: {source}")]
    Schema {
        backend: &'static str,
        target: String,
        #[source]
        source: BackendError,
    },
    #[error("cannot reach {backend} at {addr}: {detail}")]
    Ping {
        backend: &'static str,
        addr: String,
        detail: String,
    },
    #[error("the sink has shut down")]
    Closed,
    #[error("the sink stopped before this message was written")]
    Abandoned,
}

impl SinkError {
    /// Whether retrying the same write may succeed (network trouble, timeouts, server
    /// overload). Permanent errors (schema mismatch, bad data, bad credentials) are retried
    /// too — rows are never dropped — but are logged as errors because they need an operator.
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Write { source, .. }
            | SinkError::Query { source, .. }
            | SinkError::Schema { source, .. } => source.is_retryable(),
            SinkError::Ping { .. } => true,
            SinkError::Closed | SinkError::Abandoned => false,
        }
    }
}

/// A backend's own error, carried through the seam with the backend's verdict on retrying.
/// It displays as the backend's error and has that error's source.
#[derive(Debug)]
pub struct BackendError {
    retryable: bool,
    inner: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl BackendError {
    pub fn new<E: std::error::Error + Send + Sync + 'static>(
        inner: E,
        retryable: bool,
    ) -> BackendError {
        BackendError {
            retryable,
            inner: Box::new(inner),
        }
    }

    /// Whether retrying the operation may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The backend's own error, for a caller that knows the backend (its tests, say).
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.inner.downcast_ref()
    }

    /// The backend's own error, if it is an `E`.
    pub fn downcast<E: std::error::Error + 'static>(self) -> Result<E, BackendError> {
        match self.inner.downcast::<E>() {
            Ok(e) => Ok(*e),
            Err(inner) => Err(BackendError {
                retryable: self.retryable,
                inner,
            }),
        }
    }
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

/// The configured backend (`sink.backend`), one type for the batcher whichever it is.
#[derive(Clone)]
pub enum Backend {
    ClickHouse(Box<clickhouse::ClickHouseSink>),
    Doris(Box<doris::DorisSink>),
}

impl Backend {
    /// The backend `cfg.sink.backend` selects, with its client (created once; clones share it).
    pub fn new(cfg: &Config) -> Backend {
        match cfg.sink.backend {
            SinkBackend::ClickHouse => {
                Backend::ClickHouse(Box::new(clickhouse::ClickHouseSink::new(&cfg.clickhouse)))
            }
            SinkBackend::Doris => Backend::Doris(Box::new(doris::DorisSink::new(&cfg.doris))),
        }
    }
}

impl Backend {
    /// Whether the backend answers (the readiness probe): ClickHouse runs `SELECT 1`; Doris
    /// gets a TCP connection to its FE's HTTP port (a load needs a BE too, which only a load
    /// can show). Bounded by `timeout`.
    pub async fn ping(&self, timeout: std::time::Duration) -> Result<(), SinkError> {
        let (backend, addr, probe) = match self {
            Backend::ClickHouse(s) => ("ClickHouse", s.url().to_string(), s.ping().boxed()),
            Backend::Doris(s) => ("Doris", s.fe_addr().to_string(), s.ping().boxed()),
        };
        match tokio::time::timeout(timeout, probe).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(detail)) => Err(SinkError::Ping {
                backend,
                addr,
                detail,
            }),
            Err(_) => Err(SinkError::Ping {
                backend,
                addr,
                detail: format!("no answer within {} ms", timeout.as_millis()),
            }),
        }
    }
}

impl Sink for Backend {
    async fn write(&self, batch: &Batch) -> Result<(), SinkError> {
        match self {
            Backend::ClickHouse(s) => s.write(batch).await,
            Backend::Doris(s) => s.write(batch).await,
        }
    }

    async fn indexed_files(
        &self,
        tenant: &str,
        paths: &[&str],
    ) -> Result<Vec<IndexedFile>, SinkError> {
        match self {
            Backend::ClickHouse(s) => s.indexed_files(tenant, paths).await,
            Backend::Doris(s) => s.indexed_files(tenant, paths).await,
        }
    }
}

impl Backend {
    /// Where the backend's tables are, for messages: its address and database.
    pub fn target(cfg: &Config) -> String {
        match cfg.sink.backend {
            SinkBackend::ClickHouse => {
                format!(
                    "{} database {}",
                    cfg.clickhouse.url, cfg.clickhouse.database
                )
            }
            SinkBackend::Doris => {
                format!("{} database {}", cfg.doris.mysql_addr, cfg.doris.database)
            }
        }
    }
}

/// A table `run` writes, and the columns its rows carry.
pub const TABLE_COLUMNS: [(&str, &[&str]); 4] = [
    (
        "dicom_image",
        <ImageRecord as ::clickhouse::Row>::COLUMN_NAMES,
    ),
    (
        "dicom_state",
        <StateRecord as ::clickhouse::Row>::COLUMN_NAMES,
    ),
    (
        "dicom_store",
        <StoreRecord as ::clickhouse::Row>::COLUMN_NAMES,
    ),
    ("dicom_dlq", <DlqRecord as ::clickhouse::Row>::COLUMN_NAMES),
];

/// For each table `run` writes: the columns its rows need that the table lacks (None: no
/// such table). `check` reports them.
pub async fn missing_columns(
    cfg: &Config,
) -> Result<Vec<(&'static str, Option<Vec<String>>)>, SinkError> {
    let mut out = Vec::new();
    for (table, wanted) in TABLE_COLUMNS {
        let have: Vec<String> = match cfg.sink.backend {
            SinkBackend::ClickHouse => clickhouse::service::columns(&cfg.clickhouse, table).await?,
            SinkBackend::Doris => doris::schema::columns(&cfg.doris, table)
                .await
                .map_err(|e| doris::service::query_error("table columns", e))?,
        };
        if have.is_empty() {
            out.push((table, None));
            continue;
        }
        let missing: Vec<String> = wanted
            .iter()
            .filter(|c| !have.iter().any(|h| h == *c))
            .map(|c| c.to_string())
            .collect();
        out.push((table, Some(missing)));
    }
    Ok(out)
}

/// How long a start-up probe of the sink may take.
pub const REACH_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether the selected backend answers (start-up): the error names its address.
pub async fn reach(cfg: &Config) -> Result<(), SinkError> {
    Backend::new(cfg).ping(REACH_WITHIN).await
}

/// Create the selected backend's database and tables if missing (`schema`).
pub async fn apply_schema(cfg: &Config) -> Result<(), SinkError> {
    match cfg.sink.backend {
        SinkBackend::ClickHouse => clickhouse::service::apply_schema(&cfg.clickhouse).await,
        SinkBackend::Doris => doris::schema::apply_schema(&cfg.doris)
            .await
            .map_err(|e| doris::service::schema_error(&cfg.doris, e)),
    }
}

/// What the sink holds: rows per table, and dead letters per reason (`status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SinkCounts {
    /// (table, rows), in the order of `model::TABLES`.
    pub tables: Vec<(String, u64)>,
    /// (reason, dead letters), by reason.
    pub dead_letters: Vec<(String, u64)>,
}

/// Count what the selected backend holds.
pub async fn counts(cfg: &Config) -> Result<SinkCounts, SinkError> {
    let (mut tables, dead_letters) = match cfg.sink.backend {
        SinkBackend::ClickHouse => clickhouse::service::counts(&cfg.clickhouse).await?,
        SinkBackend::Doris => doris::schema::counts(&cfg.doris)
            .await
            .map_err(|e| doris::service::query_error("table row counts", e))?,
    };
    let order = |t: &str| crate::model::TABLES.iter().position(|x| *x == t);
    tables.sort_by_key(|(t, _)| order(t));
    Ok(SinkCounts {
        tables,
        dead_letters,
    })
}

/// What the sink holds about the messages of one input topic (`verify`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkAudit {
    /// Every `dicom_store` row of the topic, by its latest processing: (partition, offset,
    /// indexed — else dead-lettered).
    pub stores: Vec<(i32, i64, bool)>,
    /// `indexed` store rows whose SOP instance is not in `dicom_image`.
    pub indexed_without_image: Vec<(i32, i64)>,
    /// `indexed` store rows written before `dicom_store` recorded the SOP UID: not checkable.
    pub indexed_unverifiable: u64,
    /// Store rows whose latest status is `dead_letter` and that have no `dicom_dlq` row.
    pub dead_letters_without_row: Vec<(i32, i64)>,
    /// Messages whose latest status is `dead_letter`, per reason.
    pub dead_letters_by_reason: Vec<(String, u64)>,
}

/// Read what the selected backend holds about `topic`'s messages.
pub async fn audit(cfg: &Config, topic: &str) -> Result<SinkAudit, SinkError> {
    match cfg.sink.backend {
        SinkBackend::ClickHouse => clickhouse::service::audit(&cfg.clickhouse, topic).await,
        SinkBackend::Doris => doris::schema::audit(&cfg.doris, topic)
            .await
            .map_err(|e| doris::service::query_error("the audit", e)),
    }
}

/// What `run` does to the backend before consuming. ClickHouse: apply the (idempotent) DDL.
/// Doris: nothing — its DDL goes through the FE's MySQL port with CREATE
/// rights that a loading user need not have, so it is applied by `schema --sink doris`
/// alone; a missing table shows as a permanent load error, retried until it exists.
pub async fn prepare_run(cfg: &Config) -> Result<(), SinkError> {
    match cfg.sink.backend {
        SinkBackend::ClickHouse => clickhouse::service::apply_schema(&cfg.clickhouse).await,
        SinkBackend::Doris => Ok(()),
    }
}

/// What one consumed message contributes.
#[derive(Debug, Clone)]
pub enum SinkItem {
    Indexed {
        image: Box<ImageRecord>,
        state: Box<StateRecord>,
        store: Box<StoreRecord>,
    },
    DeadLetter {
        dlq: Box<DlqRecord>,
        store: Box<StoreRecord>,
    },
}

impl SinkItem {
    /// Rough encoded size, for the byte-based flush trigger.
    pub fn approx_bytes(&self) -> usize {
        match self {
            SinkItem::Indexed { image, store, .. } => {
                512 + image.file_path.len() * 2
                    + image.study_uid.len()
                    + image.series_uid.len()
                    + image.sop_uid.len()
                    + store.trace_id.len()
            }
            SinkItem::DeadLetter { dlq, .. } => 256 + dlq.payload.len() + dlq.error.len(),
        }
    }
}

/// The rows of one or more messages (a worker's chunk) and the one acknowledgement they
/// share: sent when every row of them is written.
pub(crate) struct Envelope {
    pub items: Vec<SinkItem>,
    pub ack: oneshot::Sender<()>,
}

/// The workers' end of the sink channel. Cheap to clone.
#[derive(Clone)]
pub struct SinkHandle {
    tx: mpsc::Sender<Envelope>,
}

impl SinkHandle {
    /// Create a handle and the receiving end for [`batcher::Batcher::run`].
    pub fn channel(capacity: usize) -> (SinkHandle, SinkReceiver) {
        let (tx, rx) = mpsc::channel(capacity);
        (SinkHandle { tx }, SinkReceiver { rx })
    }

    /// Hand over one message's rows and wait until they are durably written.
    pub async fn submit(&self, item: SinkItem) -> Result<(), SinkError> {
        self.submit_all(vec![item]).await
    }

    /// Hand over several messages' rows at once (one channel slot, one acknowledgement) and
    /// wait until all of them are durably written. They go into the same batch.
    pub async fn submit_all(&self, items: Vec<SinkItem>) -> Result<(), SinkError> {
        if items.is_empty() {
            return Ok(());
        }
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Envelope { items, ack })
            .await
            .map_err(|_| SinkError::Closed)?;
        done.await.map_err(|_| SinkError::Abandoned)
    }
}

/// The batcher's end of the sink channel.
pub struct SinkReceiver {
    pub(crate) rx: mpsc::Receiver<Envelope>,
}

/// One flush worth of rows, state already coalesced.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub images: Vec<ImageRecord>,
    pub states: Vec<StateRecord>,
    pub stores: Vec<StoreRecord>,
    pub dead_letters: Vec<DlqRecord>,
    /// Names the exact set of input messages behind the batch (see [`dedup_token`]).
    pub dedup_token: String,
    /// One insert deduplication token per table, set by [`Batch::seal`]; backends that
    /// deduplicate inserts (ClickHouse tokens, Doris labels) pass each table its own.
    pub tokens: DedupTokens,
}

/// Insert deduplication tokens, one per table: `{dedup_token}#{digest of the table's rows}`.
/// A retried write of the same batch carries the same tokens and is dropped by the tables
/// that already have it; the same messages processed again (a replay after an outage, an
/// offset reset) make other rows — at least another `processed_at`, maybe another outcome —
/// so they get other tokens and are written, and the tables' keys collapse them. Empty when
/// the batch has no messages.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DedupTokens {
    pub image: String,
    pub state: String,
    pub store: String,
    pub dlq: String,
}

impl Batch {
    /// Compute the batch's tokens from its messages' offsets and its rows. Called once, when
    /// the batch is complete; every retry of the batch then sends the same tokens.
    pub fn seal(mut self) -> Batch {
        if self.stores.is_empty() {
            self.dedup_token.clear();
            self.tokens = DedupTokens::default();
            return self;
        }
        self.dedup_token = dedup_token(&self.stores);
        let base = &self.dedup_token;
        self.tokens = DedupTokens {
            image: table_token(base, &self.images),
            state: table_token(base, &self.states),
            store: table_token(base, &self.stores),
            dlq: table_token(base, &self.dead_letters),
        };
        self
    }
}

/// `{base}#{first 32 hex of BLAKE3 over the rows' JSON}` (empty for an empty base).
fn table_token<T: serde::Serialize>(base: &str, rows: &[T]) -> String {
    /// The rows' JSON reaches the hasher in pieces of about this size: serde writes a row in
    /// dozens of small writes, and a BLAKE3 update per write cost more than the hashing (the
    /// digest does not depend on how the input is cut).
    const PIECE: usize = 64 * 1024;
    if base.is_empty() {
        return String::new();
    }
    let mut hasher = blake3::Hasher::new();
    let mut buf = Vec::with_capacity(PIECE + 4096);
    for row in rows {
        // The records serialise infallibly (plain strings, numbers, timestamps).
        if serde_json::to_writer(&mut buf, row).is_err() {
            buf.extend_from_slice(b"unserialisable row");
        }
        buf.push(b'\n');
        if buf.len() >= PIECE {
            hasher.update(&buf);
            buf.clear();
        }
    }
    hasher.update(&buf);
    format!("{base}#{}", &hasher.finalize().to_hex().as_str()[..32])
}

/// An insert deduplication token for the messages of a batch: per input topic and partition
/// `topic:partition:first-last`, then `#` and a digest of every (topic, partition, offset).
/// The ranges make it readable; the digest makes it exact — a batch holding a different
/// subset of the same range (another batching of redelivered messages) gets another token, so
/// deduplication can only drop an insert of the very same messages.
pub fn dedup_token(stores: &[StoreRecord]) -> String {
    let mut offsets: Vec<(&str, i32, i64)> = stores
        .iter()
        .map(|s| (s.kafka_topic.as_str(), s.kafka_partition, s.kafka_offset))
        .collect();
    offsets.sort_unstable();
    offsets.dedup();
    let mut hasher = blake3::Hasher::new();
    let mut ranges: Vec<String> = Vec::new();
    let mut i = 0;
    while i < offsets.len() {
        let (topic, partition, first) = offsets[i];
        let mut last = first;
        while i < offsets.len() && offsets[i].0 == topic && offsets[i].1 == partition {
            let (t, p, o) = offsets[i];
            hasher.update(t.as_bytes());
            hasher.update(&[0]);
            hasher.update(&p.to_le_bytes());
            hasher.update(&o.to_le_bytes());
            last = o;
            i += 1;
        }
        ranges.push(format!("{topic}:{partition}:{first}-{last}"));
    }
    let digest = hasher.finalize().to_hex();
    format!("{}#{}", ranges.join(","), &digest.as_str()[..32])
}

/// A storage backend. Writing the same batch twice must not create duplicate logical rows
/// (backends key their tables so re-sent rows collapse).
pub trait Sink: Send + Sync + 'static {
    /// Write every row of the batch; Ok only when all of it is acknowledged.
    fn write(&self, batch: &Batch) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The `dicom_image` rows of `tenant` whose `file_path` is one of `paths`, in one query
    /// (`backfill --skip-indexed`). No paths: a probe that the query can run at all.
    fn indexed_files(
        &self,
        tenant: &str,
        paths: &[&str],
    ) -> impl Future<Output = Result<Vec<IndexedFile>, SinkError>> + Send;
}

/// A file `dicom_image` has indexed: what `backfill --skip-indexed` compares a walked file
/// with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedFile {
    pub file_path: String,
    pub file_size: u64,
    /// Unknown for rows indexed before the column existed.
    pub file_mtime: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(topic: &str, partition: i32, offset: i64) -> StoreRecord {
        let src = crate::model::SourceOffset {
            topic: topic.into(),
            partition,
            offset,
        };
        StoreRecord::unparsed(&src, time::OffsetDateTime::UNIX_EPOCH)
    }

    #[test]
    fn the_token_lists_ranges_per_partition_and_ignores_order() {
        let a = [
            store("s", 1, 7),
            store("s", 0, 3),
            store("s", 0, 5),
            store("s", 1, 8),
        ];
        let b = [
            store("s", 0, 5),
            store("s", 1, 8),
            store("s", 0, 3),
            store("s", 1, 7),
        ];
        let t = dedup_token(&a);
        assert!(t.starts_with("s:0:3-5,s:1:7-8#"), "{t}");
        assert_eq!(t, dedup_token(&b));
    }

    /// The token is BLAKE3 over the rows' JSON lines, however the input reaches the hasher:
    /// a batch retried by another build (one that hashed row by row) gets the same token.
    #[test]
    fn table_token_is_the_digest_of_the_rows_json_lines() {
        let (image, _, _) = crate::testing::indexed("s1", "sop1");
        // More than one 64 KB piece of JSON.
        let rows: Vec<ImageRecord> = (0..200)
            .map(|i| {
                let mut r = image.clone();
                r.kafka_offset = i;
                r
            })
            .collect();
        let mut text = Vec::new();
        for r in &rows {
            serde_json::to_writer(&mut text, r).unwrap();
            text.push(b'\n');
        }
        assert!(text.len() > 128 * 1024, "{}", text.len());
        let want = format!("b#{}", &blake3::hash(&text).to_hex().as_str()[..32]);
        assert_eq!(table_token("b", &rows), want);
        assert_eq!(table_token("", &rows), "");
    }

    #[test]
    fn each_table_token_names_the_messages_and_the_rows() {
        let (image, state, mut store) = crate::testing::indexed("s1", "sop1");
        store.kafka_offset = 7;
        let batch = || Batch {
            images: vec![image.clone()],
            states: vec![state.clone()],
            stores: vec![store.clone()],
            ..Batch::default()
        };
        let first = batch().seal();
        // A retry of the same batch: the same tokens.
        assert_eq!(first.tokens, batch().seal().tokens);
        assert!(
            first.tokens.image.starts_with("in:0:7-7#"),
            "{:?}",
            first.tokens
        );
        let all = [
            &first.tokens.image,
            &first.tokens.state,
            &first.tokens.store,
            &first.tokens.dlq,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b, "tables share a token");
            }
        }
        // The same message processed again (a replay): other rows, other tokens, except for
        // a table whose rows did not change.
        let mut replay = batch();
        replay.images[0].processed_at += time::Duration::milliseconds(1);
        let replay = replay.seal();
        assert_eq!(replay.dedup_token, first.dedup_token);
        assert_ne!(replay.tokens.image, first.tokens.image);
        assert_eq!(replay.tokens.store, first.tokens.store);
        // A dead letter the first time, indexed the second: the store row's status differs.
        let mut indexed_now = batch();
        indexed_now.stores[0].status = "dead_letter".into();
        assert_ne!(indexed_now.seal().tokens.store, first.tokens.store);
        // No messages, no tokens.
        assert_eq!(Batch::default().seal().tokens, DedupTokens::default());
    }

    #[test]
    fn another_subset_of_the_same_range_gets_another_token() {
        let a = [store("s", 0, 3), store("s", 0, 4), store("s", 0, 6)];
        let b = [store("s", 0, 3), store("s", 0, 5), store("s", 0, 6)];
        assert_eq!(dedup_token(&a)[..8], *"s:0:3-6#");
        assert_eq!(dedup_token(&b)[..8], *"s:0:3-6#");
        assert_ne!(dedup_token(&a), dedup_token(&b));
        let other_topic = [store("t", 0, 3), store("t", 0, 4), store("t", 0, 6)];
        assert_ne!(dedup_token(&a), dedup_token(&other_topic));
    }
}
