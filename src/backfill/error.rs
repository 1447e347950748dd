//! What stops a backfill, and whether running the same command again may succeed.

use std::path::PathBuf;

use thiserror::Error;

use super::args::ArgError;
use super::checkpoint::CheckpointError;
use crate::kafka::KafkaClientError;

#[derive(Debug, Error)]
pub enum BackfillError {
    #[error(transparent)]
    Args(#[from] ArgError),
    #[error("source `{name}`: {path}: {source}")]
    ResolveRoot {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("source `{name}`: {path} is not valid UTF-8 (store messages carry UTF-8 paths)")]
    RootNotUtf8 { name: String, path: PathBuf },
    #[error(
        "--skip-indexed: querying dicom_image at {target}: {source} (is the sink's database up, \
         and was `dicom-pipeline schema` run for it?); stopped rather than republish unchecked"
    )]
    QueryIndexed {
        target: String,
        #[source]
        source: crate::sink::SinkError,
    },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("creating the producer: {0}")]
    CreateProducer(#[source] KafkaClientError),
    #[error("{0}")]
    Unreachable(#[source] KafkaClientError),
    #[error("stopped before the broker answered; nothing was published")]
    StoppedBeforeStart,
    #[error("source `{name}`: its walk stopped unexpectedly: {source}")]
    JoinWalk {
        name: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl BackfillError {
    /// Whether running the same command again may succeed without changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            BackfillError::QueryIndexed { source, .. } => source.is_retryable(),
            BackfillError::Checkpoint(e) => e.is_retryable(),
            BackfillError::CreateProducer(_)
            | BackfillError::JoinWalk { .. }
            | BackfillError::Unreachable(_)
            | BackfillError::StoppedBeforeStart => true,
            BackfillError::Args(_)
            | BackfillError::ResolveRoot { .. }
            | BackfillError::RootNotUtf8 { .. } => false,
        }
    }
}
