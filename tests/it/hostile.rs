//! Hostile structures: no input may abort the process. Files nested thousands of levels
//! deep, sequences of millions of items, self-similar trees of sequences — generated here —
//! go through `derive` in a subprocess (so a stack overflow or an abort shows as a signal,
//! not as a dead test binary) and through a running pipeline. Each must end as a dead letter
//! with a reason, never as a signal. (Before the nesting cap, a 72 KB file of 2,000 nested
//! sequences killed `derive` and `run` with a stack overflow, exit 134, in both modes.)

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use crate::common::*;

const UNDEFINED: u32 = 0xFFFF_FFFF;

fn element(g: u16, e: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(12 + value.len());
    b.extend(g.to_le_bytes());
    b.extend(e.to_le_bytes());
    b.extend(vr);
    if matches!(vr, b"OB" | b"SQ" | b"UN" | b"UT" | b"OW") {
        b.extend([0, 0]);
        b.extend((value.len() as u32).to_le_bytes());
    } else {
        b.extend((value.len() as u16).to_le_bytes());
    }
    b.extend(value);
    b
}

fn header(tag: (u16, u16), len: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(tag.0.to_le_bytes());
    b.extend(tag.1.to_le_bytes());
    b.extend(len.to_le_bytes());
    b
}

fn sequence_header(len: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(0x0040u16.to_le_bytes());
    b.extend(0xA730u16.to_le_bytes());
    b.extend(b"SQ\0\0");
    b.extend(len.to_le_bytes());
    b
}

const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);

