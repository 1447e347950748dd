//! Waiting out a storage outage.
//!
//! A message whose storage root is unavailable (see `storage`: missing, replaced, or failing
//! with an I/O error) is not dead-lettered. Its task waits here, holding its in-flight
//! permit, until the root is back, and then tries again. Once every permit of a worker is
//! held by a waiting message the worker takes no more (backpressure), and nothing is
//! committed past a waiting message, so a crash during the outage loses nothing either.
//!
//! The first message to find a root gone logs it (the root's path, never a file's) and sets
//! `storage_root_available{root}` to 0, which turns `/readyz` not ready. One prober per
//! unavailable root then checks it with backoff (on the blocking pool: a probe of a hung
//! network mount must not stall the runtime) until it is back, logs how long it was gone,
//! and wakes every waiting message at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::storage::{RootId, StorageRoots};

/// First pause between probes of an unavailable root; doubles up to [`PROBE_MAX`].
const PROBE_FIRST: Duration = Duration::from_millis(100);
const PROBE_MAX: Duration = Duration::from_secs(1);
/// A probe that takes longer than this counts as failed (a hung network mount).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The storage roots' availability, shared by every message of the process.
pub struct Outages {
    roots: Arc<StorageRoots>,
    /// Per root: available (true) or not.
    state: Vec<watch::Sender<bool>>,
    metrics: Metrics,
    /// Ends the probers (the pipeline's shutdown).
    stop: CancellationToken,
}

impl Outages {
    /// Every root available; the metric set to 1 for each.
    pub fn new(roots: Arc<StorageRoots>, metrics: Metrics, stop: CancellationToken) -> Self {
        let state = (0..roots.len()).map(|_| watch::Sender::new(true)).collect();
        for root in 0..roots.len() {
            metrics.storage_root(&roots.path(root).display().to_string(), true, false);
        }
        Outages {
            roots,
            state,
            metrics,
            stop,
        }
    }

    pub fn roots(&self) -> &StorageRoots {
        &self.roots
    }

    /// A message found `root` unavailable. The first report of an outage logs it, updates
    /// the metric and starts the prober; later ones only wait with it.
    pub fn report(self: &Arc<Self>, root: RootId, cause: &str) {
        let started = self.state[root].send_if_modified(|available| {
            let was = *available;
            *available = false;
            was
        });
        if !started {
            return;
        }
        let name = self.roots.path(root).display().to_string();
        tracing::warn!(root = %name, cause, "storage root unavailable; its messages wait (no dead letters) until it is back");
        self.metrics.storage_root(&name, false, true);
        let me = self.clone();
        tokio::spawn(async move { me.probe_until_back(root, name).await });
    }

    async fn probe_until_back(&self, root: RootId, name: String) {
        let down_since = Instant::now();
        let mut pause = PROBE_FIRST;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.stop.cancelled() => return,
            }
            pause = (pause * 2).min(PROBE_MAX);
            let roots = self.roots.clone();
            let probe = tokio::task::spawn_blocking(move || roots.probe(root));
            match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                Ok(Ok(Ok(()))) => break,
                Ok(Ok(Err(cause))) => {
                    tracing::debug!(root = %name, cause, "storage root still unavailable")
                }
                Ok(Err(e)) => tracing::debug!(root = %name, error = %e, "storage probe failed"),
                Err(_) => tracing::debug!(root = %name, "storage probe timed out"),
            }
        }
        tracing::info!(
            root = %name,
            unavailable_s = down_since.elapsed().as_secs_f64(),
            "storage root available again; its messages carry on"
        );
        self.metrics.storage_root(&name, true, true);
        self.state[root].send_replace(true);
    }

    /// Wait until `root` is available (true), or until `stop` fires (false).
    pub async fn wait(&self, root: RootId, stop: &CancellationToken) -> bool {
        let mut rx = self.state[root].subscribe();
        tokio::select! {
            r = rx.wait_for(|available| *available) => r.is_ok(),
            _ = stop.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_wait_for_a_root_to_come_back_and_readiness_follows() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("share");
        std::fs::create_dir(&root).unwrap();
        let roots = Arc::new(StorageRoots::new(std::slice::from_ref(&root), None).unwrap());
        let metrics = Metrics::new("in");
        metrics.assigned_add(1);
        metrics.set_sink_reachable(true);
        assert!(metrics.is_ready());
        let outages = Arc::new(Outages::new(
            roots,
            metrics.clone(),
            CancellationToken::new(),
        ));
        let stop = CancellationToken::new();

        std::fs::rename(&root, parent.path().join("away")).unwrap();
        outages.report(0, "missing");
        outages.report(0, "missing"); // a second message: the same outage
        assert!(!metrics.is_ready());
        assert_eq!(metrics.storage_roots_down(), 1);
        let series = format!(
            "dicom_pipeline_storage_root_available{{root=\"{}\"}} 0",
            root.display()
        );
        assert!(metrics.encode().contains(&series), "{}", metrics.encode());
        let waiter = {
            let (o, s) = (outages.clone(), stop.clone());
            tokio::spawn(async move { o.wait(0, &s).await })
        };
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!waiter.is_finished(), "woke while the root was gone");
        std::fs::rename(parent.path().join("away"), &root).unwrap();
        let woke = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken once the root is back")
            .unwrap();
        assert!(woke);
        assert!(metrics.is_ready());
        assert_eq!(metrics.storage_roots_down(), 0);

        // A stop ends a wait that would never end.
        std::fs::rename(&root, parent.path().join("away")).unwrap();
        outages.report(0, "missing");
        stop.cancel();
        assert!(!outages.wait(0, &stop).await);
    }
}
