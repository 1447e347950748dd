//! Opening a store message's file inside the configured storage roots, and telling a file
//! that is missing from a storage that is gone.
//!
//! **Containment is one step with the open.** The file is opened relative to a handle on
//! its root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the kernel refuses any
//! resolution that leaves the root (`..`, a symlink pointing out, `/proc` magic links), so a
//! path component swapped for a symlink between a check and the open cannot lead outside —
//! there is no separate check. Absolute symlinks are refused by `RESOLVE_BENEATH` even when
//! they point inside the root; those (and kernels without `openat2`, before Linux 5.6, or
//! sandboxes that refuse it) take a slower path: canonicalise, refuse anything outside,
//! open with `O_NOFOLLOW`, then check that the opened file *is* the canonical path
//! (`/proc/self/fd`) — what is read is what was checked.
//!
//! Nothing outside the roots is ever opened: a path that does not start with a root is
//! refused without touching the file system, and opens are non-blocking (a FIFO cannot
//! hang a compute thread).
//!
//! **An outage is not a missing file.** Each root's identity (device and inode) is recorded
//! at start. A root that is missing, has another identity (an unmounted share leaves its
//! mount point on the parent's device, often empty), or answers with an I/O error is
//! *unavailable*: [`OpenError::Unavailable`] names the root, and the caller waits for it
//! instead of dead-lettering the file. Only a file missing from a root that is there is
//! `file_not_found`.
//!
//! - `error.rs`: [`OpenError`], what an open can fail with, and its dead-letter reason.
//! - `roots.rs`: [`StorageRoots`], the configured roots and their identity at start, and
//!   telling an outage from a missing file.
//! - `open.rs`: opening a file contained in a root (`openat2`, or the verified slow path).

mod error;
mod open;
mod roots;

pub use error::{OpenError, RootId};
pub use open::Opened;
pub use roots::StorageRoots;
