//! The steps every derivation path shares (plain files and inflated deflated ones): where
//! parsing stops, the header digest, and a [`Derived`] from the direct read.

use super::direct::{self, PixelValue};
use super::guard::Scan;
use super::{pixels, timing, ComputeError, Derived, Limits, Mode};

/// Where parsing stops: before PixelData in header-only mode, before trailing junk always.
pub(super) fn parse_end(scan: Scan, mode: Mode, file_size: u64) -> u64 {
    let pixels = scan.pixel_data_at.filter(|_| mode == Mode::HeaderOnly);
    pixels.or(scan.trailing_at).unwrap_or(file_size)
}

/// BLAKE3 of a data set's encoded bytes before PixelData (or before trailing junk).
pub(super) fn header_digest(bytes: &[u8], s: Scan) -> String {
    let end = s
        .pixel_data_at
        .or(s.trailing_at)
        .unwrap_or(bytes.len() as u64);
    let head = bytes
        .get(s.dataset_start as usize..end as usize)
        .unwrap_or(&[]);
    blake3::hash(head).to_hex().to_string()
}

/// Finish a direct read; `Ok(None)` when the object path has to take over (no direct read,
/// or compressed pixels in full mode, which the codecs decode from the object).
pub(super) fn from_direct(
    read: Option<direct::Direct<'_>>,
    mode: Mode,
    limits: Limits,
    file_size: u64,
    digest: impl FnOnce() -> String,
) -> Result<Option<Derived>, ComputeError> {
    let Some(d) = read else {
        return Ok(None);
    };
    let pixels = match (mode, d.pixels) {
        (Mode::HeaderOnly, _) | (Mode::Full, PixelValue::Absent) => None,
        (Mode::Full, PixelValue::Native { bytes, ow }) => Some(timing::decoding(|| {
            pixels::summarise_native(bytes, ow, &d.meta, limits)
        })?),
        (Mode::Full, PixelValue::Encapsulated) => return Ok(None),
    };
    Ok(Some(Derived {
        meta: d.meta,
        file_size,
        header_digest: digest(),
        pixels,
    }))
}
