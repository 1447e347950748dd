//! Deflated data sets (deflated explicit VR little endian): inflated only as far as the mode
//! needs and never past `max_decoded_size`, walked like any data set, then derived through the
//! direct read or the object path.

use dicom_object::{FileMetaTable, InMemDicomObject};

use super::finish::{from_direct, header_digest, parse_end};
use super::guard::{self, Scan};
use super::object::{explicit_vr_le, from_object};
use super::{direct, error, inflate, ComputeError, Derived, Limits, Mode};

/// Inflated bytes header-only mode inflates first: the header of most deflated files.
const INFLATE_HEAD: u64 = 4 * 1024;

/// A deflated data set: inflate it (bounded by `max_decoded_size`: a few KB can inflate to
/// gigabytes), walk the result like any data set, then derive from it. The header digest is
/// over the inflated bytes before PixelData — the encoded data set, as for other syntaxes.
/// `meta` is the file up to the data set (preamble and file meta group, if any);
/// `compressed` reads the deflated data set from its first byte.
pub(super) fn derive_deflated(
    meta: &[u8],
    compressed: impl std::io::BufRead,
    mode: Mode,
    limits: Limits,
    file_size: u64,
    direct: bool,
) -> Result<Derived, ComputeError> {
    let compressed_size = file_size.saturating_sub(meta.len() as u64);
    let (inflated, scan) =
        inflate_dataset(compressed, compressed_size, mode, limits.max_decoded_size)?;
    let digest = || header_digest(&inflated, scan);
    let end = parse_end(scan, mode, inflated.len() as u64) as usize;
    if direct {
        let read = direct::read_inflated(&inflated[..end], guard::DEFLATED_EXPLICIT_VR_LE);
        if let Some(derived) = from_direct(read, mode, limits, file_size, digest)? {
            return Ok(derived);
        }
    }
    // The object path parses the inflated bytes, cut where the walk says (dicom-rs inflating
    // the file by itself would read past the cut, into trailing junk that claims gigabytes).
    let meta_group = match meta.get(128..132) {
        Some(b"DICM") => &meta[128..],
        _ => meta,
    };
    let table = FileMetaTable::from_reader(meta_group).map_err(|e| ComputeError::Malformed {
        detail: format!("file meta group: {}", error::chain_text(&e)),
    })?;
    let ts = explicit_vr_le()?;
    let dataset = InMemDicomObject::read_dataset_with_ts(&inflated[..end], ts)
        .map_err(ComputeError::from_read)?;
    let obj = dataset.with_exact_meta(table);
    from_object(&obj, mode, limits, file_size, digest())
}

