//! Compute over real files (pydicom's and pydicom-data's test files).

use std::path::PathBuf;

use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use dicom_pipeline::compute::{derive_file, Limits, Mode};
use dicom_pipeline::model::Reason;

use crate::common::samples_dir;

fn sample_files() -> Vec<PathBuf> {
    let files: Vec<PathBuf> = walkdir::WalkDir::new(samples_dir())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    assert!(
        files.len() > 200,
        "expected the full sample set, got {}",
        files.len()
    );
    files
}

/// Sample files the length guard refuses, each checked to be unreadable by dicom-rs too
/// (the first two are checked by hand only: dicom-rs zero-fills gigabytes before failing).
const GUARD_REJECTS: [(&str, Mode); 9] = [
    ("SC_rgb_jpeg.dcm", Mode::HeaderOnly),
    ("SC_rgb_jpeg.dcm", Mode::Full),
    ("UN_sequence.dcm", Mode::HeaderOnly),
    ("UN_sequence.dcm", Mode::Full),
    ("DICOMDIR-nooffset", Mode::HeaderOnly),
    ("DICOMDIR-nooffset", Mode::Full),
    ("rtplan_truncated.dcm", Mode::HeaderOnly),
    ("rtplan_truncated.dcm", Mode::Full),
    ("MR_truncated.dcm", Mode::Full),
];

fn plain_parse(path: &std::path::Path, mode: Mode) -> Result<(), String> {
    let o = OpenFileOptions::new();
    let o = match mode {
        Mode::HeaderOnly => o.read_until(tags::PIXEL_DATA),
        Mode::Full => o,
    };
    o.open_file(path).map(|_| ()).map_err(|e| e.to_string())
}

/// The length guard only ever rejects what dicom-rs itself cannot read: every sample file
/// dicom-rs parses is still parsed (or fails only for a missing UID) with the guard in front,
/// and the files the guard refuses are exactly the known unreadable ones.
#[test]
fn guard_never_rejects_a_file_dicom_rs_reads() {
    let mut rejected = Vec::new();
    let mut readable = 0;
    for path in sample_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        for mode in [Mode::HeaderOnly, Mode::Full] {
            let derived = derive_file(&path, mode, Limits::default());
            if let Err(e) = &derived {
                if e.to_string().contains("declares") {
                    rejected.push((name.clone(), mode));
                    continue;
                }
            }
            if plain_parse(&path, mode).is_ok() {
                readable += 1;
                if let Err(e) = derived {
                    assert_eq!(
                        e.reason(),
                        Reason::MissingUid,
                        "{} ({mode:?}): {e}",
                        path.display()
                    );
                }
            }
        }
    }
    rejected
        .sort_by(|a, b| (a.0.as_str(), a.1 == Mode::Full).cmp(&(b.0.as_str(), b.1 == Mode::Full)));
    let mut want: Vec<(String, Mode)> = GUARD_REJECTS
        .iter()
        .map(|(n, m)| (n.to_string(), *m))
        .collect();
    want.sort_by(|a, b| (a.0.as_str(), a.1 == Mode::Full).cmp(&(b.0.as_str(), b.1 == Mode::Full)));
    assert_eq!(rejected, want);
    assert!(
        readable > 300,
        "only {readable} file/mode pairs were readable"
    );
    // The cheap ones: dicom-rs fails on them as well.
    let dir = samples_dir().join("pydicom");
    for (name, mode) in &GUARD_REJECTS[4..] {
        let path = walkdir::WalkDir::new(&dir)
            .into_iter()
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy() == *name)
            .unwrap()
            .into_path();
        assert!(plain_parse(&path, *mode).is_err(), "{name} {mode:?}");
    }
}

/// pydicom's deliberately broken files that claim gigabytes are refused quickly and cheaply
/// (dicom-rs alone zero-fills 3.7 GB for UN_sequence.dcm).
#[test]
fn absurd_declared_lengths_are_refused_as_truncated() {
    let dir = samples_dir().join("pydicom");
    for name in ["UN_sequence.dcm", "SC_rgb_jpeg.dcm"] {
        let path = dir.join(name);
        let started = std::time::Instant::now();
        let err = derive_file(&path, Mode::Full, Limits::default()).unwrap_err();
        assert_eq!(err.reason(), Reason::Truncated, "{name}: {err}");
        assert!(err.to_string().contains("declares"), "{name}: {err}");
        assert!(
            started.elapsed() < std::time::Duration::from_millis(500),
            "{name} took {:?}",
            started.elapsed()
        );
    }
}

/// Text stored with VR UN is decoded as text (dicom-rs renders it as a byte list), and
/// deflated data sets are read.
#[test]
fn un_text_and_deflate_are_read() {
    let samples = samples_dir();
    let d = derive_file(
        &samples.join("pydicom-data/explicit_VR-UN.dcm"),
        Mode::Full,
        Limits::default(),
    )
    .unwrap();
    assert_eq!(d.meta.modality, "CT");
    let d = derive_file(
        &samples.join("pydicom/rtdose_rle_1frame.dcm"),
        Mode::HeaderOnly,
        Limits::default(),
    )
    .unwrap();
    assert_eq!(d.meta.modality, "RTDOSE");
    // expected values read with pydicom 3.0.2
    let d = derive_file(
        &samples.join("pydicom/image_dfl.dcm"),
        Mode::Full,
        Limits::default(),
    )
    .unwrap();
    assert_eq!(d.meta.transfer_syntax_uid, "1.2.840.10008.1.2.1.99");
    assert_eq!(
        d.meta.sop_uid,
        "1.3.6.1.4.1.5962.1.1.0.0.0.977067309.6001.0"
    );
    assert_eq!(
        (d.meta.modality.as_str(), d.meta.rows, d.meta.columns),
        ("OT", 512, 512)
    );
}
