//! [`Metrics`], the handle the pipeline updates: every registered series behind one `Arc`,
//! and one method per thing that happened. The families themselves are registered by their
//! group's file beside this one.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::messages::{MessageMetrics, TopicLabel};
use super::partitions::{GroupSample, PartitionLabel, PartitionMetrics, PartitionSample};
use super::resilience::{ResilienceMetrics, RootLabel};
use super::sink::SinkMetrics;
use super::stages::{Stage, StageMetrics};
use super::work::WorkMetrics;
use crate::model::Reason;

/// Every metric of the process. Cheap to clone; clones update the same series.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    input_topic: String,
    consumed: Counter,
    consume_errors: Counter,
    produced: Family<TopicLabel, Counter>,
    publish_errors: Family<TopicLabel, Counter>,
    dlq: Vec<(Reason, Counter)>,
    sink_rows: Vec<Counter>,
    sink_errors_retryable: Counter,
    sink_errors_permanent: Counter,
    secondary_hits: Counter,
    read_retries: Counter,
    state_refused: Counter,
    storage_available: Family<RootLabel, Gauge>,
    /// Storage roots reported unavailable and not back yet.
    storage_down: AtomicI64,
    stages: Vec<Histogram>,
    in_flight: Gauge,
    assigned: Gauge,
    ready: Gauge,
    committed: Family<PartitionLabel, Gauge>,
    gap: Family<PartitionLabel, Gauge>,
    lag: Family<PartitionLabel, Gauge>,
    sink_reachable: AtomicBool,
}

impl Metrics {
    /// The metrics of a pipeline consuming `input_topic` (its consumed counter is resolved
    /// once; produced/publish-error series appear per topic as they are used).
    pub fn new(input_topic: &str) -> Metrics {
        let mut registry = Registry::with_prefix("dicom_pipeline");
        // Registered group by group, in the order the exposition lists them.
        let MessageMetrics {
            consumed,
            consume_errors,
            produced,
            publish_errors,
            dlq,
        } = MessageMetrics::register(&mut registry, input_topic);
        let SinkMetrics {
            sink_rows,
            sink_errors_retryable,
            sink_errors_permanent,
        } = SinkMetrics::register(&mut registry);
        let ResilienceMetrics {
            secondary_hits,
            read_retries,
            state_refused,
            storage_available,
        } = ResilienceMetrics::register(&mut registry);
        let StageMetrics { stages } = StageMetrics::register(&mut registry);
        let WorkMetrics {
            in_flight,
            assigned,
            ready,
        } = WorkMetrics::register(&mut registry);
        let PartitionMetrics {
            committed,
            gap,
            lag,
        } = PartitionMetrics::register(&mut registry);
        Metrics {
            inner: Arc::new(Inner {
                registry,
                input_topic: input_topic.to_string(),
                consumed,
                consume_errors,
                produced,
                publish_errors,
                dlq,
                sink_rows,
                sink_errors_retryable,
                sink_errors_permanent,
                secondary_hits,
                read_retries,
                state_refused,
                storage_available,
                storage_down: AtomicI64::new(0),
                stages,
                in_flight,
                assigned,
                ready,
                committed,
                gap,
                lag,
                sink_reachable: AtomicBool::new(false),
            }),
        }
    }

    /// The OpenMetrics text exposition of every series.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }

    /// `n` messages taken from the input.
    pub fn consumed(&self, n: usize) {
        self.inner.consumed.inc_by(n as u64);
    }

    pub fn consume_error(&self) {
        self.inner.consume_errors.inc();
    }

    fn topic(topic: &str) -> TopicLabel {
        TopicLabel {
            topic: topic.to_string(),
        }
    }

    /// `n` records acknowledged on `topic`.
    pub fn produced(&self, topic: &str, n: u64) {
        self.inner
            .produced
            .get_or_create(&Self::topic(topic))
            .inc_by(n);
    }

    pub fn publish_error(&self, topic: &str) {
        self.inner
            .publish_errors
            .get_or_create(&Self::topic(topic))
            .inc();
    }

    pub fn dead_lettered(&self, reason: Reason) {
        if let Some((_, c)) = self.inner.dlq.iter().find(|(r, _)| *r == reason) {
            c.inc();
        }
    }

