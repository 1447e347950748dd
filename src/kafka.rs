//! Kafka client construction and topic administration.
//!
//! Every client starts from [`base_config`] (brokers + the `kafka.extra` passthrough), so TLS
//! and SASL settings apply everywhere. Producers and consumers are created once per worker and
//! cloned where needed — never per message or per batch.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

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
}

/// Brokers plus the passthrough properties.
pub fn base_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.extra {
        c.set(k, v);
    }
    c
}

/// A producer for derived records (image, state, log, DLQ).
pub fn producer(cfg: &KafkaConfig) -> Result<FutureProducer, KafkaClientError> {
    let mut c = base_config(cfg);
    c.set("message.timeout.ms", cfg.message_timeout_ms.to_string())
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("compression.codec", &cfg.compression)
        .set("enable.idempotence", cfg.idempotence.to_string());
    // Passthrough wins over our defaults.
    for (k, v) in &cfg.extra {
        c.set(k, v);
    }
    c.create().map_err(KafkaClientError::CreateClient)
}

/// Create the pipeline's topics if they do not exist (idempotent).
pub async fn ensure_topics(cfg: &KafkaConfig) -> Result<(), KafkaClientError> {
    let admin: AdminClient<DefaultClientContext> = base_config(cfg)
        .create()
        .map_err(KafkaClientError::CreateClient)?;
    let names = [
        &cfg.input_topic,
        &cfg.image_topic,
        &cfg.state_topic,
        &cfg.log_topic,
        &cfg.dlq_topic,
    ];
    let topics: Vec<NewTopic> = names
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
            topic: names
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
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    cancel: &CancellationToken,
) -> Result<(), KafkaClientError> {
    let mut delay = Duration::from_millis(100);
    loop {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        // Wait up to 5 s for room in the local queue; a full queue is just another retry.
        let send = producer.send(record, Duration::from_secs(5));
        let result = tokio::select! {
            r = send => r,
            _ = cancel.cancelled() => return Err(KafkaClientError::Cancelled { topic: topic.into() }),
        };
        match result {
            Ok(_) => return Ok(()),
            Err((err, _)) if is_permanent_produce_error(&err) => {
                return Err(KafkaClientError::Produce {
                    topic: topic.into(),
                    source: err,
                })
            }
            Err((err, _)) => {
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
