//! Reading and deriving a message's file on the compute pool: the open inside its storage
//! root, the stage timings, and (on the one-message path) waiting out a storage outage and
//! retrying a failed read.

use std::time::Duration;

use crate::compute::{self, ComputeError, Derived, StageTimes};
use crate::metrics::Stage;
use crate::storage::OpenError;

use super::super::compute_pool::PoolError;
use super::{ProcessContext, ProcessError, Processor};

/// Retries of a file whose read failed while its root answered (then `read_failed`).
const READ_RETRIES: u32 = 3;
/// The first retry's pause; each next one is 4× longer (100 ms, 400 ms, 1.6 s).
const READ_RETRY_FIRST: Duration = Duration::from_millis(100);

impl ProcessContext {
    fn observe_compute(&self, t: StageTimes) {
        self.metrics.observe(Stage::Read, t.read);
        self.metrics.observe(Stage::Parse, t.parse);
        if t.decode > std::time::Duration::ZERO {
            self.metrics.observe(Stage::Decode, t.decode);
        }
    }
}

impl Processor {
    /// Open and derive the file on the compute pool. A storage root that is unavailable is
    /// waited for (see `outage`), then the file is tried again; an error of the file's own is
    /// retried [`READ_RETRIES`] times with backoff. None if the hard stop fired meanwhile.
    pub(super) async fn derive_waiting_out_outages(
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
}

/// On a compute thread: open the file inside its root and derive it. A failed read is put
/// down to the storage when its root no longer answers.
pub(super) fn derive_inside(
    shared: &ProcessContext,
    file_path: &str,
) -> Result<Derived, ProcessError> {
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
