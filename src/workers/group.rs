//! Group health: noticing partitions that nobody consumes.
//!
//! tansu 0.6.0 can end a rebalance with a *stable* group in which partitions are assigned to
//! nobody alive: when the previous leader was killed (`kill -9`, no LeaveGroup), a new
//! member's SyncGroup expires the dead leader and then completes the generation with that
//! follower's empty assignment list; and a generation can hand partitions to a killed member
//! that is never expired afterwards (broker log evidence in ARCHITECTURE.md, "Known broker
//! quirks"). Every heartbeat then succeeds, so no member rejoins and those partitions are never
//! consumed again. The broker's DescribeGroups cannot show it (with sqlite storage it fails
//! and drops the connection; it never reports assignments).
//!
//! What a process can see on its own: a partition it does not own has lag and its committed
//! offset has not moved, while this process's own partitions are caught up or moving (so the
//! sink and the broker work, and the stall is not an outage that stops everyone). When that
//! has lasted `stuck_after` (twice the session timeout: a healthy group has expired dead
//! members and rebalanced well before), the workers leave and rejoin, which makes the broker
//! run a fresh rebalance. The same picture can be legitimate — another member stalled on a
//! very slow file — so each rejoin that does not clear the picture doubles the wait before the
//! next one (up to 16×): a false alarm costs one rebalance, then fewer and fewer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One partition of the input topic as the process sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionView {
    pub partition: i32,
    /// End offset − committed offset.
    pub lag: i64,
    /// The group's committed offset (None: never committed).
    pub committed: Option<i64>,
    /// Owned by one of this process's workers.
    pub owned_here: bool,
}

/// Decides when a process should rejoin its group.
#[derive(Debug)]
pub struct StuckDetector {
    stuck_after: Duration,
    /// Rejoins since the picture was last clear.
    failed_rejoins: u32,
    since: Option<Instant>,
    last_committed: HashMap<i32, Option<i64>>,
}

const MAX_BACKOFF_DOUBLINGS: u32 = 4;

impl StuckDetector {
    pub fn new(stuck_after: Duration) -> Self {
        StuckDetector {
            stuck_after,
            failed_rejoins: 0,
            since: None,
            last_committed: HashMap::new(),
        }
    }

    /// How long the current picture must last before a rejoin.
    pub fn wait(&self) -> Duration {
        self.stuck_after * 2u32.pow(self.failed_rejoins.min(MAX_BACKOFF_DOUBLINGS))
    }

    /// Partitions of `view` that look orphaned: lag, not owned here, commit unchanged since
    /// the previous observation — provided this process's own partitions are caught up or
    /// moving. Empty when nothing looks wrong.
    ///
    /// `idle_here`: nothing is in flight in this process and nothing was taken since the last
    /// observation. Then a partition owned here with lag and an unchanged commit is stalled
    /// too: its worker should be fetching it and is not (the assignment librdkafka acts on
    /// and the one the rebalance callbacks reported disagree), and a rejoin is the way to a
    /// fresh, consistent assignment.
    fn orphans(&self, view: &[PartitionView], idle_here: bool) -> Vec<i32> {
        let moved = |p: &PartitionView| {
            self.last_committed
                .get(&p.partition)
                .is_none_or(|&last| last != p.committed)
        };
        if idle_here {
            return view
                .iter()
                .filter(|p| p.lag > 0 && !moved(p))
                .map(|p| p.partition)
                .collect();
        }
        let here_is_healthy = view
            .iter()
            .filter(|p| p.owned_here)
            .all(|p| p.lag == 0 || moved(p));
        if !here_is_healthy {
            return Vec::new();
        }
        view.iter()
            .filter(|p| !p.owned_here && p.lag > 0 && !moved(p))
            .map(|p| p.partition)
            .collect()
    }

