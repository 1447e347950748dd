//! Pure DICOM work: turn one stored file into the attributes the pipeline emits.
//!
//! Nothing here touches the network; the only I/O is reading the file itself. Workers call
//! [`derive_file`] on tokio's blocking pool. Every failure is a [`ComputeError`] whose
//! [`ComputeError::reason`] is the stable dead-letter code.
//!
//! - `error.rs`: the error enum and its mapping from dicom-rs errors to reason codes.
//! - `guard.rs`: header walk that refuses declared lengths larger than the file.
//! - `header.rs`: attribute extraction from a parsed object.
//! - `synth.rs`: valid synthetic CT files (tests, load generation).

mod error;
mod guard;
mod header;
pub mod synth;

pub use error::ComputeError;
pub use header::InstanceMeta;

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_size: 2 * 1024 * 1024 * 1024,
        }
    }
}

/// What one file yields.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    pub meta: InstanceMeta,
    /// Size of the file on disk.
    pub file_size: u64,
}

/// Read and parse one DICOM file.
pub fn derive_file(path: &Path, mode: Mode, limits: Limits) -> Result<Derived, ComputeError> {
    let file_size = std::fs::metadata(path)
        .map_err(|source| ComputeError::Read { source })?
        .len();
    check_size(file_size, limits)?;
    match mode {
        Mode::HeaderOnly => {
            // Only the header bytes are read: the guard seeks over values, and dicom-rs
            // stops at PixelData.
            let file = std::fs::File::open(path).map_err(|source| ComputeError::Read { source })?;
            let mut reader = std::io::BufReader::with_capacity(16 * 1024, file);
            guard::check_lengths(&mut reader, file_size, true)?;
            let obj = open_options(mode)
                .open_file(path)
                .map_err(ComputeError::from_read)?;
            let meta = InstanceMeta::from_object(&obj)?;
            Ok(Derived { meta, file_size })
        }
        Mode::Full => {
            // One read of the whole file, then parse from memory. derive_bytes checks the
            // size again: the file may have grown since the metadata call.
            let bytes = std::fs::read(path).map_err(|source| ComputeError::Read { source })?;
            derive_bytes(&bytes, mode, limits)
        }
    }
}

/// Parse one DICOM file held in memory (used by `derive` over bytes, tests and fuzzing).
pub fn derive_bytes(bytes: &[u8], mode: Mode, limits: Limits) -> Result<Derived, ComputeError> {
    let file_size = bytes.len() as u64;
    check_size(file_size, limits)?;
    guard::check_lengths(
        &mut std::io::Cursor::new(bytes),
        file_size,
        mode == Mode::HeaderOnly,
    )?;
    let obj = open_options(mode)
        .from_reader(bytes)
        .map_err(ComputeError::from_read)?;
    let meta = InstanceMeta::from_object(&obj)?;
    Ok(Derived { meta, file_size })
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

    #[test]
    fn rejects_files_over_the_size_limit_before_reading() {
        let bytes = ct_file_bytes(&CtSpec::default());
        let limits = Limits { max_file_size: 100 };
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

    #[test]
    fn mode_parses_from_cli_words() {
        assert_eq!("header_only".parse::<Mode>().unwrap(), Mode::HeaderOnly);
        assert_eq!("full".parse::<Mode>().unwrap(), Mode::Full);
        assert!("fast".parse::<Mode>().is_err());
    }
}