    /// Rows written in one batch: images, states, stores, dead letters.
    pub fn sink_rows(&self, counts: [usize; 4]) {
        for (c, n) in self.inner.sink_rows.iter().zip(counts) {
            c.inc_by(n as u64);
        }
    }

    pub fn sink_error(&self, retryable: bool) {
        if retryable {
            self.inner.sink_errors_retryable.inc();
        } else {
            self.inner.sink_errors_permanent.inc();
        }
    }

    pub fn secondary_hit(&self) {
        self.inner.secondary_hits.inc();
    }

    pub fn read_retry(&self) {
        self.inner.read_retries.inc();
    }

    pub fn state_refused(&self, n: u64) {
        self.inner.state_refused.inc_by(n);
    }

    /// A storage root's availability: set for every root at start, changed on an outage's
    /// start and end (the caller reports each transition once).
    pub fn storage_root(&self, root: &str, available: bool, transition: bool) {
        self.inner
            .storage_available
            .get_or_create(&RootLabel {
                root: root.to_string(),
            })
            .set(i64::from(available));
        if transition {
            self.inner
                .storage_down
                .fetch_add(if available { -1 } else { 1 }, Ordering::Relaxed);
        }
        self.update_ready();
    }

    /// Storage roots unavailable now.
    pub fn storage_roots_down(&self) -> i64 {
        self.inner.storage_down.load(Ordering::Relaxed)
    }

    pub fn observe(&self, stage: Stage, took: Duration) {
        if let Some(h) = self.inner.stages.get(stage as usize) {
            h.observe(took.as_secs_f64());
        }
    }

    pub fn in_flight_add(&self, n: i64) {
        self.inner.in_flight.inc_by(n);
    }

    pub fn assigned_add(&self, n: i64) {
        self.inner.assigned.inc_by(n);
        self.update_ready();
    }

    /// Record the sink probe's answer.
    pub fn set_sink_reachable(&self, reachable: bool) {
        self.inner
            .sink_reachable
            .store(reachable, Ordering::Relaxed);
        self.update_ready();
    }

