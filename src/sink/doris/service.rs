//! The Doris [`Sink`]: each table of a batch is one Stream Load of JSON lines under a label
//! derived from the batch's deduplication token.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use time::macros::format_description;
use time::OffsetDateTime;

use super::schema::SchemaError;
use super::stream_load::{LoadError, Loaded, StreamLoadClient};
use crate::config::DorisConfig;
use crate::sink::{BackendError, Batch, IndexedFile, Sink, SinkError};

/// Doris's label limit (FE `label_regex_length`, default 128) and alphabet `[-_A-Za-z0-9:]`.
pub const MAX_LABEL_LEN: usize = 128;

/// How one record type becomes a row of its Doris table.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    /// Fields that are epoch milliseconds in the record and `DATETIME(3)` in Doris.
    pub timestamps: &'static [&'static str],
    /// Fields of the record that have no Doris column (see `sql/doris.sql`).
    pub omitted: &'static [&'static str],
}

pub const IMAGE: Table = Table {
    name: "dicom_image",
    timestamps: &[
        "received_at",
        "processed_at",
        "study_at",
        "series_at",
        "acquisition_at",
        "content_at",
    ],
    omitted: &[],
};
/// `sop_uids` has no column: Doris cannot unite arrays in an Aggregate table; the
/// `dicom_series` view counts the SOP UIDs of `dicom_image` instead.
pub const STATE: Table = Table {
    name: "dicom_state",
    timestamps: &["first_seen", "last_seen", "updated_at"],
    omitted: &["sop_uids"],
};
pub const STORE: Table = Table {
    name: "dicom_store",
    timestamps: &["received_at", "processed_at"],
    omitted: &[],
};
pub const DLQ: Table = Table {
    name: "dicom_dlq",
    timestamps: &["failed_at"],
    omitted: &[],
};

/// The Doris [`Sink`]. Cheap to clone (the HTTP client is shared).
#[derive(Clone)]
pub struct DorisSink {
    client: StreamLoadClient,
    label_prefix: String,
    /// host:port of the FE's HTTP port, for the readiness probe.
    fe_addr: String,
    /// For queries over the FE's MySQL port (`--skip-indexed`).
    cfg: DorisConfig,
}

impl DorisSink {
    /// host:port of the FE's HTTP port (for messages).
    pub fn fe_addr(&self) -> &str {
        &self.fe_addr
    }

    pub fn new(cfg: &DorisConfig) -> DorisSink {
        let fe_addr = cfg
            .fe_url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| {
                let a = u.authority()?;
                Some(format!("{}:{}", a.host(), a.port_u16().unwrap_or(80)))
            })
            .unwrap_or_default();
        DorisSink {
            client: StreamLoadClient::new(cfg),
            label_prefix: cfg.label_prefix.clone(),
            fe_addr,
            cfg: cfg.clone(),
        }
    }

    /// A TCP connection to the FE's HTTP port (readiness).
    pub async fn ping(&self) -> Result<(), String> {
        tokio::net::TcpStream::connect(&self.fe_addr)
            .await
            .map(drop)
            .map_err(|e| format!("connecting to {}: {e}", self.fe_addr))
    }

    /// The Stream Load client (for tools and tests).
    pub fn client(&self) -> &StreamLoadClient {
        &self.client
    }

    async fn load<T: Serialize>(
        &self,
        table: Table,
        rows: &[T],
        token: &str,
    ) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let err = |e: LoadError| {
            let retryable = e.is_retryable();
            SinkError::Write {
                backend: BACKEND,
                table: table.name,
                source: BackendError::new(e, retryable),
            }
        };
        let body = json_lines(table, rows).map_err(err)?;
        let label = label(&self.label_prefix, table.name, token);
        let label_text = label.as_deref().unwrap_or("-");
        let outcome = self
            .client
            .load(table.name, label.as_deref(), body)
            .await
            .map_err(err)?;
        match outcome {
            Loaded::Written {
                total_rows,
                loaded_rows,
                filtered_rows,
            } => {
                let sent = rows.len() as u64;
                if total_rows != sent || loaded_rows != sent || filtered_rows != 0 {
                    // Strict mode with max_filter_ratio 0 makes this a Fail; seeing it means
                    // the server does not honour those settings.
                    tracing::error!(
                        table = table.name,
                        label = label_text,
                        sent,
                        total_rows,
                        loaded_rows,
                        filtered_rows,
                        "Doris reported success with other row counts than were sent"
                    );
                } else {
                    tracing::debug!(
                        table = table.name,
                        label = label_text,
                        rows = sent,
                        "stream load done"
                    );
                }
            }
            Loaded::AlreadyLoaded => tracing::info!(
                table = table.name,
                label = label_text,
                "label already loaded: this batch's rows went in before (retried batch)"
            ),
        }
        Ok(())
    }
}

