//! The `[kafka]` section: broker, topics, consumer group and client settings, and their
//! checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ConfigError;

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
    /// How long the broker may hold a fetch while no data is ready (librdkafka
    /// `fetch.wait.max.ms`). Apache Kafka answers as soon as data arrives, so a long wait costs
    /// no latency and saves an idle consumer's polling (on the client and the broker).
    /// tansu 0.6 holds a fetch for the whole wait even when data is ready: use 10 there.
    pub fetch_wait_max_ms: u64,
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
            fetch_wait_max_ms: 500,
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

impl KafkaConfig {
    /// The `[kafka]` checks (see [`Config::validate`](super::Config::validate)).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.brokers.trim().is_empty() {
            return bad("kafka.brokers is empty".into());
        }
        let topics = [
            ("input_topic", &self.input_topic),
            ("image_topic", &self.image_topic),
            ("state_topic", &self.state_topic),
            ("log_topic", &self.log_topic),
            ("dlq_topic", &self.dlq_topic),
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
        if self.group_id.is_empty() {
            return bad("kafka.group_id is empty".into());
        }
        if !(1..=60_000).contains(&self.fetch_wait_max_ms) {
            return bad(format!(
                "kafka.fetch_wait_max_ms is {}: must be 1 to 60000",
                self.fetch_wait_max_ms
            ));
        }
        if self.partitions < 1 || self.replication_factor < 1 {
            return bad("kafka.partitions and kafka.replication_factor must be ≥ 1".into());
        }
        const STRATEGIES: [&str; 4] = [
            "range,roundrobin",
            "range",
            "roundrobin",
            "cooperative-sticky",
        ];
        if !STRATEGIES.contains(&self.assignment_strategy.as_str()) {
            return bad(format!(
                "kafka.assignment_strategy `{}` must be one of {}",
                self.assignment_strategy,
                STRATEGIES.join(" | ")
            ));
        }
        if self.group_protocol == GroupProtocol::Consumer
            && self.assignment_strategy != DEFAULT_ASSIGNMENT_STRATEGY
        {
            return bad(format!(
                "kafka.assignment_strategy `{}` applies to group_protocol = \"classic\" only; with \"consumer\" the broker assigns (choose its assignor with kafka.extra.\"group.remote.assignor\")",
                self.assignment_strategy
            ));
        }
        if self.heartbeat_interval_ms == 0
            || self.heartbeat_interval_ms * 3 > self.session_timeout_ms
        {
            return bad(format!(
                "kafka.heartbeat_interval_ms ({}) must be ≥ 1 and at most a third of kafka.session_timeout_ms ({})",
                self.heartbeat_interval_ms, self.session_timeout_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};

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

    /// The fetch wait reaches the consumer's settings; 0 (a busy loop) and more than a
    /// minute are refused by name.
    #[test]
    fn the_fetch_wait_is_configurable_and_bounded() {
        let mut c = Config::default();
        assert_eq!(c.kafka.fetch_wait_max_ms, 500);
        c.kafka.fetch_wait_max_ms = 10;
        assert!(c.validate().is_ok());
        for bad in [0, 60_001] {
            c.kafka.fetch_wait_max_ms = bad;
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("kafka.fetch_wait_max_ms"), "{err}");
        }
    }
}
