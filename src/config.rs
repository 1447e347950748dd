//! The one configuration struct, loaded and validated once at start.
//!
//! Precedence (later wins): built-in defaults → TOML file (`--config`) → environment
//! (`DICOM_PIPELINE_<SECTION>__<KEY>`, e.g. `DICOM_PIPELINE_SINK__MAX_ROWS=5000` or
//! `DICOM_PIPELINE_DORIS__PASSWORD=…`, plus the conventional `KAFKA_BROKERS` and
//! `CLICKHOUSE_URL`) → command-line flags. Unknown keys in
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
    /// Not a `#[source]`: the message already says everything figment found, once.
    #[error("configuration: {}", describe_load_error(.0))]
    Load(Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(e: Box<figment::Error>) -> Self {
        ConfigError::Load(e)
    }
}

/// Every problem figment found, once each, naming where it came from as the user wrote it:
/// `DICOM_PIPELINE_PIPELINE__WORKERS` for an environment variable, `FILE: key kafka.x` for
/// the TOML file.
fn describe_load_error(e: &figment::Error) -> String {
    let mut lines: Vec<String> = Vec::new();
    for err in e.clone() {
        let line = describe_one(&err);
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    lines.join("; ")
}

fn describe_one(err: &figment::Error) -> String {
    use figment::error::Kind;
    let mut path = err.path.clone();
    let what = match &err.kind {
        Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            format!("unknown key (expected one of: {})", expected.join(", "))
        }
        Kind::UnknownVariant(value, expected) => {
            format!(
                "unknown value `{value}` (expected one of: {})",
                expected.join(", ")
            )
        }
        Kind::InvalidType(actual, expected) => format!("is {actual}, expected {expected}"),
        Kind::InvalidValue(actual, expected) => format!("is {actual}, expected {expected}"),
        other => other.to_string(),
    };
    let key = path.join(".");
    let from_env = err
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"));
    let file = err.metadata.as_ref().and_then(|m| match &m.source {
        Some(figment::Source::File(p)) => Some(p.display().to_string()),
        _ => None,
    });
    match (from_env, file) {
        (true, _) => format!(
            "environment variable DICOM_PIPELINE_{} {what}",
            path.iter()
                .map(|p| p.to_ascii_uppercase())
                .collect::<Vec<_>>()
                .join("__")
        ),
        (false, Some(file)) => format!("{file}: key `{key}` {what}"),
        (false, None) => format!("key `{key}` {what}"),
    }
}

/// Shortest HMAC key `privacy.pseudonymize` accepts (the SHA-256 block's security level).
pub const MIN_PSEUDONYM_KEY_BYTES: usize = 32;

/// Everything the service needs to know.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Kafka-compatible broker and topics.
    pub kafka: KafkaConfig,
    /// ClickHouse connection (used when `sink.backend = "clickhouse"`).
    pub clickhouse: ClickHouseConfig,
    /// Apache Doris connection (used when `sink.backend = "doris"`).
    pub doris: DorisConfig,
    /// Worker behaviour.
    pub pipeline: PipelineConfig,
    /// Batching sink behaviour.
    pub sink: SinkConfig,
    /// The Prometheus / health endpoint.
    pub metrics: MetricsConfig,
    /// Pseudonymization of patient identifiers.
    pub privacy: PrivacyConfig,
}

/// The HTTP endpoint serving `/metrics`, `/healthz` and `/readyz` while `run` runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// host:port to listen on (port 0: any free port, logged at start); empty disables the
    /// endpoint. The default stays on loopback; set `0.0.0.0:9090` to be scraped from
    /// elsewhere.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9090".into(),
        }
    }
}

