//! The Doris DDL (`sql/doris.sql`, compiled in), templated, split into statements and
//! applied in order over the MySQL protocol (the FE's `query_port`).

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use thiserror::Error;

use crate::config::DorisConfig;
#[cfg(test)]
use crate::sink::sql::table_columns;
use crate::sink::sql::{render, split};

/// The shipped DDL, with `${DATABASE}` and `${REPLICATION_NUM}` placeholders.
pub const DDL: &str = include_str!("../../../sql/doris.sql");

#[derive(Debug, Error)]
pub enum SchemaError {
    #[error("sql/doris.sql: {problem}")]
    Template { problem: String },
    #[error("connecting to Doris at {addr} over the MySQL protocol: {source}")]
    Connect {
        addr: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error(
        "connecting to Doris at {addr} over the MySQL protocol: no answer within {timeout_ms} ms"
    )]
    ConnectTimedOut { addr: String, timeout_ms: u64 },
    #[error("{what} `{name}` cannot be used in a query (not [A-Za-z0-9._-])")]
    InvalidName { what: &'static str, name: String },
    #[error("statement {index} of {total} (`{summary}`): {source}")]
    Execute {
        index: usize,
        total: usize,
        summary: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("statement {index} of {total} (`{summary}`): no answer within {timeout_ms} ms")]
    ExecuteTimedOut {
        index: usize,
        total: usize,
        summary: String,
        timeout_ms: u64,
    },
}

impl SchemaError {
    /// Connection trouble may pass; a statement the server refused or a broken DDL file
    /// will not.
    pub fn is_retryable(&self) -> bool {
        match self {
            SchemaError::Connect { source, .. } | SchemaError::Execute { source, .. } => {
                matches!(source, mysql_async::Error::Io(_))
            }
            SchemaError::ConnectTimedOut { .. } | SchemaError::ExecuteTimedOut { .. } => true,
            SchemaError::Template { .. } | SchemaError::InvalidName { .. } => false,
        }
    }
}

/// The statements of `ddl` for this database and replication, in order.
pub fn statements(
    ddl: &str,
    database: &str,
    replication_num: u16,
) -> Result<Vec<String>, SchemaError> {
    let replication = replication_num.to_string();
    let text = render(
        ddl,
        &[("DATABASE", database), ("REPLICATION_NUM", &replication)],
    )
    .map_err(|e| SchemaError::Template { problem: e.problem })?;
    Ok(split(&text))
}

/// The first line of a statement, for messages.
fn summary(statement: &str) -> String {
    let line = statement.lines().next().unwrap_or("").trim_end_matches('(');
    line.trim().chars().take(100).collect()
}

/// A MySQL-protocol connection to the FE (`doris.mysql_addr`), within the request timeout.
pub async fn connect(cfg: &DorisConfig) -> Result<Conn, SchemaError> {
    let timeout = Duration::from_millis(cfg.request_timeout_ms);
    let timeout_ms = cfg.request_timeout_ms;
    let addr = cfg.mysql_addr.clone();
    let (host, port) = cfg
        .mysql_addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| SchemaError::Template {
            problem: format!("doris.mysql_addr `{addr}` is not host:port"),
        })?;
    let opts = OptsBuilder::default()
        .ip_or_hostname(host.trim_matches(['[', ']']))
        .tcp_port(port)
        .user(Some(cfg.user.clone()))
        .pass((!cfg.password.is_empty()).then(|| cfg.password.clone()))
        // Set here so the driver does not query them (`SELECT @@max_allowed_packet,
        // @@wait_timeout, @@socket`) on connect: Doris need not know every MySQL variable.
        .prefer_socket(false)
        .max_allowed_packet(Some(16 * 1024 * 1024))
        .wait_timeout(Some(28_800));
    tokio::time::timeout(timeout, Conn::new(opts))
        .await
        .map_err(|_| SchemaError::ConnectTimedOut {
            addr: addr.clone(),
            timeout_ms,
        })?
        .map_err(|source| SchemaError::Connect {
            addr: addr.clone(),
            source,
        })
}

