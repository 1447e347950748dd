//! The one-message path: a message processed on its own, with everything the chunk path
//! leaves to it (an unparsable payload, a storage root to wait for, a read to retry, a
//! refused produce). Runs inside the message's span.

use std::time::Instant;

use rdkafka::message::{Message, OwnedMessage};
use time::OffsetDateTime;
use tracing::Instrument;

use crate::kafka::KafkaClientError;
use crate::metrics::Stage;
use crate::model::SourceOffset;

use super::super::compute_pool::PoolError;
use super::{message_span, parse_store_meta, source_of, Outcome, ProcessError, Processor};

impl Processor {
    /// Process one message to completion: indexed, dead-lettered, or abandoned. Runs in a
    /// span carrying topic, partition, offset and (once parsed) the trace id — never a
    /// patient identifier.
    pub async fn process(&self, msg: OwnedMessage) -> Outcome {
        let src = source_of(&msg);
        let span = message_span(&src);
        self.process_in_span(&msg, src).instrument(span).await
    }

    async fn process_in_span(&self, msg: &OwnedMessage, src: SourceOffset) -> Outcome {
        let payload = msg.payload().unwrap_or_default();
        let meta = match parse_store_meta(payload) {
            Ok(m) => m,
            Err(e) => return self.dead_letter(&src, None, payload, e).await,
        };
        tracing::Span::current().record("trace_id", tracing::field::display(&meta.trace_id));
        let derived = match self.derive_waiting_out_outages(&meta.file_path).await {
            Some(d) => d,
            // Stopped while waiting for a storage root or a retry: redelivered later.
            None => return Outcome::Abandoned,
        };
        let derived = match derived {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return self.dead_letter(&src, Some(&meta), payload, e).await,
            Err(PoolError::Panicked) => {
                return self
                    .dead_letter(&src, Some(&meta), payload, ProcessError::Panicked)
                    .await
            }
            // Not this message's fault: leave it for redelivery.
            Err(PoolError::Stopped) => return Outcome::Abandoned,
        };
        let indexed = match self.indexed(&meta, derived, &src, OffsetDateTime::now_utc()) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode image record");
                return Outcome::Abandoned;
            }
        };
        let producing = Instant::now();
        match self.publish_image(&indexed).await {
            Ok(()) => self
                .shared
                .metrics
                .observe(Stage::Produce, producing.elapsed()),
            Err(KafkaClientError::Cancelled { .. }) => return Outcome::Abandoned,
            Err(e) => {
                return self
                    .dead_letter(&src, Some(&meta), payload, ProcessError::Produce(e))
                    .await
            }
        }
        let sinking = Instant::now();
        match self.sink.submit(indexed.into_item(&meta, &src)).await {
            Ok(()) => {
                self.shared.metrics.observe(Stage::Sink, sinking.elapsed());
                Outcome::Indexed
            }
            Err(e) => {
                tracing::warn!(partition = src.partition, offset = src.offset, error = %e, "message not sunk");
                Outcome::Abandoned
            }
        }
    }
}
