//! Per-partition watermark tracker (pure; no broker).
//!
//! Messages of one partition are processed concurrently and finish in any order. An offset may
//! be committed only when it and every offset below it are done, so the tracker keeps, per
//! partition, the multiset of dispatched-but-unfinished offsets and the next offset after the
//! highest one dispatched. The commit point (Kafka's "next offset to read") is the lowest
//! unfinished offset, or one past the highest dispatched when nothing is unfinished. Offsets
//! the broker never delivered (compaction gaps, transaction markers) are never waited for.
//!
//! Each assignment of a partition gets a fresh generation; completions carry the generation
//! they were dispatched under, and completions from an earlier assignment are discarded, so a
//! revoked-then-reassigned partition never counts work done under its previous owner.

use std::collections::{BTreeMap, HashMap};

/// Proof of dispatch: hand it back to [`OffsetTracker::complete`] when the offset is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    pub partition: i32,
    pub offset: i64,
    pub generation: u64,
}

/// What became of a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Counted: the offset is done.
    Accepted,
    /// The partition was revoked (or reassigned) since dispatch: ignored.
    Stale,
}

#[derive(Debug)]
struct PartitionWatermark {
    generation: u64,
    /// Unfinished offsets with how many dispatches of each are in flight (a redelivered
    /// offset can be in flight twice).
    pending: BTreeMap<i64, u32>,
    /// One past the highest offset dispatched.
    next: Option<i64>,
    /// The last commit point handed to the broker and acknowledged.
    committed: Option<i64>,
    /// The consumer's position for the partition when it was assigned (None inside: no valid
    /// position), if the caller recorded it: see [`OffsetTracker::skip_to_position`].
    position_at_assignment: Option<Option<i64>>,
    /// Messages of the partition were taken from the consumer and parked, not dispatched
    /// (its window is full): the consumer's position is not a commit point.
    held: bool,
}

impl PartitionWatermark {
    fn commit_point(&self) -> Option<i64> {
        match self.pending.first_key_value() {
            Some((&lowest, _)) => Some(lowest),
            None => self.next,
        }
    }
}