/// Rows per table and dead letters per reason (`status`). Unique Key tables merge on load,
/// so plain counts are exact.
pub async fn counts(
    cfg: &DorisConfig,
) -> Result<(Vec<(String, u64)>, Vec<(String, u64)>), SchemaError> {
    let mut conn = connect(cfg).await?;
    let db = &cfg.database;
    let tables = pairs(
        &mut conn,
        cfg,
        format!(
            "SELECT 'dicom_image', count(*) FROM `{db}`.dicom_image UNION ALL \
             SELECT 'dicom_state', count(*) FROM `{db}`.dicom_state UNION ALL \
             SELECT 'dicom_store', count(*) FROM `{db}`.dicom_store UNION ALL \
             SELECT 'dicom_dlq', count(*) FROM `{db}`.dicom_dlq"
        ),
    )
    .await?;
    let reasons = pairs(
        &mut conn,
        cfg,
        format!("SELECT reason, count(*) FROM `{db}`.dicom_dlq GROUP BY reason ORDER BY reason"),
    )
    .await?;
    Ok((tables, reasons))
}

/// Run a query of (text, count) rows within the request timeout.
async fn pairs(
    conn: &mut Conn,
    cfg: &DorisConfig,
    sql: String,
) -> Result<Vec<(String, u64)>, SchemaError> {
    rows(conn, cfg, sql).await
}

/// What the tables hold about `topic`'s messages (`verify`): the same audit as ClickHouse's
/// (`sink::SinkAudit`), in Doris SQL. The Unique Key tables keep each message's latest row,
/// so no FINAL is needed. Not run against a real Doris (none runs here): the queries use
/// only `LEFT ANTI JOIN` and `INNER JOIN`, which Doris 2+ documents.
pub async fn audit(cfg: &DorisConfig, topic: &str) -> Result<crate::sink::SinkAudit, SchemaError> {
    // Kafka topic names are [A-Za-z0-9._-]; anything else cannot be an input topic.
    if !topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(SchemaError::InvalidName {
            what: "topic",
            name: topic.to_string(),
        });
    }
    let db = &cfg.database;
    let mut conn = connect(cfg).await?;
    let store = format!("`{db}`.dicom_store");
    let stores: Vec<(i32, i64, bool)> = rows(
        &mut conn,
        cfg,
        format!(
            "SELECT kafka_partition, kafka_offset, status = 'indexed' FROM {store} \
             WHERE kafka_topic = '{topic}' ORDER BY kafka_partition, kafka_offset"
        ),
    )
    .await?;
    let indexed_without_image: Vec<(i32, i64)> = rows(
        &mut conn,
        cfg,
        format!(
            "SELECT s.kafka_partition, s.kafka_offset FROM {store} s \
             LEFT ANTI JOIN `{db}`.dicom_image i ON s.tenant_id = i.tenant_id AND s.sop_uid = i.sop_uid \
             WHERE s.kafka_topic = '{topic}' AND s.status = 'indexed' AND s.sop_uid != '' \
             ORDER BY s.kafka_partition, s.kafka_offset"
        ),
    )
    .await?;
    let unverifiable: Vec<(String, u64)> = pairs(
        &mut conn,
        cfg,
        format!(
            "SELECT 'unverifiable', count(*) FROM {store} \
             WHERE kafka_topic = '{topic}' AND status = 'indexed' AND sop_uid = ''"
        ),
    )
    .await?;
    let dead_letters_without_row: Vec<(i32, i64)> = rows(
        &mut conn,
        cfg,
        format!(
            "SELECT s.kafka_partition, s.kafka_offset FROM {store} s \
             LEFT ANTI JOIN `{db}`.dicom_dlq d ON s.kafka_topic = d.kafka_topic \
               AND s.kafka_partition = d.kafka_partition AND s.kafka_offset = d.kafka_offset \
             WHERE s.kafka_topic = '{topic}' AND s.status = 'dead_letter' \
             ORDER BY s.kafka_partition, s.kafka_offset"
        ),
    )
    .await?;
    let dead_letters_by_reason = pairs(
        &mut conn,
        cfg,
        format!(
            "SELECT d.reason, count(*) FROM `{db}`.dicom_dlq d INNER JOIN {store} s \
               ON s.kafka_topic = d.kafka_topic AND s.kafka_partition = d.kafka_partition \
               AND s.kafka_offset = d.kafka_offset \
             WHERE d.kafka_topic = '{topic}' AND s.status = 'dead_letter' \
             GROUP BY d.reason ORDER BY d.reason"
        ),
    )
    .await?;
    Ok(crate::sink::SinkAudit {
        stores,
        indexed_without_image,
        indexed_unverifiable: unverifiable.first().map_or(0, |p| p.1),
        dead_letters_without_row,
        dead_letters_by_reason,
    })
}

