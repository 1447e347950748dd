//! Why a message cannot be indexed, and the reason code each failure records: the errors of
//! the processing path in one place, so the dead letter and the retry decisions read them
//! the same way.

use thiserror::Error;

use crate::compute::ComputeError;
use crate::kafka::KafkaClientError;
use crate::model::Reason;
use crate::storage::{OpenError, RootId};

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
    pub(super) fn is_transient(&self) -> bool {
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
