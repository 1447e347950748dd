//! The bounded channel from the workers to the batcher: a worker submits a chunk's rows and
//! waits for the one acknowledgement they share.

use tokio::sync::{mpsc, oneshot};

use super::SinkError;
use crate::model::{DlqRecord, ImageRecord, StateRecord, StoreRecord};

/// What one consumed message contributes.
#[derive(Debug, Clone)]
pub enum SinkItem {
    Indexed {
        image: Box<ImageRecord>,
        state: Box<StateRecord>,
        store: Box<StoreRecord>,
    },
    DeadLetter {
        dlq: Box<DlqRecord>,
        store: Box<StoreRecord>,
    },
}

impl SinkItem {
    /// Rough encoded size, for the byte-based flush trigger.
    pub fn approx_bytes(&self) -> usize {
        match self {
            SinkItem::Indexed { image, store, .. } => {
                512 + image.file_path.len() * 2
                    + image.study_uid.len()
                    + image.series_uid.len()
                    + image.sop_uid.len()
                    + store.trace_id.len()
            }
            SinkItem::DeadLetter { dlq, .. } => 256 + dlq.payload.len() + dlq.error.len(),
        }
    }
}

/// The rows of one or more messages (a worker's chunk) and the one acknowledgement they
/// share: sent when every row of them is written.
pub(crate) struct Envelope {
    pub items: Vec<SinkItem>,
    pub ack: oneshot::Sender<()>,
}

/// The workers' end of the sink channel. Cheap to clone.
#[derive(Clone)]
pub struct SinkHandle {
    tx: mpsc::Sender<Envelope>,
}

impl SinkHandle {
    /// Create a handle and the receiving end for [`batcher::Batcher::run`].
    pub fn channel(capacity: usize) -> (SinkHandle, SinkReceiver) {
        let (tx, rx) = mpsc::channel(capacity);
        (SinkHandle { tx }, SinkReceiver { rx })
    }

    /// Hand over one message's rows and wait until they are durably written.
    pub async fn submit(&self, item: SinkItem) -> Result<(), SinkError> {
        self.submit_all(vec![item]).await
    }

    /// Hand over several messages' rows at once (one channel slot, one acknowledgement) and
    /// wait until all of them are durably written. They go into the same batch.
    pub async fn submit_all(&self, items: Vec<SinkItem>) -> Result<(), SinkError> {
        if items.is_empty() {
            return Ok(());
        }
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Envelope { items, ack })
            .await
            .map_err(|_| SinkError::Closed)?;
        done.await.map_err(|_| SinkError::Abandoned)
    }
}

/// The batcher's end of the sink channel.
pub struct SinkReceiver {
    pub(crate) rx: mpsc::Receiver<Envelope>,
}