/// The column names of `table` in the configured database (empty: no such table).
pub async fn columns(cfg: &DorisConfig, table: &str) -> Result<Vec<String>, SchemaError> {
    let mut conn = connect(cfg).await?;
    // Both names are checked identifiers ([A-Za-z0-9_]): the database by the config's
    // validation, the table a constant.
    let rows: Vec<(String,)> = rows(
        &mut conn,
        cfg,
        format!(
            "SELECT column_name FROM information_schema.columns \
             WHERE table_schema = '{}' AND table_name = '{table}'",
            cfg.database
        ),
    )
    .await?;
    Ok(rows.into_iter().map(|(c,)| c).collect())
}

/// Run a query within the request timeout.
pub(super) async fn rows<T>(
    conn: &mut Conn,
    cfg: &DorisConfig,
    sql: String,
) -> Result<Vec<T>, SchemaError>
where
    T: mysql_async::prelude::FromRow + Send + 'static,
{
    let summary = summary(&sql);
    let timeout = Duration::from_millis(cfg.request_timeout_ms);
    tokio::time::timeout(timeout, conn.query::<T, _>(sql))
        .await
        .map_err(|_| SchemaError::ExecuteTimedOut {
            index: 1,
            total: 1,
            summary: summary.clone(),
            timeout_ms: cfg.request_timeout_ms,
        })?
        .map_err(|source| SchemaError::Execute {
            index: 1,
            total: 1,
            summary,
            source,
        })
}

