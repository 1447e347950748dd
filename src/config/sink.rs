//! The `[sink]` section: which backend rows are written to, and the batching, retry and
//! back-pressure settings every backend shares.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Where rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkBackend {
    /// ClickHouse over HTTP (`[clickhouse]`).
    #[default]
    ClickHouse,
    /// Apache Doris: Stream Load over HTTP, DDL over the MySQL protocol (`[doris]`).
    Doris,
}

impl SinkBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkBackend::ClickHouse => "clickhouse",
            SinkBackend::Doris => "doris",
        }
    }
}

impl std::fmt::Display for SinkBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SinkBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "clickhouse" => Ok(SinkBackend::ClickHouse),
            "doris" => Ok(SinkBackend::Doris),
            other => Err(format!(
                "unknown sink backend `{other}` (expected clickhouse or doris)"
            )),
        }
    }
}

/// Batching sink behaviour (shared by every sink backend).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// `clickhouse` or `doris`: which backend the batches are written to. Batching, retry
    /// and acknowledgement are the same for both.
    pub backend: SinkBackend,
    /// Flush when this many messages are buffered (`run` caps it at half of
    /// `workers × max_in_flight`: more can never be waiting for the sink at once).
    pub max_rows: usize,
    /// Flush when the buffered rows reach about this many bytes.
    pub max_bytes: usize,
    /// Flush at least this often while rows are buffered.
    pub flush_interval_ms: u64,
    /// Batches written at once. With 2 or more the next batch keeps filling while they are
    /// written; with 1 (the default) the buffer takes no rows for the length of a write, which
    /// keeps latency low when writes are short (docs/BENCHMARKS.md, "Sink flushes"). Raise it
    /// for a sink whose writes are long.
    pub max_concurrent_flushes: usize,
    /// Capacity of the channel feeding the sink (in messages); a full channel pushes back on
    /// the workers.
    pub channel_capacity: usize,
    /// First retry delay after a failed write; doubles up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            backend: SinkBackend::ClickHouse,
            max_rows: 5_000,
            max_bytes: 16 * 1024 * 1024,
            flush_interval_ms: 500,
            max_concurrent_flushes: 1,
            channel_capacity: 1_024,
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
        }
    }
}

impl SinkConfig {
    /// The `[sink]` checks (see [`Config::validate`](super::Config::validate)).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.max_rows == 0
            || self.max_bytes == 0
            || self.channel_capacity == 0
            || self.max_concurrent_flushes == 0
        {
            return bad("sink.max_rows, sink.max_bytes, sink.channel_capacity and sink.max_concurrent_flushes must be ≥ 1".into());
        }
        if self.flush_interval_ms == 0
            || self.retry_initial_ms == 0
            || self.retry_max_ms < self.retry_initial_ms
        {
            return bad("sink.flush_interval_ms and sink.retry_initial_ms must be ≥ 1, retry_max_ms ≥ retry_initial_ms".into());
        }
        Ok(())
    }
}
