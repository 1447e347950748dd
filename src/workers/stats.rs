//! What a worker counts over its life (summed into the run's summary).

/// Counts over a worker's life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorkerStats {
    pub consumed: u64,
    pub indexed: u64,
    pub dead_lettered: u64,
    pub abandoned: u64,
    pub consume_errors: u64,
    /// Times a partition was paused because its window (`max_partition_gap`) was full.
    pub pauses: u64,
    /// Times the worker left and rejoined its group because a partition nobody consumed was
    /// seen (see `group.rs`).
    pub rejoins: u64,
    /// Messages of partitions not assigned to this worker when they arrived: dropped, never
    /// processed or tracked (the owner takes them).
    pub unowned_dropped: u64,
}