/// Create the database and tables if missing (`schema --sink doris`).
pub async fn apply_schema(cfg: &DorisConfig) -> Result<(), SchemaError> {
    let statements = statements(DDL, &cfg.database, cfg.replication_num)?;
    let timeout = Duration::from_millis(cfg.request_timeout_ms);
    let timeout_ms = cfg.request_timeout_ms;
    let mut conn = connect(cfg).await?;
    let total = statements.len();
    for (i, statement) in statements.iter().enumerate() {
        let index = i + 1;
        let summary = summary(statement);
        tracing::info!(statement = index, total, %summary, "applying Doris DDL");
        tokio::time::timeout(timeout, conn.query_drop(statement.as_str()))
            .await
            .map_err(|_| SchemaError::ExecuteTimedOut {
                index,
                total,
                summary: summary.clone(),
                timeout_ms,
            })?
            .map_err(|source| SchemaError::Execute {
                index,
                total,
                summary,
                source,
            })?;
    }
    // Best effort: the statements are applied whether or not the goodbye is acknowledged.
    let _ = conn.disconnect().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_unknown_ones_refused() {
        let vars = [("DATABASE", "d"), ("REPLICATION_NUM", "3")];
        assert_eq!(
            render(
                "CREATE ${DATABASE}.t (\"replication_num\" = \"${REPLICATION_NUM}\")",
                &vars
            )
            .unwrap(),
            "CREATE d.t (\"replication_num\" = \"3\")"
        );
        let unknown = render("x ${DB} y", &vars).unwrap_err().to_string();
        assert!(
            unknown.contains("${DB}") && unknown.contains("DATABASE"),
            "{unknown}"
        );
        assert!(render("x ${DATABASE", &vars).is_err());
    }

    #[test]
    fn splitting_respects_quotes_and_comments() {
        let sql = "-- a comment; not a statement\n\
                   CREATE DATABASE IF NOT EXISTS d;\n\
                   /* block; comment */ CREATE VIEW v AS SELECT 'a;b', \"c;d\", `e;f`, 'it\\'s;' FROM t;\n\
                   \n  ;  \n\
                   SELECT 1 -- trailing; comment\n";
        let got = split(sql);
        assert_eq!(
            got,
            vec![
                "CREATE DATABASE IF NOT EXISTS d".to_string(),
                "CREATE VIEW v AS SELECT 'a;b', \"c;d\", `e;f`, 'it\\'s;' FROM t".to_string(),
                "SELECT 1".to_string(),
            ]
        );
    }

    #[test]
    fn the_shipped_ddl_creates_everything_in_order() {
        let statements = statements(DDL, "dicom_test", 3).unwrap();
        let heads: Vec<String> = statements.iter().map(|s| summary(s)).collect();
        assert_eq!(
            heads,
            vec![
                "CREATE DATABASE IF NOT EXISTS dicom_test",
                "CREATE TABLE IF NOT EXISTS dicom_test.dicom_image",
                "CREATE VIEW IF NOT EXISTS dicom_test.dicom_sop_conflicts AS",
                "CREATE TABLE IF NOT EXISTS dicom_test.dicom_state",
                "CREATE VIEW IF NOT EXISTS dicom_test.dicom_series AS",
                "CREATE TABLE IF NOT EXISTS dicom_test.dicom_store",
                "CREATE TABLE IF NOT EXISTS dicom_test.dicom_dlq",
            ]
        );
        for s in &statements {
            assert!(!s.contains("${") && !s.contains("--"), "{s}");
            assert!(s.contains("IF NOT EXISTS"), "not idempotent: {s}");
        }
        let tables: Vec<&String> = statements
            .iter()
            .filter(|s| s.starts_with("CREATE TABLE"))
            .collect();
        assert_eq!(tables.len(), 4);
        for t in tables {
            assert!(t.contains("\"replication_num\" = \"3\""), "{t}");
        }
        // Unique tables replace by their version column, as ReplacingMergeTree(version).
        for (table, version) in [
            ("dicom_image", "processed_at"),
            ("dicom_store", "processed_at"),
            ("dicom_dlq", "failed_at"),
        ] {
            let s = statements
                .iter()
                .find(|s| s.contains(&format!(".{table} (")))
                .unwrap();
            assert!(
                s.contains("UNIQUE KEY(")
                    && s.contains(&format!("\"function_column.sequence_col\" = \"{version}\"")),
                "{s}"
            );
        }
    }

    #[test]
    fn key_columns_come_first_in_key_order() {
        // Doris requires a table's key columns to be its first columns, in key order.
        for (table, key) in [
            (
                "dicom_image",
                vec![
                    "tenant_id",
                    "study_uid",
                    "series_uid",
                    "sop_uid",
                    "header_digest",
                ],
            ),
            (
                "dicom_state",
                vec!["tenant_id", "patient_id", "study_uid", "series_uid"],
            ),
            (
                "dicom_store",
                vec!["kafka_topic", "kafka_partition", "kafka_offset"],
            ),
            (
                "dicom_dlq",
                vec!["kafka_topic", "kafka_partition", "kafka_offset"],
            ),
        ] {
            let columns = table_columns(DDL, table);
            assert_eq!(&columns[..key.len()], key.as_slice(), "{table}");
            assert!(DDL.contains(&format!("KEY({})", key.join(", "))), "{table}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_clear_retryable_error() {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = DorisConfig {
            mysql_addr: format!("127.0.0.1:{port}"),
            request_timeout_ms: 5_000,
            ..DorisConfig::default()
        };
        let err = apply_schema(&cfg).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "connecting to Doris at 127.0.0.1:{port} over the MySQL protocol"
            )),
            "{text}"
        );
        assert!(err.is_retryable(), "{err:?}");
    }
}
