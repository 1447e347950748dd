//! Message flow: store messages consumed, records produced per output topic, publish and
//! consume errors, and dead letters per reason.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::model::Reason;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TopicLabel {
    pub(super) topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabel {
    pub(super) reason: &'static str,
}

/// The message-flow handles: the input topic's consumed counter and one dead-letter counter
/// per reason are resolved at registration; produced and publish-error series appear per
/// topic as they are used.
pub(super) struct MessageMetrics {
    pub(super) consumed: Counter,
    pub(super) consume_errors: Counter,
    pub(super) produced: Family<TopicLabel, Counter>,
    pub(super) publish_errors: Family<TopicLabel, Counter>,
    pub(super) dlq: Vec<(Reason, Counter)>,
}

impl MessageMetrics {
    /// Register the families in `registry` and resolve the fixed-label counters.
    pub(super) fn register(registry: &mut Registry, input_topic: &str) -> MessageMetrics {
        let consumed_family = Family::<TopicLabel, Counter>::default();
        registry.register(
            "messages_consumed",
            "Store messages taken from the input topic",
            consumed_family.clone(),
        );
        let consumed = consumed_family
            .get_or_create(&TopicLabel {
                topic: input_topic.to_string(),
            })
            .clone();
        let consume_errors = Counter::default();
        registry.register(
            "consume_errors",
            "Errors the consumer reported while fetching",
            consume_errors.clone(),
        );
        let produced = Family::<TopicLabel, Counter>::default();
        registry.register(
            "messages_produced",
            "Records the broker acknowledged, per output topic",
            produced.clone(),
        );
        let publish_errors = Family::<TopicLabel, Counter>::default();
        registry.register(
            "publish_errors",
            "Failed publish attempts (retried or dead-lettered), per output topic",
            publish_errors.clone(),
        );
        let dlq_family = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "dlq_records",
            "Messages dead-lettered, per reason",
            dlq_family.clone(),
        );
        let dlq = Reason::ALL
            .iter()
            .map(|&r| {
                let c = dlq_family
                    .get_or_create(&ReasonLabel { reason: r.as_str() })
                    .clone();
                (r, c)
            })
            .collect();
        MessageMetrics {
            consumed,
            consume_errors,
            produced,
            publish_errors,
            dlq,
        }
    }
}
