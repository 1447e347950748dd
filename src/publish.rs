//! What the pipeline publishes to Kafka besides the image records: each sink batch's
//! coalesced series state (the state topic) and audit events (the log topic).
//!
//! The batcher knows neither Kafka nor these topics: it hands each written batch's states to
//! a [`FlushListener`], and this module's [`StatePublisher`] is the one the pipeline plugs in.

use std::time::Duration;

use crate::kafka::Producer;
use tokio_util::sync::CancellationToken;

use crate::kafka::{produce_acked, KafkaClientError};
use crate::metrics::Metrics;
use crate::model::{epoch_ms, LogEvent, StateRecord};
use crate::sink::batcher::{FlushListener, FlushSummary};

/// Publishes series state and audit events with the process's one producer.
#[derive(Clone)]
pub struct StatePublisher {
    producer: Producer,
    state_topic: String,
    log_topic: String,
    metrics: Metrics,
}

impl StatePublisher {
    pub fn new(
        producer: Producer,
        state_topic: impl Into<String>,
        log_topic: impl Into<String>,
        metrics: Metrics,
    ) -> StatePublisher {
        StatePublisher {
            producer,
            state_topic: state_topic.into(),
            log_topic: log_topic.into(),
            metrics,
        }
    }

    /// Fire-and-forget an audit event: audit records are not part of any offset's completion.
    pub fn audit(&self, event: &LogEvent) {
        let Ok(payload) = serde_json::to_vec(event) else {
            return;
        };
        let producer = self.producer.clone();
        let topic = self.log_topic.clone();
        tokio::spawn(async move {
            let sent = producer.send::<(), _>(&topic, None, &payload, Duration::from_secs(5));
            if let Err(e) = sent.await {
                tracing::warn!(error = %e, "audit event not delivered");
            }
        });
    }

    /// Wait up to `timeout` for the fire-and-forget audit events still queued to go out.
    pub async fn flush(self, timeout: Duration) {
        let flushed = tokio::task::spawn_blocking(move || self.producer.flush(timeout)).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "audit events not flushed before exit");
        }
    }

    /// Publish one coalesced state record until the broker acknowledges it. One the broker
    /// refuses for good (too large for the topic, say) goes out split in parts with half the
    /// SOP UIDs each; a part that cannot be split and is still refused is logged and counted
    /// and left out of the topic — its rows are in `dicom_state`, and the flush must not wait
    /// for it for ever, or every partition would stop. False only on hard stop.
    async fn publish_state(&self, state: &StateRecord, stop: &CancellationToken) -> bool {
        match self.publish_state_once(state, stop).await {
            Sent::Acked => true,
            Sent::Stopped => false,
            Sent::Refused => self.publish_state_split(state, stop).await,
        }
    }

    async fn publish_state_split(&self, state: &StateRecord, stop: &CancellationToken) -> bool {
        let mut parts = Vec::new();
        let mut refused = 0usize;
        match state.split() {
            Some((a, b)) => parts.extend([b, a]),
            None => refused += 1,
        }
        let mut sent = 0usize;
        while let Some(part) = parts.pop() {
            match self.publish_state_once(&part, stop).await {
                Sent::Acked => sent += 1,
                Sent::Stopped => return false,
                Sent::Refused => match part.split() {
                    Some((a, b)) => parts.extend([b, a]),
                    None => refused += 1,
                },
            }
        }
        if refused > 0 {
            self.metrics.state_refused(refused as u64);
            tracing::error!(
                parts_sent = sent,
                parts_refused = refused,
                "the broker refused a series' state record even split; those SOP UIDs are in dicom_state only"
            );
        } else {
            tracing::warn!(
                parts = sent,
                "a series' state record was too large for the broker; sent in parts"
            );
        }
        true
    }

    async fn publish_state_once(&self, state: &StateRecord, stop: &CancellationToken) -> Sent {
        let payload = match serde_json::to_vec(state) {
            Ok(p) => p,
            Err(e) => {
                // Plain data, cannot fail; if it ever does, the rows are in the table.
                tracing::error!(error = %e, "cannot encode state record");
                return Sent::Acked;
            }
        };
        // produce_acked retries transient failures itself: what comes back is final.
        let key = state.key();
        let sent = produce_acked(
            &self.producer,
            &self.state_topic,
            &key,
            &payload,
            stop,
            &self.metrics,
        );
        match sent.await {
            Ok(()) => Sent::Acked,
            Err(KafkaClientError::Cancelled { .. }) => Sent::Stopped,
            Err(e) => {
                tracing::warn!(error = %e, bytes = payload.len(), "state record refused by the broker");
                Sent::Refused
            }
        }
    }
}

