//! Operational metrics (Prometheus) and the health endpoints.
//!
//! One [`Metrics`] per process, created once in `pipeline::run` and cloned into every worker,
//! processor and the batcher (clones share the same counters). Handles for fixed label values
//! (the configured topics, every dead-letter reason, every stage and table) are resolved once
//! at creation, so the per-message cost is an atomic add; only the per-partition gauges go
//! through a label lookup, once per commit tick.
//!
//! Series of partitions a worker no longer owns are removed when the partition is revoked
//! (and when the worker stops), so a dashboard never shows a stale lag for a partition that
//! moved to another process.
//!
//! - `registry/`: the metric families and the handles the pipeline updates.
//! - `server.rs`: the HTTP endpoint: `/metrics` (OpenMetrics text), `/healthz` (the process
//!   answers), `/readyz` (partitions assigned and the sink reachable).
//!
//! Metric names (all prefixed `dicom_pipeline_`; docs/OPERATIONS.md has the table, the
//! dashboard in `deploy/grafana/` uses them):
//! `messages_consumed_total{topic}`, `messages_produced_total{topic}`,
//! `publish_errors_total{topic}`, `consume_errors_total`, `dlq_records_total{reason}`,
//! `sink_rows_total{table}`, `sink_errors_total{kind}`, `storage_secondary_hits_total`,
//! `stage_duration_seconds{stage}` (read, parse, decode, produce, sink), `in_flight`,
//! `assigned_partitions`, `ready`, and per partition `partition_committed_offset`,
//! `partition_watermark_gap`, `partition_lag` `{topic, partition}`.

pub mod registry;
pub mod server;

pub use registry::{GroupSample, Metrics, PartitionSample, Stage};
pub use server::{bind, serve, Health, ServeError};
