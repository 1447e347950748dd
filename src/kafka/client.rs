//! Kafka client construction, topic administration, and produce-with-acknowledgement.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientConfig;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use super::Producer;
use crate::metrics::Metrics;

use crate::config::KafkaConfig;

#[derive(Debug, Error)]
pub enum KafkaClientError {
    #[error("creating a Kafka client: {0}")]
    CreateClient(#[source] KafkaError),
    #[error("creating topic {topic}: {source}")]
    CreateTopic {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("creating topic {topic}: {code}")]
    CreateTopicRejected {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("producing to {topic}: {source}")]
    Produce {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("cancelled while producing to {topic}")]
    Cancelled { topic: String },
    #[error("cannot reach the Kafka broker(s) at {brokers}: {cause}")]
    Unreachable { brokers: String, cause: String },
}

/// A client context for short-lived clients (the reachability probe, topic admin, lag and
/// audit readers): librdkafka's errors are kept — the caller reports the one that matters,
/// once, with the broker addresses — and its logs go to debug. With the default context an
/// unreachable broker printed hundreds of `AllBrokersDown` lines before `status` could say
/// anything.
#[derive(Default)]
pub struct QuietContext {
    last_error: std::sync::Mutex<Option<String>>,
}

impl QuietContext {
    fn keep(&self, text: &str) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(text.to_string());
    }