/// Inflate a deflated data set (`compressed_size` bytes on disk), at most `cap` bytes of it,
/// and walk the result.
///
/// Header-only mode inflates only up to PixelData: [`INFLATE_HEAD`] bytes first, then 4×
/// more while the walk has not reached it, so the pixel data — nearly all of a file — is
/// neither inflated nor (from disk) read. A walk over a prefix that does not reach PixelData
/// is not an answer (the prefix may cut an element); only the whole data set's walk is.
fn inflate_dataset(
    compressed: impl std::io::BufRead,
    compressed_size: u64,
    mode: Mode,
    cap: u64,
) -> Result<(Vec<u8>, Scan), ComputeError> {
    let header_only = mode == Mode::HeaderOnly;
    let mut inflater = inflate::Inflater::new(compressed);
    // Full mode: the whole data set, in a buffer that starts at twice the compressed size
    // (pixel data rarely deflates better than 2:1) and doubles.
    let (mut want, growth) = if header_only {
        (INFLATE_HEAD, 4)
    } else {
        (compressed_size.saturating_mul(2).max(64 * 1024), 2)
    };
    loop {
        let upto = usize::try_from(want.min(cap.saturating_add(1))).unwrap_or(usize::MAX);
        let have = inflater.fill(upto)?.len() as u64;
        if have > cap {
            return Err(ComputeError::TooLarge {
                size: have,
                limit: cap,
            });
        }
        if inflater.finished() {
            let inflated = inflater.into_bytes();
            let scan = guard::check_inflated(&inflated, header_only, cap)?;
            return Ok((inflated, scan));
        }
        if header_only {
            if let Ok(scan) = guard::check_inflated(inflater.bytes(), true, cap) {
                if scan.pixel_data_at.is_some() {
                    return Ok((inflater.into_bytes(), scan));
                }
            }
        }
        want = want.saturating_mul(growth);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::synth::{ct_file_bytes, CtSpec, SynthSyntax};
    use crate::compute::{derive_bytes, derive_file, guard};
    use crate::model::Reason;

    /// A deflated data set that inflates past `max_decoded_size` is refused as too large
    /// while inflating (a few KB of input can inflate to gigabytes).
    #[test]
    fn a_deflate_bomb_stops_at_the_decoded_size_limit() {
        use std::io::Write as _;
        let spec = CtSpec {
            transfer_syntax: SynthSyntax::Deflate,
            ..CtSpec::default()
        };
        let good = ct_file_bytes(&spec);
        let scan = guard::check_lengths(
            &mut std::io::Cursor::new(&good),
            good.len() as u64,
            false,
            u64::MAX,
        )
        .unwrap()
        .unwrap();
        assert!(scan.deflated);
        let mut bomb = good[..scan.dataset_start as usize].to_vec();
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![0u8; 32 << 20]).unwrap();
        let compressed = z.finish().unwrap();
        assert!(compressed.len() < 64 * 1024, "{}", compressed.len());
        bomb.extend_from_slice(&compressed);
        let limits = Limits {
            max_file_size: 1 << 20,
            max_decoded_size: 4 << 20,
        };
        for mode in [Mode::HeaderOnly, Mode::Full] {
            let err = derive_bytes(&bomb, mode, limits).unwrap_err();
            assert_eq!(err.reason(), Reason::TooLarge, "{mode:?}: {err}");
            // The same file under the default limit: inflated, then refused by the walk
            // (zeros are an element (0000,0000) of length 0 forever... until the data ends).
            let err = derive_bytes(&bomb, mode, Limits::default()).unwrap_err();
            assert_ne!(err.reason(), Reason::TooLarge, "{mode:?}: {err}");
        }
        // Corrupt deflate data is malformed, not a crash.
        let mut corrupt = good[..scan.dataset_start as usize].to_vec();
        corrupt.extend_from_slice(&[0xFF; 64]);
        let err = derive_bytes(&corrupt, Mode::Full, Limits::default()).unwrap_err();
        assert_eq!(err.reason(), Reason::Malformed, "{err}");
        // And the real deflated file reads in both modes, with the digest of its inflated
        // header bytes — equal to the explicit VR little endian file's (same data set).
        let plain = ct_file_bytes(&CtSpec::default());
        for mode in [Mode::HeaderOnly, Mode::Full] {
            let d = derive_bytes(&good, mode, Limits::default()).unwrap();
            let p = derive_bytes(&plain, mode, Limits::default()).unwrap();
            assert_eq!(d.header_digest, p.header_digest, "{mode:?}");
            assert_eq!(d.pixels, p.pixels, "{mode:?}");
        }
    }

    /// Header-only mode inflates a deflated data set only up to PixelData, from memory and
    /// from disk: a file cut inside its compressed pixel data still yields its header (the
    /// same as the whole file's), while full mode, which inflates it all, finds it truncated.
    #[test]
    fn header_only_inflates_a_deflated_file_only_up_to_its_pixel_data() {
        let good = ct_file_bytes(&CtSpec {
            transfer_syntax: SynthSyntax::Deflate,
            rows: 256,
            columns: 256,
            ..CtSpec::default()
        });
        let cut = &good[..good.len() * 2 / 3];
        let whole = derive_bytes(&good, Mode::HeaderOnly, Limits::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.dcm");
        std::fs::write(&path, cut).unwrap();
        let from_memory = derive_bytes(cut, Mode::HeaderOnly, Limits::default()).unwrap();
        let from_disk = derive_file(&path, Mode::HeaderOnly, Limits::default()).unwrap();
        for d in [&from_memory, &from_disk] {
            assert_eq!(d.meta, whole.meta);
            assert_eq!(d.header_digest, whole.header_digest);
            assert_eq!(d.file_size, cut.len() as u64);
        }
        let err = derive_bytes(cut, Mode::Full, Limits::default()).unwrap_err();
        assert_eq!(err.reason(), Reason::Truncated, "{err}");
        let err = derive_file(&path, Mode::Full, Limits::default()).unwrap_err();
        assert_eq!(err.reason(), Reason::Truncated, "{err}");
        // A data set whose header is longer than the first inflated prefix: the prefix walk
        // must not take a cut element for the end.
        let long = ct_file_bytes(&CtSpec {
            transfer_syntax: SynthSyntax::Deflate,
            patient_name: format!("Doe^{}", "J".repeat(60_000)),
            ..CtSpec::default()
        });
        let d = derive_bytes(&long, Mode::HeaderOnly, Limits::default()).unwrap();
        let f = derive_bytes(&long, Mode::Full, Limits::default()).unwrap();
        assert_eq!((d.meta, d.header_digest), (f.meta, f.header_digest));
    }
}