/// How publishing one state record ended.
enum Sent {
    Acked,
    /// The hard stop fired.
    Stopped,
    /// The broker refused it for good.
    Refused,
}

impl FlushListener for StatePublisher {
    async fn publish_states(&self, states: &[StateRecord], stop: &CancellationToken) -> bool {
        futures::future::join_all(states.iter().map(|s| self.publish_state(s, stop)))
            .await
            .into_iter()
            .all(|ok| ok)
    }

    fn flushed(&self, s: &FlushSummary) {
        self.audit(&LogEvent::BatchFlushed {
            images: s.images,
            states: s.states,
            stores: s.stores,
            dead_letters: s.dead_letters,
            attempts: s.attempts,
            duration_ms: s.duration_ms,
            at_ms: epoch_ms(time::OffsetDateTime::now_utc()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use std::time::Instant;

    fn state(series: &str, sop: &str) -> StateRecord {
        crate::testing::indexed(series, sop).1
    }

    /// A coalesced state record larger than the broker takes goes out in parts that carry
    /// every SOP UID; one that cannot be split and is refused is counted and skipped, and the
    /// publish still returns (a flush waiting on it for ever would hold every partition).
    /// Against librdkafka's mock cluster, the producer limited to 1,000 bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_state_record_the_broker_refuses_is_split_or_skipped_never_waited_for() {
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        mock.create_topic("state", 1, 1).unwrap();
        mock.create_topic("log", 1, 1).unwrap();
        let producer: Producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .set("message.max.bytes", "1000")
            .create()
            .unwrap();
        let metrics = Metrics::new("in");
        let publisher = StatePublisher::new(producer, "state", "log", metrics.clone());
        // 40 instances of one series, 60-character UIDs: one state record of ~2.7 KB.
        let uids: Vec<String> = (0..40)
            .map(|i| format!("1.2.826.0.1.3680043.10.{i:037}"))
            .collect();
        let mut big = state("big", &uids[0]);
        for u in &uids[1..] {
            big.absorb(&state("big", u));
        }
        // A series whose one UID alone is too large: cannot be split.
        let huge = state("huge", &"9".repeat(1500));
        let published = tokio::time::timeout(
            Duration::from_secs(30),
            publisher.publish_states(&[big, huge], &CancellationToken::new()),
        )
        .await
        .expect("returns, not held up by the refused record");
        assert!(published);
        assert!(metrics
            .encode()
            .contains("dicom_pipeline_state_records_refused_total 1"));
        // Every UID of the large series is on the topic, over several records.
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .set("group.id", "check")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&["state"]).unwrap();
        let mut seen: Vec<String> = Vec::new();
        let mut records = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen.len() < uids.len() && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let s: StateRecord = serde_json::from_slice(m.payload().unwrap()).unwrap();
                assert_eq!(s.series_uid, "big", "the unsplittable record went out");
                records += 1;
                seen.extend(s.sop_uids);
            }
        }
        seen.sort();
        assert_eq!(seen, uids);
        assert!(records > 1, "one record of {} UIDs", seen.len());
    }

    /// A stopped publisher reports it (the batch stays unacknowledged), it does not hang.
    #[tokio::test]
    async fn a_hard_stop_ends_the_publish_with_false() {
        // A broker address nothing listens on: the produce can only end by the stop.
        let producer: Producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .create()
            .unwrap();
        let publisher = StatePublisher::new(producer, "state", "log", Metrics::new("in"));
        let stop = CancellationToken::new();
        stop.cancel();
        let published = tokio::time::timeout(
            Duration::from_secs(30),
            publisher.publish_states(&[state("s", "1")], &stop),
        )
        .await
        .expect("the stop ends the publish");
        assert!(!published);
    }
}
