//! What arrives on the input topic: the store message (one per stored file) and where a
//! record was read from.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::input_time;

/// One stored DICOM file, as published by the store system (or `backfill`) on the input topic.
///
/// Unknown fields are ignored: store systems add fields over time and the pipeline must keep
/// consuming their messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DicomStoreMeta {
    /// Correlates every record derived from this message.
    pub trace_id: String,
    /// Owning tenant; part of every message key.
    pub tenant_id: String,
    /// Which store system or backfill source published the message.
    #[serde(default)]
    pub source: String,
    /// Absolute path of the stored file; must resolve inside a configured storage root.
    pub file_path: String,
    /// Size in bytes the store system saw.
    #[serde(default)]
    pub file_size: u64,
    /// Modification time of the file the store system saw, when known (epoch milliseconds
    /// here; on the wire an RFC 3339 timestamp, or epoch milliseconds); `backfill` fills it in
    /// and `--skip-indexed` compares it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "input_time::optional_ms"
    )]
    pub file_mtime: Option<i64>,
    /// When the store system received the file: an RFC 3339 timestamp (epoch milliseconds
    /// are accepted too).
    #[serde(with = "input_time::rfc3339")]
    pub received_at: OffsetDateTime,
    /// Optional identifiers the producer may already know; the file is authoritative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sop_uid: Option<String>,
}

/// Where a record came from on the input topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_meta_accepts_minimal_and_extra_fields() {
        let json = r#"{"trace_id":"a","tenant_id":"t","file_path":"/x","received_at":"2026-01-01T00:00:00Z","unknown":1}"#;
        let meta: DicomStoreMeta = serde_json::from_str(json).unwrap();
        assert_eq!(meta.file_size, 0);
        assert_eq!(meta.file_mtime, None);
        assert_eq!(meta.source, "");
        assert!(meta.sop_uid.is_none());
    }

    #[test]
    fn store_message_times_are_rfc3339_and_epoch_milliseconds_are_accepted() {
        let text = r#"{"trace_id":"t","tenant_id":"x","file_path":"/a","received_at":"2026-12-03T10:00:00.250Z","file_mtime":"2026-12-01T00:00:00Z"}"#;
        let m: DicomStoreMeta = serde_json::from_str(text).unwrap();
        assert_eq!(m.file_mtime, Some(1_796_083_200_000));
        assert_eq!(
            m.received_at.unix_timestamp_nanos() / 1_000_000,
            1_796_292_000_250
        );
        // The same instants as integers.
        let ints = r#"{"trace_id":"t","tenant_id":"x","file_path":"/a","received_at":1796292000250,"file_mtime":1796083200000}"#;
        assert_eq!(serde_json::from_str::<DicomStoreMeta>(ints).unwrap(), m);
        // Written back: RFC 3339 both.
        let out = serde_json::to_value(&m).unwrap();
        assert_eq!(out["received_at"], "2026-12-03T10:00:00.25Z");
        assert_eq!(out["file_mtime"], "2026-12-01T00:00:00Z");
        let bad = r#"{"trace_id":"t","tenant_id":"x","file_path":"/a","received_at":"yesterday"}"#;
        let err = serde_json::from_str::<DicomStoreMeta>(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("RFC 3339"), "{err}");
    }
}
