//! Wire and table records.
//!
//! One struct per record kind serves both the Kafka JSON payload and the ClickHouse row, so the
//! JSON keys are exactly the column names. Timestamps are epoch milliseconds (`DateTime64(3)` in
//! ClickHouse, integers in JSON) — unambiguous, timezone-free, and cheap to encode.

use crate::attributes::{define_image_record, header_attributes};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The sink's tables, one per record kind (`ImageRecord`, `StateRecord`, `StoreRecord`,
/// `DlqRecord`), in the order the sink counts and the metrics label them.
pub const TABLES: [&str; 4] = ["dicom_image", "dicom_state", "dicom_store", "dicom_dlq"];

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

/// Timestamps in store messages: every one is written as RFC 3339 (what a receiver has at
/// hand, readable in any consumer tool), and epoch milliseconds (an integer) are accepted
/// too. Records the pipeline publishes carry epoch milliseconds, like the table columns.
/// `docs/store-message.schema.json` states the same.
pub mod input_time {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Millis(i64),
        Text(String),
    }

    fn parse<E: serde::de::Error>(v: Either) -> Result<OffsetDateTime, E> {
        match v {
            Either::Millis(ms) => {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                    .map_err(|e| E::custom(format!("epoch milliseconds {ms}: {e}")))
            }
            Either::Text(t) => {
                OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| E::custom(format!("`{t}` is not an RFC 3339 timestamp: {e}")))
            }
        }
    }

    pub mod rfc3339 {
        use super::*;

        pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
            time::serde::rfc3339::serialize(t, s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
            parse(Either::deserialize(d)?)
        }
    }

    /// An optional time held as epoch milliseconds, written as RFC 3339.
    pub mod optional_ms {
        use super::*;

        pub fn serialize<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
            let t = ms.and_then(|ms| {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
            });
            match t {
                Some(t) => time::serde::rfc3339::serialize(&t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
            match Option::<Either>::deserialize(d)? {
                None => Ok(None),
                Some(v) => {
                    let t = parse::<D::Error>(v)?;
                    Ok(Some((t.unix_timestamp_nanos() / 1_000_000) as i64))
                }
            }
        }
    }
}

/// Where a record came from on the input topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

header_attributes!(define_image_record!(
    /// `dicom_image` row, `dicom.image` record, Doris JSON line and `derive` output line: one
    /// per indexed instance. Its header attributes are the `image` group of the table in
    /// `attributes.rs`; the fields below are what the pipeline adds.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Row)]
    struct ImageRecord {
        pub tenant_id: String,
        /// StudyDate + StudyTime as one instant (the modality's local time as written, no
        /// zone: stored as UTC); null when the date is absent or not a date. The raw strings
        /// stay in `study_date` / `study_time`.
        #[serde(with = "clickhouse::serde::time::datetime64::millis::option")]
        pub study_at: Option<OffsetDateTime>,
        /// SeriesDate + SeriesTime, as `study_at`.
        #[serde(with = "clickhouse::serde::time::datetime64::millis::option")]
        pub series_at: Option<OffsetDateTime>,
        /// AcquisitionDate + AcquisitionTime, as `study_at`.
        #[serde(with = "clickhouse::serde::time::datetime64::millis::option")]
        pub acquisition_at: Option<OffsetDateTime>,
        /// ContentDate + ContentTime, as `study_at`.
        #[serde(with = "clickhouse::serde::time::datetime64::millis::option")]
        pub content_at: Option<OffsetDateTime>,
        /// The file's transfer syntax.
        pub transfer_syntax_uid: String,
        /// BLAKE3 of the encoded data set before PixelData: a resend of the same file has the
        /// same digest; "same SOP UID, different content" shows as two digests.
        pub header_digest: String,
        /// Stored-value statistics over all frames and samples (`full` mode; null otherwise).
        pub pixel_min: Option<f64>,
        pub pixel_max: Option<f64>,
        pub pixel_mean: Option<f64>,
        pub pixel_std: Option<f64>,
        pub pixel_p01: Option<f64>,
        pub pixel_p50: Option<f64>,
        pub pixel_p99: Option<f64>,
        /// Modality-value (rescaled) statistics, grayscale images only.
        pub modality_min: Option<f64>,
        pub modality_max: Option<f64>,
        pub modality_mean: Option<f64>,
        pub modality_std: Option<f64>,
        /// BLAKE3 of the canonical stored-value bytes (independent of the transfer syntax).
        pub pixel_digest: Option<String>,
        pub file_path: String,
        pub file_size: u64,
        /// The store message's `file_mtime` (epoch ms; null when the producer did not know it).
        pub file_mtime: Option<i64>,
        pub trace_id: String,
        pub source: String,
        pub kafka_topic: String,
        pub kafka_partition: i32,
        pub kafka_offset: i64,
        #[serde(with = "clickhouse::serde::time::datetime64::millis")]
        pub received_at: OffsetDateTime,
        #[serde(with = "clickhouse::serde::time::datetime64::millis")]
        pub processed_at: OffsetDateTime,
    }
));

