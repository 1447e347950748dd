//! The one configuration struct, loaded and validated once at start.
//!
//! Precedence (later wins): built-in defaults → TOML file (`--config`) → environment
//! (`DICOM_PIPELINE_<SECTION>__<KEY>`, e.g. `DICOM_PIPELINE_SINK__MAX_ROWS=5000`, plus the
//! conventional `KAFKA_BROKERS` and `CLICKHOUSE_URL`) → command-line flags. Unknown keys in
//! any layer are rejected with the key's name. The result is passed down immutable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::compute::{Limits, Mode};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("loading configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Everything the service needs to know.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Kafka-compatible broker and topics.
    pub kafka: KafkaConfig,
    /// ClickHouse connection.
    pub clickhouse: ClickHouseConfig,
    /// Worker behaviour.
    pub pipeline: PipelineConfig,
    /// Batching sink behaviour.
    pub sink: SinkConfig,
}

/// Broker, topics and client settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]` (env `KAFKA_BROKERS`).
    pub brokers: String,
    /// Consumer group shared by every worker of every process.
    pub group_id: String,
    /// Input topic: one store message per stored file.
    pub input_topic: String,
    /// Output: one record per indexed instance.
    pub image_topic: String,
    /// Output: coalesced per-series state.
    pub state_topic: String,
    /// Output: audit events (starts, stops, batch summaries).
    pub log_topic: String,
    /// Output: dead letters, one per message that could not be indexed.
    pub dlq_topic: String,
    /// Partitions for topics created by `schema` / `run`.
    pub partitions: i32,
    /// Replication factor for created topics.
    pub replication_factor: i32,
    /// Consumer session timeout; the shutdown drain deadline must be below it.
    pub session_timeout_ms: u64,
    /// Consumer heartbeat interval. Members learn of a rebalance at their next heartbeat, so
    /// this bounds how long a join or leave takes to reach every member (librdkafka's 3 s
    /// default made each worker start cost ~3 s of stalled partitions).
    pub heartbeat_interval_ms: u64,
    /// Producer delivery timeout (librdkafka `message.timeout.ms`); failed sends are retried
    /// by the pipeline after it.
    pub message_timeout_ms: u64,
    /// Output compression codec (none, gzip, snappy, lz4, zstd).
    pub compression: String,
    /// Enable the idempotent producer (no duplicates from librdkafka's own retries).
    pub idempotence: bool,
    /// Partition assignment strategy (librdkafka `partition.assignment.strategy`):
    /// `range,roundrobin` (librdkafka's default), `range`, `roundrobin`, or
    /// `cooperative-sticky`, with which a rebalance revokes only the partitions that move
    /// (the others keep being processed) instead of every partition of every member.
    /// Every member of a group must use the same protocol family.
    pub assignment_strategy: String,
    /// Static group membership: a name for this process that stays the same across its
    /// restarts and is unique in the group (e.g. the host or pod name). Worker `i` joins as
    /// `group.instance.id = "{instance_id}-w{i}"`, so a restarted process takes back its own
    /// members' partitions at once instead of waiting for the broker to expire the dead
    /// members (on Kafka; tansu 0.6.0 honours it only in part, see ARCHITECTURE.md). A static
    /// member does not leave the group when it stops: its partitions wait for it up to
    /// `session_timeout_ms`. Empty = dynamic membership.
    pub instance_id: String,
    /// Extra librdkafka properties passed to every client verbatim (TLS, SASL, tuning).
    pub extra: BTreeMap<String, String>,
}

/// ClickHouse connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP endpoint (env `CLICKHOUSE_URL`).
    pub url: String,
    /// Database holding the tables; created by `schema`.
    pub database: String,
    /// User name.
    pub user: String,
    /// Password (redacted when printed).
    pub password: String,
}

