use std::time::Duration;

use clickhouse::{Client, Row, RowWrite};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use crate::config::ClickHouseConfig;
use crate::sink::{BackendError, Batch, IndexedFile, Sink, SinkAudit, SinkError};

/// A client for the server (no database selected: used for DDL). The HTTP client has
/// TCP_NODELAY and keep-alive; clones of the returned client share its connection pool.
pub fn server_client(cfg: &ClickHouseConfig) -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    // A host that drops packets would otherwise hold a connect for the OS's minutes.
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    // ClickHouse closes idle keep-alive connections after 3 s; retire ours before that.
    let http = HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(2))
        .build(connector);
    Client::with_http_client(http)
        .with_url(&cfg.url)
        .with_user(&cfg.user)
        .with_password(&cfg.password)
}

/// Whether a failed ClickHouse call may succeed when retried: network trouble and timeouts.
pub fn is_retryable(e: &clickhouse::error::Error) -> bool {
    matches!(
        e,
        clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut
    )
}

/// Create the database and tables if missing.
pub async fn apply_schema(cfg: &ClickHouseConfig) -> Result<(), SinkError> {
    let client = server_client(cfg);
    for stmt in super::schema::statements(&cfg.database) {
        client
            .query(&stmt)
            .execute()
            .await
            .map_err(|e| SinkError::Schema {
                backend: BACKEND,
                target: cfg.url.clone(),
                source: backend_error(e),
            })?;
    }
    Ok(())
}

#[derive(Row, serde::Deserialize)]
struct Pair {
    name: String,
    n: u64,
}

/// Rows per table (`FINAL`: redelivered copies not merged yet are counted once) and dead
/// letters per reason (`status`).
pub async fn counts(
    cfg: &ClickHouseConfig,
) -> Result<(Vec<(String, u64)>, Vec<(String, u64)>), SinkError> {
    let client = server_client(cfg);
    let db = &cfg.database;
    let tables = crate::model::TABLES
        .iter()
        .map(|t| format!("SELECT '{t}' AS name, count() AS n FROM {db}.{t} FINAL"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let fetch = |what: &'static str, sql: String| {
        let query = client.query(&sql);
        async move {
            query
                .fetch_all::<Pair>()
                .await
                .map(|rows| rows.into_iter().map(|p| (p.name, p.n)).collect::<Vec<_>>())
                .map_err(|e| query_error(what, e))
        }
    };
    let tables = fetch("table row counts", tables).await?;
    let reasons = fetch(
        "dead letters per reason",
        format!(
            "SELECT reason AS name, count() AS n FROM {db}.dicom_dlq FINAL GROUP BY reason ORDER BY reason"
        ),
    )
    .await?;
    Ok((tables, reasons))
}

/// What the tables hold about `topic`'s messages (`verify`). Store rows are read with
/// `FINAL`: a message processed twice counts by its latest outcome.
pub async fn audit(cfg: &ClickHouseConfig, topic: &str) -> Result<SinkAudit, SinkError> {
    let client = server_client(cfg).with_database(&cfg.database);
    let q = |what: &'static str| move |e| query_error(what, e);
    let stores: Vec<(i32, i64, bool)> = client
        .query(
            "SELECT kafka_partition, kafka_offset, status = 'indexed' FROM dicom_store FINAL
             WHERE kafka_topic = ? ORDER BY kafka_partition, kafka_offset",
        )
        .bind(topic)
        .fetch_all()
        .await
        .map_err(q("store rows"))?;
    let indexed_without_image: Vec<(i32, i64)> = client
        .query(
            "SELECT kafka_partition, kafka_offset FROM dicom_store FINAL
             WHERE kafka_topic = ? AND status = 'indexed' AND sop_uid != ''
               AND (tenant_id, sop_uid) NOT IN (SELECT tenant_id, sop_uid FROM dicom_image)
             ORDER BY kafka_partition, kafka_offset",
        )
        .bind(topic)
        .fetch_all()
        .await
        .map_err(q("indexed store rows without an image row"))?;
    let indexed_unverifiable: u64 = client
        .query(
            "SELECT count() FROM dicom_store FINAL
             WHERE kafka_topic = ? AND status = 'indexed' AND sop_uid = ''",
        )
        .bind(topic)
        .fetch_one()
        .await
        .map_err(q("store rows without a SOP UID"))?;
    let dead_letters_without_row: Vec<(i32, i64)> = client
        .query(
            "SELECT kafka_partition, kafka_offset FROM dicom_store FINAL
             WHERE kafka_topic = ? AND status = 'dead_letter'
               AND (kafka_partition, kafka_offset) NOT IN
                   (SELECT kafka_partition, kafka_offset FROM dicom_dlq WHERE kafka_topic = ?)
             ORDER BY kafka_partition, kafka_offset",
        )
        .bind(topic)
        .bind(topic)
        .fetch_all()
        .await
        .map_err(q("dead letters without a dlq row"))?;
    let dead_letters_by_reason: Vec<(String, u64)> = client
        .query(
            "SELECT d.reason, count() FROM dicom_dlq AS d FINAL
             INNER JOIN (SELECT kafka_partition, kafka_offset FROM dicom_store FINAL
                         WHERE kafka_topic = ? AND status = 'dead_letter') AS s
             USING (kafka_partition, kafka_offset)
             WHERE d.kafka_topic = ? GROUP BY d.reason ORDER BY d.reason",
        )
        .bind(topic)
        .bind(topic)
        .fetch_all()
        .await
        .map_err(q("dead letters per reason"))?;
    Ok(SinkAudit {
        stores,
        indexed_without_image,
        indexed_unverifiable,
        dead_letters_without_row,
        dead_letters_by_reason,
    })
}

/// The column names of `table` in the configured database (empty: no such table).
pub async fn columns(cfg: &ClickHouseConfig, table: &str) -> Result<Vec<String>, SinkError> {
    server_client(cfg)
        .query("SELECT name FROM system.columns WHERE database = ? AND table = ?")
        .bind(&cfg.database)
        .bind(table)
        .fetch_all()
        .await
        .map_err(|e| query_error("table columns", e))
}

/// The ClickHouse [`Sink`].
#[derive(Clone)]
pub struct ClickHouseSink {
    client: Client,
    /// The same connection pool, no database selected (the readiness probe).
    server: Client,
    url: String,
}

impl ClickHouseSink {
    pub fn new(cfg: &ClickHouseConfig) -> Self {
        ClickHouseSink {
            url: cfg.url.clone(),
            server: server_client(cfg),
            // Synchronous inserts, whatever the server's or the user's profile says: with
            // async_insert the server acknowledges before the rows are in the table, and the
            // batch's offsets would be committed past rows that may still be lost.
            client: server_client(cfg)
                .with_database(&cfg.database)
                .with_setting("async_insert", "0")
                .with_setting("wait_for_async_insert", "1"),
        }
    }

    /// The underlying client (for queries in tools and tests).
    /// `SELECT 1`: the server answers queries (readiness).
    pub async fn ping(&self) -> Result<(), String> {
        // At server level: the database may not exist yet (`schema` creates it).
        self.server
            .query("SELECT 1")
            .execute()
            .await
            .map_err(|e| e.to_string())
    }

    /// The server's URL (for messages).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn insert<T>(client: &Client, table: &'static str, rows: &[T]) -> Result<(), SinkError>
    where
        T: Row + RowWrite + Serialize,
        for<'a> T: Row<Value<'a> = T>,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let err = |e| SinkError::Write {
            backend: BACKEND,
            table,
            source: backend_error(e),
        };
        let mut insert = client
            .insert::<T>(table)
            .await
            .map_err(err)?
            .with_timeouts(Some(Duration::from_secs(30)), Some(Duration::from_secs(60)));
        for row in rows {
            insert.write(row).await.map_err(err)?;
        }
        insert.end().await.map_err(err)
    }
}

