//! Per input partition: the committed offset, the watermark gap and the lag, with the
//! samples the workers and the lag reader report them by.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PartitionLabel {
    pub(super) topic: String,
    pub(super) partition: i32,
}

/// One partition's numbers at a commit tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSample {
    pub partition: i32,
    /// The last offset the broker acknowledged as committed (the next offset to consume).
    pub committed: Option<i64>,
    /// Offsets a restart from the commit point would take again.
    pub gap: i64,
}

/// One input partition as the group sees it (the lag reader's reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSample {
    pub partition: i32,
    /// One of this process's workers owns it.
    pub owned_here: bool,
    /// End offset minus the group's committed offset.
    pub lag: i64,
    /// The group's committed offset (None: never committed).
    pub committed: Option<i64>,
}

/// The per-partition families; series appear as partitions are observed and go when they
/// are removed.
pub(super) struct PartitionMetrics {
    pub(super) committed: Family<PartitionLabel, Gauge>,
    pub(super) gap: Family<PartitionLabel, Gauge>,
    pub(super) lag: Family<PartitionLabel, Gauge>,
}

impl PartitionMetrics {
    /// Register the families in `registry`; their series appear as partitions are observed.
    pub(super) fn register(registry: &mut Registry) -> PartitionMetrics {
        let committed = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "partition_committed_offset",
            "Last offset committed for an owned partition",
            committed.clone(),
        );
        let gap = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "partition_watermark_gap",
            "Offsets between the commit point and the highest taken (redone after a crash)",
            gap.clone(),
        );
        let lag = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "partition_lag",
            "End offset minus committed offset of an owned partition",
            lag.clone(),
        );
        PartitionMetrics {
            committed,
            gap,
            lag,
        }
    }
}