/// A DICOM date (DA, `YYYYMMDD`; the old `YYYY.MM.DD` too) and time (TM, `HH[MM[SS[.F]]]`,
/// possibly empty) as one instant, read leniently: spaces trimmed, a missing or unreadable
/// time is midnight, an unreadable date is None. No zone is applied (DICOM times are the
/// modality's local time unless TimezoneOffsetFromUTC says otherwise).
pub fn dicom_datetime(date: &str, time: &str) -> Option<OffsetDateTime> {
    let digits: String = date.trim().chars().filter(|c| *c != '.').collect();
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = digits[..4].parse().ok()?;
    let month: u8 = digits[4..6].parse().ok()?;
    let day: u8 = digits[6..8].parse().ok()?;
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    let t = time.trim().replace(':', "");
    let (hms, frac) = t.split_once('.').unwrap_or((&t, ""));
    let part = |from: usize| -> Option<u8> {
        match hms.get(from..from + 2) {
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok(),
            Some(_) => None,
            None => Some(0),
        }
    };
    let nanos: u32 = if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        0
    } else {
        format!("{frac:0<9}")[..9].parse().unwrap_or(0)
    };
    let clock = match (part(0), part(2), part(4)) {
        (Some(h), Some(m), Some(s)) if hms.bytes().all(|b| b.is_ascii_digit()) => {
            time::Time::from_hms_nano(h, m, s.min(59), nanos).ok()
        }
        _ => None,
    }
    .unwrap_or(time::Time::MIDNIGHT);
    Some(time::PrimitiveDateTime::new(date, clock).assume_utc())
}

impl ImageRecord {
    /// Message key: md5 of `tenant_patient_study_series_sop`, as the store system keys it.
    pub fn key(&self) -> String {
        md5_key(&[
            &self.tenant_id,
            &self.patient_id,
            &self.study_uid,
            &self.series_uid,
            &self.sop_uid,
        ])
    }
}

/// `dicom_state` row and `dicom.state` record: the latest known attributes of one series,
/// the SOP Instance UIDs seen and when, coalesced to at most one record per series per sink
/// flush. The table aggregates records (union of UIDs, min/max times), so the instance
/// count — `length(sop_uids)` under `FINAL`, or the `dicom_series` view — is exact under
/// redelivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Row)]
pub struct StateRecord {
    pub tenant_id: String,
    pub patient_id: String,
    pub study_uid: String,
    pub series_uid: String,
    pub patient_name: String,
    pub patient_sex: String,
    pub patient_birth_date: String,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub study_description: String,
    pub series_description: String,
    pub modality: String,
    pub body_part: String,
    pub institution: String,
    pub manufacturer: String,
    /// Distinct SOP Instance UIDs of this series in this record.
    pub sop_uids: Vec<String>,
    /// Earliest / latest store time (`received_at`) of those instances.
    #[serde(with = "clickhouse::serde::time::datetime64::millis")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "clickhouse::serde::time::datetime64::millis")]
    pub last_seen: OffsetDateTime,
    #[serde(with = "clickhouse::serde::time::datetime64::millis")]
    pub updated_at: OffsetDateTime,
}

impl StateRecord {
    /// Message key: md5 of `tenant_patient_study_series`.
    pub fn key(&self) -> String {
        md5_key(&[
            &self.tenant_id,
            &self.patient_id,
            &self.study_uid,
            &self.series_uid,
        ])
    }

    /// Fold a later record of the same series into this one: its attributes win, UIDs are
    /// united (kept sorted, so each absorbed UID is one binary search: the earlier linear
    /// `contains` per UID made a batch's coalescing quadratic in a series' instances, 9.6 %
    /// of a header-only run's CPU), the seen-interval widened.
    /// The record as two, each with half of the SOP UIDs (None for one UID or none): a
    /// record too large for the state topic goes out in parts, which consumers coalesce
    /// like any two records of the series.
    pub fn split(&self) -> Option<(StateRecord, StateRecord)> {
        if self.sop_uids.len() < 2 {
            return None;
        }
        let half = self.sop_uids.len() / 2;
        let mut first = self.clone();
        let second_uids = first.sop_uids.split_off(half);
        let mut second = first.clone();
        second.sop_uids = second_uids;
        Some((first, second))
    }

    pub fn absorb(&mut self, later: &StateRecord) {
        let mut uids = std::mem::take(&mut self.sop_uids);
        if !uids.is_sorted() {
            uids.sort_unstable();
            uids.dedup();
        }
        let (first, last) = (
            self.first_seen.min(later.first_seen),
            self.last_seen.max(later.last_seen),
        );
        *self = later.clone();
        for uid in std::mem::take(&mut self.sop_uids) {
            if let Err(at) = uids.binary_search(&uid) {
                uids.insert(at, uid);
            }
        }
        self.sop_uids = uids;
        self.first_seen = first;
        self.last_seen = last;
    }

