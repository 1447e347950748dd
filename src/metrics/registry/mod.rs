//! The metric families and the handles the pipeline updates.
//!
//! - `handle.rs`: [`Metrics`], the cloneable handle, and its update methods.
//! - One file per group of families, each registering its own and returning the handles, in
//!   the order the exposition lists them: `messages.rs` (consumed, produced, publish errors,
//!   dead letters), `sink.rs` (rows, errors), `resilience.rs` (secondary root, read
//!   retries, refused state records, storage root availability), `stages.rs` ([`Stage`]
//!   durations), `work.rs` (in flight, assigned, ready), `partitions.rs` (committed offset,
//!   gap and lag per partition).

mod handle;
mod messages;
mod partitions;
mod resilience;
mod sink;
mod stages;
mod work;

pub use handle::Metrics;
pub use partitions::{GroupSample, PartitionSample};
pub use stages::Stage;
