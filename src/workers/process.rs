//! What happens to one consumed message.

use std::sync::Arc;

use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use thiserror::Error;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use std::time::{Duration, Instant};

use tracing::Instrument;

use super::compute_pool::{ComputePool, PoolError};
use crate::compute::{self, ComputeError, Derived, Limits, Mode, StageTimes};
use crate::kafka::{produce_acked, KafkaClientError};
use crate::metrics::{Metrics, Stage};
use crate::model::{
    DicomStoreMeta, DlqRecord, ImageRecord, Reason, SourceOffset, StateRecord, StoreRecord,
    StoreStatus,
};
use crate::privacy::Pseudonymizer;
use crate::records::records;
use crate::sink::{SinkHandle, SinkItem};
use crate::storage::{OpenError, RootId};

use super::outage::Outages;

/// Largest part of a bad payload copied into its dead letter.
const DLQ_PAYLOAD_CAP: usize = 4096;

/// Why a message cannot be indexed (all permanent: the message goes to the DLQ).
#[derive(Debug, Error)]
pub enum ProcessError {
    #[error("empty payload")]
    EmptyPayload,
    #[error("payload is not a store message: {0}")]
    BadJson(#[source] serde_json::Error),
    #[error("invalid store message: {0}")]
    InvalidMessage(&'static str),
    #[error("{0}")]
    Open(#[from] OpenError),
    /// Not the message's fault: waited out, never dead-lettered.
    #[error("storage root {root} unavailable: {cause}")]
    StorageUnavailable { root: RootId, cause: String },
    #[error("{0}")]
    Compute(#[from] ComputeError),
    #[error("publishing the image record failed: {0}")]
    Produce(#[source] KafkaClientError),
    #[error("processing panicked")]
    Panicked,
}

impl ProcessError {
    /// The error's text without any value quoted from the payload (serde_json quotes the
    /// offending value, which may be an identifier): used when pseudonymization is on.
    pub fn text_without_values(&self) -> String {
        match self {
            ProcessError::BadJson(e) => format!(
                "payload is not a store message: {:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ),
            other => other.to_string(),
        }
    }

    /// An error of the file's own (its root answering) that a later attempt may not see: a
    /// flaky read over the network, a file being replaced. Retried a few times before it
    /// becomes `read_failed`.
    fn is_transient(&self) -> bool {
        matches!(
            self,
            ProcessError::Open(OpenError::Io { .. })
                | ProcessError::Compute(ComputeError::Read { .. })
        )
    }

    pub fn reason(&self) -> Reason {
        match self {
            ProcessError::EmptyPayload => Reason::EmptyPayload,
            ProcessError::BadJson(_) => Reason::BadJson,
            ProcessError::InvalidMessage(_) => Reason::InvalidMessage,
            ProcessError::Open(e) => e.reason(),
            ProcessError::StorageUnavailable { .. } => Reason::ReadFailed,
            ProcessError::Compute(e) => e.reason(),
            ProcessError::Produce(_) => Reason::ProduceFailed,
            ProcessError::Panicked => Reason::Internal,
        }
    }
}

/// What became of a message. Only `Abandoned` leaves its offset unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Indexed,
    DeadLettered(Reason),
    /// Stopped before its outputs were acknowledged (shutdown deadline); redelivered later.
    Abandoned,
}

/// What every worker's processor shares: immutable settings and the process-wide bound on
/// concurrent CPU work.
pub struct ProcessContext {
    /// The storage roots and their availability: messages of an unavailable root wait.
    pub storage: Arc<Outages>,
    pub image_topic: String,
    pub dlq_topic: String,
    pub mode: Mode,
    pub limits: Limits,
    /// The threads that read and parse files. Messages waiting for acknowledgements are
    /// cheap, a file being parsed is not (it may be read whole): a fixed number of threads
    /// bounds memory at `compute_threads × max_file_size` however many messages are in
    /// flight.
    pub compute: ComputePool,
    /// Fired at the drain deadline: stop retrying produces.
    pub hard_stop: CancellationToken,
    pub metrics: Metrics,
    /// Applied to every derived instance before any record is built.
    pub privacy: Pseudonymizer,
}

impl ProcessContext {
    fn observe_compute(&self, t: StageTimes) {
        self.metrics.observe(Stage::Read, t.read);
        self.metrics.observe(Stage::Parse, t.parse);
        if t.decode > std::time::Duration::ZERO {
            self.metrics.observe(Stage::Decode, t.decode);
        }
    }
}

/// Per-worker processing state: the worker's producer plus the shared settings.
pub struct Processor {
    producer: FutureProducer,
    sink: SinkHandle,
    shared: Arc<ProcessContext>,
}

impl Processor {
    pub fn new(producer: FutureProducer, sink: SinkHandle, shared: Arc<ProcessContext>) -> Self {
        Processor {
            producer,
            sink,
            shared,
        }
    }

    /// The metrics this processor updates (shared by the process).
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Process one message to completion: indexed, dead-lettered, or abandoned. Runs in a
    /// span carrying topic, partition, offset and (once parsed) the trace id — never a
    /// patient identifier.
    pub async fn process(&self, msg: OwnedMessage) -> Outcome {
        let src = source_of(&msg);
        let span = message_span(&src);
        self.process_in_span(&msg, src).instrument(span).await
    }

    async fn process_in_span(&self, msg: &OwnedMessage, src: SourceOffset) -> Outcome {
        let payload = msg.payload().unwrap_or_default();
        let meta = match parse_store_meta(payload) {
            Ok(m) => m,
            Err(e) => return self.dead_letter(&src, None, payload, e).await,
        };
        tracing::Span::current().record("trace_id", tracing::field::display(&meta.trace_id));
        let derived = match self.derive_waiting_out_outages(&meta.file_path).await {
            Some(d) => d,
            // Stopped while waiting for a storage root or a retry: redelivered later.
            None => return Outcome::Abandoned,
        };
        let mut derived = match derived {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return self.dead_letter(&src, Some(&meta), payload, e).await,
            Err(PoolError::Panicked) => {
                return self
                    .dead_letter(&src, Some(&meta), payload, ProcessError::Panicked)
                    .await
            }
            // Not this message's fault: leave it for redelivery.
            Err(PoolError::Stopped) => return Outcome::Abandoned,
        };
        self.shared.privacy.instance(&mut derived.meta);
        let now = OffsetDateTime::now_utc();
        let (image, state) = records(&meta, derived, &src, now);
        let image_json = match serde_json::to_vec(&image) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode image record");
                return Outcome::Abandoned;
            }
        };
        let producing = Instant::now();
        let produced = produce_acked(
            &self.producer,
            &self.shared.image_topic,
            &image.key(),
            &image_json,
            &self.shared.hard_stop,
            &self.shared.metrics,
        )
        .await;
        match produced {
            Ok(()) => self
                .shared
                .metrics
                .observe(Stage::Produce, producing.elapsed()),
            Err(KafkaClientError::Cancelled { .. }) => return Outcome::Abandoned,
            Err(e) => {
                return self
                    .dead_letter(&src, Some(&meta), payload, ProcessError::Produce(e))
                    .await
            }
        }
        let store = StoreRecord::of(
            &meta,
            &src,
            StoreStatus::Indexed,
            image.file_size,
            &image.sop_uid,
            now,
        );
        let item = SinkItem::Indexed {
            image: Box::new(image),
            state: Box::new(state),
            store: Box::new(store),
        };
        let sinking = Instant::now();
        match self.sink.submit(item).await {
            Ok(()) => {
                self.shared.metrics.observe(Stage::Sink, sinking.elapsed());
                Outcome::Indexed
            }
            Err(e) => {
                tracing::warn!(partition = src.partition, offset = src.offset, error = %e, "message not sunk");
                Outcome::Abandoned
            }
        }
    }

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
        let mut outcomes: Vec<Option<Outcome>> = vec![None; msgs.len()];
        // The messages whose store message parses: (index, meta). The rest go alone.
        let mut parsed: Vec<(usize, DicomStoreMeta)> = Vec::with_capacity(msgs.len());
        let mut alone: Vec<usize> = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            match parse_store_meta(m.payload().unwrap_or_default()) {
                Ok(meta) => parsed.push((i, meta)),
                Err(_) => alone.push(i),
            }
        }
        // Compute jobs of a few files each (a panic in one file is that file's failure only):
        // header-only files take tens of microseconds, so one job takes the whole chunk; a
        // full-mode file takes milliseconds, so its chunk is spread over the compute threads
        // and no file waits behind many others.
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
            match job {
                Ok(d) => derived.extend(d),
                // Stopped (shutdown) or a failure outside any one file: every message of the
                // chunk takes the one-message path, which handles both.
                Err(_) => {
                    alone.extend(parsed.iter().map(|(i, _)| *i));
                    alone.sort_unstable();
                    return self.finish_alone(msgs, outcomes, alone).await;
                }
            }
        }
        // Records for the derived files; the others go alone (waiting out an outage,
        // retrying a read) or are dead-lettered.
        let now = OffsetDateTime::now_utc();
        let mut ready: Vec<Ready> = Vec::with_capacity(parsed.len());
        let mut dead: Vec<(usize, DicomStoreMeta, ProcessError)> = Vec::new();
        for ((i, meta), result) in parsed.into_iter().zip(derived) {
            match result {
                Ok(mut d) => {
                    self.shared.privacy.instance(&mut d.meta);
                    let src = source_of(&msgs[i]);
                    let (image, state) = records(&meta, d, &src, now);
                    match serde_json::to_vec(&image) {
                        Ok(json) => ready.push(Ready {
                            index: i,
                            key: image.key(),
                            meta,
                            src,
                            image,
                            state,
                            json,
                        }),
                        Err(_) => alone.push(i),
                    }
                }
                Err(ProcessError::StorageUnavailable { .. }) => alone.push(i),
                Err(e) if e.is_transient() => alone.push(i),
                Err(e) => dead.push((i, meta, e)),
            }
        }
        // Every image record of the chunk produced at once; each acknowledgement awaited
        // in the same task.
        let producing = Instant::now();
        let produced = futures::future::join_all(ready.iter().map(|r| {
            produce_acked(
                &self.producer,
                &self.shared.image_topic,
                &r.key,
                &r.json,
                &self.shared.hard_stop,
                &self.shared.metrics,
            )
        }))
        .await;
        let produce_time = producing.elapsed();
        let mut items = Vec::with_capacity(ready.len());
        let mut sunk: Vec<usize> = Vec::with_capacity(ready.len());
        for (r, result) in ready.into_iter().zip(produced) {
            match result {
                Ok(()) => {
                    self.shared.metrics.observe(Stage::Produce, produce_time);
                    let store = StoreRecord::of(
                        &r.meta,
                        &r.src,
                        StoreStatus::Indexed,
                        r.image.file_size,
                        &r.image.sop_uid,
                        now,
                    );
                    sunk.push(r.index);
                    items.push(SinkItem::Indexed {
                        image: Box::new(r.image),
                        state: Box::new(r.state),
                        store: Box::new(store),
                    });
                }
                Err(KafkaClientError::Cancelled { .. }) => {
                    outcomes[r.index] = Some(Outcome::Abandoned)
                }
                Err(e) => dead.push((r.index, r.meta, ProcessError::Produce(e))),
            }
        }
        let sinking = Instant::now();
        let (sunk_result, dead_outcomes) = tokio::join!(
            self.sink.submit_all(items),
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
                for &i in &sunk {
                    self.shared.metrics.observe(Stage::Sink, t);
                    outcomes[i] = Some(Outcome::Indexed);
                }
            }
            Err(e) => {
                tracing::warn!(messages = sunk.len(), error = %e, "chunk not sunk");
                for &i in &sunk {
                    outcomes[i] = Some(Outcome::Abandoned);
                }
            }
        }
        for (i, outcome) in dead_outcomes {
            outcomes[i] = Some(outcome);
        }
        alone.sort_unstable();
        self.finish_alone(msgs, outcomes, alone).await
    }

    /// The one-message path for the `alone` messages of a chunk (concurrently), then every
    /// outcome in order.
    async fn finish_alone(
        &self,
        msgs: Vec<OwnedMessage>,
        mut outcomes: Vec<Option<Outcome>>,
        alone: Vec<usize>,
    ) -> Vec<Outcome> {
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

    /// Open and derive the file on the compute pool. A storage root that is unavailable is
    /// waited for (see `outage`), then the file is tried again; an error of the file's own is
    /// retried [`READ_RETRIES`] times with backoff. None if the hard stop fired meanwhile.
    async fn derive_waiting_out_outages(
        &self,
        file_path: &str,
    ) -> Option<Result<Result<Derived, ProcessError>, PoolError>> {
        let mut retries = 0;
        loop {
            let shared = self.shared.clone();
            let path = file_path.to_string();
            let attempt = self
                .shared
                .compute
                .run(move || derive_inside(&shared, &path))
                .await;
            match attempt {
                Ok(Err(ProcessError::StorageUnavailable { root, cause })) => {
                    self.shared.storage.report(root, &cause);
                    if !self.shared.storage.wait(root, &self.shared.hard_stop).await {
                        return None;
                    }
                }
                Ok(Err(e)) if e.is_transient() && retries < READ_RETRIES => {
                    let pause = READ_RETRY_FIRST * 4u32.pow(retries);
                    retries += 1;
                    self.shared.metrics.read_retry();
                    tracing::debug!(error = %e, retry_in_ms = pause.as_millis() as u64, "reading the file failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = self.shared.hard_stop.cancelled() => return None,
                    }
                }
                other => return Some(other),
            }
        }
    }

    async fn dead_letter(
        &self,
        src: &SourceOffset,
        meta: Option<&DicomStoreMeta>,
        payload: &[u8],
        err: ProcessError,
    ) -> Outcome {
        let reason = err.reason();
        let now = OffsetDateTime::now_utc();
        tracing::info!(
            partition = src.partition,
            offset = src.offset,
            trace_id = meta.map(|m| m.trace_id.as_str()).unwrap_or(""),
            reason = reason.as_str(),
            "dead-lettering message"
        );
        let dlq = DlqRecord {
            trace_id: meta.map(|m| m.trace_id.clone()).unwrap_or_default(),
            tenant_id: meta.map(|m| m.tenant_id.clone()).unwrap_or_default(),
            file_path: meta.map(|m| m.file_path.clone()).unwrap_or_default(),
            reason: reason.as_str().to_string(),
            error: if self.shared.privacy.enabled() {
                err.text_without_values()
            } else {
                err.to_string()
            },
            payload: self
                .shared
                .privacy
                .payload(capped_text(payload, DLQ_PAYLOAD_CAP)),
            kafka_topic: src.topic.clone(),
            kafka_partition: src.partition,
            kafka_offset: src.offset,
            failed_at: now,
        };
        if !self.publish_dead_letter(&dlq, src).await {
            return Outcome::Abandoned;
        }
        let store = match meta {
            Some(m) => StoreRecord::of(m, src, StoreStatus::DeadLetter, m.file_size, "", now),
            None => StoreRecord::unparsed(src, now),
        };
        let item = SinkItem::DeadLetter {
            dlq: Box::new(dlq),
            store: Box::new(store),
        };
        match self.sink.submit(item).await {
            Ok(()) => {
                self.shared.metrics.dead_lettered(reason);
                Outcome::DeadLettered(reason)
            }
            Err(_) => Outcome::Abandoned,
        }
    }
}

