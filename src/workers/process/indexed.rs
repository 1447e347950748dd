//! What an indexed message puts out, on both paths alike: its records built from the
//! derivation (pseudonymized first), the image record published, and — once the broker has
//! acknowledged it — the store row and the sink item that carries all three rows.

use time::OffsetDateTime;

use crate::compute::Derived;
use crate::kafka::{produce_acked, KafkaClientError};
use crate::model::{
    DicomStoreMeta, ImageRecord, SourceOffset, StateRecord, StoreRecord, StoreStatus,
};
use crate::records::records;
use crate::sink::SinkItem;

use super::Processor;

/// The records of a derived message, the image record encoded for its topic.
pub(super) struct Indexed {
    key: String,
    json: Vec<u8>,
    image: ImageRecord,
    state: StateRecord,
    /// When it was processed: the records' and the store row's `processed_at`.
    now: OffsetDateTime,
}

impl Indexed {
    /// The sink item of a message whose image record the broker acknowledged: its image and
    /// state rows and its `indexed` store row.
    pub(super) fn into_item(self, meta: &DicomStoreMeta, src: &SourceOffset) -> SinkItem {
        let store = StoreRecord::of(
            meta,
            src,
            StoreStatus::Indexed,
            self.image.file_size,
            &self.image.sop_uid,
            self.now,
        );
        SinkItem::Indexed {
            image: Box::new(self.image),
            state: Box::new(self.state),
            store: Box::new(store),
        }
    }
}

impl Processor {
    /// Pseudonymize the derivation (before any record exists), build the records and encode
    /// the image record. An error only if the image record cannot be encoded.
    pub(super) fn indexed(
        &self,
        meta: &DicomStoreMeta,
        mut derived: Derived,
        src: &SourceOffset,
        now: OffsetDateTime,
    ) -> Result<Indexed, serde_json::Error> {
        self.shared.privacy.instance(&mut derived.meta);
        let (image, state) = records(meta, derived, src, now);
        let json = serde_json::to_vec(&image)?;
        Ok(Indexed {
            key: image.key(),
            json,
            image,
            state,
            now,
        })
    }

    /// Publish the image record and wait for the broker's acknowledgement (retrying until
    /// it is acknowledged, refused for good, or the hard stop fires).
    pub(super) async fn publish_image(&self, indexed: &Indexed) -> Result<(), KafkaClientError> {
        produce_acked(
            &self.producer,
            &self.shared.image_topic,
            &indexed.key,
            &indexed.json,
            &self.shared.hard_stop,
            &self.shared.metrics,
        )
        .await
    }
}
