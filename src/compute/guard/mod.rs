//! A pre-parse walk over element headers that refuses files whose declared value lengths do
//! not fit in the bytes that remain.
//!
//! dicom-rs allocates (and zero-fills) a value buffer of the length a header declares before
//! reading it: a 674-byte file declaring a 3.7 GB element costs 3.7 GB of RAM and 6 s of CPU
//! (measured on pydicom's `UN_sequence.dcm`). This walk reads only headers, skips values, and
//! fails such a file as `truncated` before dicom-rs sees it.
//!
//! It follows the same stream interpretation as dicom-rs (preamble, explicit-VR-LE meta group,
//! then the data set in the transfer syntax the meta group names; sequences and items are
//! descended into, encapsulated pixel fragments skipped). Where it cannot follow (deflated data
//! sets, no meta group, an unknown VR), it stops and lets dicom-rs decide: the guard only ever
//! rejects a file dicom-rs would also fail to read, never one it would accept.
//!
//! - `file.rs`: the walk of a whole file: preamble, file meta group, the data set's syntax.
//! - `dataset.rs`: the walk of a data set: sequences, items, fragments, trailing junk.
//! - `limits.rs`: how deep and how costly a structure the walk lets through.
//! - `cursor.rs`: reading element headers and skipping values, with the byte-order helpers
//!   the direct read shares.

mod cursor;
mod dataset;
mod file;
mod limits;
#[cfg(test)]
mod tests;

use std::io::{self, Read, Seek};

use dicom_core::{Tag, VR};

use super::ComputeError;
use cursor::Cursor;
pub(super) use cursor::{long_length, u16_at, u32_at};

const UNDEFINED: u32 = 0xFFFF_FFFF;
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";

/// The transfer syntax of a data set with neither preamble nor file meta group, when its first
/// bytes plainly are DICOM: a group-0008 element (identifying attributes come first), read as
/// explicit VR little endian when a valid VR follows the tag, else implicit. `None` otherwise.
pub fn bare_dataset_syntax(head: &[u8]) -> Option<&'static str> {
    let h = head.get(..6)?;
    let explicit = VR::from_binary([h[4], h[5]]).is_some();
    if u16::from_le_bytes([h[0], h[1]]) == 0x0008 {
        Some(if explicit {
            EXPLICIT_VR_LE
        } else {
            IMPLICIT_VR_LE
        })
    } else if u16::from_be_bytes([h[0], h[1]]) == 0x0008 && explicit {
        Some(EXPLICIT_VR_BE)
    } else {
        None
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Syntax {
    ImplicitLe,
    ExplicitLe,
    ExplicitBe,
    /// Deflated explicit VR little endian: walked once inflated.
    Deflated,
}

/// Where things are in a file the walk could follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scan {
    /// First byte of the data set (after preamble and file meta group).
    pub dataset_start: u64,
    /// Position of the top-level PixelData element's tag, if there is one.
    pub pixel_data_at: Option<u64>,
    /// Where bytes that are not part of the data set start: junk after the pixel data that
    /// does not parse as an element (archives hold such files; pydicom reads them).
    pub trailing_at: Option<u64>,
    /// The data set is deflated (from `dataset_start` on): the walk stopped there; inflate
    /// it and walk the result with [`check_inflated`].
    pub deflated: bool,
}

/// Walk the headers of `src` (`size` bytes long). With `stop_at_pixel_data`, stop at the
/// top-level PixelData element (header-only reading never touches its value). `Ok(None)`
/// means the walk could not follow the stream (deflate, no meta group): dicom-rs decides.
///
/// `budget` bounds the memory parsing the walked structure may take (sequence items and the
/// elements inside them, see [`ITEM_COST`]): a walk past it fails as `too_large`.
pub fn check_lengths<R: Read + Seek>(
    src: &mut R,
    size: u64,
    stop_at_pixel_data: bool,
    budget: u64,
) -> Result<Option<Scan>, ComputeError> {
    let mut scan = Scan::default();
    match file::walk(src, size, stop_at_pixel_data, budget, &mut scan) {
        Ok(()) => Ok(Some(scan)),
        Err(Stop::Reject(detail) | Stop::Cut(detail)) => Err(ComputeError::Truncated { detail }),
        Err(Stop::Malformed(detail)) => Err(ComputeError::Malformed { detail }),
        Err(Stop::Costly(estimate)) => Err(ComputeError::HeaderTooLarge {
            estimate,
            limit: budget,
        }),
        Err(Stop::NotDicom) => Err(ComputeError::NotDicom {
            detail: "no DICM magic, no file meta group, and not a bare data set".into(),
        }),
        // Could not follow the stream: not our call to make.
        Err(Stop::GiveUp) => Ok(None),
    }
}

/// Walk an inflated data set (explicit VR little endian, no preamble or meta group) held in
/// memory. `dataset_start` of the result is 0.
pub fn check_inflated(
    dataset: &[u8],
    stop_at_pixel_data: bool,
    budget: u64,
) -> Result<Scan, ComputeError> {
    let mut scan = Scan::default();
    let mut src = io::Cursor::new(dataset);
    let mut c = Cursor {
        src: &mut src,
        pos: 0,
        size: dataset.len() as u64,
    };
    match dataset::walk_dataset(
        &mut c,
        Syntax::ExplicitLe,
        stop_at_pixel_data,
        budget,
        &mut scan,
    ) {
        Ok(()) => Ok(scan),
        Err(Stop::Reject(detail) | Stop::Cut(detail)) => Err(ComputeError::Truncated { detail }),
        Err(Stop::Malformed(detail)) => Err(ComputeError::Malformed { detail }),
        Err(Stop::Costly(estimate)) => Err(ComputeError::HeaderTooLarge {
            estimate,
            limit: budget,
        }),
        // Only the file-level walk decides that (an inflated data set has no magic).
        Err(Stop::NotDicom) => Err(ComputeError::Malformed {
            detail: "inflated data set does not start with an element".into(),
        }),
        // An I/O error from memory is the data ending mid-header.
        Err(Stop::GiveUp) => Err(ComputeError::Truncated {
            detail: "inflated data set ends inside an element header".into(),
        }),
    }
}

/// Why a walk stopped: [`check_lengths`] and [`check_inflated`] turn each into the file's
/// outcome.
enum Stop {
    /// A declared length does not fit: refuse before anything is allocated.
    Reject(String),
    /// Parsing the nested structure would take more memory than the budget (estimate).
    Costly(u64),
    /// A structure no reader should follow (sequences nested past [`limits::MAX_NESTING`]).
    Malformed(String),
    /// Neither the DICM magic, nor a file meta group, nor a bare data set: dicom-rs refuses
    /// such a file from its first bytes, and nothing more of it needs reading.
    NotDicom,
    /// The data ends inside a structure (full reads only).
    Cut(String),
    GiveUp,
}

impl From<io::Error> for Stop {
    fn from(_: io::Error) -> Self {
        Stop::GiveUp
    }
}
