//! The image record, one per indexed instance (its header attributes come from the table in
//! `attributes.rs`), and the DICOM date + time reading that fills its instants.

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::attributes::{define_image_record, header_attributes};

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

#[cfg(test)]
mod tests {
    use super::*;

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