    /// The last error librdkafka reported (e.g. `127.0.0.1:1/bootstrap: Connect to
    /// ipv4#127.0.0.1:1 failed: Connection refused`).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl rdkafka::ClientContext for QuietContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(target: "librdkafka", ?level, fac, "{log_message}");
        // A failed connect is logged before (or instead of) the error event.
        if log_message.contains("failed:") {
            self.keep(log_message);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", %error, reason, "client error");
        // "1/1 brokers are down" says less than the connect failure that caused it.
        if !reason.contains("brokers are down") || self.last_error().is_none() {
            self.keep(reason);
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietContext {}

/// How long the reachability probe waits for a broker to answer.
pub const REACH_WITHIN: Duration = Duration::from_secs(10);

/// Whether the brokers answer a metadata request within `within`. The error names the
/// addresses and librdkafka's last connection error. Blocking; asks in steps of at most
/// 500 ms and gives up early once `abandoned` is set (its caller stopped waiting).
pub fn reach(
    cfg: &KafkaConfig,
    within: Duration,
    abandoned: &std::sync::atomic::AtomicBool,
) -> Result<(), KafkaClientError> {
    reach_listing(cfg, within, abandoned).map(drop)
}

/// [`reach`], keeping what the answer lists: the topics the cluster has.
fn reach_listing(
    cfg: &KafkaConfig,
    within: Duration,
    abandoned: &std::sync::atomic::AtomicBool,
) -> Result<HashSet<String>, KafkaClientError> {
    use rdkafka::consumer::Consumer;
    use std::sync::atomic::Ordering;
    let unreachable = |cause: String| KafkaClientError::Unreachable {
        brokers: cfg.brokers.clone(),
        cause,
    };
    let consumer: rdkafka::consumer::BaseConsumer<QuietContext> = client_config(cfg, &[])
        .create_with_context(QuietContext::default())
        .map_err(|e| unreachable(e.to_string()))?;
    let deadline = std::time::Instant::now() + within;
    loop {
        let step = deadline
            .saturating_duration_since(std::time::Instant::now())
            .min(Duration::from_millis(500));
        let err = match consumer.fetch_metadata(None, step) {
            Ok(md) => return Ok(topic_names(&md)),
            Err(e) => e,
        };
        // librdkafka's connection errors wait on the client's queue: serve it, so the
        // context sees them (`Connect to … failed: Connection refused`).
        let _ = consumer.poll(Duration::from_millis(10));
        if abandoned.load(Ordering::Relaxed) || std::time::Instant::now() >= deadline {
            for _ in 0..5 {
                let _ = consumer.poll(Duration::from_millis(20));
            }
            let cause = consumer
                .client()
                .context()
                .last_error()
                .unwrap_or_else(|| format!("{err} (no answer within {} s)", within.as_secs()));
            return Err(unreachable(cause));
        }
    }
}

/// The partition count of each of `topics` (None: the broker does not have it). Blocking.
pub fn topic_partitions(
    cfg: &KafkaConfig,
    topics: &[String],
) -> Result<Vec<(String, Option<usize>)>, KafkaClientError> {
    let consumer: rdkafka::consumer::BaseConsumer<QuietContext> = client_config(cfg, &[])
        .create_with_context(QuietContext::default())
        .map_err(KafkaClientError::CreateClient)?;
    use rdkafka::consumer::Consumer;
    let md =
        consumer
            .fetch_metadata(None, REACH_WITHIN)
            .map_err(|e| KafkaClientError::Unreachable {
                brokers: cfg.brokers.clone(),
                cause: e.to_string(),
            })?;
    Ok(topics
        .iter()
        .map(|t| {
            let n = md
                .topics()
                .iter()
                .find(|m| m.name() == t && m.error().is_none())
                .map(|m| m.partitions().len());
            (t.clone(), n)
        })
        .collect())
}

/// [`reach`] off the runtime's threads. Dropping the future (a stop during start-up) ends
/// the probe within half a second, so a stopped process does not wait for it.
pub async fn reach_async(cfg: &KafkaConfig) -> Result<(), KafkaClientError> {
    reach_topics_async(cfg).await.map(drop)
}

/// [`reach_async`], keeping the topics the cluster has (from the same metadata answer), for
/// [`ensure_topics_among`]: start-up asks the broker for its metadata once.
pub async fn reach_topics_async(cfg: &KafkaConfig) -> Result<HashSet<String>, KafkaClientError> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    struct Abandon(Arc<AtomicBool>);
    impl Drop for Abandon {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let abandoned = Arc::new(AtomicBool::new(false));
    let _on_drop = Abandon(abandoned.clone());
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || reach_listing(&cfg, REACH_WITHIN, &abandoned))
        .await
        .unwrap_or_else(|e| {
            Err(KafkaClientError::Unreachable {
                brokers: String::new(),
                cause: e.to_string(),
            })
        })
}

/// Brokers, then `defaults`, then the `kafka.extra` passthrough — which wins, so an operator
/// can override any default (TLS, SASL, tuning).
pub fn client_config(cfg: &KafkaConfig, defaults: &[(&str, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    // librdkafka backs off reconnecting up to 10 s: after a 3 s broker restart the pipeline
    // resumed 4.4–4.8 s later (fault test, Kafka 4.4). Kafka's Java clients cap it at 1 s.
    c.set(
        "reconnect.backoff.max.ms",
        RECONNECT_BACKOFF_MAX_MS.to_string(),
    );
    for (k, v) in defaults {
        c.set(*k, v);
    }
    for (k, v) in &cfg.extra {
        c.set(k, v);
    }
    c
}

/// Longest pause between reconnect attempts to a broker (librdkafka's default is 10 s).
pub const RECONNECT_BACKOFF_MAX_MS: u32 = 1_000;

/// Linger of the pipeline's producers: records wait on acknowledgements, so keep it short.
pub const OUTPUT_LINGER_MS: u32 = 5;
/// Linger of `backfill`'s producer: pure throughput.
pub const BACKFILL_LINGER_MS: u32 = 20;

/// A producer: derived records (image, state, log, DLQ) with a short linger, or store
/// messages from `backfill` with a longer one.
pub fn producer(cfg: &KafkaConfig, linger_ms: u32) -> Result<Producer, KafkaClientError> {
    let config = client_config(
        cfg,
        &[
            ("message.timeout.ms", cfg.message_timeout_ms.to_string()),
            ("linger.ms", linger_ms.to_string()),
            ("batch.num.messages", "10000".into()),
            // Configurable; not snappy by default: tansu 0.6.0 with sqlite storage accepts
            // snappy batches but fails every fetch of them (`SansIo(UnexpectedType("Snappy"))`).
            ("compression.codec", cfg.compression.clone()),
            ("enable.idempotence", cfg.idempotence.to_string()),
        ],
    );
    config
        .create::<Producer>()
        .map_err(KafkaClientError::CreateClient)
}

/// Create the pipeline's topics if they do not exist (idempotent).
pub async fn ensure_topics(cfg: &KafkaConfig) -> Result<(), KafkaClientError> {
    let admin = std::sync::Arc::new(admin_client(cfg)?);
    let existing = existing_topics(admin.clone()).await;
    create_missing_topics(cfg, &admin, &existing).await
}

/// [`ensure_topics`] where the topics the cluster has are known already (from
/// [`reach_topics_async`]): no second metadata request.
pub async fn ensure_topics_among(
    cfg: &KafkaConfig,
    existing: &HashSet<String>,
) -> Result<(), KafkaClientError> {
    let admin = admin_client(cfg)?;
    create_missing_topics(cfg, &admin, existing).await
}

fn admin_client(cfg: &KafkaConfig) -> Result<AdminClient<QuietContext>, KafkaClientError> {
    client_config(cfg, &[])
        .create_with_context(QuietContext::default())
        .map_err(KafkaClientError::CreateClient)
}

/// Create those of the pipeline's topics that are not in `existing`.
async fn create_missing_topics(
    cfg: &KafkaConfig,
    admin: &AdminClient<QuietContext>,
    existing: &HashSet<String>,
) -> Result<(), KafkaClientError> {
    let names = [
        &cfg.input_topic,
        &cfg.image_topic,
        &cfg.state_topic,
        &cfg.log_topic,
        &cfg.dlq_topic,
    ];
    // Only what is missing is created: a deployment whose topics an administrator made (and
    // whose credentials may not allow creating topics) never sends a CreateTopics request.
    let missing: Vec<&String> = names
        .into_iter()
        .filter(|t| !existing.contains(t.as_str()))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let topics: Vec<NewTopic> = missing
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                cfg.partitions,
                TopicReplication::Fixed(cfg.replication_factor),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&topics, &opts)
        .await
        .map_err(|source| KafkaClientError::CreateTopic {
            topic: missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
            source,
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaClientError::CreateTopicRejected { topic, code })
            }
        }
    }
    Ok(())
}

/// The topics the cluster has (none known if the metadata cannot be read: then every topic
/// is created, and the broker answers "already exists" for those it has).
async fn existing_topics(admin: std::sync::Arc<AdminClient<QuietContext>>) -> HashSet<String> {
    let read = tokio::task::spawn_blocking(move || {
        admin
            .inner()
            .fetch_metadata(None, REACH_WITHIN)
            .map(|md| topic_names(&md))
    })
    .await;
    match read {
        Ok(Ok(names)) => names,
        _ => Default::default(),
    }
}

/// The topics a metadata answer lists as usable (no error, at least one partition).
fn topic_names(md: &rdkafka::metadata::Metadata) -> HashSet<String> {
    md.topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.name().to_string())
        .collect()
}

