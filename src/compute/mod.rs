//! Pure DICOM work: turn one stored file into the attributes the pipeline emits.
//!
//! Nothing here touches the network; the only I/O is reading the file itself. Workers call
//! [`derive_file`] on the compute pool's threads (`workers::compute_pool`). Every failure is a
//! [`ComputeError`] whose [`ComputeError::reason`] is the stable dead-letter code.
//!
//! - `error.rs`: the error enum and its mapping from dicom-rs errors to reason codes.
//! - `guard/`: header walk that refuses declared lengths larger than the file.
//! - `direct/`: the fast path: attributes and native pixel data read straight from the
//!   file's bytes, for the plain cases (most files); everything else takes the object path.
//! - `header.rs`: attribute extraction from a parsed object (the object path).
//! - `inflate.rs`: inflating a deflated data set only as far as the mode needs.
//! - `pixels/`: pixel statistics and digest (native data read in place, encapsulated data
//!   through dicom-pixeldata's codecs).
//! - `synth.rs`: valid synthetic CT files (tests, load generation).
//! - `timing.rs`: per-stage time of one derivation (read / parse / decode), for the metrics.

mod direct;
mod error;
mod guard;
mod header;
mod inflate;
#[cfg(test)]
mod memory_tests;
mod pixels;
mod rle;
pub mod synth;
mod timing;

pub use error::ComputeError;
pub use header::{InstanceMeta, ModalityLut};
pub use pixels::{Moments, PixelSummary};
pub use timing::{derive_open_timed, StageTimes};

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{
    DefaultDicomObject, FileMetaTable, FileMetaTableBuilder, InMemDicomObject, OpenFileOptions,
};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use direct::PixelValue;
use guard::Scan;
use serde::{Deserialize, Serialize};

/// How much of each file is read and parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Stop at PixelData: only the header bytes are read from disk.
    HeaderOnly,
    /// Read and parse the whole file, pixel data included.
    #[default]
    Full,
}

impl Mode {
    /// As written in configuration and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::HeaderOnly => "header_only",
            Mode::Full => "full",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "header_only" => Ok(Mode::HeaderOnly),
            "full" => Ok(Mode::Full),
            other => Err(format!(
                "unknown mode `{other}` (expected header_only or full)"
            )),
        }
    }
}

/// Limits that protect a worker from hostile or broken input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Files larger than this are rejected as `too_large` before any byte is read.
    pub max_file_size: u64,
    /// Images whose decoded pixels (rows × columns × samples × frames × bytes per sample, as
    /// the header claims) exceed this are rejected as `too_large` before decoding.
    pub max_decoded_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_size: 2 * 1024 * 1024 * 1024,
            max_decoded_size: 1024 * 1024 * 1024,
        }
    }
}

/// What one file yields.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    pub meta: InstanceMeta,
    /// Size of the file on disk.
    pub file_size: u64,
    /// Hex BLAKE3 of the data set's encoded bytes before PixelData (file meta group
    /// excluded): equal for a resend of the same file, different when any attribute differs.
    pub header_digest: String,
    /// Pixel statistics and digest (`full` mode, files with PixelData).
    pub pixels: Option<PixelSummary>,
}

