//! Group health: noticing that the broker left this process with nothing to do while the
//! input waits.
//!
//! tansu 0.6.0 can end a rebalance with a *stable* group whose members all hold empty
//! assignments: when the previous leader was killed (`kill -9`, no LeaveGroup), a new
//! member's SyncGroup expires the dead leader and then completes the generation with that
//! follower's empty assignment list (broker log evidence in ARCHITECTURE.md, "Broker
//! quirks"). Every heartbeat then succeeds, so no member ever rejoins and the input is never
//! consumed again. The broker's DescribeGroups cannot be used to see it (with sqlite storage
//! it fails and drops the connection; it never reports assignments).
//!
//! What a process can see on its own: none of its workers owns a partition, the input topic
//! has lag, and the group's committed offsets have not moved. When that has lasted
//! `stuck_after` (twice the session timeout: a healthy broker has expired dead members and
//! finished the rebalance well before), the workers leave and rejoin, which makes the broker
//! run a fresh rebalance. The same picture can be legitimate — more members than partitions
//! while the owners are stalled (e.g. ClickHouse down) — so each rejoin that does not bring
//! this process a partition doubles the wait before the next one (up to 16×): a false
//! alarm costs one rebalance, then fewer and fewer.

use std::time::{Duration, Instant};

/// One look at the process and the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Partitions owned by this process's workers together.
    pub owned: usize,
    /// The group's total lag on the input topic.
    pub lag: i64,
    /// The group's committed offset per partition (None: never committed), in partition order.
    pub committed: Vec<Option<i64>>,
}

/// Decides when a process with no partitions should rejoin its group.
#[derive(Debug)]
pub struct StuckDetector {
    stuck_after: Duration,
    /// Rejoins since this process last owned a partition.
    failed_rejoins: u32,
    since: Option<Instant>,
    last_committed: Option<Vec<Option<i64>>>,
}

const MAX_BACKOFF_DOUBLINGS: u32 = 4;

impl StuckDetector {
    pub fn new(stuck_after: Duration) -> Self {
        StuckDetector {
            stuck_after,
            failed_rejoins: 0,
            since: None,
            last_committed: None,
        }
    }

    /// How long the current picture must last before a rejoin.
    pub fn wait(&self) -> Duration {
        self.stuck_after * 2u32.pow(self.failed_rejoins.min(MAX_BACKOFF_DOUBLINGS))
    }

    /// Feed one observation made at `now`; true when the workers should rejoin now.
    pub fn observe(&mut self, obs: &Observation, now: Instant) -> bool {
        if obs.owned > 0 {
            self.failed_rejoins = 0;
        }
        let unchanged = self.last_committed.as_ref() == Some(&obs.committed);
        self.last_committed = Some(obs.committed.clone());
        if obs.owned > 0 || obs.lag <= 0 || !unchanged {
            self.since = None;
            return false;
        }
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) >= self.wait() {
            self.failed_rejoins += 1;
            self.since = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(owned: usize, lag: i64, committed: &[Option<i64>]) -> Observation {
        Observation {
            owned,
            lag,
            committed: committed.to_vec(),
        }
    }

    const S: Duration = Duration::from_secs(10);

    #[test]
    fn owning_nothing_while_the_lag_stands_still_leads_to_a_rejoin_after_the_wait() {
        let t0 = Instant::now();
        let mut d = StuckDetector::new(S);
        let stuck = obs(0, 100, &[Some(5), None]);
        assert!(!d.observe(&stuck, t0));
        assert!(!d.observe(&stuck, t0 + Duration::from_secs(5)));
        assert!(!d.observe(&stuck, t0 + Duration::from_secs(14)));
        assert!(d.observe(&stuck, t0 + Duration::from_secs(16)));
    }

    #[test]
    fn progress_ownership_or_no_lag_reset_the_clock() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut d = StuckDetector::new(S);
        assert!(!d.observe(&obs(0, 100, &[Some(5)]), at(0)));
        assert!(!d.observe(&obs(0, 100, &[Some(5)]), at(5)));
        // someone else committed: the group is working
        assert!(!d.observe(&obs(0, 90, &[Some(15)]), at(10)));
        assert!(!d.observe(&obs(0, 90, &[Some(15)]), at(20)));
        assert!(!d.observe(&obs(0, 90, &[Some(15)]), at(29)));
        assert!(d.observe(&obs(0, 90, &[Some(15)]), at(30)));
        // nothing to do is not stuck
        let mut d = StuckDetector::new(S);
        for s in 0..10 {
            assert!(!d.observe(&obs(0, 0, &[Some(20)]), at(s * 10)));
        }
        // owning a partition is not stuck
        let mut d = StuckDetector::new(S);
        for s in 0..10 {
            assert!(!d.observe(&obs(1, 50, &[Some(20)]), at(s * 10)));
        }
    }

    #[test]
    fn each_fruitless_rejoin_doubles_the_wait_until_a_partition_is_owned() {
        let t0 = Instant::now();
        let mut d = StuckDetector::new(S);
        let stuck = obs(0, 100, &[Some(5)]);
        let mut now = t0;
        let mut rejoined_after = Vec::new();
        let mut since = now;
        d.observe(&stuck, now);
        while rejoined_after.len() < 6 {
            now += Duration::from_secs(1);
            if d.observe(&stuck, now) {
                rejoined_after.push((now - since).as_secs());
                since = now;
                d.observe(&stuck, now);
            }
        }
        assert_eq!(rejoined_after, vec![11, 20, 40, 80, 160, 160]);
        // owning something resets the backoff
        d.observe(&obs(2, 100, &[Some(5)]), now);
        assert_eq!(d.wait(), S);
    }
}
