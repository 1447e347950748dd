//! The sink's errors, backend-neutral: each backend's own error travels inside a
//! [`BackendError`] with its verdict on retrying.

use thiserror::Error;

/// A failed sink operation, named after the operation. Backend-neutral: the backend's own
/// error travels inside a [`BackendError`] with whether a retry may succeed.
#[derive(Debug, Error)]
pub enum SinkError {
    #[error("writing {table} to {backend}: {source}")]
    Write {
        backend: &'static str,
        table: &'static str,
        #[source]
        source: BackendError,
    },
    #[error("querying {backend} for {what}: {source}")]
    Query {
        backend: &'static str,
        what: &'static str,
        #[source]
        source: BackendError,
    },
    #[error("applying the {backend} schema at {target}: {source}")]
    Schema {
        backend: &'static str,
        target: String,
        #[source]
        source: BackendError,
    },
    #[error("cannot reach {backend} at {addr}: {detail}")]
    Ping {
        backend: &'static str,
        addr: String,
        detail: String,
    },
    #[error("the sink has shut down")]
    Closed,
    #[error("the sink stopped before this message was written")]
    Abandoned,
}

impl SinkError {
    /// Whether retrying the same write may succeed (network trouble, timeouts, server
    /// overload). Permanent errors (schema mismatch, bad data, bad credentials) are retried
    /// too — rows are never dropped — but are logged as errors because they need an operator.
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Write { source, .. }
            | SinkError::Query { source, .. }
            | SinkError::Schema { source, .. } => source.is_retryable(),
            SinkError::Ping { .. } => true,
            SinkError::Closed | SinkError::Abandoned => false,
        }
    }
}

/// A backend's own error, carried through the seam with the backend's verdict on retrying.
/// It displays as the backend's error and has that error's source.
#[derive(Debug)]
pub struct BackendError {
    retryable: bool,
    inner: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl BackendError {
    pub fn new<E: std::error::Error + Send + Sync + 'static>(
        inner: E,
        retryable: bool,
    ) -> BackendError {
        BackendError {
            retryable,
            inner: Box::new(inner),
        }
    }

    /// Whether retrying the operation may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The backend's own error, if it is an `E` (for a caller that knows the backend: its
    /// tests, say).
    pub fn downcast<E: std::error::Error + 'static>(self) -> Result<E, BackendError> {
        match self.inner.downcast::<E>() {
            Ok(e) => Ok(*e),
            Err(inner) => Err(BackendError {
                retryable: self.retryable,
                inner,
            }),
        }
    }
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}
