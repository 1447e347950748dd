//! `backfill`: walk directories (a PACS export share, an archive) and publish one store
//! message per regular file.
//!
//! - **Sources.** A backfill walks one or more named sources (`--source NAME=PATH`, plain
//!   PATHs form the source `pipeline.source`); every message carries its source's name in
//!   `source`. Sources are walked concurrently, at most [`MAX_CONCURRENT_SOURCES`] at once,
//!   each by its own task with its own walker thread (directory reads and `stat` block, and a
//!   network share can be slow), all sharing one producer.
//! - **Bounded.** Per source, at most [`WALK_CHANNEL`] walked entries wait to be published;
//!   over all sources, at most `--max-unacked` messages await the broker's acknowledgement.
//!   `--rate` limits files per second per source (token bucket, small bursts: [`bucket`]).
//! - **Deterministic order, restartable.** Each directory's entries are walked sorted by
//!   file name, depth first, so a walk's order is fixed; `--checkpoint FILE` records per
//!   source how far everything was acknowledged and a resumed run skips that far
//!   ([`checkpoint`]). The sort holds one directory's entries in memory at a time.
//! - **Already indexed.** `--skip-indexed` asks the sink which files `dicom_image` already
//!   has, one query per batch ([`indexed`]): the way to resume when no checkpoint was kept,
//!   or to add only new and changed files to an indexed archive.
//! - **Progress** ([`progress`]): the total number of entries comes from a counting pass
//!   that runs *alongside* the publishing walk, not before it. It only lists directories (no
//!   `stat`, no publishing, no rate limit), so on any share it finishes long before the
//!   publishing walk and the ETA appears early, while publishing starts at once instead of
//!   waiting for a second full listing of a possibly huge tree; the counted total also
//!   excludes what a checkpoint skips. `--no-count` turns it off when listing the share twice
//!   is too expensive (the line then shows no ETA).
//!
//! Unreadable entries and non-UTF-8 paths are counted as errors and reported, never fatal;
//! neither file paths nor their contents are logged (paths may hold patient names).
//!
//! The run, one room per concern:
//! - [`run()`] (`run.rs`): the options and the run, phase by phase;
//! - `setup.rs`: checking the options, resolving the roots, reaching the broker;
//! - `checkpointing.rs`: where each source resumes, and keeping the checkpoint file current;
//! - `source.rs`: one task per source, at most [`MAX_CONCURRENT_SOURCES`] at once;
//! - `walk.rs`: the publishing walk and the counting pass of one source;
//! - `publish.rs`: turning walked entries into store messages and settling their deliveries;
//! - `skip_indexed.rs`: every use of the `--skip-indexed` lookup during a run;
//! - `summary.rs`: the progress line while running, and what the backfill did
//!   ([`BackfillSummary`], [`Report`]).

pub mod args;
pub mod bucket;
pub mod checkpoint;
mod checkpointing;
mod error;
pub mod indexed;
pub mod progress;
mod publish;
mod run;
mod setup;
mod shared;
mod skip_indexed;
mod source;
mod summary;
mod walk;

pub use args::{ArgError, RateArg, SourceArg};
pub use checkpointing::CHECKPOINT_INTERVAL;
pub use error::BackfillError;
pub use run::{backfill, run, Options, Source, MAX_UNACKED};
pub use source::MAX_CONCURRENT_SOURCES;
pub use summary::{BackfillSummary, Report};
pub use walk::WALK_CHANNEL;