/// Worker behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Consumer workers in this process (0 = number of CPUs).
    pub workers: usize,
    /// Messages one worker has taken but not finished (parsing, or waiting for broker and
    /// sink acknowledgements). Each costs a few KB; bounds memory whatever the backlog.
    pub max_in_flight: usize,
    /// Per partition, at most this many offsets from the lowest unfinished one to the highest
    /// taken: what a crash makes the next owner redo. A slow message holds its partition's
    /// window open while later ones finish; when the window is full the worker pauses that
    /// partition (its other partitions go on) and resumes it once the window is half empty —
    /// the hysteresis keeps pause/resume from thrashing. A pause is not free: librdkafka
    /// drops the paused partition's prefetched messages, and with tansu the partition's
    /// messages came back ≈0.6 s after each resume (measured), so the window is large.
    pub max_partition_gap: i64,
    /// Files parsed at once in this process, on the blocking pool (0 = number of CPUs).
    /// Bounds the memory of files being read to `compute_threads × max_file_size`.
    pub compute_threads: usize,
    /// Directories stored files must resolve into; anything else is `path_outside_root`.
    pub storage_roots: Vec<PathBuf>,
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
    /// Source name written by `backfill`.
    pub source: String,
}

/// Batching sink behaviour (shared by every sink backend).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Flush when this many messages are buffered.
    pub max_rows: usize,
    /// Flush when the buffered rows reach about this many bytes.
    pub max_bytes: usize,
    /// Flush at least this often while rows are buffered.
    pub flush_interval_ms: u64,
    /// Capacity of the channel feeding the sink (in messages); a full channel pushes back on
    /// the workers.
    pub channel_capacity: usize,
    /// First retry delay after a failed write; doubles up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "dicom-pipeline".into(),
            input_topic: "dicom.store".into(),
            image_topic: "dicom.image".into(),
            state_topic: "dicom.state".into(),
            log_topic: "dicom.log".into(),
            dlq_topic: "dicom.dlq".into(),
            partitions: 8,
            replication_factor: 1,
            session_timeout_ms: 30_000,
            heartbeat_interval_ms: 500,
            message_timeout_ms: 30_000,
            compression: "lz4".into(),
            idempotence: true,
            assignment_strategy: "range,roundrobin".into(),
            instance_id: String::new(),
            extra: BTreeMap::new(),
        }
    }
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "dicom".into(),
            user: "default".into(),
            password: String::new(),
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: 0,
            max_in_flight: 1_000,
            max_partition_gap: 10_000,
            compute_threads: 0,
            storage_roots: Vec::new(),
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

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            max_rows: 5_000,
            max_bytes: 16 * 1024 * 1024,
            flush_interval_ms: 500,
            channel_capacity: 1_024,
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
        }
    }
}

/// Values from command-line flags (highest precedence). `None` leaves the lower layers alone.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub brokers: Option<String>,
    pub clickhouse_url: Option<String>,
    pub database: Option<String>,
    pub group_id: Option<String>,
    pub input_topic: Option<String>,
    pub workers: Option<usize>,
    pub partitions: Option<i32>,
    pub mode: Option<Mode>,
    pub storage_roots: Vec<PathBuf>,
}

