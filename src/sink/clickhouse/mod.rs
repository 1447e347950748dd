//! ClickHouse backend: RowBinary inserts through the official `clickhouse` crate over an HTTP
//! client with TCP_NODELAY (without it, small inserts stall ~40 ms on Nagle/delayed-ACK).
//!
//! Tables are `ReplacingMergeTree`s keyed by the logical identity of a row (SOP instance for
//! `dicom_image`, series for `dicom_state`, input coordinates for `dicom_store`/`dicom_dlq`),
//! so a redelivered message collapses into the same logical row. Read exact results with
//! `FINAL` (or `argMax` over the version column).
//!
//! - `schema.rs`: DDL, applied idempotently by `schema` and on `run` start.
//! - `service.rs`: the client and the [`crate::sink::Sink`] implementation.

pub mod schema;
pub mod service;

pub use service::ClickHouseSink;