thread_local! {
    /// Full-mode read buffer, reused by the files one thread derives: a fresh half-megabyte
    /// vector per file is a fresh mapping that the kernel page-faults in and zeroes each time.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Stack of every thread that derives files (the pipeline's compute pool, `derive`'s
/// threads). dicom-rs parses nested sequences recursively, about 10 KB of stack per level in
/// a debug build; the guard walk refuses files nested deeper than
/// [`guard::limits::MAX_NESTING`] levels, so 8 MiB leaves room for that many levels ten times
/// over, and for the codecs.
pub const THREAD_STACK_BYTES: usize = 8 << 20;

/// Read buffers above this size are not kept between files.
const KEEP_READ_BUFFER: usize = 16 << 20;

/// Bytes read first in header-only mode: enough for the header of most images.
const HEAD: u64 = 4 * 1024;
/// Header-only reads grow up to this before the walk seeks through the file instead.
const MAX_HEAD: u64 = 256 * 1024;

/// Read and derive one DICOM file.
pub fn derive_file(path: &Path, mode: Mode, limits: Limits) -> Result<Derived, ComputeError> {
    let file = std::fs::File::open(path).map_err(|source| ComputeError::Read { source })?;
    derive_open(file, mode, limits)
}

/// Read and derive one DICOM file that is already open (the pipeline opens it inside its
/// storage root, see `storage`).
pub fn derive_open(
    mut file: std::fs::File,
    mode: Mode,
    limits: Limits,
) -> Result<Derived, ComputeError> {
    let read_err = |source| ComputeError::Read { source };
    let file_size = file.metadata().map_err(read_err)?.len();
    check_size(file_size, limits)?;
    if mode == Mode::Full {
        // One read of the whole file into this thread's buffer, then parse from memory.
        // derive_bytes checks the size again: the file may have grown since the metadata call.
        return READ_BUFFER.with_borrow_mut(|buf| {
            buf.clear();
            buf.reserve(file_size as usize);
            timing::reading(|| {
                file.take(limits.max_file_size.saturating_add(1))
                    .read_to_end(buf)
            })
            .map_err(read_err)?;
            let derived = derive_bytes(buf, mode, limits);
            if buf.capacity() > KEEP_READ_BUFFER {
                *buf = Vec::new();
            }
            derived
        });
    }
    // Header only: read the first HEAD bytes, then 4× more while the walk runs past what
    // has been read, up to MAX_HEAD; nearly every header takes one small read.
    let mut head = Vec::with_capacity(HEAD.min(file_size) as usize);
    let mut want = HEAD;
    loop {
        let have = head.len() as u64;
        timing::reading(|| (&mut file).take(want - have).read_to_end(&mut head))
            .map_err(read_err)?;
        // A walk that runs past `head` stops (Ok(None)); a length refused against the file
        // size is final either way.
        let cursor = &mut std::io::Cursor::new(&head);
        if let Some(scan) = guard::check_lengths(cursor, file_size, true, limits.max_decoded_size)?
        {
            if scan.deflated && (head.len() as u64) < file_size {
                // Inflate from what has been read, then from the file as the walk needs it.
                let (meta, compressed) =
                    head.split_at((scan.dataset_start as usize).min(head.len()));
                let rest = (&mut file).take(limits.max_file_size);
                let compressed = std::io::BufReader::with_capacity(
                    16 * 1024,
                    timing::Reading::new(compressed.chain(rest)),
                );
                return derive_deflated(meta, compressed, mode, limits, file_size, true);
            }
            let end = parse_end(scan, mode, file_size);
            if end <= head.len() as u64 {
                let bytes = &head[..end as usize];
                return derive_scanned(bytes, Some(scan), mode, limits, file_size, true);
            }
        }
        if (head.len() as u64) < want || want >= MAX_HEAD {
            break;
        }
        want *= 4;
    }
    // A longer header: walk the headers (seeking over large values), then read just the
    // bytes before PixelData.
    let mut reader = std::io::BufReader::with_capacity(16 * 1024, file);
    reader.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let scan = guard::check_lengths(&mut reader, file_size, true, limits.max_decoded_size)?;
    let end = scan.map_or(file_size, |s| parse_end(s, mode, file_size));
    let mut file = reader.into_inner();
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let mut bytes = Vec::with_capacity(end as usize);
    timing::reading(|| file.take(end).read_to_end(&mut bytes)).map_err(read_err)?;
    if (bytes.len() as u64) < end {
        return Err(ComputeError::Truncated {
            detail: format!("file shrank to {} bytes while being read", bytes.len()),
        });
    }
    derive_scanned(&bytes, scan, mode, limits, file_size, true)
}

/// Derive one DICOM file held in memory (used by `derive` over bytes, tests and fuzzing).
pub fn derive_bytes(bytes: &[u8], mode: Mode, limits: Limits) -> Result<Derived, ComputeError> {
    derive_bytes_with(bytes, mode, limits, true)
}

/// [`derive_bytes`] through the dicom-rs object path only, never the direct read: the tests
/// and the fuzz target check that both paths agree.
/// Tests and benches only (`testing` feature).
#[cfg(any(test, feature = "testing"))]
pub fn derive_bytes_object_path(
    bytes: &[u8],
    mode: Mode,
    limits: Limits,
) -> Result<Derived, ComputeError> {
    derive_bytes_with(bytes, mode, limits, false)
}

/// Parse with dicom-rs and summarise the pixels through dicom-pixeldata's generic decode
/// (even native data): the baseline the in-place statistics are benchmarked against.
/// Tests and benches only (`testing` feature).
#[cfg(any(test, feature = "testing"))]
pub fn summarise_via_generic_decode(
    bytes: &[u8],
    limits: Limits,
) -> Result<PixelSummary, ComputeError> {
    let obj = parse(bytes, Mode::Full)?;
    let meta = InstanceMeta::from_object(&obj)?;
    pixels::summarise_decoded(&obj, &meta, limits)
}

/// Whether the direct read handles `bytes` (a whole file): the tests check its coverage.
/// Tests and benches only (`testing` feature).
#[cfg(any(test, feature = "testing"))]
pub fn reads_directly(bytes: &[u8]) -> bool {
    let scan = guard::check_lengths(
        &mut std::io::Cursor::new(bytes),
        bytes.len() as u64,
        false,
        u64::MAX,
    );
    matches!(scan, Ok(Some(s)) if direct::read(bytes, s.dataset_start as usize).is_some())
}

fn derive_bytes_with(
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

/// Where parsing stops: before PixelData in header-only mode, before trailing junk always.
fn parse_end(scan: Scan, mode: Mode, file_size: u64) -> u64 {
    let pixels = scan.pixel_data_at.filter(|_| mode == Mode::HeaderOnly);
    pixels.or(scan.trailing_at).unwrap_or(file_size)
}

/// Parse `bytes` (the file, cut where [`parse_end`] says) and derive the records.
fn derive_scanned(
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

/// BLAKE3 of a data set's encoded bytes before PixelData (or before trailing junk).
fn header_digest(bytes: &[u8], s: Scan) -> String {
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
fn from_direct(
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

/// Inflated bytes header-only mode inflates first: the header of most deflated files.
const INFLATE_HEAD: u64 = 4 * 1024;

/// A deflated data set: inflate it (bounded by `max_decoded_size`: a few KB can inflate to
/// gigabytes), walk the result like any data set, then derive from it. The header digest is
/// over the inflated bytes before PixelData — the encoded data set, as for other syntaxes.
/// `meta` is the file up to the data set (preamble and file meta group, if any);
/// `compressed` reads the deflated data set from its first byte.
fn derive_deflated(
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

/// dicom-rs's explicit VR little endian (inflated data sets are read, headers re-encoded, in it).
fn explicit_vr_le() -> Result<&'static dicom_encoding::TransferSyntax, ComputeError> {
    TransferSyntaxRegistry
        .get(guard::EXPLICIT_VR_LE)
        .ok_or_else(|| ComputeError::UnsupportedTransferSyntax {
            detail: guard::EXPLICIT_VR_LE.into(),
        })
}

/// Derive from a parsed object (the object path).
fn from_object(
    obj: &DefaultDicomObject,
    mode: Mode,
    limits: Limits,
    file_size: u64,
    header_digest: String,
) -> Result<Derived, ComputeError> {
    let meta = InstanceMeta::from_object(obj)?;
    let pixels = match mode {
        Mode::Full => timing::decoding(|| pixels::summarise(obj, &meta, limits))?,
        Mode::HeaderOnly => None,
    };
    Ok(Derived {
        meta,
        file_size,
        header_digest,
        pixels,
    })
}

/// Parse a file: preamble + meta group + data set, or a bare data set that plainly is DICOM.
fn parse(bytes: &[u8], mode: Mode) -> Result<DefaultDicomObject, ComputeError> {
    let err = match open_options(mode).from_reader(bytes) {
        Ok(obj) => return Ok(obj),
        Err(err) => ComputeError::from_read(err),
    };
    let Some(ts) = (matches!(err, ComputeError::NotDicom { .. }))
        .then(|| guard::bare_dataset_syntax(bytes))
        .flatten()
    else {
        return Err(err);
    };
    let syntax = TransferSyntaxRegistry
        .get(ts)
        .ok_or_else(|| ComputeError::UnsupportedTransferSyntax { detail: ts.into() })?;
    // Header-only callers already cut `bytes` before PixelData.
    let dataset = InMemDicomObject::read_dataset_with_ts(bytes, syntax).map_err(|e| {
        ComputeError::Malformed {
            detail: format!("bare data set: {}", error::chain_text(&e)),
        }
    })?;
    // Identify it before building a meta group, which needs the SOP class and instance.
    header::require_uids(&dataset)?;
    dataset
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(ts))
        .map_err(|e| ComputeError::Malformed {
            detail: format!("bare data set: {}", error::chain_text(&e)),
        })
}

/// Digest of the data set without PixelData, re-encoded as explicit VR little endian.
fn reencoded_header_digest(obj: &DefaultDicomObject) -> Result<String, ComputeError> {
    let mut ds: InMemDicomObject = (**obj).clone();
    ds.remove_element(tags::PIXEL_DATA);
    let mut out = Vec::new();
    let ts = explicit_vr_le()?;
    ds.write_dataset_with_ts_cs(&mut out, ts, Default::default())
        .map_err(|e| ComputeError::Malformed {
            detail: format!("re-encoding the header: {}", error::chain_text(&e)),
        })?;
    Ok(blake3::hash(&out).to_hex().to_string())
}

/// Refuse, before any byte is read, files over the limit and empty files.
fn check_size(size: u64, limits: Limits) -> Result<(), ComputeError> {
    if size > limits.max_file_size {
        return Err(ComputeError::TooLarge {
            size,
            limit: limits.max_file_size,
        });
    }
    if size == 0 {
        return Err(ComputeError::NotDicom {
            detail: "empty file".into(),
        });
    }
    Ok(())
}

/// dicom-rs options for a mode: header-only stops before PixelData.
fn open_options(mode: Mode) -> OpenFileOptions {
    let options = OpenFileOptions::new();
    match mode {
        Mode::HeaderOnly => options.read_until(tags::PIXEL_DATA),
        Mode::Full => options,
    }
}

#[cfg(test)]
mod tests {
    use super::synth::{ct_file_bytes, CtSpec};
    use super::*;
    use crate::model::Reason;

    #[test]
    fn derives_uids_and_geometry_from_a_written_file() {
        let spec = CtSpec::default();
        let bytes = ct_file_bytes(&spec);
        for mode in [Mode::HeaderOnly, Mode::Full] {
            let d = derive_bytes(&bytes, mode, Limits::default()).unwrap();
            assert_eq!(d.meta.sop_uid, spec.sop_uid);
            assert_eq!(d.meta.series_uid, spec.series_uid);
            assert_eq!(d.meta.study_uid, spec.study_uid);
            assert_eq!(d.meta.patient_id, spec.patient_id);
            assert_eq!(d.meta.modality, "CT");
            assert_eq!(d.meta.rows, spec.rows);
            assert_eq!(d.meta.columns, spec.columns);
            assert_eq!(d.meta.number_of_frames, 1);
            assert_eq!(d.meta.bits_allocated, 16);
            assert_eq!(d.meta.transfer_syntax_uid, "1.2.840.10008.1.2.1");
        }
    }

    #[test]
    fn derive_file_reads_from_disk_and_reports_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.dcm");
        let bytes = ct_file_bytes(&CtSpec::default());
        std::fs::write(&path, &bytes).unwrap();
        let d = derive_file(&path, Mode::HeaderOnly, Limits::default()).unwrap();
        assert_eq!(d.file_size, bytes.len() as u64);
    }

    /// Header-only reading takes one read of the first 4 KiB when the header fits in it,
    /// reads 4× more while it does not (up to 256 KiB), and walks on through the file beyond;
    /// all give what the bytes give.
    #[test]
    fn header_only_reads_short_long_and_huge_headers_alike() {
        use dicom_core::{value::PrimitiveValue, DataElement, VR};
        let dir = tempfile::tempdir().unwrap();
        let short = ct_file_bytes(&CtSpec::default());
        let with_text = |sizes: &[(dicom_core::Tag, usize)]| {
            let mut obj = dicom_object::from_reader(&short[..]).unwrap();
            for &(tag, len) in sizes {
                obj.put(DataElement::new(
                    tag,
                    VR::UT,
                    PrimitiveValue::from("x".repeat(len)),
                ));
            }
            let mut out = Vec::new();
            obj.write_all(&mut out).unwrap();
            out
        };
        let long = with_text(&[(tags::TEXT_VALUE, 40_000), (tags::IMAGE_COMMENTS, 9_000)]);
        let huge = with_text(&[(tags::TEXT_VALUE, 300_000)]);
        for (name, bytes) in [("short", short.clone()), ("long", long), ("huge", huge)] {
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes).unwrap();
            let from_file = derive_file(&path, Mode::HeaderOnly, Limits::default()).unwrap();
            let from_bytes = derive_bytes(&bytes, Mode::HeaderOnly, Limits::default()).unwrap();
            assert_eq!(from_file, from_bytes, "{name}");
            assert_eq!(from_file.file_size, bytes.len() as u64);
        }
    }

    #[test]
    fn rejects_files_over_the_size_limit_before_reading() {
        let bytes = ct_file_bytes(&CtSpec::default());
        let limits = Limits {
            max_file_size: 100,
            ..Limits::default()
        };
        let err = derive_bytes(&bytes, Mode::Full, limits).unwrap_err();
        assert_eq!(err.reason(), Reason::TooLarge);
    }

    #[test]
    fn classifies_bad_input() {
        let good = ct_file_bytes(&CtSpec::default());
        let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
            ("zero bytes", Vec::new(), Reason::NotDicom),
            (
                "text",
                b"hello, this is not an image\n".repeat(20),
                Reason::NotDicom,
            ),
            ("truncated header", good[..200].to_vec(), Reason::Truncated),
        ];
        for (name, bytes, want) in cases {
            let err = derive_bytes(&bytes, Mode::Full, Limits::default()).unwrap_err();
            assert_eq!(err.reason(), want, "{name}: {err}");
        }
    }

    #[test]
    fn missing_sop_uid_is_missing_uid() {
        let spec = CtSpec {
            omit_sop_uid: true,
            ..CtSpec::default()
        };
        let err = derive_bytes(&ct_file_bytes(&spec), Mode::Full, Limits::default()).unwrap_err();
        assert_eq!(err.reason(), Reason::MissingUid);
        assert!(err.to_string().contains("SOPInstanceUID"), "{err}");
    }

    /// A deflated data set that inflates past `max_decoded_size` is refused as too large
    /// while inflating (a few KB of input can inflate to gigabytes).
    #[test]
    fn a_deflate_bomb_stops_at_the_decoded_size_limit() {
        use std::io::Write as _;
        let spec = CtSpec {
            transfer_syntax: super::synth::SynthSyntax::Deflate,
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
            transfer_syntax: super::synth::SynthSyntax::Deflate,
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
            transfer_syntax: super::synth::SynthSyntax::Deflate,
            patient_name: format!("Doe^{}", "J".repeat(60_000)),
            ..CtSpec::default()
        });
        let d = derive_bytes(&long, Mode::HeaderOnly, Limits::default()).unwrap();
        let f = derive_bytes(&long, Mode::Full, Limits::default()).unwrap();
        assert_eq!((d.meta, d.header_digest), (f.meta, f.header_digest));
    }

    /// The file meta group follows dicom-rs's reading: an unknown VR is UN with a 4-byte
    /// length (checked against the file), and an undefined length is refused.
    #[test]
    fn meta_group_lengths_are_checked_like_the_data_set() {
        let good = ct_file_bytes(&CtSpec::default());
        // (0002,0010) TransferSyntaxUID: tag, "UI", 2-byte length.
        let at = good
            .windows(6)
            .position(|w| w == [0x02, 0x00, 0x10, 0x00, b'U', b'I'])
            .unwrap();
        let mut unknown_vr = good.clone();
        unknown_vr[at + 4..at + 6].copy_from_slice(b"U\x08");
        let mut undefined = good.clone();
        undefined[at + 4..at + 12].copy_from_slice(&[b'U', b'N', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        for (name, bytes) in [("unknown VR", unknown_vr), ("undefined length", undefined)] {
            for mode in [Mode::HeaderOnly, Mode::Full] {
                let err = derive_bytes(&bytes, mode, Limits::default()).unwrap_err();
                assert_eq!(err.reason(), Reason::Truncated, "{name}: {err}");
                assert!(err.to_string().contains("(0002,0010)"), "{name}: {err}");
            }
        }
    }

    #[test]
    fn mode_parses_from_cli_words() {
        assert_eq!("header_only".parse::<Mode>().unwrap(), Mode::HeaderOnly);
        assert_eq!("full".parse::<Mode>().unwrap(), Mode::Full);
        assert!("fast".parse::<Mode>().is_err());
    }
}
