//! Consumer workers: the loop that takes store messages, the per-message processing, and the
//! offset watermark tracker.
//!
//! - `compute_pool.rs`: the fixed threads that read and derive files.
//! - `group.rs`: pure check that tells a broken (empty) assignment from an idle member.
//! - `offsets.rs`: pure per-partition watermark tracker (unit- and property-tested).
//! - `outage.rs`: messages of an unavailable storage root wait for it, one prober per root.
//! - `process.rs`: one message → image record + sink rows, or a dead letter.
//! - `worker.rs`: one `StreamConsumer` + one `FutureProducer`, bounded in-flight work,
//!   periodic / revoke / shutdown commits.

pub mod compute_pool;
pub mod group;
pub mod offsets;
pub mod outage;
pub mod process;
pub mod worker;

pub use process::{Outcome, Processor, Shared};
pub use worker::{run_worker, Progress, WorkerError, WorkerStats};
