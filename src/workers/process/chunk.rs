//! The chunk path: the messages a worker took together (see `workers/chunk.rs`) processed as
//! one — one compute job (a few in full mode), the image records produced together, the
//! rows submitted to the sink in one envelope. A message that needs more leaves the chunk for
//! the one-message path (`message.rs`); every message still gets exactly one outcome.

use std::time::Instant;

use rdkafka::message::{Message, OwnedMessage};
use time::OffsetDateTime;
use tracing::Instrument;

use crate::compute::{Derived, Mode};
use crate::kafka::KafkaClientError;
use crate::metrics::Stage;
use crate::model::{DicomStoreMeta, SourceOffset};
use crate::sink::SinkItem;

use super::derive::derive_inside;
use super::indexed::Indexed;
use super::{message_span, parse_store_meta, source_of, Outcome, ProcessError, Processor};

/// Full-mode files per compute job of a chunk.
const FULL_FILES_PER_JOB: usize = 4;

/// A derived message of a chunk, its records built, waiting for its produce.
struct Ready {
    index: usize,
    meta: DicomStoreMeta,
    src: SourceOffset,
    indexed: Indexed,
}

/// Where the messages of a chunk stand while it is processed (by index in the chunk).
struct Sorting {
    outcomes: Vec<Option<Outcome>>,
    /// For the one-message path.
    alone: Vec<usize>,
    /// To dead-letter: the store message and the failure.
    dead: Vec<(usize, DicomStoreMeta, ProcessError)>,
}

/// The image records of a chunk the broker acknowledged: their sink items, and the messages
/// they belong to.
struct Produced {
    items: Vec<SinkItem>,
    messages: Vec<usize>,
}

impl Processor {
    /// Process the messages of a chunk (taken together from the consumer) to completion; one
    /// outcome per message, in order. The common case costs one compute job, one produce
    /// wait and one sink submission for the whole chunk instead of one of each per message:
    /// the files are derived one after another on one compute thread, the image records are
    /// produced together, and the rows go to the sink in one envelope. A message that needs
    /// more (an unreadable payload, a storage root to wait for, a read to retry, a dead
    /// letter, a refused produce) leaves the chunk and takes the one-message path.
    pub async fn process_chunk(&self, msgs: Vec<OwnedMessage>) -> Vec<Outcome> {
        if msgs.len() < 2 {
            let mut out = Vec::with_capacity(msgs.len());
            for m in msgs {
                out.push(self.process(m).await);
            }
            return out;
        }
        let mut sorting = Sorting {
            outcomes: vec![None; msgs.len()],
            alone: Vec::new(),
            dead: Vec::new(),
        };
        let parsed = sorting.parse(&msgs);
        let Some(derived) = self.derive_chunk(&parsed).await else {
            // Stopped (shutdown) or a failure outside any one file: every message of the
            // chunk takes the one-message path, which handles both.
            sorting.alone.extend(parsed.iter().map(|(i, _)| *i));
            return self.finish_alone(msgs, sorting).await;
        };
        let ready = self.build_records(&msgs, parsed, derived, &mut sorting);
        let produced = self.produce_chunk(ready, &mut sorting).await;
        self.sink_and_dead_letter(&msgs, produced, &mut sorting)
            .await;
        self.finish_alone(msgs, sorting).await
    }

