//! Compute over real files (pydicom's and pydicom-data's test files).

use std::path::PathBuf;

use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use dicom_pipeline::compute::{
    derive_bytes, derive_bytes_object_path, derive_file, reads_directly, Limits, Mode,
};
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
                    // Parsed but not indexable: no UID, or (full mode) pixels that do not
                    // decode — those are checked against pydicom below.
                    let pixel_stage = [
                        Reason::UnsupportedPixelFormat,
                        Reason::DecodeFailed,
                        Reason::PixelDataShort,
                        Reason::Truncated,
                    ];
                    assert!(
                        e.reason() == Reason::MissingUid
                            || (mode == Mode::Full && pixel_stage.contains(&e.reason())),
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

/// The direct read (attributes and native pixels straight from the bytes) is an exact fast
/// path: over every sample file and both modes it gives what the dicom-rs object path gives —
/// the same record, or the same failure reason — and it does handle most of them.
#[test]
fn direct_read_agrees_with_dicom_rs() {
    let (mut direct, mut total) = (0, 0);
    for path in sample_files() {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        total += 1;
        direct += usize::from(reads_directly(&bytes));
        for mode in [Mode::HeaderOnly, Mode::Full] {
            let fast = derive_bytes(&bytes, mode, Limits::default());
            let object = derive_bytes_object_path(&bytes, mode, Limits::default());
            let name = path.display();
            match (&fast, &object) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{name} {mode:?}"),
                (Err(a), Err(b)) => {
                    assert_eq!(a.reason(), b.reason(), "{name} {mode:?}: {a} / {b}")
                }
                _ => panic!("{name} {mode:?}: direct {fast:?}\nobject {object:?}"),
            }
        }
    }
    eprintln!("direct read: {direct} of {total} sample files");
    assert!(
        direct * 10 >= total * 6,
        "only {direct} of {total} sample files were read directly"
    );
}

