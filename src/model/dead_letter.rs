//! Dead letters: the `dicom_dlq` record of a message that could not be indexed, its bounded
//! form for a broker that refuses the full one, and the stable reason codes.

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `dicom_dlq` row and `dicom.dlq` record: one per message that could not be indexed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Row)]
pub struct DlqRecord {
    pub trace_id: String,
    pub tenant_id: String,
    pub file_path: String,
    /// Stable short code, see [`crate::model::Reason`].
    pub reason: String,
    /// Human-readable detail (never contains patient identifiers: it is built from error
    /// kinds, paths and tag numbers only).
    pub error: String,
    /// The input payload, lossily decoded as UTF-8 and capped, for replay and diagnosis.
    pub payload: String,
    pub kafka_topic: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    #[serde(with = "clickhouse::serde::time::datetime64::millis")]
    pub failed_at: OffsetDateTime,
}

/// Field bounds of a shrunk dead letter ([`DlqRecord::shrunk`]).
const SHRUNK_ID: usize = 256;
const SHRUNK_PATH: usize = 1024;
const SHRUNK_ERROR: usize = 512;

/// The first `max` bytes of `s`, cut at a character boundary.
fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl DlqRecord {
    /// The same dead letter with every free-text field bounded and the payload withheld:
    /// what is published when the broker refuses the full record (too large for the topic's
    /// `max.message.bytes`). The full record still goes to `dicom_dlq`, and the payload is
    /// on the input topic at the record's offset.
    pub fn shrunk(&self) -> DlqRecord {
        DlqRecord {
            trace_id: bounded(&self.trace_id, SHRUNK_ID),
            tenant_id: bounded(&self.tenant_id, SHRUNK_ID),
            file_path: bounded(&self.file_path, SHRUNK_PATH),
            reason: self.reason.clone(),
            error: bounded(&self.error, SHRUNK_ERROR),
            payload: format!(
                "<withheld: the broker refused the full dead letter; {} bytes of payload are in dicom_dlq and on the input topic at this offset>",
                self.payload.len()
            ),
            kafka_topic: self.kafka_topic.clone(),
            kafka_partition: self.kafka_partition,
            kafka_offset: self.kafka_offset,
            failed_at: self.failed_at,
        }
    }
}

/// Why a message went to the dead-letter queue. The codes are stable: dashboards, the DLQ
/// table and acceptance checks use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    EmptyPayload,
    BadJson,
    InvalidMessage,
    PathOutsideRoot,
    FileNotFound,
    NotAFile,
    ReadFailed,
    TooLarge,
    NotDicom,
    Truncated,
    Malformed,
    MissingUid,
    UnsupportedTransferSyntax,
    /// The transfer syntax is known but this image's pixel format is not decodable
    /// (12-bit JPEG extended, 32-bit RLE, BitsAllocated other than 1/8/16/32).
    UnsupportedPixelFormat,
    /// PixelData holds fewer bytes than Rows × Columns × Samples × Frames need.
    PixelDataShort,
    /// A codec failed on the compressed pixel data.
    DecodeFailed,
    ProduceFailed,
    Internal,
}

impl Reason {
    pub const ALL: [Reason; 18] = [
        Reason::EmptyPayload,
        Reason::BadJson,
        Reason::InvalidMessage,
        Reason::PathOutsideRoot,
        Reason::FileNotFound,
        Reason::NotAFile,
        Reason::ReadFailed,
        Reason::TooLarge,
        Reason::NotDicom,
        Reason::Truncated,
        Reason::Malformed,
        Reason::MissingUid,
        Reason::UnsupportedTransferSyntax,
        Reason::UnsupportedPixelFormat,
        Reason::PixelDataShort,
        Reason::DecodeFailed,
        Reason::ProduceFailed,
        Reason::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::EmptyPayload => "empty_payload",
            Reason::BadJson => "bad_json",
            Reason::InvalidMessage => "invalid_message",
            Reason::PathOutsideRoot => "path_outside_root",
            Reason::FileNotFound => "file_not_found",
            Reason::NotAFile => "not_a_file",
            Reason::ReadFailed => "read_failed",
            Reason::TooLarge => "too_large",
            Reason::NotDicom => "not_dicom",
            Reason::Truncated => "truncated",
            Reason::Malformed => "malformed",
            Reason::MissingUid => "missing_uid",
            Reason::UnsupportedTransferSyntax => "unsupported_transfer_syntax",
            Reason::UnsupportedPixelFormat => "unsupported_pixel_format",
            Reason::PixelDataShort => "pixel_data_short",
            Reason::DecodeFailed => "decode_failed",
            Reason::ProduceFailed => "produce_failed",
            Reason::Internal => "internal",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_unique() {
        let codes: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(codes.len(), Reason::ALL.len());
    }

    #[test]
    fn a_shrunk_dead_letter_bounds_its_text_and_withholds_the_payload() {
        let d = DlqRecord {
            trace_id: "é".repeat(300),
            tenant_id: "t".into(),
            file_path: "/".repeat(5000),
            reason: "file_not_found".into(),
            error: "e".repeat(3000),
            payload: "p".repeat(4096),
            kafka_topic: "in".into(),
            kafka_partition: 2,
            kafka_offset: 9,
            failed_at: OffsetDateTime::UNIX_EPOCH,
        };
        let s = d.shrunk();
        assert_eq!(s.trace_id.len(), 256, "cut at a character boundary");
        assert_eq!(s.file_path.len(), 1024);
        assert_eq!(s.error.len(), 512);
        assert!(s.payload.contains("4096 bytes"), "{}", s.payload);
        assert_eq!((s.reason.as_str(), s.kafka_offset), ("file_not_found", 9));
        assert!(serde_json::to_vec(&s).unwrap().len() < 2200);
    }
}
