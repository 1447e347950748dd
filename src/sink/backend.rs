//! The configured backend and what the tools ask of it (`check`, `schema`, `status`,
//! `verify`): the one place that matches on `sink.backend`.

use futures::FutureExt;

use super::Batch;
use super::{clickhouse, doris, IndexedFile, Sink, SinkError};
use crate::config::{Config, SinkBackend};
use crate::model::{DlqRecord, ImageRecord, StateRecord, StoreRecord};

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