impl Sink for DorisSink {
    async fn write(&self, batch: &Batch) -> Result<(), SinkError> {
        // As for ClickHouse: the data tables at once, store rows last ("this message is
        // done"). A retry after a partial failure re-sends every table under the same labels:
        // the tables already loaded answer Label Already Exists and count as written.
        // Each table's label comes from its own token (the messages and that table's rows),
        // so the same messages processed again (a replay) load as new rows.
        let t = &batch.tokens;
        futures::try_join!(
            self.load(IMAGE, &batch.images, &t.image),
            self.load(STATE, &batch.states, &t.state),
            self.load(DLQ, &batch.dead_letters, &t.dlq),
        )?;
        self.load(STORE, &batch.stores, &t.store).await
    }

    async fn indexed_files(
        &self,
        tenant: &str,
        paths: &[&str],
    ) -> Result<Vec<IndexedFile>, SinkError> {
        super::indexed::indexed_files(&self.cfg, tenant, paths)
            .await
            .map_err(|e| query_error("indexed files", e))
    }
}

/// The Stream Load label of `table`'s rows of the batch with dedup token `token`:
/// `{prefix}_{table}_{first topic-partition-first-last range}_{32 hex of BLAKE3(token)}`,
/// within Doris's alphabet and 128 characters. The same batch always gets the same label (so
/// Doris refuses a second load of it); another set of messages gets another digest. None for
/// an empty token (no identity to protect; Doris then names the load itself).
pub fn label(prefix: &str, table: &str, token: &str) -> Option<String> {
    if token.is_empty() {
        return None;
    }
    let digest = blake3::hash(token.as_bytes()).to_hex();
    let digest = &digest.as_str()[..32];
    let first_range = token.split([',', '#']).next().unwrap_or("");
    let readable: String = first_range
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let budget = MAX_LABEL_LEN.saturating_sub(prefix.len() + table.len() + digest.len() + 3);
    // ASCII only after the mapping above, so any byte index is a character boundary.
    let readable = &readable[..readable.len().min(budget)];
    let mut label = format!("{prefix}_{table}_{readable}_{digest}");
    label.truncate(MAX_LABEL_LEN);
    Some(label)
}

/// Rows as JSON lines whose keys are exactly the Doris columns: timestamps (epoch ms in the
/// records) as `YYYY-MM-DD HH:MM:SS.mmm` UTC, fields without a column left out.
pub fn json_lines<T: Serialize>(table: Table, rows: &[T]) -> Result<Bytes, LoadError> {
    let encode = |reason: String| LoadError::Encode {
        table: table.name,
        reason,
    };
    let mut out = Vec::with_capacity(rows.len() * 1024);
    for row in rows {
        let mut value = serde_json::to_value(row).map_err(|e| encode(e.to_string()))?;
        let Value::Object(fields) = &mut value else {
            return Err(encode("a row is not a JSON object".into()));
        };
        for name in table.omitted {
            fields.remove(*name);
        }
        for name in table.timestamps {
            // A nullable timestamp stays null.
            if fields.get(*name).is_some_and(Value::is_null) {
                continue;
            }
            let text = fields
                .get(*name)
                .and_then(Value::as_i64)
                .and_then(doris_datetime)
                .ok_or_else(|| encode(format!("`{name}` is not a timestamp in range")))?;
            fields.insert((*name).to_string(), Value::String(text));
        }
        serde_json::to_writer(&mut out, &value).map_err(|e| encode(e.to_string()))?;
        out.push(b'\n');
    }
    Ok(Bytes::from(out))
}

/// Epoch milliseconds as a Doris `DATETIME(3)` literal in UTC.
pub fn doris_datetime(epoch_ms: i64) -> Option<String> {
    let format =
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(epoch_ms) * 1_000_000)
        .ok()?
        .format(format)
        .ok()
}

/// The backend's name in errors.
pub const BACKEND: &str = "Doris";

/// A failed query to the FE (`what` it was for) as the sink's error.
pub fn query_error(what: &'static str, e: SchemaError) -> SinkError {
    let retryable = e.is_retryable();
    SinkError::Query {
        backend: BACKEND,
        what,
        source: BackendError::new(e, retryable),
    }
}

