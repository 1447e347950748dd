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
//! - `read.rs`: reading a file from disk, only as much of it as the mode needs.
//! - `derive.rs`: from the file's bytes to [`Derived`]: the walk, then the direct read or
//!   the object path.
//! - `object.rs`: the dicom-rs object path (parse, derive, re-encoded header digest).
//! - `header.rs`: attribute extraction from a parsed object (the object path).
//! - `finish.rs`: the steps every path shares (where parsing stops, the header digest, a
//!   `Derived` from the direct read).
//! - `deflated.rs`: deflated data sets, inflated as far as the mode needs, then derived.
//! - `inflate.rs`: the inflater that stops where the caller has what it needs.
//! - `pixels/`: pixel statistics and digest (native data read in place, encapsulated data
//!   through dicom-pixeldata's codecs).
//! - `synth.rs`: valid synthetic CT files (tests, load generation).
//! - `timing.rs`: per-stage time of one derivation (read / parse / decode), for the metrics.

mod deflated;
mod derive;
mod direct;
mod error;
mod finish;
mod guard;
mod header;
mod inflate;
#[cfg(test)]
mod memory_tests;
mod object;
mod pixels;
mod read;
mod rle;
pub mod synth;
mod timing;

pub use error::ComputeError;
pub use header::{InstanceMeta, ModalityLut};
pub use pixels::{Moments, PixelSummary};
pub use read::derive_open;
pub use timing::{derive_open_timed, StageTimes};

use std::path::Path;

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

/// Stack of every thread that derives files (the pipeline's compute pool, `derive`'s
/// threads). dicom-rs parses nested sequences recursively, about 10 KB of stack per level in
/// a debug build; the guard walk refuses files nested deeper than
/// [`guard::limits::MAX_NESTING`] levels, so 8 MiB leaves room for that many levels ten times
/// over, and for the codecs.
pub const THREAD_STACK_BYTES: usize = 8 << 20;

/// Read and derive one DICOM file.
pub fn derive_file(path: &Path, mode: Mode, limits: Limits) -> Result<Derived, ComputeError> {
    let file = std::fs::File::open(path).map_err(|source| ComputeError::Read { source })?;
    derive_open(file, mode, limits)
}

/// Derive one DICOM file held in memory (used by `derive` over bytes, tests and fuzzing).
pub fn derive_bytes(bytes: &[u8], mode: Mode, limits: Limits) -> Result<Derived, ComputeError> {
    derive::derive_bytes_with(bytes, mode, limits, true)
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
    derive::derive_bytes_with(bytes, mode, limits, false)
}

/// Parse with dicom-rs and summarise the pixels through dicom-pixeldata's generic decode
/// (even native data): the baseline the in-place statistics are benchmarked against.
/// Tests and benches only (`testing` feature).
#[cfg(any(test, feature = "testing"))]
pub fn summarise_via_generic_decode(
    bytes: &[u8],
    limits: Limits,
) -> Result<PixelSummary, ComputeError> {
    let obj = object::parse(bytes, Mode::Full)?;
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
