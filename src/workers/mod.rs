//! Consumer workers: the loop that takes store messages, the per-message processing, and the
//! offset watermark tracker.
//!
//! - `compute_pool.rs`: the fixed threads that read and derive files.
//! - `group.rs`: pure check that tells a broken (empty) assignment from an idle member.
//! - `offsets.rs`: pure per-partition watermark tracker (unit- and property-tested).
//! - `outage.rs`: messages of an unavailable storage root wait for it, one prober per root.
//! - `process/`: a chunk of messages, or one message, → image records + sink rows, or dead
//!   letters.
//! - `worker.rs`: the loop of one worker: its `StreamConsumer` (and a clone of the process's
//!   `kafka::Producer`), bounded in-flight work, periodic and shutdown commits, drain.
//! - `chunk.rs`: the messages taken together, dispatched as one task; the running tasks.
//! - `commit.rs`: committing the watermarks, the skip past offsets never delivered.
//! - `windows.rs`: per-partition windows: pause a partition whose window is full.
//! - `rebalance.rs`: the tracker shared with the rebalance callback; wait and commit on revoke.
//! - `stats.rs`: what a worker counts (consumed, indexed, dead-lettered, ...).
//! - `liveness.rs`: when the workers last moved, what is in flight, which partitions they own.

mod chunk;
mod commit;
pub mod compute_pool;
pub mod group;
mod liveness;
pub mod offsets;
pub mod outage;
pub mod process;
mod rebalance;
mod stats;
mod windows;
pub mod worker;

pub use liveness::Liveness;
pub use process::{Outcome, ProcessContext, Processor};
pub use worker::{run_worker, WorkerError, WorkerStats};
