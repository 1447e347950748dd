//! The `[pipeline]` section: worker behaviour (in-flight bounds, compute threads, storage
//! roots, file limits, commit and drain timing), and its own checks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::compute::Mode;

/// Worker behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Consumer workers in this process (0 = number of CPUs).
    pub workers: usize,
    /// Messages one worker has taken but not finished (parsing, or waiting for broker and
    /// sink acknowledgements). Each costs a few KB; bounds memory whatever the backlog.
    /// Throughput can be latency-bound by it (docs/BENCHMARKS.md, "Where the CPU goes": 4,000
    /// ran header-only 1.4–1.5× faster than 1,000 at 2.5× the peak RSS, 255 MiB at a 100k
    /// backlog; 2,000 was not measurably faster); a crash redoes up to this many per worker.
    pub max_in_flight: usize,
    /// Per partition, at most this many offsets from the lowest unfinished one to the highest
    /// taken: what a crash makes the next owner redo. A slow message holds its partition's
    /// window open while later ones finish; when the window is full the worker pauses that
    /// partition (its other partitions go on) and resumes it once the window is half empty —
    /// the hysteresis keeps pause/resume from thrashing. A pause is not free: librdkafka
    /// drops the paused partition's prefetched messages, and a broker may take a fetch round
    /// (tansu: ≈0.6 s, docs/BROKERS.md) to send them again, so the window is large.
    pub max_partition_gap: i64,
    /// Files parsed at once in this process: the number of compute threads (0 = number of
    /// CPUs).
    /// Bounds the memory of files being read to `compute_threads × max_file_size`.
    pub compute_threads: usize,
    /// Directories stored files must resolve into; anything else is `path_outside_root`.
    pub storage_roots: Vec<PathBuf>,
    /// A second copy of the archive (empty: none). A file not found under its storage root
    /// is looked up here at the same relative path before it is dead-lettered as
    /// `file_not_found`; the record keeps the path the store message named.
    pub secondary_storage_root: PathBuf,
    /// `header_only` or `full`.
    pub mode: Mode,
    /// Files larger than this are dead-lettered as `too_large`.
    pub max_file_size: u64,
    /// Images whose decoded pixels would exceed this many bytes (as the header claims) are
    /// dead-lettered as `too_large` before decoding (`full` mode).
    pub max_decoded_size: u64,
    /// How often done offsets are committed.
    pub commit_interval_ms: u64,
    /// On shutdown, how long in-flight work may take before it is abandoned (uncommitted).
    pub drain_timeout_ms: u64,
    /// Tenant written by `backfill`.
    pub tenant_id: String,
    /// Source name `backfill` writes for plain PATHs (`--source NAME=PATH` names its own).
    pub source: String,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: 0,
            max_in_flight: 1_000,
            max_partition_gap: 10_000,
            compute_threads: 0,
            storage_roots: Vec::new(),
            secondary_storage_root: PathBuf::new(),
            mode: Mode::Full,
            max_file_size: 2 * 1024 * 1024 * 1024,
            max_decoded_size: 1024 * 1024 * 1024,
            commit_interval_ms: 1_000,
            drain_timeout_ms: 20_000,
            tenant_id: "default".into(),
            source: "backfill".into(),
        }
    }
}

impl PipelineConfig {
    /// The `[pipeline]` checks that need no other section (see
    /// [`Config::validate`](super::Config::validate), which checks the drain deadline
    /// against the Kafka session).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.max_in_flight == 0 {
            return bad("pipeline.max_in_flight must be ≥ 1".into());
        }
        if self.max_partition_gap < 2 {
            return bad("pipeline.max_partition_gap must be ≥ 2".into());
        }
        if self.commit_interval_ms == 0 {
            return bad("pipeline.commit_interval_ms must be ≥ 1".into());
        }
        Ok(())
    }
}