/// Inputs `scripts/dev/fuzz.sh` found (kept in `tests/data/fuzz/`, every one listed here), run
/// with the fuzz target's limits through both the direct read and the object path. Each once
/// made dicom-rs reserve over a gigabyte and take seconds:
/// - a deflated data set whose inflated bytes claim 1.2 GB: refused from its headers;
/// - a file meta element with an unknown VR, read as UN with a 1.9 GB length: refused;
/// - a meta group whose group length spans an element of another group (dicom-rs reads it
///   so; the walk stopped at the group change and left the file to dicom-rs, which then
///   reserved 4 GB for a length inside a sequence): refused;
/// - a deflated file with junk after the pixel data that claims 1 GB once inflated: read
///   (the junk is trailing bytes), by both paths alike;
/// - (a disagreement, not an allocation) a tag past PixelData before RescaleSlope: dicom-rs
///   reading up to PixelData stops there, so the direct read leaves such files to it;
/// - (a panic) JPEG data that makes dicom-rs's JPEG adapter slice past its buffer: the
///   codec's panic is caught and the file fails as `decode_failed`;
/// - (an abort) 2,000 nested sequences, plain and deflated: dicom-rs's recursive parser
///   overflowed the stack and aborted the process; refused as `malformed` from the walk.
#[test]
fn fuzz_findings_are_handled_without_allocating_what_they_claim() {
    /// What each input must give, in both modes unless said.
    enum Expect {
        /// Refused as truncated from its headers; the error names this tag.
        Refused(&'static str),
        /// Derived, the same by both paths.
        Derives,
        /// Header-only derives; full mode fails with this reason and text.
        PixelsFail(Reason, &'static str),
        /// Both modes fail with this reason and text.
        Fails(Reason, &'static str),
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    let cases = [
        ("deflate-bomb-claims-1g.dcm", Expect::Refused("(0008,0008)")),
        (
            "meta-unknown-vr-claims-1g.dcm",
            Expect::Refused("(0002,0010)"),
        ),
        (
            "meta-group-length-spans-other-group.dcm",
            Expect::Refused("(300A,0016)"),
        ),
        ("deflate-trailing-junk-claims-1g.dcm", Expect::Derives),
        ("tags-out-of-order-past-pixel-data.dcm", Expect::Derives),
        (
            "jpeg-decoder-panics.dcm",
            Expect::PixelsFail(Reason::DecodeFailed, "the decoder panicked"),
        ),
        // dicom-rs 0.10's JPEG 2000 adapter slices past its buffer (found 2026-12-01).
        (
            "jpeg2k-decoder-panics.dcm",
            Expect::PixelsFail(Reason::DecodeFailed, "the decoder panicked"),
        ),
        (
            "nested-2000-sequences.dcm",
            Expect::Fails(Reason::Malformed, "nested deeper than 64"),
        ),
        (
            "nested-2000-sequences-deflated.dcm",
            Expect::Fails(Reason::Malformed, "nested deeper than 64"),
        ),
    ];
    let mut listed: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    let mut named: Vec<String> = cases.iter().map(|c| c.0.to_string()).collect();
    named.sort();
    assert_eq!(listed, named, "every fuzz finding has a case here");
    let limits = Limits {
        max_file_size: 1 << 20,
        max_decoded_size: 64 << 20,
    };
    for (name, expect) in cases {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        for mode in [Mode::HeaderOnly, Mode::Full] {
            let direct = derive_bytes(&bytes, mode, limits);
            let object = derive_bytes_object_path(&bytes, mode, limits);
            match (&expect, mode) {
                (Expect::Refused(tag), _) => {
                    for err in [direct.unwrap_err(), object.unwrap_err()] {
                        assert_eq!(err.reason(), Reason::Truncated, "{name} {mode:?}: {err}");
                        let text = err.to_string();
                        assert!(
                            text.contains("declares") && text.contains(tag),
                            "{name}: {err}"
                        );
                    }
                }
                (Expect::PixelsFail(reason, text), Mode::Full)
                | (Expect::Fails(reason, text), _) => {
                    for err in [direct.unwrap_err(), object.unwrap_err()] {
                        assert_eq!(err.reason(), *reason, "{name}: {err}");
                        assert!(err.to_string().contains(text), "{name}: {err}");
                    }
                }
                (Expect::Derives | Expect::PixelsFail(..), _) => {
                    let (a, b) = (direct.unwrap(), object.unwrap());
                    assert_eq!(a, b, "{name} {mode:?}");
                }
            }
        }
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

/// One row of `tests/data/expected_pixels.tsv` (made by pydicom: scripts/dev/make-expected.sh).
struct Expected {
    fields: std::collections::HashMap<String, String>,
}

impl Expected {
    fn get(&self, k: &str) -> &str {
        self.fields.get(k).map(String::as_str).unwrap_or("")
    }
    fn num(&self, k: &str) -> Option<f64> {
        self.get(k).parse().ok()
    }
}

fn expected_table() -> Vec<Expected> {
    parse_table(include_str!("../data/expected_pixels.tsv"))
}

fn parse_table(text: &str) -> Vec<Expected> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    lines
        .map(|l| Expected {
            fields: header
                .iter()
                .zip(l.split('\t'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .collect()
}

/// Transfer syntaxes whose decoders may legitimately differ by a few units per value.
const LOSSY_SYNTAXES: [&str; 5] = [
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.203",
];

/// Files where this pipeline and pydicom knowingly disagree: (path, our reason or "ok", why).
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[
    (
        "pydicom-data/OT-PAL-8-face.dcm",
        "ok",
        "no file meta: we read the bare data set as implicit VR LE and decode it; pydicom \
         reads it too but refuses to decode without a transfer syntax",
    ),
    (
        "pydicom/badVR.dcm",
        "ok",
        "NumberOfFrames '1A' is unreadable: we take the single frame the data holds",
    ),
    (
        "pydicom/JPGExtended.dcm",
        "unsupported_pixel_format",
        "12-bit JPEG extended: dicom-rs's JPEG decoder has no 12-bit precision",
    ),
    (
        "pydicom/JPEGLSNearLossless_08.dcm",
        "missing_uid",
        "no StudyInstanceUID: an instance cannot be keyed or indexed without it",
    ),
    (
        "pydicom/JPEGLSNearLossless_16.dcm",
        "missing_uid",
        "no StudyInstanceUID",
    ),
    (
        "pydicom/SC_rgb_jls_lossy_line.dcm",
        "missing_uid",
        "no StudyInstanceUID",
    ),
    (
        "pydicom/SC_rgb_jls_lossy_sample.dcm",
        "missing_uid",
        "no StudyInstanceUID",
    ),
    (
        "pydicom/SC_rgb_jpeg.dcm",
        "truncated",
        "an element declares 1.2 GB in a 4 KB file: refused before allocation",
    ),
    (
        "pydicom/rtplan_truncated.dcm",
        "truncated",
        "a value runs past the end of the file; pydicom reads what is there",
    ),
    (
        "pydicom-data/emri_small_jpeg_2k_lossless_too_short.dcm",
        "truncated",
        "encapsulated pixel data cut before its delimiter (pydicom finds no data set at all)",
    ),
];

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

/// Every sample file, derived in full mode, agrees with pydicom: statistics, percentiles
/// and digest exactly for lossless data (means and deviations to 1e-9 relative), within a
/// decoder's rounding for lossy data; files pydicom cannot decode fail here too.
#[test]
fn pixel_statistics_match_pydicom() {
    let root = samples_dir();
    let table = expected_table();
    assert!(table.len() > 200, "expected table has {} rows", table.len());
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for e in &table {
        let path = e.get("path");
        let got = derive_file(&root.join(path), Mode::Full, Limits::default());
        let known = KNOWN_DIFFERENCES.iter().find(|k| k.0 == path);
        if let Some((_, want, why)) = known {
            let outcome = match &got {
                Ok(_) => "ok".to_string(),
                Err(err) => err.reason().as_str().to_string(),
            };
            if outcome != *want {
                mismatches.push(format!(
                    "{path}: known difference ({why}) expected {want}, got {outcome}"
                ));
            }
            continue;
        }
        match (e.get("status"), &got) {
            ("ok", Ok(d)) => {
                let Some(px) = &d.pixels else {
                    mismatches.push(format!("{path}: pydicom decoded pixels, we found none"));
                    continue;
                };
                compared += 1;
                let lossy = LOSSY_SYNTAXES.contains(&e.get("transfer_syntax"));
                let mut bad = Vec::new();
                let colour = e.get("samples") != "1";
                if lossy {
                    // JPEG decoders round differently; colour JPEG also differs in colour space
                    // (pydicom raw YBR vs decoder RGB): only grayscale means are compared.
                    if !colour {
                        for (k, ours) in [("pixel_mean", px.mean), ("pixel_std", px.std)] {
                            let want = e.num(k).unwrap();
                            if (want - ours).abs() > 1.0 {
                                bad.push(format!("{k} {ours} vs {want}"));
                            }
                        }
                    }
                } else {
                    let exact = [
                        ("pixel_min", px.min),
                        ("pixel_max", px.max),
                        ("p01", px.p01),
                        ("p50", px.p50),
                        ("p99", px.p99),
                    ];
                    for (k, ours) in exact {
                        if e.num(k) != Some(ours) {
                            bad.push(format!("{k} {ours} vs {}", e.get(k)));
                        }
                    }
                    for (k, ours) in [("pixel_mean", px.mean), ("pixel_std", px.std)] {
                        if !close(e.num(k).unwrap_or(f64::NAN), ours, 1e-9) {
                            bad.push(format!("{k} {ours} vs {}", e.get(k)));
                        }
                    }
                    match px.modality {
                        Some(m) => {
                            let pairs = [
                                ("modality_min", m.min),
                                ("modality_max", m.max),
                                ("modality_mean", m.mean),
                                ("modality_std", m.std),
                            ];
                            for (k, ours) in pairs {
                                if !close(e.num(k).unwrap_or(f64::NAN), ours, 1e-9) {
                                    bad.push(format!("{k} {ours} vs {}", e.get(k)));
                                }
                            }
                        }
                        None if !e.get("modality_mean").is_empty() => {
                            bad.push("no modality statistics".into())
                        }
                        None => {}
                    }
                    if px.digest != e.get("pixel_digest") {
                        bad.push("pixel_digest differs".into());
                    }
                }
                if !bad.is_empty() {
                    mismatches.push(format!("{path}: {}", bad.join("; ")));
                }
            }
            ("ok", Err(err)) => mismatches.push(format!(
                "{path}: pydicom decodes it, we fail: {} {err}",
                err.reason()
            )),
            ("no_pixels", Ok(d)) if d.pixels.is_some() => mismatches.push(format!(
                "{path}: pydicom sees no pixels, we summarised some"
            )),
            ("no_pixels", Err(err)) => mismatches.push(format!(
                "{path}: pydicom reads it, we fail: {} {err}",
                err.reason()
            )),
            ("unreadable" | "decode_error", Ok(_)) => mismatches.push(format!(
                "{path}: pydicom says {} ({}), we succeed",
                e.get("status"),
                e.get("note")
            )),
            _ => {}
        }
    }
    assert!(compared > 100, "only {compared} files compared");
    assert!(
        mismatches.is_empty(),
        "{} of {} files disagree with pydicom:\n{}",
        mismatches.len(),
        table.len(),
        mismatches.join("\n")
    );
}

/// `synth` output in every transfer syntax, CT and MR (128×96, UIDs under `root`), written
/// to `dir`: (file name, syntax, spec, path).
fn synthetic_set(
    dir: &std::path::Path,
    root: &str,
) -> Vec<(
    String,
    dicom_pipeline::compute::synth::SynthSyntax,
    dicom_pipeline::compute::synth::CtSpec,
    PathBuf,
)> {
    use dicom_pipeline::compute::synth::{ct_file_bytes, CtSpec, SynthSyntax};
    let mut out = Vec::new();
    for modality in ["CT", "MR"] {
        for (i, ts) in SynthSyntax::ALL.into_iter().enumerate() {
            let spec = CtSpec {
                rows: 128,
                columns: 96,
                modality: modality.into(),
                transfer_syntax: ts,
                ..CtSpec::numbered(root, 1, 1, 1, i as u32 + 1)
            };
            let name = format!("{modality}-{}.dcm", ts.name());
            let path = dir.join(&name);
            std::fs::write(&path, ct_file_bytes(&spec)).unwrap();
            out.push((name, ts, spec, path));
        }
    }
    out
}

/// `synth` output in every transfer syntax, CT and MR, is read back by pydicom (pinned in
/// scripts/dev/reference/requirements.txt; scripts/test.sh provides it) with the same pixel
/// values, digest and syntax this pipeline derives.
#[test]
fn pydicom_reads_synthetic_files_back() {
    let python = std::env::var("DP_REFERENCE_PYTHON").expect(
        "DP_REFERENCE_PYTHON unset: run scripts/test.sh (it creates the pydicom venv with \
         scripts/dev/make-expected.sh --venv)",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut ours = std::collections::HashMap::new();
    for (name, ts, _, path) in synthetic_set(dir.path(), "1.2.826.0.1.3680043.10.77") {
        let d = derive_file(&path, Mode::Full, Limits::default()).unwrap();
        ours.insert(name, (ts.uid(), d));
    }
    let out = std::process::Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/dev/reference/expected_pixels.py"
        ))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = parse_table(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(table.len(), ours.len());
    for e in &table {
        let (ts, d) = &ours[e.get("path")];
        let px = d.pixels.as_ref().unwrap();
        let m = px.modality.unwrap();
        let what = e.get("path");
        assert_eq!(e.get("status"), "ok", "{what}: {}", e.get("note"));
        assert_eq!(e.get("transfer_syntax"), *ts, "{what}");
        assert_eq!(e.get("sop_uid"), d.meta.sop_uid, "{what}");
        assert_eq!(e.get("pixel_digest"), px.digest, "{what}");
        assert_eq!(
            (e.num("pixel_min"), e.num("pixel_max"), e.num("p50")),
            (Some(px.min), Some(px.max), Some(px.p50)),
            "{what}"
        );
        assert!(close(e.num("pixel_mean").unwrap(), px.mean, 1e-9), "{what}");
        assert!(
            close(e.num("modality_mean").unwrap(), m.mean, 1e-9),
            "{what}"
        );
    }
}

/// `synth` output in every transfer syntax, CT and MR, is read back by DCMTK (Debian's
/// `dcmtk`; `.ci/run` installs it): `dcmdump` parses every element and reports the same
/// identity, and DCMTK's own decoding (`dcmconv`, `dcmdrle` for RLE) to explicit VR little
/// endian yields pixels with the same digest this pipeline derives from the original.
#[test]
fn dcmtk_reads_synthetic_files_back() {
    use dicom_pipeline::compute::synth::SynthSyntax;
    let run = |tool: &str, args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e} (install DCMTK: apt-get install dcmtk)"));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dir = tempfile::tempdir().unwrap();
    for (what, ts, spec, path) in synthetic_set(dir.path(), "1.2.826.0.1.3680043.10.78") {
        let dump = run(
            "dcmdump",
            &[
                "-q".as_ref(),
                "-Un".as_ref(),
                "+P".as_ref(),
                "SOPInstanceUID".as_ref(),
                "+P".as_ref(),
                "TransferSyntaxUID".as_ref(),
                "+P".as_ref(),
                "Rows".as_ref(),
                path.as_os_str(),
            ],
        );
        assert!(
            dump.contains(&format!("[{}]", spec.sop_uid)),
            "{what}: {dump}"
        );
        assert!(dump.contains(&format!("[{}]", ts.uid())), "{what}: {dump}");
        assert!(dump.contains("US 128"), "{what}: {dump}");
        let plain = path.with_extension("dcmtk.dcm");
        let tool = if ts == SynthSyntax::Rle {
            "dcmdrle"
        } else {
            "dcmconv"
        };
        run(
            tool,
            &[
                "-q".as_ref(),
                "+te".as_ref(),
                path.as_os_str(),
                plain.as_os_str(),
            ],
        );
        let ours = derive_file(&path, Mode::Full, Limits::default()).unwrap();
        let theirs = derive_file(&plain, Mode::Full, Limits::default()).unwrap();
        assert_eq!(
            theirs.meta.transfer_syntax_uid, "1.2.840.10008.1.2.1",
            "{what}"
        );
        assert_eq!(theirs.meta.sop_uid, ours.meta.sop_uid, "{what}");
        assert_eq!(theirs.pixels, ours.pixels, "{what}");
    }
}