    /// Derive the parsed messages' files in compute jobs of a few files each (a panic in one
    /// file is that file's failure only): header-only files take tens of microseconds, so one
    /// job takes the whole chunk; a full-mode file takes milliseconds, so its chunk is spread
    /// over the compute threads and no file waits behind many others. None if a job failed as
    /// a whole.
    async fn derive_chunk(
        &self,
        parsed: &[(usize, DicomStoreMeta)],
    ) -> Option<Vec<Result<Derived, ProcessError>>> {
        let per_job = match self.shared.mode {
            Mode::HeaderOnly => parsed.len(),
            Mode::Full => FULL_FILES_PER_JOB,
        };
        let jobs = parsed.chunks(per_job.max(1)).map(|part| {
            let shared = self.shared.clone();
            let paths: Vec<String> = part.iter().map(|(_, m)| m.file_path.clone()).collect();
            self.shared.compute.run(move || {
                paths
                    .iter()
                    .map(|path| {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            derive_inside(&shared, path)
                        }))
                        .unwrap_or(Err(ProcessError::Panicked))
                    })
                    .collect::<Vec<_>>()
            })
        });
        let mut derived = Vec::with_capacity(parsed.len());
        for job in futures::future::join_all(jobs).await {
            derived.extend(job.ok()?);
        }
        Some(derived)
    }

    /// Records for the derived files; the others go alone (waiting out an outage, retrying a
    /// read) or are dead-lettered.
    fn build_records(
        &self,
        msgs: &[OwnedMessage],
        parsed: Vec<(usize, DicomStoreMeta)>,
        derived: Vec<Result<Derived, ProcessError>>,
        sorting: &mut Sorting,
    ) -> Vec<Ready> {
        let now = OffsetDateTime::now_utc();
        let mut ready = Vec::with_capacity(parsed.len());
        for ((index, meta), result) in parsed.into_iter().zip(derived) {
            match result {
                Ok(d) => {
                    let src = source_of(&msgs[index]);
                    match self.indexed(&meta, d, &src, now) {
                        Ok(indexed) => ready.push(Ready {
                            index,
                            meta,
                            src,
                            indexed,
                        }),
                        Err(_) => sorting.alone.push(index),
                    }
                }
                Err(ProcessError::StorageUnavailable { .. }) => sorting.alone.push(index),
                Err(e) if e.is_transient() => sorting.alone.push(index),
                Err(e) => sorting.dead.push((index, meta, e)),
            }
        }
        ready
    }

    /// Every image record of the chunk produced at once; each acknowledgement awaited in the
    /// same task. A refused record is dead-lettered, a cancelled one abandoned.
    async fn produce_chunk(&self, ready: Vec<Ready>, sorting: &mut Sorting) -> Produced {
        let producing = Instant::now();
        let acks =
            futures::future::join_all(ready.iter().map(|r| self.publish_image(&r.indexed))).await;
        let produce_time = producing.elapsed();
        let mut produced = Produced {
            items: Vec::with_capacity(ready.len()),
            messages: Vec::with_capacity(ready.len()),
        };
        for (r, result) in ready.into_iter().zip(acks) {
            match result {
                Ok(()) => {
                    self.shared.metrics.observe(Stage::Produce, produce_time);
                    produced.items.push(r.indexed.into_item(&r.meta, &r.src));
                    produced.messages.push(r.index);
                }
                Err(KafkaClientError::Cancelled { .. }) => {
                    sorting.outcomes[r.index] = Some(Outcome::Abandoned)
                }
                Err(e) => sorting
                    .dead
                    .push((r.index, r.meta, ProcessError::Produce(e))),
            }
        }
        produced
    }

    /// The produced messages' rows to the sink in one envelope while the dead letters go out
    /// (each in its message's span); their outcomes recorded.
    async fn sink_and_dead_letter(
        &self,
        msgs: &[OwnedMessage],
        produced: Produced,
        sorting: &mut Sorting,
    ) {
        let sinking = Instant::now();
        let dead = std::mem::take(&mut sorting.dead);
        let (sunk_result, dead_outcomes) = tokio::join!(
            self.sink.submit_all(produced.items),
            futures::future::join_all(dead.into_iter().map(|(i, meta, e)| {
                let src = source_of(&msgs[i]);
                let span = message_span(&src);
                span.record("trace_id", tracing::field::display(&meta.trace_id));
                let payload = msgs[i].payload().unwrap_or_default();
                async move { (i, self.dead_letter(&src, Some(&meta), payload, e).await) }
                    .instrument(span)
            }))
        );
        match sunk_result {
            Ok(()) => {
                let t = sinking.elapsed();
                for &i in &produced.messages {
                    self.shared.metrics.observe(Stage::Sink, t);
                    sorting.outcomes[i] = Some(Outcome::Indexed);
                }
            }
            Err(e) => {
                tracing::warn!(messages = produced.messages.len(), error = %e, "chunk not sunk");
                for &i in &produced.messages {
                    sorting.outcomes[i] = Some(Outcome::Abandoned);
                }
            }
        }
        for (i, outcome) in dead_outcomes {
            sorting.outcomes[i] = Some(outcome);
        }
    }

    /// The one-message path for the `alone` messages of a chunk (concurrently), then every
    /// outcome in order.
    async fn finish_alone(&self, msgs: Vec<OwnedMessage>, sorting: Sorting) -> Vec<Outcome> {
        let Sorting {
            mut outcomes,
            mut alone,
            ..
        } = sorting;
        alone.sort_unstable();
        let mut msgs: Vec<Option<OwnedMessage>> = msgs.into_iter().map(Some).collect();
        let singles = alone
            .into_iter()
            .filter_map(|i| msgs[i].take().map(|m| (i, m)))
            .map(|(i, m)| async move { (i, self.process(m).await) });
        for (i, outcome) in futures::future::join_all(singles).await {
            outcomes[i] = Some(outcome);
        }
        // Every message has an outcome by now; one without (a bug) is left unfinished.
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::Abandoned))
            .collect()
    }
}

impl Sorting {
    /// The messages whose store message parses: (index, meta). The rest go alone.
    fn parse(&mut self, msgs: &[OwnedMessage]) -> Vec<(usize, DicomStoreMeta)> {
        let mut parsed = Vec::with_capacity(msgs.len());
        for (i, m) in msgs.iter().enumerate() {
            match parse_store_meta(m.payload().unwrap_or_default()) {
                Ok(meta) => parsed.push((i, meta)),
                Err(_) => self.alone.push(i),
            }
        }
        parsed
    }
}
