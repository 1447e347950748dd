//! What the source tasks, the walk, the publishing and the checkpoint writer share: one
//! resolved source ([`SourceRun`]), the state of the whole run ([`Shared`]), a source's
//! watermark.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::kafka::Producer;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{Pos, Watermark};
use super::indexed::IndexLookup;
use super::progress::Counters;

/// A source's watermark, shared by its task and the checkpoint writer.
pub(super) type SharedMark = Arc<Mutex<Watermark<Pos>>>;

/// One source, resolved.
pub(super) struct SourceRun {
    pub(super) name: String,
    /// Absolute.
    pub(super) roots: Vec<PathBuf>,
    pub(super) rate: Option<f64>,
    /// Resume after this position (from the checkpoint).
    pub(super) start: Option<Pos>,
    pub(super) counters: Arc<Counters>,
    pub(super) mark: SharedMark,
}

/// What every source task shares.
pub(super) struct Shared {
    pub(super) producer: Producer,
    pub(super) topic: String,
    pub(super) tenant: String,
    pub(super) permits: Arc<Semaphore>,
    pub(super) lookup: Option<IndexLookup>,
    pub(super) count: bool,
    pub(super) slots: Semaphore,
    /// Stops every source: the caller's token, or a source's fatal error.
    pub(super) stop: CancellationToken,
}

/// Lock `m`, also after a holder panicked.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
