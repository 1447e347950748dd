//! The tasks that watch the running pipeline instead of doing its work: the idle monitor
//! (`--until-idle`), the group watchdog (stuck-group rejoin, and the source of the
//! `partition_lag` gauges) and the escalation from the drain to the hard stop.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::lag::{total, LagReader, PartitionLag};
use crate::metrics::{GroupSample, Metrics};
use crate::workers::group::{PartitionView, StuckDetector};
use crate::workers::Liveness;

/// Fire `shutdown` once nothing is in flight, nothing moved for `idle`, and the group's
/// committed offset equals the end offset on every partition of the input topic.
pub(super) async fn idle_monitor(
    cfg: Arc<Config>,
    idle: Duration,
    progress: Arc<Liveness>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut reader: Option<Arc<LagReader>> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if progress.in_flight() > 0 || progress.idle_for() < idle {
            continue;
        }
        // One reader for the monitor's life (a consumer per check would open connections
        // every 250 ms).
        let Some(lags) = read_lags(&cfg, &mut reader).await else {
            continue;
        };
        match total(&lags) {
            0 => {
                tracing::info!(
                    idle_ms = idle.as_millis() as u64,
                    "input drained and idle; stopping"
                );
                shutdown.cancel();
                return;
            }
            lag => tracing::debug!(lag, "idle but not drained yet"),
        }
    }
}

/// How often the watchdog looks whether the owned partitions changed.
const ASSIGNMENT_CHECK: Duration = Duration::from_secs(1);

/// Also the source of the `partition_lag` gauges of the partitions owned here (each reading is
/// one metadata, one committed-offsets and one end-offset request per partition).
///
/// Rejoin the group when a partition this process does not own has had lag and no commit for
/// long while this process's own partitions move: the way out of a broker that left
/// partitions assigned to nobody alive (see `workers::group`).
pub(super) async fn group_watchdog(
    cfg: Arc<Config>,
    progress: Arc<Liveness>,
    metrics: Metrics,
    rejoin: tokio::sync::watch::Sender<u64>,
    shutdown: CancellationToken,
) {
    let every = (cfg.session_timeout() / 2).max(Duration::from_millis(500));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watchdog = Watchdog {
        detector: StuckDetector::new(cfg.session_timeout() * 2),
        every,
        stall_after: cfg.session_timeout() * 2,
        rejoin,
    };
    let mut reader: Option<Arc<LagReader>> = None;
    // The lag gauges also follow the assignment: read at once when the owned partitions
    // change (a dashboard has lag from the first assignment, not a tick later).
    let mut assignment = tokio::time::interval(ASSIGNMENT_CHECK);
    let mut owned_before = Vec::new();
    loop {
        let full_check = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => true,
            _ = assignment.tick() => {
                let owned = progress.owned_partitions();
                if owned == owned_before {
                    continue;
                }
                owned_before = owned;
                false
            }
        };
        let Some(lags) = read_lags(&cfg, &mut reader).await else {
            continue;
        };
        let owned = progress.owned_partitions();
        observe_group(&metrics, &lags, &owned);
        if full_check {
            watchdog.check(&lags, &owned, &progress);
        }
    }
}

/// The lag gauges of the input's partitions, each marked owned here or not.
fn observe_group(metrics: &Metrics, lags: &[PartitionLag], owned: &[i32]) {
    let group: Vec<GroupSample> = lags
        .iter()
        .map(|l| GroupSample {
            partition: l.partition,
            owned_here: owned.contains(&l.partition),
            lag: l.lag,
            committed: l.committed,
        })
        .collect();
    metrics.group_observed(&group);
}

/// The watchdog's judgement between readings: when the group is stuck, and what to say about
/// a stall.
struct Watchdog {
    detector: StuckDetector,
    /// The full check's period: idle that long with nothing in flight is idle here.
    every: Duration,
    /// No progress for this long while the input has lag is logged (twice the session
    /// timeout).
    stall_after: Duration,
    rejoin: tokio::sync::watch::Sender<u64>,
}

impl Watchdog {
    /// Log a stall, and ask the workers to rejoin when the detector sees a stuck group.
    fn check(&mut self, lags: &[PartitionLag], owned: &[i32], progress: &Liveness) {
        let view: Vec<PartitionView> = lags
            .iter()
            .map(|l| PartitionView {
                partition: l.partition,
                lag: l.lag,
                committed: l.committed,
                owned_here: owned.contains(&l.partition),
            })
            .collect();
        let in_flight = progress.in_flight();
        let idle = progress.idle_for();
        let idle_here = in_flight == 0 && idle >= self.every;
        let lagging: Vec<i32> = lags
            .iter()
            .filter(|l| l.lag > 0)
            .map(|l| l.partition)
            .collect();
        if !lagging.is_empty() && idle >= self.stall_after {
            // What an operator (or a test log) needs to tell a stalled fetch from a stalled
            // task from a partition nobody owns.
            tracing::info!(
                idle_s = idle.as_secs(),
                in_flight,
                owned = ?owned,
                lagging = ?lagging,
                "no progress while the input has lag"
            );
        }
        let now = std::time::Instant::now();
        if let Some(stalled) = self.detector.observe(&view, idle_here, now) {
            tracing::warn!(
                partitions = ?stalled,
                owned = ?owned,
                in_flight,
                next_wait_s = self.detector.wait().as_secs(),
                "partitions with lag whose commit has not moved for twice the session timeout and that nobody here works on; rejoining the group"
            );
            self.rejoin.send_modify(|n| *n += 1);
        }
    }
}

/// The input's partition lags, read off the runtime's threads by the monitor's reader
/// (created on first use). None, logged, if the reader or the reading failed: the next tick
/// tries again.
async fn read_lags(cfg: &Config, reader: &mut Option<Arc<LagReader>>) -> Option<Vec<PartitionLag>> {
    let reader = lag_reader(cfg, reader)?;
    match tokio::task::spawn_blocking(move || reader.partition_lags()).await {
        Ok(Ok(lags)) => Some(lags),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read group lag");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "lag check failed");
            None
        }
    }
}

/// The monitor's lag reader, created on first use (None, logged, if the client cannot be
/// created; the next tick tries again).
fn lag_reader(cfg: &Config, slot: &mut Option<Arc<LagReader>>) -> Option<Arc<LagReader>> {
    if slot.is_none() {
        match LagReader::new(cfg) {
            Ok(r) => *slot = Some(Arc::new(r)),
            Err(e) => tracing::warn!(error = %e, "cannot create the lag reader"),
        }
    }
    slot.clone()
}

/// Escalate to a hard stop if draining outlives its deadline (`drain` plus a second).
pub(super) async fn escalate_to_hard_stop(
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
    drain: Duration,
) {
    tokio::select! {
        _ = shutdown.cancelled() => {
            tokio::select! {
                _ = tokio::time::sleep(drain + Duration::from_secs(1)) => hard_stop.cancel(),
                _ = hard_stop.cancelled() => {}
            }
        }
        _ = hard_stop.cancelled() => {}
    }
}
