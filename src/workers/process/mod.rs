//! What happens to consumed messages: a chunk of them, or one at a time, to image records +
//! sink rows, or to dead letters. Every message ends with one [`Outcome`]; only `Abandoned`
//! leaves its offset unfinished.
//!
//! - `chunk.rs`: the chunk path (one compute job, produces awaited together, one sink
//!   envelope); what needs more leaves it for the one-message path.
//! - `message.rs`: the one-message path (outage waits, read retries, dead letters).
//! - `indexed.rs`: an indexed message's records, image record publish, sink item — the same
//!   for both paths.
//! - `derive.rs`: the file opened inside its root and derived on the compute pool; outage
//!   waits and read retries.
//! - `dead_letter.rs`: the dead-letter topic record and rows.
//! - `store_message.rs`: decoding and checking the input's JSON.
//! - `error.rs`: [`ProcessError`] and its reason codes.

mod chunk;
mod dead_letter;
mod derive;
mod error;
mod indexed;
mod message;
mod store_message;

use std::sync::Arc;

use crate::kafka::Producer;
use rdkafka::message::{Message, OwnedMessage};
use tokio_util::sync::CancellationToken;

use super::compute_pool::ComputePool;
use super::outage::Outages;
use crate::compute::{Limits, Mode};
use crate::metrics::Metrics;
use crate::model::{Reason, SourceOffset};
use crate::privacy::Pseudonymizer;
use crate::sink::SinkHandle;

pub use error::ProcessError;
pub use store_message::parse_store_meta;

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

/// Per-worker processing state: the worker's producer plus the shared settings.
pub struct Processor {
    producer: Producer,
    sink: SinkHandle,
    shared: Arc<ProcessContext>,
}

impl Processor {
    pub fn new(producer: Producer, sink: SinkHandle, shared: Arc<ProcessContext>) -> Self {
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