impl Processor {
    /// Put a dead letter on the dead-letter topic. A record the broker refuses for good (too
    /// large, say) is sent again shrunk ([`DlqRecord::shrunk`]); if that is refused too, the
    /// dead letter lives in `dicom_dlq` alone (logged, counted as a publish error) — its
    /// offset must still complete, or its partition would never move again. False only when
    /// the hard stop fired (the message is then redelivered).
    async fn publish_dead_letter(&self, dlq: &DlqRecord, src: &SourceOffset) -> bool {
        let full = serde_json::to_vec(dlq);
        let shrunk = dlq.shrunk();
        for (attempt, json) in [full, serde_json::to_vec(&shrunk)].into_iter().enumerate() {
            let json = match json {
                Ok(j) => j,
                // Plain strings and numbers: cannot fail; if it ever does, try the next form.
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode dead letter");
                    continue;
                }
            };
            match produce_acked(
                &self.producer,
                &self.shared.dlq_topic,
                &shrunk.key(),
                &json,
                &self.shared.hard_stop,
                &self.shared.metrics,
            )
            .await
            {
                Ok(()) => return true,
                Err(KafkaClientError::Cancelled { .. }) => return false,
                Err(e) => tracing::warn!(
                    partition = src.partition,
                    offset = src.offset,
                    shrunk = attempt > 0,
                    error = %e,
                    "the broker refused the dead letter"
                ),
            }
        }
        tracing::error!(
            partition = src.partition,
            offset = src.offset,
            reason = dlq.reason.as_str(),
            "dead letter refused by the broker even shrunk; it is kept in dicom_dlq only"
        );
        true
    }
}

