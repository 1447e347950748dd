//! How deep and how costly a structure the walk lets through: sequences nested past
//! [`MAX_NESTING`] are `malformed`, and a structure whose parse would allocate more than
//! `max_decoded_size` (estimated per item and nested element) is `too_large`, both refused
//! before dicom-rs parses anything.

use super::Stop;

/// Deepest nesting of sequences a file may have. dicom-rs parses nested sequences
/// recursively: 2,000 levels in a 72 KB file overflowed an 8 MiB stack and aborted the
/// process. Real files nest a few levels (a structured report's content tree a few tens);
/// deeper is `malformed`. The compute threads' stack
/// ([`crate::compute::THREAD_STACK_BYTES`]) fits this many levels many times over.
pub const MAX_NESTING: usize = 64;
/// What dicom-rs's object path allocates per sequence item (an `InMemDicomObject`, its map's
/// first node) and per element inside an item, as an upper estimate: a 40 MB file whose
/// sequences form a binary tree 20 levels deep took 2.7 GB and 21 s to parse. The walk
/// counts both and refuses a file whose estimate exceeds `max_decoded_size` (`too_large`)
/// before anything parses it; a 10,000-frame enhanced MR (≈200,000 items, 1,000,000 nested
/// elements) estimates ≈ 350 MB.
pub const ITEM_COST: u64 = 1024;
pub const NESTED_ELEMENT_COST: u64 = 160;

/// What parsing the nested structure walked so far would allocate (estimate), against the
/// limit the walk was given.
pub(super) struct Budget {
    cost: u64,
    limit: u64,
}

impl Budget {
    pub(super) fn new(limit: u64) -> Self {
        Budget { cost: 0, limit }
    }

    /// Count `bytes` more; past the limit the walk stops.
    pub(super) fn spend(&mut self, bytes: u64) -> Result<(), Stop> {
        self.cost = self.cost.saturating_add(bytes);
        if self.cost > self.limit {
            return Err(Stop::Costly(self.cost));
        }
        Ok(())
    }
}

/// Refuse sequences nested `nesting` levels deep (the one opened at byte `at`) past
/// [`MAX_NESTING`].
pub(super) fn too_deep(nesting: usize, at: u64) -> Result<(), Stop> {
    if nesting > MAX_NESTING {
        return Err(Stop::Malformed(format!(
            "sequences nested deeper than {MAX_NESTING} levels (at byte {at})"
        )));
    }
    Ok(())
}
