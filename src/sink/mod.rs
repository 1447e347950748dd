//! Sinks: where indexed rows go, behind one seam.
//!
//! Workers hand each finished message to a [`SinkHandle`] and wait for its acknowledgement;
//! only then is the message's offset done. One [`batcher`] task owns the buffer (fed by a
//! bounded channel, so a slow sink pushes back on the workers), flushes by rows / bytes / time,
//! coalesces series state to one record per series per flush, writes the batch through a
//! [`Sink`] backend with retry and backoff, has the coalesced state records published, and only
//! then acknowledges every message of the batch. Nothing is acknowledged that was not written;
//! a batch is never dropped — on a hard stop its messages stay unacknowledged and are
//! redelivered after restart.
//!
//! The workers and the batcher never know which backend they talk to: [`Backend`] is the
//! one concrete [`Sink`] the pipeline builds from `sink.backend`.
//!
//! - `channel.rs`: the bounded channel from workers to the batcher ([`SinkHandle`]).
//! - `batcher.rs`: the buffer-owning task (backend-agnostic); it tells a
//!   [`batcher::FlushListener`] about each written batch (the pipeline's publishes the
//!   series state and audit events, `crate::publish`).
//! - `batch.rs`: one flush's rows by table and its insert deduplication tokens.
//! - `backend.rs`: [`Backend`], the configured backend, and the tools' queries (`check`,
//!   `schema`, `status`, `verify`) — the one place that matches on `sink.backend`.
//! - `error.rs`: [`SinkError`], backend-neutral.
//! - `sql.rs`: reading the shipped DDL.
//! - `clickhouse/`: the ClickHouse backend (schema, service).
//! - `doris/`: the Apache Doris backend (schema over MySQL, Stream Load, service).

pub mod batcher;
pub mod clickhouse;
pub mod doris;
pub mod sql;

mod backend;
mod batch;
mod channel;
mod error;

use std::future::Future;

pub use backend::{
    apply_schema, audit, counts, missing_columns, prepare_run, reach, Backend, SinkAudit,
    SinkCounts, REACH_WITHIN, TABLE_COLUMNS,
};
pub use batch::{dedup_token, Batch, DedupTokens};
pub(crate) use channel::Envelope;
pub use channel::{SinkHandle, SinkItem, SinkReceiver};
pub use error::{BackendError, SinkError};

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
