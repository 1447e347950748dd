//! Audit events on the log topic (`dicom.log`) and the epoch-millisecond times they carry.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

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

/// Epoch milliseconds of a timestamp.
pub fn epoch_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}