/// Keyed pseudonyms for patient identifiers (off by default).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Replace PatientID, PatientName and AccessionNumber by HMAC-SHA256(key, value) in hex
    /// before any record leaves the worker (topics, dead letters, sink rows). Analytics can
    /// still join on them; nobody without the key can recover or confirm an identifier.
    pub pseudonymize: bool,
    /// The HMAC key, at least 32 bytes: from the environment only
    /// (`DICOM_PIPELINE_PRIVACY__KEY`, taken verbatim), never from a file; redacted when
    /// printed. Changing it changes every pseudonym.
    pub key: String,
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
    /// Consumer group protocol: `classic` (JoinGroup/SyncGroup, the assignment computed by a
    /// member; every Kafka version and tansu) or `consumer` (KIP-848, Apache Kafka ≥ 4.0: the
    /// broker assigns and every rebalance is incremental, so a member joining or leaving
    /// never stops the partitions that do not move). With `consumer` the broker owns the
    /// session timeout and the heartbeat interval (`group.consumer.session.timeout.ms`,
    /// 45 s by default, and `group.consumer.heartbeat.interval.ms`): set
    /// `session_timeout_ms` to the broker's value (the drain deadline is checked against it
    /// and the group watchdog waits twice it); `heartbeat_interval_ms` and
    /// `assignment_strategy` are not used (`extra."group.remote.assignor"` picks the
    /// broker's assignor). docs/OPERATIONS.md compares the two.
    pub group_protocol: GroupProtocol,
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

/// The consumer group protocol (librdkafka `group.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupProtocol {
    /// JoinGroup/SyncGroup; the group leader's client computes the assignment.
    #[default]
    Classic,
    /// KIP-848: the broker's group coordinator assigns, incrementally.
    Consumer,
}

impl GroupProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }
}

impl KafkaConfig {
    /// Whether rebalances move only the partitions that change owner (cooperative-sticky, or
    /// the KIP-848 protocol, which is always incremental) instead of revoking everything.
    pub fn incremental_rebalances(&self) -> bool {
        self.group_protocol == GroupProtocol::Consumer
            || self.assignment_strategy == "cooperative-sticky"
    }
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

/// Apache Doris connection: rows go in by Stream Load over HTTP, DDL (`schema`) goes over the
/// MySQL protocol. Everything here also works for a Doris-compatible server that speaks both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DorisConfig {
    /// FE HTTP endpoint, `http://host:port` (FE `http_port`, 8030 by default). Each Stream
    /// Load goes here and is redirected by the FE to a BE, at the address the BE registered
    /// with: that address must be reachable from this process too.
    pub fe_url: String,
    /// FE MySQL-protocol endpoint, `host:port` (FE `query_port`, 9030 by default), used by
    /// `schema --sink doris` to create the database and tables.
    pub mysql_addr: String,
    /// User for both endpoints; needs LOAD/INSERT on the tables for `run`, CREATE for `schema`.
    pub user: String,
    /// Password (redacted when printed; env `DICOM_PIPELINE_DORIS__PASSWORD`).
    pub password: String,
    /// Database holding the tables; created by `schema --sink doris`.
    pub database: String,
    /// How long one HTTP request (one hop of a Stream Load) or the MySQL connect may take.
    /// Also sent as the load's `timeout` (rounded up to seconds), so Doris cancels a load this
    /// process stopped waiting for and the retry can reuse its label.
    pub request_timeout_ms: u64,
    /// `replication_num` of the created tables (Doris's default of 3 needs three BEs).
    pub replication_num: u16,
    /// First part of every Stream Load label, `[A-Za-z0-9_-]`, at most 32 characters. Doris
    /// refuses a label it has seen in the last `label_keep_max_second` (3 days by default):
    /// that is what makes a retried batch load once. A label also digests the rows it loads,
    /// so processing the same messages again (a replay, an offset reset) loads anew.
    pub label_prefix: String,
}

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

/// librdkafka's own default `partition.assignment.strategy`.
const DEFAULT_ASSIGNMENT_STRATEGY: &str = "range,roundrobin";

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
            assignment_strategy: DEFAULT_ASSIGNMENT_STRATEGY.into(),
            group_protocol: GroupProtocol::Classic,
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

