//! Liveness shared by the workers of a process: when a message was last taken or finished,
//! the in-flight count and the owned partitions (for `--until-idle`, the group watchdog and
//! the metrics).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// Liveness shared by all workers of a process (for `--until-idle`, the watchdog and the
/// metrics: the in-flight and assigned-partitions gauges are kept here, not beside it).
pub struct Liveness {
    started: Instant,
    last_activity_ms: AtomicU64,
    metrics: Metrics,
    /// Input partitions owned by the process's workers (partition → owning workers; more than
    /// one only for a moment during a rebalance).
    owned: Mutex<HashMap<i32, usize>>,
}

impl Liveness {
    /// Liveness whose in-flight and assigned-partitions counts go to `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Liveness {
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            metrics,
            owned: Mutex::new(HashMap::new()),
        }
    }

    /// `n` messages were taken.
    pub(super) fn took(&self, n: usize) {
        self.metrics.in_flight_add(n as i64);
        self.touch();
    }

    /// `n` messages finished (or were abandoned).
    pub(super) fn finished(&self, n: usize) {
        self.metrics.in_flight_add(-(n as i64));
        self.touch();
    }

    pub(super) fn touch(&self) {
        self.last_activity_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long since the last message was taken or finished.
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    pub fn in_flight(&self) -> usize {
        usize::try_from(self.metrics.in_flight()).unwrap_or(0)
    }

    /// Input partitions the process's workers own now.
    pub fn owned_partitions(&self) -> Vec<i32> {
        let owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<i32> = owned.keys().copied().collect();
        v.sort_unstable();
        v
    }

    pub(super) fn owned_changed(&self, assigned: &[i32], revoked: &[i32]) {
        let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        for &p in assigned {
            *owned.entry(p).or_insert(0) += 1;
        }
        let mut given_up = 0;
        for p in revoked {
            if let Some(n) = owned.get_mut(p) {
                given_up += 1;
                *n -= 1;
                if *n == 0 {
                    owned.remove(p);
                }
            }
        }
        self.metrics.assigned_add(assigned.len() as i64 - given_up);
    }
}