/// Full-mode files per compute job of a chunk.
const FULL_FILES_PER_JOB: usize = 4;

/// A derived message of a chunk, its records built, waiting for its produce.
struct Ready {
    index: usize,
    key: String,
    meta: DicomStoreMeta,
    src: SourceOffset,
    image: ImageRecord,
    state: StateRecord,
    json: Vec<u8>,
}

/// Where a message came from.
fn source_of(msg: &OwnedMessage) -> SourceOffset {
    SourceOffset {
        topic: msg.topic().to_string(),
        partition: msg.partition(),
        offset: msg.offset(),
    }
}

/// The span of one message's processing: topic, partition, offset and (once parsed) the
/// trace id — never a patient identifier.
fn message_span(src: &SourceOffset) -> tracing::Span {
    tracing::info_span!(
        "message",
        topic = %src.topic,
        partition = src.partition,
        offset = src.offset,
        trace_id = tracing::field::Empty,
    )
}

/// Retries of a file whose read failed while its root answered (then `read_failed`).
const READ_RETRIES: u32 = 3;
/// The first retry's pause; each next one is 4× longer (100 ms, 400 ms, 1.6 s).
const READ_RETRY_FIRST: Duration = Duration::from_millis(100);

/// On a compute thread: open the file inside its root and derive it. A failed read is put
/// down to the storage when its root no longer answers.
fn derive_inside(shared: &ProcessContext, file_path: &str) -> Result<Derived, ProcessError> {
    let roots = shared.storage.roots();
    let opened = match roots.open(file_path) {
        Ok(o) => o,
        Err(OpenError::Unavailable { root, cause }) => {
            return Err(ProcessError::StorageUnavailable { root, cause })
        }
        Err(e) => return Err(e.into()),
    };
    if opened.secondary {
        shared.metrics.secondary_hit();
        tracing::debug!("file missing under its storage root; read from the secondary root");
    }
    let (derived, times) = compute::derive_open_timed(opened.file, shared.mode, shared.limits);
    shared.observe_compute(times);
    match derived {
        Err(ComputeError::Read { .. }) => match roots.read_failed_because(opened.root) {
            Some(cause) => Err(ProcessError::StorageUnavailable {
                root: opened.root,
                cause,
            }),
            None => Ok(derived?),
        },
        other => Ok(other?),
    }
}

