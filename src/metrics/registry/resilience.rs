//! Working around trouble: reads served by the secondary storage root, file reads retried,
//! state records the broker refused even split, and which storage roots are out.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RootLabel {
    pub(super) root: String,
}

/// The handles of the ways the pipeline works around trouble.
pub(super) struct ResilienceMetrics {
    pub(super) secondary_hits: Counter,
    pub(super) read_retries: Counter,
    pub(super) state_refused: Counter,
    pub(super) storage_available: Family<RootLabel, Gauge>,
}

impl ResilienceMetrics {
    /// Register the counters and the per-root family in `registry`.
    pub(super) fn register(registry: &mut Registry) -> ResilienceMetrics {
        let secondary_hits = Counter::default();
        registry.register(
            "storage_secondary_hits",
            "Files not found under the primary storage root and read from the secondary",
            secondary_hits.clone(),
        );
        let read_retries = Counter::default();
        registry.register(
            "file_read_retries",
            "Reads of a file retried after an error of the file's own (its storage root answering)",
            read_retries.clone(),
        );
        let state_refused = Counter::default();
        registry.register(
            "state_records_refused",
            "Series state records (or parts of one) the broker refused even split: in dicom_state, not on the state topic",
            state_refused.clone(),
        );
        let storage_available = Family::<RootLabel, Gauge>::default();
        registry.register(
            "storage_root_available",
            "1 while a storage root is there and is the directory it was at start, 0 during an outage (its messages wait)",
            storage_available.clone(),
        );
        ResilienceMetrics {
            secondary_hits,
            read_retries,
            state_refused,
            storage_available,
        }
    }
}
