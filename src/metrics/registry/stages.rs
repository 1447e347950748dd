//! Time per message in each processing stage: the [`Stage`]s and their histograms.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A timed stage of one message's processing (declared in [`Stage::ALL`] order: the
/// discriminant indexes the histograms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading the file's bytes from disk.
    Read,
    /// Walking and parsing the header (attributes, digests).
    Parse,
    /// Decoding the pixel data and computing its statistics and digest (`full` mode).
    Decode,
    /// Publishing the image record until the broker acknowledged it.
    Produce,
    /// Handing the rows to the sink until they were written (batching included).
    Sink,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Read,
        Stage::Parse,
        Stage::Decode,
        Stage::Produce,
        Stage::Sink,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Read => "read",
            Stage::Parse => "parse",
            Stage::Decode => "decode",
            Stage::Produce => "produce",
            Stage::Sink => "sink",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StageLabel {
    pub(super) stage: &'static str,
}

/// Buckets from 50 µs to ~52 s (×2): a header read is tens of µs, a sink write under an
/// outage is retried for seconds.
fn stage_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 21))
}

/// One histogram per stage, indexed by the stage's discriminant.
pub(super) struct StageMetrics {
    pub(super) stages: Vec<Histogram>,
}

impl StageMetrics {
    /// Register the family in `registry` and resolve one histogram per stage.
    pub(super) fn register(registry: &mut Registry) -> StageMetrics {
        let stage_family =
            Family::<StageLabel, Histogram>::new_with_constructor(stage_histogram as fn() -> _);
        registry.register(
            "stage_duration_seconds",
            "Time per message in each stage: read, parse, decode, produce, sink",
            stage_family.clone(),
        );
        let stages = Stage::ALL
            .iter()
            .map(|s| {
                stage_family
                    .get_or_create(&StageLabel { stage: s.as_str() })
                    .clone()
            })
            .collect();
        StageMetrics { stages }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_listed_in_discriminant_order() {
        for (i, s) in Stage::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{s:?}");
        }
    }
}