/// Whether a request failed for a reason that passes by itself: a broker of the cluster
/// unreachable or restarting, a partition leader or group coordinator moving, a timeout.
pub fn is_transient(err: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        err.rdkafka_error_code(),
        Some(
            DestroyBroker
                | BrokerTransportFailure
                | AllBrokersDown
                | OperationTimedOut
                | RequestTimedOut
                | LeaderNotAvailable
                | NotLeaderForPartition
                | NotCoordinator
                | CoordinatorNotAvailable
                | CoordinatorLoadInProgress
                | NetworkException
                | Resolve
                | WaitingForCoordinator
        )
    )
}

/// Whether a produce error will not go away by retrying the same record.
pub fn is_permanent_produce_error(err: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        err.rdkafka_error_code(),
        Some(
            MessageSizeTooLarge
                | InvalidMessageSize
                | InvalidMessage
                | TopicAuthorizationFailed
                | ClusterAuthorizationFailed
                | InvalidRecord
                | UnknownTopic
        )
    )
}

/// Produce one record and wait for the broker's acknowledgement, retrying transient failures
/// with exponential backoff (librdkafka already retried within `message.timeout.ms`) until it
/// succeeds, fails permanently, or `cancel` fires.
pub async fn produce_acked(
    producer: &Producer,
    topic: &str,
    key: &str,
    payload: &[u8],
    cancel: &CancellationToken,
    metrics: &Metrics,
) -> Result<(), KafkaClientError> {
    let mut delay = Duration::from_millis(100);
    loop {
        // Wait up to 5 s for room in the local queue; a full queue is just another retry.
        let send = producer.send(topic, Some(key), payload, Duration::from_secs(5));
        let result = tokio::select! {
            r = send => r,
            _ = cancel.cancelled() => return Err(KafkaClientError::Cancelled { topic: topic.into() }),
        };
        if result.is_err() {
            metrics.publish_error(topic);
        }
        match result {
            Ok(_) => {
                metrics.produced(topic, 1);
                return Ok(());
            }
            Err(err) if is_permanent_produce_error(&err) => {
                return Err(KafkaClientError::Produce {
                    topic: topic.into(),
                    source: err,
                })
            }
            Err(err) => {
                tracing::warn!(topic, error = %err, retry_in_ms = delay.as_millis() as u64, "produce failed, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => return Err(KafkaClientError::Cancelled { topic: topic.into() }),
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Topics that exist are not created again: no CreateTopics request at all (a
    /// deployment's credentials may not allow one). The mock cluster answers CreateTopics
    /// with a timeout, so before this the call failed after 30 s. The same with the topics
    /// taken from the reachability probe's answer, as start-up does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn existing_topics_are_not_created_again() {
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        let mut cfg = KafkaConfig {
            brokers: mock.bootstrap_servers(),
            ..KafkaConfig::default()
        };
        cfg.partitions = 2;
        for t in [
            &cfg.input_topic,
            &cfg.image_topic,
            &cfg.state_topic,
            &cfg.log_topic,
            &cfg.dlq_topic,
        ] {
            mock.create_topic(t, 2, 1).unwrap();
        }
        let started = std::time::Instant::now();
        ensure_topics(&cfg).await.unwrap();
        let existing = reach_topics_async(&cfg).await.unwrap();
        assert!(existing.contains(&cfg.input_topic), "{existing:?}");
        assert!(existing.contains(&cfg.dlq_topic), "{existing:?}");
        ensure_topics_among(&cfg, &existing).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn passthrough_wins_over_defaults() {
        let mut cfg = KafkaConfig::default();
        cfg.extra.insert("linger.ms".into(), "50".into());
        cfg.extra
            .insert("security.protocol".into(), "SASL_SSL".into());
        let c = client_config(&cfg, &[("linger.ms", "5".into()), ("acks", "all".into())]);
        assert_eq!(c.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(c.get("linger.ms"), Some("50"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("reconnect.backoff.max.ms"), Some("1000"));
        cfg.extra
            .insert("reconnect.backoff.max.ms".into(), "5000".into());
        let c = client_config(&cfg, &[]);
        assert_eq!(c.get("reconnect.backoff.max.ms"), Some("5000"));
    }
}
