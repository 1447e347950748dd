//! Apache Doris backend: one Stream Load per table per batch, DDL over the MySQL protocol.
//!
//! Tables (`sql/doris.sql`) mirror the ClickHouse ones: Unique Key (merge on write) on the
//! same logical keys with the version column as the sequence column, and `dicom_state` as an
//! Aggregate table (REPLACE / MIN / MAX). A redelivered message therefore collapses into its
//! row, as with ClickHouse; and every load carries a label derived from the batch's
//! deduplication token, so a retried batch (or a table of it) is refused by Doris as
//! `Label Already Exists` and counted as written — it is never loaded twice.
//!
//! Not run against a real Doris here (none can be installed on these machines): the client
//! is tested against a fake Stream Load server in `tests/it/doris.rs` that implements the
//! documented behaviour (labels, FE → BE redirect, failure bodies).
//!
//! - `stream_load.rs`: the HTTP client (redirects followed by hand, auth kept) and the
//!   classification of Doris's answers into written / already written / retryable /
//!   permanent.
//! - `answer.rs`: Doris's answer to a load, classified.
//! - `indexed.rs`: `--skip-indexed`'s lookup over the MySQL port.
//! - `service.rs`: the [`crate::sink::Sink`] implementation: rows → JSON lines in the Doris
//!   column formats, labels.
//! - `schema.rs`: the shipped DDL, templated, split and applied over the MySQL protocol.

mod answer;
pub mod indexed;
pub mod schema;
pub mod service;
pub mod stream_load;

pub use schema::SchemaError;
pub use service::DorisSink;
pub use stream_load::{LoadError, Loaded, StreamLoadClient};
