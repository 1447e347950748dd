//! Dead letters: a message that cannot be indexed goes to the dead-letter topic (shrunk if
//! the broker refuses it whole) and to `dicom_dlq` + `dicom_store`, so its offset finishes
//! (invariant 4) without a patient identifier in the error text when pseudonymizing.

use time::OffsetDateTime;

use crate::kafka::{produce_acked, KafkaClientError};
use crate::model::{DicomStoreMeta, DlqRecord, SourceOffset, StoreRecord, StoreStatus};
use crate::sink::SinkItem;

use super::{Outcome, ProcessError, Processor};

/// Largest part of a bad payload copied into its dead letter.
const DLQ_PAYLOAD_CAP: usize = 4096;

impl Processor {
    pub(super) async fn dead_letter(
        &self,
        src: &SourceOffset,
        meta: Option<&DicomStoreMeta>,
        payload: &[u8],
        err: ProcessError,
    ) -> Outcome {
        let reason = err.reason();
        let now = OffsetDateTime::now_utc();
        tracing::info!(
            partition = src.partition,
            offset = src.offset,
            trace_id = meta.map(|m| m.trace_id.as_str()).unwrap_or(""),
            reason = reason.as_str(),
            "dead-lettering message"
        );
        let dlq = DlqRecord {
            trace_id: meta.map(|m| m.trace_id.clone()).unwrap_or_default(),
            tenant_id: meta.map(|m| m.tenant_id.clone()).unwrap_or_default(),
            file_path: meta.map(|m| m.file_path.clone()).unwrap_or_default(),
            reason: reason.as_str().to_string(),
            error: if self.shared.privacy.enabled() {
                err.text_without_values()
            } else {
                err.to_string()
            },
            payload: self
                .shared
                .privacy
                .payload(capped_text(payload, DLQ_PAYLOAD_CAP)),
            kafka_topic: src.topic.clone(),
            kafka_partition: src.partition,
            kafka_offset: src.offset,
            failed_at: now,
        };
        if !self.publish_dead_letter(&dlq, src).await {
            return Outcome::Abandoned;
        }
        let store = match meta {
            Some(m) => StoreRecord::of(m, src, StoreStatus::DeadLetter, m.file_size, "", now),
            None => StoreRecord::unparsed(src, now),
        };
        let item = SinkItem::DeadLetter {
            dlq: Box::new(dlq),
            store: Box::new(store),
        };
        match self.sink.submit(item).await {
            Ok(()) => {
                self.shared.metrics.dead_lettered(reason);
                Outcome::DeadLettered(reason)
            }
            Err(_) => Outcome::Abandoned,
        }
    }

    /// Put a dead letter on the dead-letter topic. A record the broker refuses for good (too
    /// large, say) is sent again shrunk ([`DlqRecord::shrunk`]); if that is refused too, the
    /// dead letter lives in `dicom_dlq` alone (logged, counted as a publish error) — its
    /// offset must still complete, or its partition would never move again. False only when
    /// the hard stop fired (the message is then redelivered).
    async fn publish_dead_letter(&self, dlq: &DlqRecord, src: &SourceOffset) -> bool {
        let full = serde_json::to_vec(dlq);
        let shrunk = dlq.shrunk();
        for (attempt, json) in [full, serde_json::to_vec(&shrunk)].into_iter().enumerate() {
            let json = match json {
                Ok(j) => j,
                // Plain strings and numbers: cannot fail; if it ever does, try the next form.
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode dead letter");
                    continue;
                }
            };
            match produce_acked(
                &self.producer,
                &self.shared.dlq_topic,
                &shrunk.key(),
                &json,
                &self.shared.hard_stop,
                &self.shared.metrics,
            )
            .await
            {
                Ok(()) => return true,
                Err(KafkaClientError::Cancelled { .. }) => return false,
                Err(e) => tracing::warn!(
                    partition = src.partition,
                    offset = src.offset,
                    shrunk = attempt > 0,
                    error = %e,
                    "the broker refused the dead letter"
                ),
            }
        }
        tracing::error!(
            partition = src.partition,
            offset = src.offset,
            reason = dlq.reason.as_str(),
            "dead letter refused by the broker even shrunk; it is kept in dicom_dlq only"
        );
        true
    }
}

/// Lossy UTF-8 of at most `cap` bytes, cut at a character boundary.
fn capped_text(bytes: &[u8], cap: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(cap)]);
    text.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_text_is_lossy_and_bounded() {
        assert_eq!(capped_text(&[0xff, b'a'], 10), "\u{fffd}a");
        assert_eq!(capped_text(b"abcdef", 3), "abc");
    }
}