/// A failed DDL statement as the sink's error.
pub fn schema_error(cfg: &DorisConfig, e: SchemaError) -> SinkError {
    let retryable = e.is_retryable();
    SinkError::Schema {
        backend: BACKEND,
        target: cfg.mysql_addr.clone(),
        source: BackendError::new(e, retryable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DlqRecord, ImageRecord, StateRecord, StoreRecord};
    use crate::sink::doris::schema;
    use std::collections::BTreeSet;

    fn at(ms: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
    }

    fn rows() -> (ImageRecord, StateRecord, StoreRecord) {
        let (mut image, state, mut store) = crate::testing::indexed("1.2.3", "1.2.3.4");
        image.pixel_spacing = vec![0.5, 0.5];
        store.kafka_topic = "dicom.store".into();
        store.received_at = at(1_767_225_600_123);
        store.processed_at = at(1_767_225_601_000);
        (image, state, store)
    }

    fn store(offset: i64) -> StoreRecord {
        StoreRecord {
            kafka_offset: offset,
            ..rows().2
        }
    }

    fn dlq() -> DlqRecord {
        DlqRecord {
            trace_id: "t".into(),
            tenant_id: "x".into(),
            file_path: "/f".into(),
            reason: "not_dicom".into(),
            error: "e".into(),
            payload: "{}".into(),
            kafka_topic: "dicom.store".into(),
            kafka_partition: 0,
            kafka_offset: 9,
            failed_at: at(5),
        }
    }

    fn keys_of(body: &Bytes) -> Vec<BTreeSet<String>> {
        body.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_slice(l).unwrap();
                v.as_object().unwrap().keys().cloned().collect()
            })
            .collect()
    }

    /// Every table's JSON keys are exactly its columns in the shipped DDL: a field added to a
    /// record without its Doris column (or the reverse) fails here, not in production.
    #[test]
    fn rows_have_exactly_the_doris_columns() {
        let cases: [(Table, Bytes); 4] = [
            (IMAGE, json_lines(IMAGE, &[rows().0]).unwrap()),
            (STATE, json_lines(STATE, &[rows().1]).unwrap()),
            (STORE, json_lines(STORE, &[store(1), store(2)]).unwrap()),
            (DLQ, json_lines(DLQ, &[dlq()]).unwrap()),
        ];
        for (table, body) in cases {
            let columns: BTreeSet<String> =
                crate::sink::sql::table_columns(schema::DDL, table.name)
                    .into_iter()
                    .collect();
            assert!(!columns.is_empty(), "{} not in sql/doris.sql", table.name);
            for keys in keys_of(&body) {
                assert_eq!(keys, columns, "{}", table.name);
            }
        }
    }

    #[test]
    fn values_are_in_doris_formats() {
        let body = json_lines(STORE, &[store(7)]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(body.trim_ascii_end()).unwrap();
        assert_eq!(v["received_at"], "2026-01-01 00:00:00.123");
        assert_eq!(v["processed_at"], "2026-01-01 00:00:01.000");
        assert_eq!(v["kafka_offset"], 7);
        let body = json_lines(IMAGE, &[rows().0]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(body.trim_ascii_end()).unwrap();
        assert_eq!(v["pixel_spacing"], serde_json::json!([0.5, 0.5]));
        assert!(v["slice_thickness"].is_null());
        assert_eq!(v["rows"], 0);
        assert_eq!(doris_datetime(0).unwrap(), "1970-01-01 00:00:00.000");
        // Two rows, two lines.
        assert_eq!(
            json_lines(STORE, &[store(1), store(2)])
                .unwrap()
                .iter()
                .filter(|b| **b == b'\n')
                .count(),
            2
        );
    }

    #[test]
    fn labels_are_deterministic_valid_and_distinct() {
        let token = crate::sink::dedup_token(&[store(3), store(4), store(9)]);
        let a = label("dicom", "dicom_image", &token).unwrap();
        assert_eq!(a, label("dicom", "dicom_image", &token).unwrap());
        assert!(a.starts_with("dicom_dicom_image_dicom-store-0-3-9_"), "{a}");
        let valid = |l: &str| {
            !l.is_empty()
                && l.len() <= MAX_LABEL_LEN
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':'))
        };
        assert!(valid(&a), "{a}");
        // Per table (labels are unique per database) and per set of messages.
        assert_ne!(a, label("dicom", "dicom_store", &token).unwrap());
        let other = crate::sink::dedup_token(&[store(3), store(5), store(9)]);
        assert_ne!(a, label("dicom", "dicom_image", &other).unwrap());
        // Long, odd topic names still fit.
        let mut long = store(1);
        long.kafka_topic = "ü.".repeat(200);
        let l = label(
            &"p".repeat(32),
            "dicom_image",
            &crate::sink::dedup_token(&[long]),
        )
        .unwrap();
        assert!(valid(&l) && l.len() == MAX_LABEL_LEN, "{l}");
        assert_eq!(label("dicom", "dicom_image", ""), None);
    }
}
