//! From a file's bytes to what it yields: the guard walk first, then the direct read for
//! the plain cases and the dicom-rs object path for the rest, with the header digest over
//! the encoded bytes before PixelData.

use super::deflated::derive_deflated;
use super::direct;
use super::finish::{from_direct, header_digest, parse_end};
use super::guard::{self, Scan};
use super::object::{from_object, parse, reencoded_header_digest};
use super::{check_size, ComputeError, Derived, Limits, Mode};

/// Derive a file held in memory: with `direct`, the direct read first; without, the object
/// path only (the tests compare both).
pub(super) fn derive_bytes_with(
    bytes: &[u8],
    mode: Mode,
    limits: Limits,
    direct: bool,
) -> Result<Derived, ComputeError> {
    let file_size = bytes.len() as u64;
    check_size(file_size, limits)?;
    let scan = guard::check_lengths(
        &mut std::io::Cursor::new(bytes),
        file_size,
        mode == Mode::HeaderOnly,
        limits.max_decoded_size,
    )?;
    let end = scan.map_or(file_size, |s| parse_end(s, mode, file_size));
    derive_scanned(
        &bytes[..end as usize],
        scan,
        mode,
        limits,
        file_size,
        direct,
    )
}

/// Parse `bytes` (the file, cut where [`parse_end`] says) and derive the records.
pub(super) fn derive_scanned(
    bytes: &[u8],
    scan: Option<Scan>,
    mode: Mode,
    limits: Limits,
    file_size: u64,
    direct: bool,
) -> Result<Derived, ComputeError> {
    if let Some(s) = scan.filter(|s| s.deflated) {
        let (meta, compressed) = bytes.split_at((s.dataset_start as usize).min(bytes.len()));
        return derive_deflated(meta, compressed, mode, limits, file_size, direct);
    }
    // The direct read first; the dicom-rs object path for whatever it does not handle.
    if let Some(s) = scan.filter(|_| direct) {
        let read = direct::read(bytes, s.dataset_start as usize);
        let digest = || header_digest(bytes, s);
        if let Some(derived) = from_direct(read, mode, limits, file_size, digest)? {
            return Ok(derived);
        }
    }
    let obj = parse(bytes, mode)?;
    let header_digest = match scan {
        Some(s) => header_digest(bytes, s),
        // The walk could not follow this file (dicom-rs could): digest a re-encoding.
        None => reencoded_header_digest(&obj)?,
    };
    from_object(&obj, mode, limits, file_size, header_digest)
}