    /// Identity of the series this record describes (coalescing key).
    pub fn series_identity(&self) -> (String, String, String, String) {
        (
            self.tenant_id.clone(),
            self.patient_id.clone(),
            self.study_uid.clone(),
            self.series_uid.clone(),
        )
    }
}

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

    /// Message key: the trace id when there is one, else the source coordinates.
    pub fn key(&self) -> String {
        if self.trace_id.is_empty() {
            format!(
                "{}-{}-{}",
                self.kafka_topic, self.kafka_partition, self.kafka_offset
            )
        } else {
            self.trace_id.clone()
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

/// An audit event on the log topic (`dicom.log`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LogEvent {
    WorkerStarted {
        worker: usize,
        group_id: String,
        at_ms: i64,
    },
    WorkerStopped {
        worker: usize,
        consumed: u64,
        at_ms: i64,
    },
    BatchFlushed {
        images: usize,
        states: usize,
        stores: usize,
        dead_letters: usize,
        attempts: u32,
        duration_ms: u64,
        at_ms: i64,
    },
}

/// Hex md5 of the parts joined by `_` (the store system's key scheme).
pub fn md5_key(parts: &[&str]) -> String {
    format!("{:x}", md5::compute(parts.join("_")))
}

/// Epoch milliseconds of a timestamp.
pub fn epoch_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_key_matches_store_system_scheme() {
        // md5("t_p_s") computed independently: printf 't_p_s' | md5sum
        assert_eq!(
            md5_key(&["t", "p", "s"]),
            "772e29ec7a01b13d49d81b9b2c7b4810"
        );
    }

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
    fn state_absorb_unites_uids_and_widens_the_interval() {
        let t = |s: i64| OffsetDateTime::from_unix_timestamp(s).unwrap();
        let rec = |uid: &str, at: i64, desc: &str| StateRecord {
            tenant_id: "t".into(),
            patient_id: "p".into(),
            study_uid: "1".into(),
            series_uid: "1.1".into(),
            patient_name: String::new(),
            patient_sex: String::new(),
            patient_birth_date: String::new(),
            study_date: String::new(),
            study_time: String::new(),
            accession_number: String::new(),
            study_description: String::new(),
            series_description: desc.into(),
            modality: "CT".into(),
            body_part: String::new(),
            institution: String::new(),
            manufacturer: String::new(),
            sop_uids: vec![uid.into()],
            first_seen: t(at),
            last_seen: t(at),
            updated_at: t(100),
        };
        let mut a = rec("b", 20, "old");
        a.absorb(&rec("a", 10, "new"));
        a.absorb(&rec("b", 30, "newest"));
        assert_eq!(a.sop_uids, vec!["a".to_string(), "b".to_string()]);
        // A record whose UIDs arrive unsorted (not from `absorb`) is put in order first.
        let mut u = rec("z", 40, "u");
        u.sop_uids = vec!["m".into(), "c".into(), "m".into()];
        u.absorb(&rec("d", 50, "later"));
        assert_eq!(u.sop_uids, ["c", "d", "m"]);
        assert_eq!((a.first_seen, a.last_seen), (t(10), t(30)));
        assert_eq!(a.series_description, "newest");
    }

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

    #[test]
    fn dicom_dates_and_times_are_read_leniently() {
        let t = |d, tm| dicom_datetime(d, tm).map(|t| t.to_string());
        assert_eq!(
            t("20260103", "142005.25"),
            Some("2026-01-03 14:20:05.25 +00:00:00".into())
        );
        assert_eq!(
            t("20260103", ""),
            Some("2026-01-03 0:00:00.0 +00:00:00".into())
        );
        assert_eq!(
            t("2026.01.03", "14"),
            Some("2026-01-03 14:00:00.0 +00:00:00".into())
        );
        assert_eq!(
            t(" 20260103 ", "1420"),
            Some("2026-01-03 14:20:00.0 +00:00:00".into())
        );
        assert_eq!(
            t("20260103", "14:20:05"),
            Some("2026-01-03 14:20:05.0 +00:00:00".into())
        );
        // A leap second is written as 60: kept within the minute.
        assert_eq!(
            t("20261231", "235960"),
            Some("2026-12-31 23:59:59.0 +00:00:00".into())
        );
        // Unreadable times are midnight; unreadable dates are nothing.
        assert_eq!(
            t("20260103", "noon"),
            Some("2026-01-03 0:00:00.0 +00:00:00".into())
        );
        for bad in [
            "",
            "2026",
            "20261301",
            "20260230",
            "yesterday",
            "2026-01-03",
        ] {
            assert_eq!(t(bad, "120000"), None, "{bad}");
        }
    }
}
