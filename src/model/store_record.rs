//! The `dicom_store` row: every consumed store message and its outcome (indexed or
//! dead-lettered), including a message that was not a store message at all.

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{DicomStoreMeta, SourceOffset};

/// Outcome of one store message, as recorded in `dicom_store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreStatus {
    Indexed,
    DeadLetter,
}

impl StoreStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreStatus::Indexed => "indexed",
            StoreStatus::DeadLetter => "dead_letter",
        }
    }
}

/// `dicom_store` row: every consumed store message and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Row)]
pub struct StoreRecord {
    pub trace_id: String,
    pub tenant_id: String,
    pub source: String,
    pub file_path: String,
    pub file_size: u64,
    pub status: String,
    /// The SOP Instance UID the message indexed (empty for a dead letter): what `verify`
    /// looks up in `dicom_image` (a file sent twice has two store rows and one image row).
    #[serde(default)]
    pub sop_uid: String,
    pub kafka_topic: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    #[serde(with = "clickhouse::serde::time::datetime64::millis")]
    pub received_at: OffsetDateTime,
    #[serde(with = "clickhouse::serde::time::datetime64::millis")]
    pub processed_at: OffsetDateTime,
}

impl StoreRecord {
    /// The row for a parsed store message: `file_size` as the file measured when it was
    /// read (the message's own size for a dead letter), `sop_uid` empty for a dead letter.
    pub fn of(
        meta: &DicomStoreMeta,
        src: &SourceOffset,
        status: StoreStatus,
        file_size: u64,
        sop_uid: &str,
        now: OffsetDateTime,
    ) -> StoreRecord {
        StoreRecord {
            trace_id: meta.trace_id.clone(),
            tenant_id: meta.tenant_id.clone(),
            source: meta.source.clone(),
            file_path: meta.file_path.clone(),
            file_size,
            status: status.as_str().into(),
            sop_uid: sop_uid.to_string(),
            received_at: meta.received_at,
            ..StoreRecord::unparsed(src, now)
        }
    }

    /// The row for a message whose payload was not a store message: only where it was
    /// read from is known, and it was dead-lettered.
    pub fn unparsed(src: &SourceOffset, now: OffsetDateTime) -> StoreRecord {
        StoreRecord {
            trace_id: String::new(),
            tenant_id: String::new(),
            source: String::new(),
            file_path: String::new(),
            file_size: 0,
            status: StoreStatus::DeadLetter.as_str().into(),
            sop_uid: String::new(),
            kafka_topic: src.topic.clone(),
            kafka_partition: src.partition,
            kafka_offset: src.offset,
            received_at: now,
            processed_at: now,
        }
    }
}
