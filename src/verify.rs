//! `verify`: the completeness audit, how a hospital proves a backfill finished.
//!
//! It reads every message offset on the input topic (from each partition's low watermark to
//! its end, `read_committed`: transaction markers and aborted records are not messages) and
//! compares them with the sink:
//! - every message has a terminal row in `dicom_store` (indexed, or dead-lettered);
//! - every `indexed` row's SOP instance is in `dicom_image`;
//! - every message whose latest outcome is a dead letter has its `dicom_dlq` row.
//!
//! It lists the dead letters by reason. The audit is complete when nothing is missing. It
//! needs no running pipeline and changes nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use thiserror::Error;

use crate::config::Config;
use crate::sink::{self, SinkAudit, SinkError};

#[derive(Debug, Error)]
pub enum VerifyError {
    #[error("reading the input topic {topic} from {brokers}: {source}")]
    ReadInput {
        topic: String,
        brokers: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("reading the input topic {topic}: no progress for {secs} s")]
    InputStalled { topic: String, secs: u64 },
    #[error("reading the sink: {0}")]
    Sink(#[from] SinkError),
}

/// A run of consecutive offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OffsetRange {
    pub first: i64,
    pub last: i64,
}

/// One input partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionAudit {
    pub partition: i32,
    /// The offsets read: from the low watermark up to (not including) the end offset.
    pub low: i64,
    pub high: i64,
    /// Messages in that range (markers and aborted records are not messages).
    pub messages: u64,
    /// Messages with no row in `dicom_store`.
    pub missing: u64,
    /// The first missing offsets, as ranges (at most [`SAMPLE`]).
    pub missing_ranges: Vec<OffsetRange>,
}

/// The whole audit (`--json` prints this).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Audit {
    pub topic: String,
    pub backend: String,
    pub database: String,
    pub partitions: Vec<PartitionAudit>,
    pub messages: u64,
    pub indexed: u64,
    pub dead_lettered: u64,
    /// Messages with no terminal row.
    pub missing: u64,
    /// `indexed` rows whose SOP instance is not in `dicom_image`.
    pub indexed_without_image: u64,
    pub indexed_without_image_sample: Vec<(i32, i64)>,
    /// `indexed` rows written before `dicom_store` recorded the SOP UID: not checkable.
    pub indexed_unverifiable: u64,
    /// Dead-lettered messages without their `dicom_dlq` row.
    pub dead_letters_without_row: u64,
    pub dead_letters_without_row_sample: Vec<(i32, i64)>,
    /// Store rows of offsets no longer on the topic (removed by retention): not a gap.
    pub rows_beyond_topic: u64,
    pub dead_letters_by_reason: Vec<(String, u64)>,
    /// Nothing missing.
    pub complete: bool,
}

/// Most missing ranges or offsets listed per finding.
const SAMPLE: usize = 20;
/// How long reading the input may go without a message before it is given up.
const STALL: Duration = Duration::from_secs(30);

/// Read the input topic and the sink, and compare.
pub async fn audit(cfg: &Config) -> Result<Audit, VerifyError> {
    let reader = cfg.clone();
    let input = tokio::task::spawn_blocking(move || input_offsets(&reader))
        .await
        .map_err(|e| VerifyError::InputStalled {
            topic: format!("{} (reader failed: {e})", cfg.kafka.input_topic),
            secs: 0,
        })??;
    let sink = sink::audit(cfg, &cfg.kafka.input_topic).await?;
    Ok(compare(cfg, input, sink))
}

/// One partition's offsets on the topic: (low, high, message offsets in order).
type InputOffsets = BTreeMap<i32, (i64, i64, Vec<i64>)>;

/// Every message offset of the input topic, per partition. Blocking.
fn input_offsets(cfg: &Config) -> Result<InputOffsets, VerifyError> {
    let topic = &cfg.kafka.input_topic;
    let read_err = |source| VerifyError::ReadInput {
        topic: topic.clone(),
        brokers: cfg.kafka.brokers.clone(),
        source: Box::new(source),
    };
    let consumer: BaseConsumer = crate::kafka::client_config(
        &cfg.kafka,
        &[
            // Never joins the group: assigned by hand, commits nothing.
            ("group.id", format!("{}-verify", cfg.kafka.group_id)),
            ("enable.auto.commit", "false".into()),
            ("enable.partition.eof", "true".into()),
            ("isolation.level", "read_committed".into()),
            ("fetch.wait.max.ms", "10".into()),
        ],
    )
    .create()
    .map_err(read_err)?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(read_err)?;
    let mut out = InputOffsets::new();
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), timeout)
                .map_err(read_err)?;
            out.insert(p.id(), (low, high, Vec::new()));
            if high > low {
                tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))
                    .map_err(read_err)?;
            }
        }
    }
    let open = tpl.count();
    if open == 0 {
        return Ok(out);
    }
    consumer.assign(&tpl).map_err(read_err)?;
    read_to_ends(&consumer, topic, open, &mut out)?;
    Ok(out)
}

