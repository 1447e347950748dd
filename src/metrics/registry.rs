//! The metric families and the handles the pipeline updates.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::model::{Reason, TABLES};

/// A timed stage of one message's processing (declared in [`Stage::ALL`] order: the
/// discriminant indexes the histograms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading the file's bytes from disk.
    Read,
    /// Walking and parsing the header (attributes, digests).
    Parse,
    /// Decoding the pixel data and computing its statistics and digest (`full` mode).
    Decode,
    /// Publishing the image record until the broker acknowledged it.
    Produce,
    /// Handing the rows to the sink until they were written (batching included).
    Sink,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Read,
        Stage::Parse,
        Stage::Decode,
        Stage::Produce,
        Stage::Sink,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Read => "read",
            Stage::Parse => "parse",
            Stage::Decode => "decode",
            Stage::Produce => "produce",
            Stage::Sink => "sink",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RootLabel {
    root: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    topic: String,
    partition: i32,
}

/// One partition's numbers at a commit tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSample {
    pub partition: i32,
    /// The last offset the broker acknowledged as committed (the next offset to consume).
    pub committed: Option<i64>,
    /// Offsets a restart from the commit point would take again.
    pub gap: i64,
}

/// One input partition as the group sees it (the lag reader's reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSample {
    pub partition: i32,
    /// One of this process's workers owns it.
    pub owned_here: bool,
    /// End offset minus the group's committed offset.
    pub lag: i64,
    /// The group's committed offset (None: never committed).
    pub committed: Option<i64>,
}

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

/// Buckets from 50 µs to ~52 s (×2): a header read is tens of µs, a sink write under an
/// outage is retried for seconds.
fn stage_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 21))
}

impl Metrics {
    /// The metrics of a pipeline consuming `input_topic` (its consumed counter is resolved
    /// once; produced/publish-error series appear per topic as they are used).
    pub fn new(input_topic: &str) -> Metrics {
        let mut registry = Registry::with_prefix("dicom_pipeline");
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
        let rows_family = Family::<TableLabel, Counter>::default();
        registry.register(
            "sink_rows",
            "Rows written by the sink, per table",
            rows_family.clone(),
        );
        let sink_rows = TABLES
            .iter()
            .map(|&table| rows_family.get_or_create(&TableLabel { table }).clone())
            .collect();
        let errors_family = Family::<KindLabel, Counter>::default();
        registry.register(
            "sink_errors",
            "Failed sink writes (each retried), by kind: retryable or permanent",
            errors_family.clone(),
        );
        let sink_errors_retryable = errors_family
            .get_or_create(&KindLabel { kind: "retryable" })
            .clone();
        let sink_errors_permanent = errors_family
            .get_or_create(&KindLabel { kind: "permanent" })
            .clone();
        let secondary_hits = Counter::default();
        registry.register(
            "storage_secondary_hits",
            "Files not found under the primary storage root and read from the secondary",
            secondary_hits.clone(),
        );
        let read_retries = Counter::default();
        registry.register(
            "file_read_retries",
            "Reads of a file retried after an error of the file's own (its storage root answering)",
            read_retries.clone(),
        );
        let state_refused = Counter::default();
        registry.register(
            "state_records_refused",
            "Series state records (or parts of one) the broker refused even split: in dicom_state, not on the state topic",
            state_refused.clone(),
        );
        let storage_available = Family::<RootLabel, Gauge>::default();
        registry.register(
            "storage_root_available",
            "1 while a storage root is there and is the directory it was at start, 0 during an outage (its messages wait)",
            storage_available.clone(),
        );
        let stage_family =
            Family::<StageLabel, Histogram>::new_with_constructor(stage_histogram as fn() -> _);
        registry.register(
            "stage_duration_seconds",
            "Time per message in each stage: read, parse, decode, produce, sink",
            stage_family.clone(),
        );
        let stages = Stage::ALL
            .iter()
            .map(|s| {
                stage_family
                    .get_or_create(&StageLabel { stage: s.as_str() })
                    .clone()
            })
            .collect();
        let in_flight = Gauge::default();
        registry.register(
            "in_flight",
            "Messages taken and not yet finished",
            in_flight.clone(),
        );
        let assigned = Gauge::default();
        registry.register(
            "assigned_partitions",
            "Input partitions this process's workers own",
            assigned.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when partitions are assigned, the sink answered its last probe and every storage root is available",
            ready.clone(),
        );
        let committed = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "partition_committed_offset",
            "Last offset committed for an owned partition",
            committed.clone(),
        );
        let gap = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "partition_watermark_gap",
            "Offsets between the commit point and the highest taken (redone after a crash)",
            gap.clone(),
        );
        let lag = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "partition_lag",
            "End offset minus committed offset of an owned partition",
            lag.clone(),
        );
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
    fn stages_are_listed_in_discriminant_order() {
        for (i, s) in Stage::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{s:?}");
        }
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