impl Config {
    /// Load defaults → file → environment → overrides. Does not validate; see
    /// [`Config::validate_for_run`] and [`Config::validate`].
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(Env::prefixed("DICOM_PIPELINE_").split("__"));
        let mut cfg: Config = fig.extract().map_err(Box::new)?;
        // The conventional variables win over the prefixed ones.
        if let Ok(v) = std::env::var("KAFKA_BROKERS") {
            cfg.kafka.brokers = v;
        }
        if let Ok(v) = std::env::var("CLICKHOUSE_URL") {
            cfg.clickhouse.url = v;
        }
        cfg.apply(overrides);
        cfg.validate()?;
        Ok(cfg)
    }

    fn apply(&mut self, o: &Overrides) {
        if let Some(v) = &o.brokers {
            self.kafka.brokers = v.clone();
        }
        if let Some(v) = &o.clickhouse_url {
            self.clickhouse.url = v.clone();
        }
        if let Some(v) = &o.database {
            self.clickhouse.database = v.clone();
        }
        if let Some(v) = &o.group_id {
            self.kafka.group_id = v.clone();
        }
        if let Some(v) = &o.input_topic {
            self.kafka.input_topic = v.clone();
        }
        if let Some(v) = o.workers {
            self.pipeline.workers = v;
        }
        if let Some(v) = o.partitions {
            self.kafka.partitions = v;
        }
        if let Some(v) = o.mode {
            self.pipeline.mode = v;
        }
        if !o.storage_roots.is_empty() {
            self.pipeline.storage_roots = o.storage_roots.clone();
        }
    }

    /// Checks that hold for every command.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            return bad("kafka.brokers is empty".into());
        }
        let topics = [
            ("input_topic", &k.input_topic),
            ("image_topic", &k.image_topic),
            ("state_topic", &k.state_topic),
            ("log_topic", &k.log_topic),
            ("dlq_topic", &k.dlq_topic),
        ];
        for (name, t) in &topics {
            if t.is_empty() {
                return bad(format!("kafka.{name} is empty"));
            }
        }
        for (i, (a, ta)) in topics.iter().enumerate() {
            for (b, tb) in &topics[i + 1..] {
                if ta == tb {
                    return bad(format!("kafka.{a} and kafka.{b} are both `{ta}`"));
                }
            }
        }
        if k.group_id.is_empty() {
            return bad("kafka.group_id is empty".into());
        }
        if k.partitions < 1 || k.replication_factor < 1 {
            return bad("kafka.partitions and kafka.replication_factor must be ≥ 1".into());
        }
        const STRATEGIES: [&str; 4] = [
            "range,roundrobin",
            "range",
            "roundrobin",
            "cooperative-sticky",
        ];
        if !STRATEGIES.contains(&k.assignment_strategy.as_str()) {
            return bad(format!(
                "kafka.assignment_strategy `{}` must be one of {}",
                k.assignment_strategy,
                STRATEGIES.join(" | ")
            ));
        }
        if k.heartbeat_interval_ms == 0 || k.heartbeat_interval_ms * 3 > k.session_timeout_ms {
            return bad(format!(
                "kafka.heartbeat_interval_ms ({}) must be ≥ 1 and at most a third of kafka.session_timeout_ms ({})",
                k.heartbeat_interval_ms, k.session_timeout_ms
            ));
        }
        let c = &self.clickhouse;
        if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
            return bad(format!(
                "clickhouse.url `{}` must start with http:// or https://",
                c.url
            ));
        }
        if c.database.is_empty()
            || !c
                .database
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        {
            return bad(format!(
                "clickhouse.database `{}` must be non-empty [A-Za-z0-9_]",
                c.database
            ));
        }
        let p = &self.pipeline;
        if p.max_in_flight == 0 {
            return bad("pipeline.max_in_flight must be ≥ 1".into());
        }
        if p.max_partition_gap < 2 {
            return bad("pipeline.max_partition_gap must be ≥ 2".into());
        }
        if p.commit_interval_ms == 0 {
            return bad("pipeline.commit_interval_ms must be ≥ 1".into());
        }
        if p.drain_timeout_ms >= k.session_timeout_ms {
            return bad(format!(
                "pipeline.drain_timeout_ms ({}) must be below kafka.session_timeout_ms ({})",
                p.drain_timeout_ms, k.session_timeout_ms
            ));
        }
        let s = &self.sink;
        if s.max_rows == 0 || s.max_bytes == 0 || s.channel_capacity == 0 {
            return bad(
                "sink.max_rows, sink.max_bytes and sink.channel_capacity must be ≥ 1".into(),
            );
        }
        if s.flush_interval_ms == 0
            || s.retry_initial_ms == 0
            || s.retry_max_ms < s.retry_initial_ms
        {
            return bad("sink.flush_interval_ms and sink.retry_initial_ms must be ≥ 1, retry_max_ms ≥ retry_initial_ms".into());
        }
        Ok(())
    }

    /// Extra checks for `run`: at least one storage root, each an existing directory. Roots
    /// are canonicalised so containment checks compare real paths.
    pub fn validate_for_run(&mut self) -> Result<(), ConfigError> {
        if self.pipeline.storage_roots.is_empty() {
            return Err(ConfigError::Invalid(
                "run needs at least one --storage-root (or pipeline.storage_roots)".into(),
            ));
        }
        let mut roots = Vec::new();
        for root in &self.pipeline.storage_roots {
            let canon = root.canonicalize().map_err(|e| {
                ConfigError::Invalid(format!("storage root {}: {e}", root.display()))
            })?;
            if !canon.is_dir() {
                return Err(ConfigError::Invalid(format!(
                    "storage root {} is not a directory",
                    root.display()
                )));
            }
            roots.push(canon);
        }
        self.pipeline.storage_roots = roots;
        Ok(())
    }

    /// The configuration as TOML with secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut c = self.clone();
        if !c.clickhouse.password.is_empty() {
            c.clickhouse.password = "<redacted>".into();
        }
        for (k, v) in c.kafka.extra.iter_mut() {
            if k.contains("password") || k.contains("secret") || k.contains("key") {
                *v = "<redacted>".into();
            }
        }
        toml::to_string_pretty(&c).unwrap_or_else(|e| format!("# cannot render config: {e}"))
    }

    /// Consumer workers to start (`pipeline.workers`, 0 = number of CPUs).
    pub fn workers(&self) -> usize {
        auto(self.pipeline.workers)
    }

    /// Files parsed at once (`pipeline.compute_threads`, 0 = number of CPUs).
    pub fn compute_threads(&self) -> usize {
        auto(self.pipeline.compute_threads)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_file_size: self.pipeline.max_file_size,
            max_decoded_size: self.pipeline.max_decoded_size,
        }
    }

    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.pipeline.commit_interval_ms)
    }

    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.kafka.session_timeout_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.pipeline.drain_timeout_ms)
    }
}