    pub fn sink_reachable(&self) -> bool {
        self.inner.sink_reachable.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> i64 {
        self.inner.in_flight.get()
    }

    pub fn assigned(&self) -> i64 {
        self.inner.assigned.get()
    }

    /// Ready: some partition is assigned here, the sink answered its last probe, and no
    /// storage root is unavailable.
    pub fn is_ready(&self) -> bool {
        self.assigned() > 0 && self.sink_reachable() && self.storage_roots_down() == 0
    }

    fn update_ready(&self) {
        self.inner.ready.set(i64::from(self.is_ready()));
    }

    fn partition(&self, partition: i32) -> PartitionLabel {
        PartitionLabel {
            topic: self.inner.input_topic.clone(),
            partition,
        }
    }

    /// Update the committed-offset and window gauges of the partitions a worker owns.
    pub fn partitions_observed(&self, samples: &[PartitionSample]) {
        for s in samples {
            let label = self.partition(s.partition);
            self.inner.gap.get_or_create(&label).set(s.gap);
            if let Some(c) = s.committed {
                self.inner.committed.get_or_create(&label).set(c);
            }
        }
    }

    /// The group's view of the input partitions (the lag reader's): lag set for the
    /// partitions owned here and removed for the others; the committed offset filled in for
    /// owned partitions this process has not committed itself yet (after an assignment).
    pub fn group_observed(&self, samples: &[GroupSample]) {
        for s in samples {
            let label = self.partition(s.partition);
            if !s.owned_here {
                self.inner.lag.remove(&label);
                continue;
            }
            self.inner.lag.get_or_create(&label).set(s.lag);
            if let Some(c) = s.committed {
                if self.inner.committed.get(&label).is_none() {
                    self.inner.committed.get_or_create(&label).set(c);
                }
            }
        }
    }

    /// Drop the series of partitions no longer owned here (revoked, or the worker stopped).
    pub fn partitions_removed(&self, partitions: &[i32]) {
        for &p in partitions {
            let label = self.partition(p);
            self.inner.committed.remove(&label);
            self.inner.gap.remove(&label);
            self.inner.lag.remove(&label);
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TABLES;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn counters_and_fixed_labels_are_exported_from_the_start() {
        let m = Metrics::new("dicom.store");
        let text = m.encode();
        assert!(
            line(
                &text,
                "dicom_pipeline_messages_consumed_total{topic=\"dicom.store\"} 0"
            )
            .is_some(),
            "{text}"
        );
        for r in Reason::ALL {
            let want = format!(
                "dicom_pipeline_dlq_records_total{{reason=\"{}\"}} 0",
                r.as_str()
            );
            assert!(line(&text, &want).is_some(), "{want} in {text}");
        }
        for t in TABLES {
            let want = format!("dicom_pipeline_sink_rows_total{{table=\"{t}\"}} 0");
            assert!(line(&text, &want).is_some(), "{want}");
        }
        assert!(text.contains("dicom_pipeline_stage_duration_seconds_bucket{le="));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn updates_show_in_the_exposition() {
        let m = Metrics::new("in");
        m.consumed(1);
        m.consumed(1);
        m.produced("out.image", 2);
        m.publish_error("out.image");
        m.dead_lettered(Reason::NotDicom);
        m.sink_rows([3, 1, 4, 0]);
        m.sink_error(false);
        m.observe(Stage::Decode, Duration::from_millis(3));
        m.in_flight_add(5);
        m.in_flight_add(-2);
        let text = m.encode();
        for want in [
            "dicom_pipeline_messages_consumed_total{topic=\"in\"} 2",
            "dicom_pipeline_messages_produced_total{topic=\"out.image\"} 2",
            "dicom_pipeline_publish_errors_total{topic=\"out.image\"} 1",
            "dicom_pipeline_dlq_records_total{reason=\"not_dicom\"} 1",
            "dicom_pipeline_sink_rows_total{table=\"dicom_image\"} 3",
            "dicom_pipeline_sink_rows_total{table=\"dicom_store\"} 4",
            "dicom_pipeline_sink_errors_total{kind=\"permanent\"} 1",
            "dicom_pipeline_stage_duration_seconds_count{stage=\"decode\"} 1",
            "dicom_pipeline_in_flight 3",
        ] {
            assert!(line(&text, want).is_some(), "{want} in\n{text}");
        }
    }

    #[test]
    fn revoked_partitions_lose_their_series() {
        let m = Metrics::new("in");
        m.partitions_observed(&[
            PartitionSample {
                partition: 0,
                committed: Some(10),
                gap: 2,
            },
            PartitionSample {
                partition: 1,
                committed: None,
                gap: 0,
            },
        ]);
        let g = |partition, owned_here, lag, committed| GroupSample {
            partition,
            owned_here,
            lag,
            committed,
        };
        // Partition 0: committed here (10), the reader saw an older 8: ours stands.
        // Partition 1: not committed here yet: the group's 3. Partition 2: owned elsewhere.
        m.group_observed(&[
            g(0, true, 5, Some(8)),
            g(1, true, 0, Some(3)),
            g(2, false, 7, Some(1)),
        ]);
        let text = m.encode();
        for want in [
            "dicom_pipeline_partition_lag{topic=\"in\",partition=\"0\"} 5",
            "dicom_pipeline_partition_lag{topic=\"in\",partition=\"1\"} 0",
            "dicom_pipeline_partition_committed_offset{topic=\"in\",partition=\"0\"} 10",
            "dicom_pipeline_partition_committed_offset{topic=\"in\",partition=\"1\"} 3",
            "dicom_pipeline_partition_watermark_gap{topic=\"in\",partition=\"1\"} 0",
        ] {
            assert!(line(&text, want).is_some(), "{want} in\n{text}");
        }
        // Not owned here: nothing.
        assert!(!text.contains("partition=\"2\""));
        m.partitions_removed(&[0]);
        let text = m.encode();
        assert!(!text.contains("partition=\"0\""), "{text}");
        assert!(text.contains("partition=\"1\""));
        // A partition that moved away loses its lag series at the next lag reading too.
        m.group_observed(&[g(1, false, 0, Some(3))]);
        assert!(!m.encode().contains("partition_lag{"));
    }

    #[test]
    fn ready_needs_an_assignment_and_a_reachable_sink() {
        let m = Metrics::new("in");
        assert!(!m.is_ready());
        m.assigned_add(2);
        assert!(!m.is_ready());
        m.set_sink_reachable(true);
        assert!(m.is_ready());
        assert!(m.encode().contains("dicom_pipeline_ready 1"));
        m.assigned_add(-2);
        assert!(!m.is_ready());
        assert!(m.encode().contains("dicom_pipeline_ready 0"));
    }
}
