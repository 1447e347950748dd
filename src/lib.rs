//! dicom-pipeline: index stored DICOM files at volume.
//!
//! Store messages (one per stored file) arrive on a Kafka topic; workers parse each file on
//! a fixed pool of compute threads, publish derived records, write rows to ClickHouse (or
//! Doris) through a batching sink, and commit offsets through a per-partition watermark
//! tracker. See ARCHITECTURE.md.

pub mod attributes;
pub mod backfill;
pub mod cli;
pub mod compute;
pub mod config;
pub mod kafka;
pub mod lag;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod privacy;
pub mod publish;
pub mod records;
pub mod sink;
pub mod status;
pub mod storage;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod verify;
pub mod workers;