/// Preamble, file meta group (explicit VR little endian), and the identifying attributes.
/// `object_path` adds an out-of-order element so the direct read hands over to dicom-rs.
fn file_with(body: &[u8], object_path: bool) -> Vec<u8> {
    let mut meta = Vec::new();
    meta.extend(element(2, 1, b"OB", &[0, 1]));
    meta.extend(element(2, 2, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0"));
    meta.extend(element(2, 3, b"UI", b"1.2.3.4\0"));
    meta.extend(element(2, 0x10, b"UI", b"1.2.840.10008.1.2.1\0"));
    let mut f = vec![0u8; 128];
    f.extend(b"DICM");
    f.extend(element(2, 0, b"UL", &(meta.len() as u32).to_le_bytes()));
    f.extend(meta);
    f.extend(element(8, 0x16, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0"));
    f.extend(element(8, 0x18, b"UI", b"1.2.3.4\0"));
    f.extend(element(0x20, 0x0D, b"UI", b"1.2.3\0"));
    f.extend(element(0x20, 0x0E, b"UI", b"1.2.4\0"));
    if object_path {
        f.extend(element(8, 0x20, b"DA", b"20260101"));
    }
    f.extend(body);
    f
}

/// `depth` sequences, each holding one item holding the next: undefined lengths.
fn nested_undefined(depth: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for _ in 0..depth {
        b.extend(sequence_header(UNDEFINED));
        b.extend(header(ITEM, UNDEFINED));
    }
    for _ in 0..depth {
        b.extend(header(ITEM_END, 0));
        b.extend(header(SEQUENCE_END, 0));
    }
    b
}

/// The same with defined lengths (built inside out).
fn nested_defined(depth: usize) -> Vec<u8> {
    let mut inner = element(8, 0x100, b"SH", b"ab");
    for _ in 0..depth {
        let mut item = header(ITEM, inner.len() as u32);
        item.extend(&inner);
        let mut seq = sequence_header(item.len() as u32);
        seq.extend(item);
        inner = seq;
    }
    inner
}

/// One sequence of `n` empty items (defined length).
fn many_items(n: usize) -> Vec<u8> {
    let items: Vec<u8> = (0..n).flat_map(|_| header(ITEM, 0)).collect();
    let mut b = sequence_header(items.len() as u32);
    b.extend(items);
    b
}

/// A binary tree of sequences: every item holds a sequence of two items, `depth` levels.
fn tree(depth: usize) -> Vec<u8> {
    if depth == 0 {
        return element(8, 0x100, b"SH", b"ab");
    }
    let inner = tree(depth - 1);
    let mut item = header(ITEM, inner.len() as u32);
    item.extend(&inner);
    let mut b = sequence_header(2 * item.len() as u32);
    b.extend(&item);
    b.extend(&item);
    b
}

/// (file name, bytes, the reason it must be dead-lettered with)
fn hostile_files() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut v = Vec::new();
    for object_path in [false, true] {
        let p = if object_path { "obj-" } else { "" };
        let name = |s: &str| -> &'static str { Box::leak(format!("{p}{s}").into_boxed_str()) };
        v.push((
            name("nested-2000-undefined.dcm"),
            file_with(&nested_undefined(2_000), object_path),
            "malformed",
        ));
        v.push((
            name("nested-5000-defined.dcm"),
            file_with(&nested_defined(5_000), object_path),
            "malformed",
        ));
        v.push((
            name("nested-65.dcm"),
            file_with(&nested_undefined(65), object_path),
            "malformed",
        ));
        // With --max-decoded-size 64 MiB (below): estimates of 256 MB and 128 MB.
        v.push((
            name("items-250000.dcm"),
            file_with(&many_items(250_000), object_path),
            "too_large",
        ));
        v.push((
            name("tree-17.dcm"),
            file_with(&tree(17), object_path),
            "too_large",
        ));
    }
    v
}

fn write_all(dir: &Path) -> Vec<(std::path::PathBuf, &'static str)> {
    hostile_files()
        .into_iter()
        .map(|(name, bytes, reason)| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            (p, reason)
        })
        .collect()
}

/// `derive` in a subprocess over every hostile file, both modes: an exit code (never a
/// signal), and one line per file with the expected reason.
#[test]
fn derive_dead_letters_every_hostile_structure_and_never_dies() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_all(dir.path());
    for mode in ["header_only", "full"] {
        let out = bin()
            .args(["derive", "--mode", mode, "--max-decoded-size", "67108864"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            None,
            "{mode}: killed by a signal\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), files.len(), "{mode}: {lines:?}");
        for (path, reason) in &files {
            let line = lines
                .iter()
                .find(|l| l["file_path"] == path.to_str().unwrap())
                .unwrap_or_else(|| panic!("{mode}: no line for {}", path.display()));
            assert_eq!(line["reason"], *reason, "{mode} {}: {line}", path.display());
        }
    }
}

/// The same files through `run`: every one a dead letter with its reason, the good file
/// beside them indexed, the process alive to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_dead_letters_every_hostile_structure() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(2, vec![dir.path().to_path_buf()]);
    cfg.pipeline.max_decoded_size = 64 << 20;
    let files = write_all(dir.path());
    let mut payloads: Vec<Vec<u8>> = files
        .iter()
        .enumerate()
        .map(|(i, (p, _))| store_message(p, &format!("h{i}")))
        .collect();
    payloads.extend(synth_messages(
        dir.path(),
        "1.2.826.0.1.3680043.10.967",
        1,
        1,
    ));
    dicom_pipeline::pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, None, &payloads).await;
    let summary = run_until_idle(&cfg).await;
    assert_eq!(summary.workers.indexed, 1, "{summary:?}");
    assert_eq!(
        summary.workers.dead_lettered,
        files.len() as u64,
        "{summary:?}"
    );
    let dlq = dlq_rows(&cfg).await;
    for (i, (path, reason)) in files.iter().enumerate() {
        let d = dlq
            .iter()
            .find(|d| d.trace_id == format!("h{i}"))
            .unwrap_or_else(|| panic!("no dead letter for {}", path.display()));
        assert_eq!(d.reason, *reason, "{}: {d:?}", path.display());
    }
    assert_eq!(lag(&cfg).await, 0);
    drop_database(&cfg).await;
}