/// Read the `open` assigned partitions of `topic` up to the end offsets recorded in `out`,
/// adding each message's offset there. Blocking.
fn read_to_ends(
    consumer: &BaseConsumer,
    topic: &str,
    open: usize,
    out: &mut InputOffsets,
) -> Result<(), VerifyError> {
    // A partition is done at its end offset as read above (later messages are not
    // audited), or at end-of-partition (the end lies past transaction markers).
    let mut done = std::collections::HashSet::new();
    let mut last_progress = Instant::now();
    while done.len() < open {
        let finished = match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let (_, high, offsets) = match out.get_mut(&m.partition()) {
                    Some(entry) => entry,
                    None => continue,
                };
                if m.offset() < *high {
                    offsets.push(m.offset());
                }
                (m.offset() + 1 >= *high).then_some(m.partition())
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                last_progress = Instant::now();
                Some(p)
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "verify: reading the input");
                None
            }
            None => None,
        };
        if let Some(p) = finished {
            if done.insert(p) {
                let mut paused = TopicPartitionList::new();
                paused.add_partition(topic, p);
                let _ = consumer.pause(&paused);
            }
        }
        if last_progress.elapsed() > STALL {
            return Err(VerifyError::InputStalled {
                topic: topic.to_string(),
                secs: STALL.as_secs(),
            });
        }
    }
    Ok(())
}

fn compare(cfg: &Config, input: InputOffsets, sink: SinkAudit) -> Audit {
    let mut by_partition: BTreeMap<i32, Vec<(i64, bool)>> = BTreeMap::new();
    for (p, o, indexed) in sink.stores {
        by_partition.entry(p).or_default().push((o, indexed));
    }
    let mut audit = Audit {
        topic: cfg.kafka.input_topic.clone(),
        backend: cfg.sink.backend.to_string(),
        database: cfg.sink_database().to_string(),
        partitions: Vec::new(),
        messages: 0,
        indexed: 0,
        dead_lettered: 0,
        missing: 0,
        indexed_without_image: sink.indexed_without_image.len() as u64,
        indexed_without_image_sample: sink
            .indexed_without_image
            .iter()
            .take(SAMPLE)
            .copied()
            .collect(),
        indexed_unverifiable: sink.indexed_unverifiable,
        dead_letters_without_row: sink.dead_letters_without_row.len() as u64,
        dead_letters_without_row_sample: sink
            .dead_letters_without_row
            .iter()
            .take(SAMPLE)
            .copied()
            .collect(),
        rows_beyond_topic: 0,
        dead_letters_by_reason: sink.dead_letters_by_reason,
        complete: false,
    };
    for (&p, (low, high, offsets)) in &input {
        let rows = by_partition.remove(&p).unwrap_or_default();
        let mut part = PartitionAudit {
            partition: p,
            low: *low,
            high: *high,
            messages: offsets.len() as u64,
            missing: 0,
            missing_ranges: Vec::new(),
        };
        // Both sorted by offset: one walk.
        let mut r = rows.iter().peekable();
        for &o in offsets {
            while r.next_if(|(ro, _)| *ro < o).is_some() {
                audit.rows_beyond_topic += 1;
            }
            match r.next_if(|(ro, _)| *ro == o) {
                Some(&(_, true)) => audit.indexed += 1,
                Some(&(_, false)) => audit.dead_lettered += 1,
                None => {
                    part.missing += 1;
                    let ranges = &mut part.missing_ranges;
                    let listed = ranges.len();
                    match ranges.last_mut() {
                        Some(range) if range.last + 1 == o => range.last = o,
                        _ if listed < SAMPLE => ranges.push(OffsetRange { first: o, last: o }),
                        _ => {}
                    }
                }
            }
        }
        audit.rows_beyond_topic += r.count() as u64;
        audit.messages += part.messages;
        audit.missing += part.missing;
        audit.partitions.push(part);
    }
    // Rows of partitions the topic does not have (any more).
    audit.rows_beyond_topic += by_partition.values().map(|v| v.len() as u64).sum::<u64>();
    audit.complete = audit.missing == 0
        && audit.indexed_without_image == 0
        && audit.dead_letters_without_row == 0;
    audit
}