/// Watermarks of every partition a consumer currently owns.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, PartitionWatermark>,
    last_generation: u64,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Start (or restart) tracking a partition; previous state for it is dropped.
    pub fn assign(&mut self, partition: i32) -> u64 {
        self.last_generation += 1;
        self.partitions.insert(
            partition,
            PartitionWatermark {
                generation: self.last_generation,
                pending: BTreeMap::new(),
                next: None,
                committed: None,
                position_at_assignment: None,
                held: false,
            },
        );
        self.last_generation
    }

    /// Stop tracking a partition. Returns its commit point if it is ahead of what was last
    /// committed, so the caller can make a final commit for it.
    pub fn revoke(&mut self, partition: i32) -> Option<i64> {
        let wm = self.partitions.remove(&partition)?;
        let point = wm.commit_point()?;
        (Some(point) > wm.committed).then_some(point)
    }

    /// Record that `offset` of `partition` was handed to processing. None if the partition
    /// is not assigned here: such a message (delivered around a revoke) must be dropped, not
    /// processed — its offset belongs to another owner's commit, and tracking it would start
    /// a watermark this consumer has no right to commit.
    pub fn dispatch(&mut self, partition: i32, offset: i64) -> Option<Ticket> {
        let wm = self.partitions.get_mut(&partition)?;
        *wm.pending.entry(offset).or_insert(0) += 1;
        wm.next = Some(wm.next.map_or(offset + 1, |n| n.max(offset + 1)));
        Some(Ticket {
            partition,
            offset,
            generation: wm.generation,
        })
    }

    /// Record that the work behind `ticket` is fully done.
    pub fn complete(&mut self, ticket: Ticket) -> Completion {
        let Some(wm) = self.partitions.get_mut(&ticket.partition) else {
            return Completion::Stale;
        };
        if wm.generation != ticket.generation {
            return Completion::Stale;
        }
        match wm.pending.get_mut(&ticket.offset) {
            Some(count) if *count > 1 => *count -= 1,
            Some(_) => {
                wm.pending.remove(&ticket.offset);
            }
            None => return Completion::Stale,
        }
        Completion::Accepted
    }

    /// Partitions whose commit point moved past the last committed value, with that point.
    pub fn commit_points(&self) -> Vec<(i32, i64)> {
        let mut points: Vec<(i32, i64)> = self
            .partitions
            .iter()
            .filter_map(|(&p, wm)| {
                let point = wm.commit_point()?;
                (Some(point) > wm.committed).then_some((p, point))
            })
            .collect();
        points.sort_unstable();
        points
    }

    /// The consumer's position on an idle partition: every offset below `position` was
    /// either delivered (and so dispatched, as the caller guarantees by not passing a
    /// position while it holds undispatched messages of the partition) or never will be:
    /// transaction markers, aborted transactions' records. Kafka's end offset counts those,
    /// so without this a partition whose last record is a commit marker would show a lag of 1
    /// for ever and `--until-idle` would never end.
    ///
    /// Taken only when nothing is unfinished, and when something was dispatched in this
    /// assignment or the position moved since the assignment ([`Self::note_assigned_position`]):
    /// a position left over from an earlier assignment of the partition (whose last messages
    /// were abandoned, not committed) must never be committed. The second case is a
    /// partition whose new owner receives nothing because everything before its trailing
    /// marker was committed by the previous owner: without it that partition kept a lag of 1.
    /// Returns whether the commit point moved.
    pub fn skip_to_position(&mut self, partition: i32, position: i64) -> bool {
        let Some(wm) = self.partitions.get_mut(&partition) else {
            return false;
        };
        if !wm.pending.is_empty() || wm.held {
            return false;
        }
        match wm.next {
            Some(next) if position > next => {
                wm.next = Some(position);
                true
            }
            None if matches!(wm.position_at_assignment, Some(at) if at != Some(position)) => {
                wm.next = Some(position);
                true
            }
            _ => false,
        }
    }

    /// Whether messages of `partition` are taken but parked (not dispatched): while they
    /// are, its position is never taken as a commit point.
    pub fn set_held(&mut self, partition: i32, held: bool) {
        if let Some(wm) = self.partitions.get_mut(&partition) {
            wm.held = held;
        }
    }

    /// The consumer's position for `partition` right after it was assigned (None: no valid
    /// position). A later, different position was reached in this assignment.
    pub fn note_assigned_position(&mut self, partition: i32, position: Option<i64>) {
        if let Some(wm) = self.partitions.get_mut(&partition) {
            wm.position_at_assignment = Some(position);
        }
    }

    /// The broker acknowledged a commit of `offset` for `partition`.
    pub fn mark_committed(&mut self, partition: i32, offset: i64) {
        if let Some(wm) = self.partitions.get_mut(&partition) {
            wm.committed = Some(wm.committed.map_or(offset, |c| c.max(offset)));
        }
    }

    /// The last commit the broker acknowledged for a partition (None before the first).
    pub fn committed(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition)?.committed
    }

    /// Current commit point of a partition (None when nothing was dispatched).
    pub fn commit_point(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition)?.commit_point()
    }

    /// The partition's window: one past the highest offset dispatched minus the commit point,
    /// i.e. how many offsets a restart from the commit point would take again (0 when nothing
    /// is unfinished). None when the partition is not tracked.
    pub fn gap(&self, partition: i32) -> Option<i64> {
        let wm = self.partitions.get(&partition)?;
        Some(match (wm.next, wm.commit_point()) {
            (Some(next), Some(point)) => next - point,
            _ => 0,
        })
    }

    /// The partition's current assignment generation (None when not tracked).
    pub fn generation(&self, partition: i32) -> Option<u64> {
        Some(self.partitions.get(&partition)?.generation)
    }

    /// Dispatched-but-unfinished offsets across all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions
            .values()
            .map(|wm| wm.pending.values().map(|&c| c as usize).sum::<usize>())
            .sum()
    }

    /// Dispatched-but-unfinished offsets of one partition.
    pub fn in_flight_for(&self, partition: i32) -> usize {
        self.partitions.get(&partition).map_or(0, |wm| {
            wm.pending.values().map(|&c| c as usize).sum::<usize>()
        })
    }

    /// Partitions currently tracked.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.partitions.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commits_only_contiguous_done_offsets() {
        let mut t = OffsetTracker::new();
        t.assign(0);
        let a = t.dispatch(0, 10).unwrap();
        let b = t.dispatch(0, 11).unwrap();
        let c = t.dispatch(0, 12).unwrap();
        assert_eq!(t.commit_points(), vec![(0, 10)]);
        assert_eq!(t.complete(c), Completion::Accepted);
        assert_eq!(t.commit_point(0), Some(10));
        assert_eq!(t.complete(a), Completion::Accepted);
        assert_eq!(t.commit_point(0), Some(11));
        assert_eq!(t.complete(b), Completion::Accepted);
        assert_eq!(t.commit_point(0), Some(13));
        t.mark_committed(0, 13);
        assert!(t.commit_points().is_empty());
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn the_gap_spans_from_the_lowest_unfinished_offset_to_the_highest_dispatched() {
        let mut t = OffsetTracker::new();
        assert_eq!(t.gap(0), None);
        let g = t.assign(0);
        assert_eq!((t.gap(0), t.generation(0)), (Some(0), Some(g)));
        let a = t.dispatch(0, 100).unwrap();
        let b = t.dispatch(0, 101).unwrap();
        let c = t.dispatch(0, 109).unwrap();
        assert_eq!(t.gap(0), Some(10));
        t.complete(c);
        t.complete(b);
        assert_eq!(t.gap(0), Some(10)); // 100 still holds the window open
        t.complete(a);
        assert_eq!(t.gap(0), Some(0));
        t.revoke(0);
        assert_eq!((t.gap(0), t.generation(0)), (None, None));
    }

    #[test]
    fn messages_of_partitions_not_owned_are_not_tracked() {
        let mut t = OffsetTracker::new();
        assert_eq!(t.dispatch(0, 5), None);
        assert_eq!(t.commit_point(0), None);
        assert_eq!(t.in_flight(), 0);
        t.assign(0);
        assert!(t.dispatch(0, 5).is_some());
        t.revoke(0);
        // Delivered after the revoke: dropped, and no watermark starts for it.
        assert_eq!(t.dispatch(0, 6), None);
        assert_eq!(t.partitions().count(), 0);
    }

    #[test]
    fn gaps_in_delivered_offsets_are_not_waited_for() {
        let mut t = OffsetTracker::new();
        t.assign(3);
        let a = t.dispatch(3, 5).unwrap();
        let b = t.dispatch(3, 9).unwrap(); // 6..8 were compacted away
        t.complete(b);
        assert_eq!(t.commit_point(3), Some(5));
        t.complete(a);
        assert_eq!(t.commit_point(3), Some(10));
    }

    /// The bug CI found: the previous owner committed everything before a partition's
    /// trailing commit marker; the new owner receives nothing, so nothing is dispatched, and
    /// the partition kept a lag of 1 for ever. A position that moved since the assignment is
    /// this assignment's own and is taken; one that did not move (maybe left over from an
    /// earlier assignment) is not. (Fails without the `None` arm of `skip_to_position`.)
    #[test]
    fn a_new_owner_that_receives_nothing_commits_past_the_trailing_marker() {
        let mut t = OffsetTracker::new();
        t.assign(0);
        t.note_assigned_position(0, None);
        assert!(t.skip_to_position(0, 11));
        assert_eq!(t.commit_point(0), Some(11));
        assert_eq!(t.commit_points(), vec![(0, 11)]);
        // A stale position from an earlier assignment: unchanged, not taken.
        t.assign(1);
        t.note_assigned_position(1, Some(40));
        assert!(!t.skip_to_position(1, 40));
        assert_eq!(t.commit_point(1), None);
        // Once fetching from the committed offset moves it, it is this assignment's.
        assert!(t.skip_to_position(1, 31));
        assert_eq!(t.commit_point(1), Some(31));
        // Not recorded (as before): never taken without a dispatch.
        t.assign(2);
        assert!(!t.skip_to_position(2, 5));
        // Parked messages: the position is past them, never taken while they are.
        t.set_held(1, true);
        assert!(!t.skip_to_position(1, 35));
        t.set_held(1, false);
        assert!(t.skip_to_position(1, 35));
    }

    #[test]
    fn an_idle_partition_commits_past_offsets_that_were_never_delivered() {
        let mut t = OffsetTracker::new();
        t.assign(0);
        // Nothing dispatched in this assignment: a position (maybe from an earlier one) is
        // not trusted.
        assert!(!t.skip_to_position(0, 7));
        assert_eq!(t.commit_point(0), None);
        let a = t.dispatch(0, 3).unwrap();
        let b = t.dispatch(0, 4).unwrap();
        // Unfinished work: the position says nothing about it.
        assert!(!t.skip_to_position(0, 6));
        assert_eq!(t.commit_point(0), Some(3));
        t.complete(a);
        t.complete(b);
        assert_eq!(t.commit_point(0), Some(5));
        // Offset 5 was a commit marker: the consumer's position is 6.
        assert!(t.skip_to_position(0, 6));
        assert_eq!(t.commit_point(0), Some(6));
        assert_eq!(t.gap(0), Some(0));
        // Never backwards, and not for partitions it does not own.
        assert!(!t.skip_to_position(0, 5));
        assert_eq!(t.commit_point(0), Some(6));
        assert!(!t.skip_to_position(9, 100));
        assert_eq!(t.commit_point(9), None);
    }

    #[test]
    fn completions_from_a_previous_assignment_are_stale() {
        let mut t = OffsetTracker::new();
        t.assign(1);
        let old = t.dispatch(1, 0).unwrap();
        assert_eq!(t.revoke(1), Some(0));
        t.assign(1);
        assert_eq!(t.complete(old), Completion::Stale);
        assert_eq!(t.commit_point(1), None);
        // and a revoked partition is gone entirely
        assert_eq!(t.revoke(1), None);
        assert_eq!(t.complete(old), Completion::Stale);
    }

    #[test]
    fn revoke_reports_only_uncommitted_progress() {
        let mut t = OffsetTracker::new();
        t.assign(0);
        let a = t.dispatch(0, 0).unwrap();
        t.complete(a);
        t.mark_committed(0, 1);
        assert_eq!(t.revoke(0), None);
    }

    #[test]
    fn redelivered_offset_in_flight_twice_holds_the_watermark() {
        let mut t = OffsetTracker::new();
        t.assign(0);
        let a1 = t.dispatch(0, 4).unwrap();
        let a2 = t.dispatch(0, 4).unwrap();
        t.complete(a1);
        assert_eq!(t.commit_point(0), Some(4));
        t.complete(a2);
        assert_eq!(t.commit_point(0), Some(5));
        assert_eq!(t.complete(a2), Completion::Stale);
    }

    proptest! {
        /// Whatever order completions arrive in, the commit point is exactly the lowest
        /// unfinished offset (never past it), and one past the last offset at the end.
        #[test]
        fn never_commits_past_an_unfinished_offset(
            gaps in proptest::collection::vec(1i64..4, 1..200),
            order_seed in any::<u64>(),
            partitions in 1i32..4,
        ) {
            use rand::{seq::SliceRandom, SeedableRng};
            let mut t = OffsetTracker::new();
            let mut tickets = Vec::new();
            for p in 0..partitions {
                t.assign(p);
                let mut offset = 0i64;
                for g in &gaps {
                    offset += g;
                    tickets.push(t.dispatch(p, offset).unwrap());
                }
            }
            let mut rng = rand::rngs::StdRng::seed_from_u64(order_seed);
            tickets.shuffle(&mut rng);
            let mut unfinished: std::collections::BTreeSet<(i32, i64)> =
                tickets.iter().map(|t| (t.partition, t.offset)).collect();
            for ticket in tickets {
                prop_assert_eq!(t.complete(ticket), Completion::Accepted);
                unfinished.remove(&(ticket.partition, ticket.offset));
                for p in 0..partitions {
                    let lowest = unfinished.range((p, i64::MIN)..(p + 1, i64::MIN)).next();
                    let point = t.commit_point(p).unwrap();
                    match lowest {
                        Some(&(_, low)) => prop_assert_eq!(point, low),
                        None => prop_assert_eq!(point, gaps.iter().sum::<i64>() + 1),
                    }
                }
            }
            prop_assert_eq!(t.in_flight(), 0);
        }

        /// Interleaving dispatch, completion, commits and skips past undelivered offsets
        /// (transaction markers): the committed value never decreases and never exceeds the
        /// lowest unfinished offset.
        #[test]
        fn interleaved_operations_keep_the_invariant(ops in proptest::collection::vec(0u8..4, 1..400)) {
            let mut t = OffsetTracker::new();
            t.assign(0);
            let mut next = 0i64;
            let mut inflight: Vec<Ticket> = Vec::new();
            let mut committed = -1i64;
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    0 => { inflight.push(t.dispatch(0, next).unwrap()); next += 1; }
                    1 if !inflight.is_empty() => {
                        let k = i % inflight.len();
                        let ticket = inflight.swap_remove(k);
                        t.complete(ticket);
                    }
                    3 => {
                        // The consumer skipped 1 or 2 offsets that are never delivered.
                        let markers = 1 + (i % 2) as i64;
                        if t.skip_to_position(0, next + markers) {
                            prop_assert!(inflight.is_empty());
                            next += markers;
                        }
                    }
                    _ => {
                        for (p, point) in t.commit_points() {
                            prop_assert!(point > committed);
                            if let Some(low) = inflight.iter().map(|t| t.offset).min() {
                                prop_assert!(point <= low);
                            }
                            t.mark_committed(p, point);
                            committed = point;
                        }
                    }
                }
            }
        }
    }
}