/// Decode and check a store message.
pub fn parse_store_meta(payload: &[u8]) -> Result<DicomStoreMeta, ProcessError> {
    if payload.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ProcessError::EmptyPayload);
    }
    let meta: DicomStoreMeta = serde_json::from_slice(payload).map_err(ProcessError::BadJson)?;
    if meta.trace_id.trim().is_empty() {
        return Err(ProcessError::InvalidMessage("trace_id is empty"));
    }
    if meta.tenant_id.trim().is_empty() {
        return Err(ProcessError::InvalidMessage("tenant_id is empty"));
    }
    if meta.file_path.trim().is_empty() {
        return Err(ProcessError::InvalidMessage("file_path is empty"));
    }
    if !meta.file_path.starts_with('/') {
        return Err(ProcessError::InvalidMessage("file_path is not absolute"));
    }
    Ok(meta)
}

/// Lossy UTF-8 of at most `cap` bytes, cut at a character boundary.
fn capped_text(bytes: &[u8], cap: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(cap)]);
    text.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_classifies_bad_payloads() {
        let cases: Vec<(&[u8], Reason)> = vec![
            (b"", Reason::EmptyPayload),
            (b"  \n", Reason::EmptyPayload),
            (b"{not json", Reason::BadJson),
            (b"[1,2]", Reason::BadJson),
            (br#"{"trace_id":"a","tenant_id":"t"}"#, Reason::BadJson),
            (
                br#"{"trace_id":"","tenant_id":"t","file_path":"/x","received_at":"2026-01-01T00:00:00Z"}"#,
                Reason::InvalidMessage,
            ),
            (
                br#"{"trace_id":"a","tenant_id":"t","file_path":" ","received_at":"2026-01-01T00:00:00Z"}"#,
                Reason::InvalidMessage,
            ),
        ];
        for (payload, want) in cases {
            let err = parse_store_meta(payload).unwrap_err();
            assert_eq!(
                err.reason(),
                want,
                "{:?}: {err}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn error_text_can_leave_out_quoted_values() {
        let err = parse_store_meta(
            br#"{"trace_id":"a","tenant_id":"t","file_path":"/x","file_size":"PAT-123"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("PAT-123"), "{err}");
        let text = err.text_without_values();
        assert!(!text.contains("PAT-123"), "{text}");
        assert!(text.contains("line 1 column"), "{text}");
    }

    #[test]
    fn capped_text_is_lossy_and_bounded() {
        assert_eq!(capped_text(&[0xff, b'a'], 10), "\u{fffd}a");
        assert_eq!(capped_text(b"abcdef", 3), "abc");
    }
}