impl Default for DorisConfig {
    fn default() -> Self {
        DorisConfig {
            fe_url: "http://127.0.0.1:8030".into(),
            mysql_addr: "127.0.0.1:9030".into(),
            user: "root".into(),
            password: String::new(),
            database: "dicom".into(),
            request_timeout_ms: 60_000,
            replication_num: 1,
            label_prefix: "dicom".into(),
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

/// Values from command-line flags (highest precedence). `None` leaves the lower layers alone.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub brokers: Option<String>,
    pub clickhouse_url: Option<String>,
    /// The database of the selected sink backend.
    pub database: Option<String>,
    pub sink_backend: Option<SinkBackend>,
    pub group_id: Option<String>,
    pub input_topic: Option<String>,
    pub workers: Option<usize>,
    pub partitions: Option<i32>,
    pub mode: Option<Mode>,
    pub storage_roots: Vec<PathBuf>,
    pub secondary_storage_root: Option<PathBuf>,
    pub metrics_listen: Option<String>,
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
        // Passwords are taken from the environment verbatim, below: figment would read
        // `12345` as a number (refused for a string) and `0123` as 123.
        fig = fig.merge(
            Env::prefixed("DICOM_PIPELINE_")
                .split("__")
                // `DICOM_PIPELINE_CONFIG` names the file (the `--config` flag), not a key.
                .ignore(&[
                    "config",
                    "clickhouse.password",
                    "doris.password",
                    "privacy.key",
                ]),
        );
        let mut cfg: Config = fig.extract().map_err(Box::new)?;
        if let Ok(v) = std::env::var("DICOM_PIPELINE_CLICKHOUSE__PASSWORD") {
            cfg.clickhouse.password = v;
        }
        if let Ok(v) = std::env::var("DICOM_PIPELINE_DORIS__PASSWORD") {
            cfg.doris.password = v;
        }
        if !cfg.privacy.key.is_empty() {
            return Err(ConfigError::Invalid(
                "privacy.key is taken from the environment only (DICOM_PIPELINE_PRIVACY__KEY), never from a file".into(),
            ));
        }
        if let Ok(v) = std::env::var("DICOM_PIPELINE_PRIVACY__KEY") {
            cfg.privacy.key = v;
        }
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
        if let Some(v) = o.sink_backend {
            self.sink.backend = v;
        }
        if let Some(v) = &o.database {
            match self.sink.backend {
                SinkBackend::ClickHouse => self.clickhouse.database = v.clone(),
                SinkBackend::Doris => self.doris.database = v.clone(),
            }
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
        if let Some(v) = &o.secondary_storage_root {
            self.pipeline.secondary_storage_root = v.clone();
        }
        if let Some(v) = &o.metrics_listen {
            self.metrics.listen = v.clone();
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
        if k.group_protocol == GroupProtocol::Consumer
            && k.assignment_strategy != DEFAULT_ASSIGNMENT_STRATEGY
        {
            return bad(format!(
                "kafka.assignment_strategy `{}` applies to group_protocol = \"classic\" only; with \"consumer\" the broker assigns (choose its assignor with kafka.extra.\"group.remote.assignor\")",
                k.assignment_strategy
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
        validate_doris(&self.doris)?;
        let listen = &self.metrics.listen;
        if !listen.is_empty()
            && !listen
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        {
            return bad(format!(
                "metrics.listen `{listen}` must be host:port (e.g. 127.0.0.1:9090), or empty to disable"
            ));
        }
        if self.privacy.pseudonymize && self.privacy.key.len() < MIN_PSEUDONYM_KEY_BYTES {
            return bad(format!(
                "privacy.pseudonymize needs a key of at least {MIN_PSEUDONYM_KEY_BYTES} bytes in DICOM_PIPELINE_PRIVACY__KEY (it has {})",
                self.privacy.key.len()
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
        if s.max_rows == 0
            || s.max_bytes == 0
            || s.channel_capacity == 0
            || s.max_concurrent_flushes == 0
        {
            return bad("sink.max_rows, sink.max_bytes, sink.channel_capacity and sink.max_concurrent_flushes must be ≥ 1".into());
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
    /// are made absolute, not canonical: the storage layer records each root's real path and
    /// identity itself, and accepts file paths under the configured path too (a root reached
    /// through a symlink).
    pub fn validate_for_run(&mut self) -> Result<(), ConfigError> {
        if self.pipeline.storage_roots.is_empty() {
            return Err(ConfigError::Invalid(
                "run needs at least one --storage-root (or pipeline.storage_roots)".into(),
            ));
        }
        let existing_dir = |what: &str, dir: &Path| -> Result<PathBuf, ConfigError> {
            let absolute = std::path::absolute(dir)
                .map_err(|e| ConfigError::Invalid(format!("{what} {}: {e}", dir.display())))?;
            match std::fs::metadata(&absolute) {
                Ok(m) if m.is_dir() => Ok(absolute),
                Ok(_) => Err(ConfigError::Invalid(format!(
                    "{what} {} is not a directory",
                    dir.display()
                ))),
                Err(e) => Err(ConfigError::Invalid(format!(
                    "{what} {}: {e}",
                    dir.display()
                ))),
            }
        };
        self.pipeline.storage_roots = self
            .pipeline
            .storage_roots
            .iter()
            .map(|r| existing_dir("storage root", r))
            .collect::<Result<_, _>>()?;
        let secondary = &self.pipeline.secondary_storage_root;
        if !secondary.as_os_str().is_empty() {
            self.pipeline.secondary_storage_root =
                existing_dir("pipeline.secondary_storage_root", secondary)?;
        }
        Ok(())
    }

    /// The configuration as TOML with secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut c = self.clone();
        for password in [
            &mut c.clickhouse.password,
            &mut c.doris.password,
            &mut c.privacy.key,
        ] {
            if !password.is_empty() {
                *password = "<redacted>".into();
            }
        }
        for (k, v) in c.kafka.extra.iter_mut() {
            if k.contains("password") || k.contains("secret") || k.contains("key") {
                *v = "<redacted>".into();
            }
        }
        toml::to_string_pretty(&c).unwrap_or_else(|e| format!("# cannot render config: {e}"))
    }

    /// The database of the selected sink backend.
    pub fn sink_database(&self) -> &str {
        match self.sink.backend {
            SinkBackend::ClickHouse => &self.clickhouse.database,
            SinkBackend::Doris => &self.doris.database,
        }
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

/// The `[doris]` checks (see [`Config::validate`]).
fn validate_doris(d: &DorisConfig) -> Result<(), ConfigError> {
    let bad = |m: String| Err(ConfigError::Invalid(m));
    match d.fe_url.parse::<http::Uri>() {
        Ok(u) if u.scheme_str() == Some("http")
            && u.authority().is_some_and(|a| !a.as_str().contains('@') && !a.host().is_empty())
            && matches!(u.path(), "" | "/")
            && u.query().is_none() => {}
        _ => {
            return bad(format!(
                "doris.fe_url `{}` must be http://host[:port] (no path, no credentials: set doris.user and doris.password; https is not supported)",
                d.fe_url
            ))
        }
    }
    let port_ok = d
        .mysql_addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok {
        return bad(format!(
            "doris.mysql_addr `{}` must be host:port",
            d.mysql_addr
        ));
    }
    if d.user.is_empty() {
        return bad("doris.user is empty".into());
    }
    let mut db = d.database.chars();
    if !(db.next().is_some_and(|c| c.is_ascii_alphabetic())
        && db.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && d.database.len() <= 64)
    {
        return bad(format!(
            "doris.database `{}` must be a letter then [A-Za-z0-9_], at most 64 characters",
            d.database
        ));
    }
    if !(1_000..=259_200_000).contains(&d.request_timeout_ms) {
        return bad(format!(
            "doris.request_timeout_ms ({}) must be between 1000 and 259200000 (Doris load timeouts are 1 s to 3 days)",
            d.request_timeout_ms
        ));
    }
    if d.replication_num == 0 {
        return bad("doris.replication_num must be ≥ 1".into());
    }
    if d.label_prefix.is_empty()
        || d.label_prefix.len() > 32
        || !d
            .label_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return bad(format!(
            "doris.label_prefix `{}` must be 1 to 32 characters of [A-Za-z0-9_-]",
            d.label_prefix
        ));
    }
    Ok(())
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
        // The default configuration changed by `change` is refused, naming `what`.
        let refused = |change: fn(&mut Config), what: &str| {
            let mut c = Config::default();
            change(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(what), "{what}: {err}");
        };
        refused(
            |c| c.kafka.image_topic = "dicom.store".into(),
            "input_topic",
        );
        refused(
            |c| c.pipeline.drain_timeout_ms = c.kafka.session_timeout_ms,
            "drain_timeout_ms",
        );
        let mut c = Config::default();
        c.clickhouse.database = "x; DROP".into();
        assert!(c.validate().is_err());
        refused(
            |c| c.kafka.assignment_strategy = "sticky".into(),
            "cooperative-sticky",
        );
        refused(|c| c.pipeline.max_partition_gap = 1, "max_partition_gap");
        refused(
            |c| c.sink.max_concurrent_flushes = 0,
            "max_concurrent_flushes",
        );
    }

    #[test]
    fn the_sink_backend_is_chosen_by_config_or_flag() {
        let c = Config::default();
        assert_eq!(c.sink.backend, SinkBackend::ClickHouse);
        assert_eq!(c.doris.fe_url, "http://127.0.0.1:8030");
        assert_eq!(c.doris.mysql_addr, "127.0.0.1:9030");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[sink]\nbackend = \"doris\"\n[doris]\ndatabase = \"lake\"\nfe_url = \"http://fe.example:8030/\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(c.sink.backend, SinkBackend::Doris);
        assert_eq!(c.doris.database, "lake");
        // --database goes to the selected backend.
        let o = Overrides {
            database: Some("other".into()),
            ..Overrides::default()
        };
        let c = Config::load(Some(&path), &o).unwrap();
        assert_eq!(
            (c.doris.database.as_str(), c.clickhouse.database.as_str()),
            ("other", "dicom")
        );
        let o = Overrides {
            sink_backend: Some(SinkBackend::ClickHouse),
            database: Some("other".into()),
            ..Overrides::default()
        };
        let c = Config::load(Some(&path), &o).unwrap();
        assert_eq!(
            (c.doris.database.as_str(), c.clickhouse.database.as_str()),
            ("lake", "other")
        );
        std::fs::write(&path, "[sink]\nbackend = \"starrocks\"\n").unwrap();
        let err = Config::load(Some(&path), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("starrocks"), "{err}");
        assert_eq!("doris".parse::<SinkBackend>(), Ok(SinkBackend::Doris));
        assert!("mysql"
            .parse::<SinkBackend>()
            .unwrap_err()
            .contains("clickhouse or doris"));
    }

    #[test]
    fn the_group_protocol_is_classic_or_consumer_and_consumer_takes_no_assignor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[kafka]\ngroup_protocol = \"consumer\"\n").unwrap();
        let c = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(c.kafka.group_protocol, GroupProtocol::Consumer);
        assert!(c.kafka.incremental_rebalances());
        assert!(!Config::default().kafka.incremental_rebalances());
        std::fs::write(&path, "[kafka]\ngroup_protocol = \"streams\"\n").unwrap();
        let err = Config::load(Some(&path), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("streams"), "{err}");
        // An assignor is the broker's business under KIP-848: a configured one is refused,
        // not silently ignored.
        std::fs::write(
            &path,
            "[kafka]\ngroup_protocol = \"consumer\"\nassignment_strategy = \"cooperative-sticky\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("group.remote.assignor"), "{err}");
    }

    #[test]
    fn invalid_doris_values_are_explained() {
        let check = |change: &dyn Fn(&mut DorisConfig), needle: &str| {
            let mut c = Config::default();
            change(&mut c.doris);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        };
        for url in [
            "127.0.0.1:8030",
            "https://fe:8030",
            "http://root:pw@fe:8030",
            "http://fe:8030/api/dicom",
            "http://",
            "not a url",
        ] {
            check(&|d| d.fe_url = url.into(), "doris.fe_url");
        }
        check(&|d| d.mysql_addr = "fe".into(), "doris.mysql_addr");
        check(&|d| d.mysql_addr = "fe:99999".into(), "doris.mysql_addr");
        check(&|d| d.mysql_addr = ":9030".into(), "doris.mysql_addr");
        check(&|d| d.user = String::new(), "doris.user");
        check(&|d| d.database = String::new(), "doris.database");
        check(&|d| d.database = "1dicom".into(), "doris.database");
        check(&|d| d.database = "x; DROP".into(), "doris.database");
        check(&|d| d.request_timeout_ms = 10, "doris.request_timeout_ms");
        check(&|d| d.replication_num = 0, "doris.replication_num");
        check(&|d| d.label_prefix = String::new(), "doris.label_prefix");
        check(&|d| d.label_prefix = "a.b".into(), "doris.label_prefix");
        check(&|d| d.label_prefix = "x".repeat(33), "doris.label_prefix");
        let mut c = Config::default();
        c.doris.fe_url = "http://[::1]:8030".into();
        c.doris.mysql_addr = "[::1]:9030".into();
        c.validate().unwrap();
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
        c.doris.password = "d0ris-pw".into();
        c.privacy.key = "k".repeat(40);
        c.kafka
            .extra
            .insert("sasl.password".into(), "s3cret".into());
        let out = c.to_redacted_toml();
        assert!(
            !out.contains("hunter2")
                && !out.contains("s3cret")
                && !out.contains("d0ris-pw")
                && !out.contains("kkkk"),
            "{out}"
        );
        assert_eq!(out.matches("<redacted>").count(), 4, "{out}");
    }

    #[test]
    fn metrics_privacy_and_secondary_root_are_checked() {
        let check = |change: &dyn Fn(&mut Config), needle: &str| {
            let mut c = Config::default();
            change(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        };
        for listen in ["9090", ":9090", "localhost:http", "127.0.0.1:70000"] {
            check(&|c| c.metrics.listen = listen.into(), "metrics.listen");
        }
        let mut c = Config::default();
        for listen in ["", "0.0.0.0:9090", "[::1]:0", "localhost:9100"] {
            c.metrics.listen = listen.into();
            c.validate().unwrap();
        }
        check(&|c| c.privacy.pseudonymize = true, "at least 32 bytes");
        check(
            &|c| {
                c.privacy.pseudonymize = true;
                c.privacy.key = "short".into();
            },
            "it has 5",
        );
        let mut c = Config::default();
        c.privacy.pseudonymize = true;
        c.privacy.key = "k".repeat(32);
        c.validate().unwrap();

        // The key never comes from a file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[privacy]\nkey = \"0123456789abcdef0123456789abcdef\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("environment only"), "{err}");

        let mut c = Config::default();
        c.pipeline.storage_roots = vec![dir.path().to_path_buf()];
        c.pipeline.secondary_storage_root = dir.path().join("missing");
        let err = c.validate_for_run().unwrap_err().to_string();
        assert!(err.contains("secondary_storage_root"), "{err}");
        c.pipeline.secondary_storage_root = dir.path().to_path_buf();
        c.validate_for_run().unwrap();
        assert_eq!(
            c.pipeline.secondary_storage_root,
            std::path::absolute(dir.path()).unwrap()
        );
    }
}