/// 0 means "one per CPU".
fn auto(n: usize) -> usize {
    if n == 0 {
        num_cpus::get().max(1)
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_contract() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(c.kafka.input_topic, "dicom.store");
        assert_eq!(c.kafka.group_id, "dicom-pipeline");
        assert_eq!(c.clickhouse.url, "http://127.0.0.1:8123");
        assert_eq!(c.clickhouse.database, "dicom");
    }

    #[test]
    fn unknown_keys_in_a_file_are_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[sink]\nmax_rowz = 3\n").unwrap();
        let err = Config::load(Some(&path), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("max_rowz"), "{err}");
    }

    #[test]
    fn file_values_and_overrides_layer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[sink]\nmax_rows = 7\n[kafka]\ngroup_id = \"from-file\"\n",
        )
        .unwrap();
        let o = Overrides {
            group_id: Some("from-flag".into()),
            workers: Some(3),
            ..Overrides::default()
        };
        let c = Config::load(Some(&path), &o).unwrap();
        assert_eq!(c.sink.max_rows, 7);
        assert_eq!(c.kafka.group_id, "from-flag");
        assert_eq!(c.workers(), 3);
        assert_eq!(Config::default().compute_threads(), num_cpus::get().max(1));
    }

    #[test]
    fn invalid_values_are_explained() {
        let mut c = Config::default();
        c.kafka.image_topic = "dicom.store".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("input_topic"));
        let mut c = Config::default();
        c.pipeline.drain_timeout_ms = c.kafka.session_timeout_ms;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("drain_timeout_ms"));
        let mut c = Config::default();
        c.clickhouse.database = "x; DROP".into();
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.kafka.assignment_strategy = "sticky".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("cooperative-sticky"));
        let mut c = Config::default();
        c.pipeline.max_partition_gap = 1;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_partition_gap"));
    }

    #[test]
    fn run_requires_an_existing_storage_root() {
        let mut c = Config::default();
        assert!(c
            .validate_for_run()
            .unwrap_err()
            .to_string()
            .contains("storage-root"));
        c.pipeline.storage_roots = vec!["/definitely/not/here".into()];
        assert!(c.validate_for_run().is_err());
        let dir = tempfile::tempdir().unwrap();
        c.pipeline.storage_roots = vec![dir.path().to_path_buf()];
        c.validate_for_run().unwrap();
    }

    #[test]
    fn example_file_documents_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let mut loaded = Config::load(Some(&path), &Overrides::default()).unwrap();
        let want = Config::default();
        // The conventional env variables (set by scripts/test.sh) win over the file.
        loaded.kafka.brokers = want.kafka.brokers.clone();
        loaded.clickhouse.url = want.clickhouse.url.clone();
        assert_eq!(loaded, want);
    }

    #[test]
    fn printing_redacts_secrets() {
        let mut c = Config::default();
        c.clickhouse.password = "hunter2".into();
        c.kafka
            .extra
            .insert("sasl.password".into(), "s3cret".into());
        let out = c.to_redacted_toml();
        assert!(!out.contains("hunter2") && !out.contains("s3cret"), "{out}");
    }
}