impl Audit {
    /// Lines for a terminal.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "verify: topic {} against {} database {}\n",
            self.topic, self.backend, self.database
        );
        for p in &self.partitions {
            s += &format!(
                "partition {:>3}: offsets {}..{}, {} messages, {} without a terminal row{}\n",
                p.partition,
                p.low,
                p.high,
                p.messages,
                p.missing,
                ranges_text(&p.missing_ranges)
            );
        }
        s += &format!(
            "messages {}: indexed {}, dead-lettered {}, missing {}\n",
            self.messages, self.indexed, self.dead_lettered, self.missing
        );
        s += &format!(
            "indexed without their dicom_image row: {}{}\n",
            self.indexed_without_image,
            pairs_text(&self.indexed_without_image_sample)
        );
        if self.indexed_unverifiable > 0 {
            s += &format!(
                "indexed rows written before dicom_store recorded the SOP UID (not checked): {}\n",
                self.indexed_unverifiable
            );
        }
        s += &format!(
            "dead letters without their dicom_dlq row: {}{}\n",
            self.dead_letters_without_row,
            pairs_text(&self.dead_letters_without_row_sample)
        );
        if self.rows_beyond_topic > 0 {
            s += &format!(
                "store rows of offsets no longer on the topic (retention): {}\n",
                self.rows_beyond_topic
            );
        }
        let reasons: Vec<String> = self
            .dead_letters_by_reason
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        s += &format!(
            "dead letters by reason: {}\n",
            if reasons.is_empty() {
                "none".to_string()
            } else {
                reasons.join(", ")
            }
        );
        s += if self.complete {
            "COMPLETE: every message on the topic is indexed or dead-lettered\n"
        } else {
            "INCOMPLETE\n"
        };
        s
    }
}

fn ranges_text(ranges: &[OffsetRange]) -> String {
    if ranges.is_empty() {
        return String::new();
    }
    let r: Vec<String> = ranges
        .iter()
        .map(|r| {
            if r.first == r.last {
                r.first.to_string()
            } else {
                format!("{}-{}", r.first, r.last)
            }
        })
        .collect();
    format!(" ({})", r.join(", "))
}

fn pairs_text(sample: &[(i32, i64)]) -> String {
    if sample.is_empty() {
        return String::new();
    }
    let r: Vec<String> = sample.iter().map(|(p, o)| format!("{p}:{o}")).collect();
    format!(" (partition:offset {})", r.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(stores: &[(i32, i64, bool)]) -> SinkAudit {
        SinkAudit {
            stores: stores.to_vec(),
            ..SinkAudit::default()
        }
    }

    #[test]
    fn gaps_are_found_and_markers_are_not_messages() {
        let cfg = Config::default();
        let mut input = InputOffsets::new();
        // Partition 0: offsets 0..7 with a transaction marker at 3 and 7 (never delivered).
        input.insert(0, (0, 8, vec![0, 1, 2, 4, 5, 6]));
        // Partition 1: retention removed 0..5.
        input.insert(1, (5, 8, vec![5, 6, 7]));
        let rows = [
            (0, 0, true),
            (0, 1, true),
            (0, 4, false),
            (0, 6, true),
            (1, 2, true), // beyond the topic now
            (1, 5, true),
            (1, 6, true),
            (1, 7, false),
        ];
        let a = compare(&cfg, input, sink(&rows));
        assert_eq!((a.messages, a.indexed, a.dead_lettered), (9, 5, 2));
        assert_eq!(a.missing, 2);
        assert_eq!(
            a.partitions[0].missing_ranges,
            vec![
                OffsetRange { first: 2, last: 2 },
                OffsetRange { first: 5, last: 5 }
            ]
        );
        assert_eq!(a.rows_beyond_topic, 1);
        assert!(!a.complete);
        assert!(a.to_text().contains("INCOMPLETE"), "{}", a.to_text());
        assert!(a.to_text().contains("(2, 5)"), "{}", a.to_text());
    }

    #[test]
    fn a_finished_backfill_is_complete_and_gaps_come_as_ranges() {
        let cfg = Config::default();
        let mut input = InputOffsets::new();
        input.insert(0, (0, 3, vec![0, 1, 2]));
        let a = compare(
            &cfg,
            input.clone(),
            sink(&[(0, 0, true), (0, 1, false), (0, 2, true)]),
        );
        assert!(a.complete, "{a:?}");
        assert!(a.to_text().contains("COMPLETE"));
        let a = compare(&cfg, input, sink(&[]));
        assert_eq!(
            a.partitions[0].missing_ranges,
            vec![OffsetRange { first: 0, last: 2 }]
        );
        // A row without its image or its dead-letter row makes it incomplete too.
        let mut s = sink(&[(0, 0, true)]);
        s.indexed_without_image = vec![(0, 0)];
        let mut one = InputOffsets::new();
        one.insert(0, (0, 1, vec![0]));
        let a = compare(&cfg, one, s);
        assert!(!a.complete);
    }
}
