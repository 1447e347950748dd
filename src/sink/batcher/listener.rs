//! Who hears about each written batch besides the sink. The batcher knows no topics: the
//! pipeline plugs in the Kafka publisher of the series-state and audit topics
//! (`crate::publish`); tests and tools plug in `()`.

use std::future::Future;

use tokio_util::sync::CancellationToken;

use crate::model::StateRecord;

/// Who hears about each batch besides the sink: the pipeline plugs in the Kafka publisher of
/// the series-state and audit topics (`crate::publish`); tests and tools plug in `()`.
pub trait FlushListener: Send + Sync + 'static {
    /// Publish a written batch's coalesced series states. The batch's messages are
    /// acknowledged only after this returns true (a state record is part of each message's
    /// completion); false only when `stop` (the hard stop) fired first.
    fn publish_states(
        &self,
        states: &[StateRecord],
        stop: &CancellationToken,
    ) -> impl Future<Output = bool> + Send;
    /// A batch was written and its messages acknowledged.
    fn flushed(&self, summary: &FlushSummary);
}

/// No one listens: nothing to publish.
impl FlushListener for () {
    async fn publish_states(&self, _: &[StateRecord], _: &CancellationToken) -> bool {
        true
    }
    fn flushed(&self, _: &FlushSummary) {}
}

/// One written batch, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushSummary {
    pub images: usize,
    pub states: usize,
    pub stores: usize,
    pub dead_letters: usize,
    /// Writes it took (1: no retry).
    pub attempts: u32,
    pub duration_ms: u64,
}
