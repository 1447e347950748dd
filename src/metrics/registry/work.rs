//! Work in hand: messages in flight, partitions owned, and whether the process is ready.

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The gauges of work in hand and readiness.
pub(super) struct WorkMetrics {
    pub(super) in_flight: Gauge,
    pub(super) assigned: Gauge,
    pub(super) ready: Gauge,
}

impl WorkMetrics {
    /// Register the gauges in `registry`.
    pub(super) fn register(registry: &mut Registry) -> WorkMetrics {
        let in_flight = Gauge::default();
        registry.register(
            "in_flight",
            "Messages taken and not yet finished",
            in_flight.clone(),
        );
        let assigned = Gauge::default();
        registry.register(
            "assigned_partitions",
            "Input partitions this process's workers own",
            assigned.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when partitions are assigned, the sink answered its last probe and every storage root is available",
            ready.clone(),
        );
        WorkMetrics {
            in_flight,
            assigned,
            ready,
        }
    }
}