    /// Feed one observation made at `now`; the orphaned partitions when the workers should
    /// rejoin now.
    pub fn observe(
        &mut self,
        view: &[PartitionView],
        idle_here: bool,
        now: Instant,
    ) -> Option<Vec<i32>> {
        let orphans = self.orphans(view, idle_here);
        self.last_committed = view.iter().map(|p| (p.partition, p.committed)).collect();
        if orphans.is_empty() {
            self.since = None;
            self.failed_rejoins = 0;
            return None;
        }
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) >= self.wait() {
            self.failed_rejoins += 1;
            self.since = None;
            return Some(orphans);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(partition: i32, lag: i64, committed: Option<i64>, owned_here: bool) -> PartitionView {
        PartitionView {
            partition,
            lag,
            committed,
            owned_here,
        }
    }

    const S: Duration = Duration::from_secs(10);

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn an_owned_partition_with_lag_that_nothing_here_works_on_is_stalled() {
        let t0 = Instant::now();
        let mut d = StuckDetector::new(S);
        let view = [part(0, 0, Some(40), true), part(1, 60, Some(7), true)];
        // Busy (work in flight or taken): an owned partition's lag is being worked on.
        for s in 0..4 {
            assert!(d.observe(&view, false, at(t0, s * 10)).is_none());
        }
        // Idle with lag on an owned partition whose commit stands still: rejoin after the wait.
        assert!(d.observe(&view, true, at(t0, 40)).is_none());
        assert!(d.observe(&view, true, at(t0, 45)).is_none());
        assert_eq!(d.observe(&view, true, at(t0, 60)), Some(vec![1]));
        // Idle and caught up: nothing to do.
        let done = [part(0, 0, Some(40), true), part(1, 0, Some(67), true)];
        for s in 7..12 {
            assert!(d.observe(&done, true, at(t0, s * 10)).is_none());
        }
    }

    #[test]
    fn owning_nothing_while_the_lag_stands_still_leads_to_a_rejoin_after_the_wait() {
        let t0 = Instant::now();
        let mut d = StuckDetector::new(S);
        let stuck = [part(0, 100, Some(5), false), part(1, 3, None, false)];
        assert!(d.observe(&stuck, false, at(t0, 0)).is_none()); // first look: nothing to compare with
        assert!(d.observe(&stuck, false, at(t0, 5)).is_none());
        assert!(d.observe(&stuck, false, at(t0, 14)).is_none());
        assert_eq!(d.observe(&stuck, false, at(t0, 16)), Some(vec![0, 1]));
    }

    #[test]
    fn a_partition_nobody_consumes_beside_healthy_owned_ones_is_an_orphan() {
        let t0 = Instant::now();
        let mut d = StuckDetector::new(S);
        let view = |c: i64| {
            [
                part(0, 50, Some(c), true),
                part(1, 0, Some(900), true),
                part(3, 4233, Some(768), false),
            ]
        };
        assert!(d.observe(&view(100), false, at(t0, 0)).is_none());
        assert_eq!(d.orphans(&view(150), false), vec![3]);
        assert!(d.observe(&view(150), false, at(t0, 5)).is_none());
        assert!(d.observe(&view(200), false, at(t0, 10)).is_none());
        assert_eq!(d.observe(&view(250), false, at(t0, 15)), Some(vec![3]));
    }

    #[test]
    fn no_rejoin_while_this_process_is_stalled_too_or_others_commit() {
        let t0 = Instant::now();
        // ClickHouse down: my own partition with lag does not move either.
        let mut d = StuckDetector::new(S);
        let outage = [part(0, 50, Some(100), true), part(1, 80, Some(7), false)];
        for s in 0..10 {
            assert!(d.observe(&outage, false, at(t0, s * 10)).is_none());
        }
        // Another process owns partition 1 and commits.
        let mut d = StuckDetector::new(S);
        for s in 0..10 {
            let view = [
                part(0, 0, Some(100), true),
                part(1, 80, Some(7 + s as i64), false),
            ];
            assert!(d.observe(&view, false, at(t0, s * 10)).is_none());
        }
        // Nothing to do is not stuck.
        let mut d = StuckDetector::new(S);
        for s in 0..10 {
            assert!(d
                .observe(&[part(0, 0, Some(20), false)], false, at(t0, s * 10))
                .is_none());
        }
    }

    #[test]
    fn each_fruitless_rejoin_doubles_the_wait_until_the_picture_clears() {
        let t0 = Instant::now();
        let mut d = StuckDetector::new(S);
        let stuck = [part(0, 100, Some(5), false)];
        let mut now = t0;
        let mut since = now;
        let mut rejoined_after = Vec::new();
        d.observe(&stuck, false, now);
        while rejoined_after.len() < 6 {
            now += Duration::from_secs(1);
            if d.observe(&stuck, false, now).is_some() {
                rejoined_after.push((now - since).as_secs());
                since = now;
                d.observe(&stuck, false, now);
            }
        }
        assert_eq!(rejoined_after, vec![11, 20, 40, 80, 160, 160]);
        // the partition is consumed again: the backoff resets
        d.observe(&[part(0, 90, Some(15), false)], false, now);
        assert_eq!(d.wait(), S);
    }
}
