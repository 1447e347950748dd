//! The consumer group's lag on the input topic: end offsets against the group's committed
//! offsets, per partition. Read by `--until-idle`, the group watchdog (the `partition_lag`
//! gauges), `lag` and `status`. The reader never joins the group, so reading triggers no
//! rebalance.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::kafka;

/// Sum over the input topic's partitions of (end offset − group's committed offset).
pub fn group_lag(cfg: &Config) -> Result<i64, rdkafka::error::KafkaError> {
    Ok(total(&partition_lags(cfg)?))
}

pub fn total(lags: &[PartitionLag]) -> i64 {
    lags.iter().map(|l| l.lag).sum()
}

/// Per-partition lag of the configured group on the input topic.
pub fn partition_lags(cfg: &Config) -> Result<Vec<PartitionLag>, rdkafka::error::KafkaError> {
    LagReader::new(cfg)?.partition_lags()
}

/// One partition's end and committed offsets for the configured group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PartitionLag {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
    /// None when the group never committed this partition.
    pub committed: Option<i64>,
    pub lag: i64,
}

/// How long one lag read may take, retries included.
const LAG_READ_BUDGET: Duration = Duration::from_secs(10);
/// Pause between attempts of a lag read.
const LAG_READ_RETRY: Duration = Duration::from_millis(200);

/// Reads the group's committed offsets and the topic's end offsets. Its consumer never joins
/// the group (it only fetches committed offsets), so reading lag triggers no rebalance.
pub struct LagReader {
    consumer: BaseConsumer<kafka::QuietContext>,
    topic: String,
}

impl LagReader {
    pub fn new(cfg: &Config) -> Result<Self, rdkafka::error::KafkaError> {
        let consumer: BaseConsumer<kafka::QuietContext> = kafka::client_config(
            &cfg.kafka,
            &[
                ("group.id", cfg.kafka.group_id.clone()),
                ("enable.auto.commit", "false".into()),
            ],
        )
        .create_with_context(kafka::QuietContext::default())?;
        Ok(LagReader {
            consumer,
            topic: cfg.kafka.input_topic.clone(),
        })
    }

    /// Blocking: call from the blocking pool. Transient broker errors (a broker of the
    /// cluster down, a leader or coordinator moving) are retried for up to
    /// [`LAG_READ_BUDGET`] in all; what still fails after that is returned.
    pub fn partition_lags(&self) -> Result<Vec<PartitionLag>, rdkafka::error::KafkaError> {
        let deadline = std::time::Instant::now() + LAG_READ_BUDGET;
        loop {
            match self.read_once(deadline) {
                Err(e)
                    if kafka::is_transient(&e)
                        && std::time::Instant::now() + LAG_READ_RETRY < deadline =>
                {
                    tracing::debug!(error = %e, "reading offsets failed; retrying");
                    std::thread::sleep(LAG_READ_RETRY);
                }
                other => return other,
            }
        }
    }

    fn read_once(
        &self,
        deadline: std::time::Instant,
    ) -> Result<Vec<PartitionLag>, rdkafka::error::KafkaError> {
        // One slow request (a broker that is down but not yet fenced) must leave time for
        // another attempt through the other brokers.
        let timeout = deadline
            .saturating_duration_since(std::time::Instant::now())
            .clamp(Duration::from_millis(100), Duration::from_secs(3));
        let topic = &self.topic;
        let consumer = &self.consumer;
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let mut tpl = TopicPartitionList::new();
        let mut partitions = Vec::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition(topic, p.id());
                partitions.push(p.id());
            }
        }
        let committed = consumer.committed_offsets(tpl, timeout)?;
        let mut out = Vec::new();
        for p in partitions {
            let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
            let committed = committed
                .find_partition(topic, p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            let lag = (high - committed.unwrap_or(low)).max(0);
            out.push(PartitionLag {
                partition: p,
                low,
                high,
                committed,
                lag,
            });
        }
        Ok(out)
    }
}
