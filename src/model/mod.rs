//! Wire and table records.
//!
//! One struct per record kind serves both the Kafka JSON payload and the ClickHouse row, so the
//! JSON keys are exactly the column names. Timestamps are epoch milliseconds (`DateTime64(3)` in
//! ClickHouse, integers in JSON) — unambiguous, timezone-free, and cheap to encode.
//!
//! - `input.rs`: the store message read from the input topic ([`DicomStoreMeta`]) and where a
//!   record was read from ([`SourceOffset`]); `input_time.rs`: its timestamps' wire forms.
//! - `image.rs`: [`ImageRecord`], one per indexed instance, and [`dicom_datetime`].
//! - `state.rs`: [`StateRecord`], one series' coalesced state.
//! - `store_record.rs`: [`StoreRecord`], every consumed message's outcome.
//! - `dead_letter.rs`: [`DlqRecord`] and the stable [`Reason`] codes.
//! - `log_event.rs`: [`LogEvent`], the audit events, and [`epoch_ms`].
//! - `keys.rs`: each published record's message key ([`md5_key`]).

mod dead_letter;
mod image;
mod input;
pub mod input_time;
mod keys;
mod log_event;
mod state;
mod store_record;

pub use dead_letter::{DlqRecord, Reason};
pub use image::{dicom_datetime, ImageRecord};
pub use input::{DicomStoreMeta, SourceOffset};
pub use keys::md5_key;
pub use log_event::{epoch_ms, LogEvent};
pub use state::StateRecord;
pub use store_record::{StoreRecord, StoreStatus};

/// The sink's tables, one per record kind (`ImageRecord`, `StateRecord`, `StoreRecord`,
/// `DlqRecord`), in the order the sink counts and the metrics label them.
pub const TABLES: [&str; 4] = ["dicom_image", "dicom_state", "dicom_store", "dicom_dlq"];