impl ClickHouseSink {
    /// The client for one table's insert: with that table's deduplication token.
    fn with_token(&self, token: &str) -> Client {
        if token.is_empty() {
            self.client.clone()
        } else {
            self.client
                .clone()
                .with_setting("insert_deduplication_token", token)
        }
    }
}

/// A `dicom_image` row's file, as the client reads it.
#[derive(Row, serde::Deserialize)]
struct IndexedRow {
    file_path: String,
    file_size: u64,
    file_mtime: Option<i64>,
}

impl Sink for ClickHouseSink {
    /// The paths go to ClickHouse as one `Array(String)` query parameter (in the request
    /// body, never spliced into the SQL).
    async fn indexed_files(
        &self,
        tenant: &str,
        paths: &[&str],
    ) -> Result<Vec<IndexedFile>, SinkError> {
        self.client
            .query(
                "SELECT ?fields FROM dicom_image \
                 WHERE tenant_id = {tenant:String} AND file_path IN {paths:Array(String)}",
            )
            .param("tenant", tenant)
            .param("paths", paths)
            .fetch_all::<IndexedRow>()
            .await
            .map(|rows| {
                rows.into_iter()
                    .map(|r| IndexedFile {
                        file_path: r.file_path,
                        file_size: r.file_size,
                        file_mtime: r.file_mtime,
                    })
                    .collect()
            })
            .map_err(|e| query_error("indexed files", e))
    }

    async fn write(&self, batch: &Batch) -> Result<(), SinkError> {
        // Each table gets its own token (the batch's messages and that table's rows):
        // retrying a batch after a partial failure (say, dicom_image written, dicom_state
        // not) re-sends it, so the tables already written drop the repeat, while the same
        // messages processed again make other rows and are written. The tables set
        // `non_replicated_deduplication_window`, without which a non-replicated MergeTree
        // ignores the token.
        let t = &batch.tokens;
        // The data tables at once: each INSERT is a round trip, and against a remote server
        // the round trips would add up (docs/BENCHMARKS.md, "Sink flushes").
        let (image, state, dlq) = (
            self.with_token(&t.image),
            self.with_token(&t.state),
            self.with_token(&t.dlq),
        );
        futures::try_join!(
            Self::insert(&image, "dicom_image", &batch.images),
            Self::insert(&state, "dicom_state", &batch.states),
            Self::insert(&dlq, "dicom_dlq", &batch.dead_letters),
        )?;
        // Last: a store row says "this message is done", so it is written after its data.
        Self::insert(&self.with_token(&t.store), "dicom_store", &batch.stores).await
    }
}

/// The backend's name in errors.
pub const BACKEND: &str = "ClickHouse";

/// The client's error with its verdict on retrying.
pub fn backend_error(e: clickhouse::error::Error) -> BackendError {
    let retryable = is_retryable(&e);
    BackendError::new(e, retryable)
}

/// A failed query (`what` it was for) as the sink's error.
pub fn query_error(what: &'static str, e: clickhouse::error::Error) -> SinkError {
    SinkError::Query {
        backend: BACKEND,
        what,
        source: backend_error(e),
    }
}
