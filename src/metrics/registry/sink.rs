//! The sink: rows written per table, and failed writes by kind.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::model::TABLES;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TableLabel {
    pub(super) table: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindLabel {
    pub(super) kind: &'static str,
}

/// The sink handles: one rows counter per table (in [`TABLES`] order) and one error counter
/// per kind.
pub(super) struct SinkMetrics {
    pub(super) sink_rows: Vec<Counter>,
    pub(super) sink_errors_retryable: Counter,
    pub(super) sink_errors_permanent: Counter,
}

impl SinkMetrics {
    /// Register the families in `registry` and resolve every table's and kind's counter.
    pub(super) fn register(registry: &mut Registry) -> SinkMetrics {
        let rows_family = Family::<TableLabel, Counter>::default();
        registry.register(
            "sink_rows",
            "Rows written by the sink, per table",
            rows_family.clone(),
        );
        let sink_rows = TABLES
            .iter()
            .map(|&table| rows_family.get_or_create(&TableLabel { table }).clone())
            .collect();
        let errors_family = Family::<KindLabel, Counter>::default();
        registry.register(
            "sink_errors",
            "Failed sink writes (each retried), by kind: retryable or permanent",
            errors_family.clone(),
        );
        let sink_errors_retryable = errors_family
            .get_or_create(&KindLabel { kind: "retryable" })
            .clone();
        let sink_errors_permanent = errors_family
            .get_or_create(&KindLabel { kind: "permanent" })
            .clone();
        SinkMetrics {
            sink_rows,
            sink_errors_retryable,
            sink_errors_permanent,
        }
    }
}
