use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dicom_pipeline::compute::synth::{ct_file_bytes, CtSpec};
use dicom_pipeline::model::md5_key;
use dicom_pipeline::pipeline;

use crate::common::*;

fn find(dir: &Path, name: &str) -> PathBuf {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.file_name() == name)
        .map(|e| e.path().to_path_buf())
        .unwrap_or_else(|| panic!("{name} not found under {}", dir.display()))
}

/// Known attributes of pydicom's test files (read with pydicom 3.0.2, not with this code).
struct Known {
    file: &'static str,
    sop_uid: &'static str,
    modality: &'static str,
    rows: u16,
    columns: u16,
    /// pixel_min, pixel_max, pixel_mean, pixel_digest from tests/data/expected_pixels.tsv.
    pixels: (f64, f64, f64, &'static str),
}

const CT_SMALL: Known = Known {
    file: "CT_small.dcm",
    sop_uid: "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322",
    modality: "CT",
    rows: 128,
    columns: 128,
    pixels: (
        128.0,
        2191.0,
        904.9261474609375,
        "81f9304f5aa9861c364fc9def393a7449f617d85e52b8f8b9909315583326186",
    ),
};
const MR_SMALL: Known = Known {
    file: "MR_small.dcm",
    sop_uid: "1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457",
    modality: "MR",
    rows: 64,
    columns: 64,
    pixels: (
        127.0,
        2145.0,
        518.88134765625,
        "7b490c6b115971f3e08865d05cbf97214bb28d23d9275ae8a3a9c9a1bd1c45d3",
    ),
};

/// Real files travel from the store topic to `dicom_image` rows and `dicom.image` records;
/// every bad message becomes exactly one dead letter with the right reason; the group's
/// committed offset ends at the end offset of every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_indexed_and_bad_input_is_dead_lettered() {
    let samples = samples_dir();
    let work = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let cfg = test_config(2, vec![samples.clone(), work.path().to_path_buf()]);

    let ct = find(&samples, CT_SMALL.file);
    let mr = find(&samples, MR_SMALL.file);
    let synth: Vec<(CtSpec, PathBuf)> = (1..=2)
        .map(|i| {
            let spec = CtSpec::numbered("1.2.826.0.1.3680043.10.999", 7, 1, 1, i);
            let path = work.path().join(format!("synth{i}.dcm"));
            std::fs::write(&path, ct_file_bytes(&spec)).unwrap();
            (spec, path)
        })
        .collect();
    let text = work.path().join("notes.txt");
    std::fs::write(&text, "this is not DICOM\n".repeat(40)).unwrap();
    let secret = outside.path().join("outside.dcm");
    std::fs::write(&secret, ct_file_bytes(&CtSpec::default())).unwrap();

    let mut payloads = vec![
        store_message(&ct, "good-ct"),
        b"{this is not json".to_vec(),
        store_message(&mr, "good-mr"),
        Vec::new(),
        store_message(&work.path().join("missing.dcm"), "missing"),
        store_message(&text, "text"),
        store_message(&secret, "outside"),
    ];
    for (i, (_, p)) in synth.iter().enumerate() {
        payloads.push(store_message(p, &format!("good-synth-{i}")));
    }
    // Make the topics before publishing (tansu does not auto-create).
    pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, None, &payloads).await;

    let summary = run_until_idle(&cfg).await;
    assert_eq!(summary.workers.consumed, 9, "{summary:?}");
    assert_eq!(summary.workers.indexed, 4, "{summary:?}");
    assert_eq!(summary.workers.dead_lettered, 5, "{summary:?}");
    assert_eq!(summary.workers.abandoned, 0, "{summary:?}");

    // ClickHouse: exactly the good instances, with their attributes.
    let rows = image_rows(&cfg).await;
    let by_sop: BTreeMap<&str, &ImageRow> = rows.iter().map(|r| (r.sop_uid.as_str(), r)).collect();
    let mut want: BTreeSet<String> = [CT_SMALL.sop_uid, MR_SMALL.sop_uid]
        .iter()
        .map(|s| s.to_string())
        .collect();
    want.extend(synth.iter().map(|(s, _)| s.sop_uid.clone()));
    assert_eq!(
        by_sop
            .keys()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        want
    );
    for k in [&CT_SMALL, &MR_SMALL] {
        let r = by_sop[k.sop_uid];
        assert_eq!(
            (r.modality.as_str(), r.rows, r.columns),
            (k.modality, k.rows, k.columns),
            "{}",
            k.file
        );
        let (min, max, mean, digest) = k.pixels;
        assert_eq!(
            (r.pixel_min, r.pixel_max, r.pixel_digest.as_deref()),
            (Some(min), Some(max), Some(digest)),
            "{}",
            k.file
        );
        assert!((r.pixel_mean.unwrap() - mean).abs() < 1e-9, "{}", k.file);
        assert!(r.pixel_std.is_some() && r.header_digest.len() == 64);
    }
    assert_eq!(
        by_sop[synth[0].0.sop_uid.as_str()].file_path,
        synth[0].1.to_str().unwrap()
    );

    // dicom.image: one record per instance, keyed md5(tenant_patient_study_series_sop).
    let images = read_topic(&cfg, &cfg.kafka.image_topic);
    assert_eq!(images.len(), 4);
    for (key, v) in &images {
        let s = |f: &str| v[f].as_str().unwrap().to_string();
        let expected = md5_key(&[
            &s("tenant_id"),
            &s("patient_id"),
            &s("study_uid"),
            &s("series_uid"),
            &s("sop_uid"),
        ]);
        assert_eq!(key, &expected);
        assert!(want.contains(&s("sop_uid")));
    }

    // dicom.state: coalesced per series (3 series: CT_small, MR_small, the synthetic one).
    let states = read_topic(&cfg, &cfg.kafka.state_topic);
    let series: BTreeSet<String> = states.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(series.len(), 3, "{states:?}");
    assert!(states.len() <= 4);
    assert_eq!(
        count(&cfg, "SELECT count() FROM dicom_state FINAL").await,
        3
    );

    // Dead letters: one per bad message, each with its reason, on the topic and in the table.
    let dlq = dlq_rows(&cfg).await;
    let reasons: BTreeMap<String, String> = dlq
        .iter()
        .map(|r| {
            (
                if r.trace_id.is_empty() {
                    format!("offset-{}", r.kafka_offset)
                } else {
                    r.trace_id.clone()
                },
                r.reason.clone(),
            )
        })
        .collect();
    let mut got: Vec<&str> = reasons.values().map(|s| s.as_str()).collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            "bad_json",
            "empty_payload",
            "file_not_found",
            "not_dicom",
            "path_outside_root"
        ],
        "{dlq:?}"
    );
    assert!(dlq.iter().all(|r| !r.error.is_empty()), "{dlq:?}");
    assert_eq!(reasons["missing"], "file_not_found");
    assert_eq!(reasons["text"], "not_dicom");
    assert_eq!(reasons["outside"], "path_outside_root");
    assert_eq!(read_topic(&cfg, &cfg.kafka.dlq_topic).len(), 5);
    assert_eq!(
        count(&cfg, "SELECT count() FROM dicom_store FINAL").await,
        9
    );

    // Offsets: committed == end on every partition.
    let lags = lags(&cfg).await;
    assert_eq!(lags.len(), 2);
    for l in &lags {
        if l.high > 0 {
            assert_eq!(l.committed, Some(l.high), "{lags:?}");
        }
    }
    assert_eq!(lags.iter().map(|l| l.high).sum::<i64>(), 9);
    drop_database(&cfg).await;
}

/// A second consumer group re-processing the same messages (a redelivery) adds no logical
/// rows: `FINAL` still sees one row per instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_messages_collapse_to_one_logical_row() {
    let work = tempfile::tempdir().unwrap();
    let mut cfg = test_config(1, vec![work.path().to_path_buf()]);
    let payloads = synth_messages(work.path(), "1.2.826.0.1.3680043.10.998", 5, 1);
    pipeline::ensure_schema(&cfg).await.unwrap();
    // A bad message first on the single partition: the good ones behind it still go through.
    publish(&cfg, Some(0), &[b"garbage".to_vec()]).await;
    publish(&cfg, Some(0), &payloads).await;
    let first = run_until_idle(&cfg).await;
    assert_eq!((first.workers.indexed, first.workers.dead_lettered), (5, 1));

    cfg.kafka.group_id = format!("{}-again", cfg.kafka.group_id);
    let second = run_until_idle(&cfg).await;
    assert_eq!(second.workers.indexed, 5);
    assert_eq!(
        count(&cfg, "SELECT count() FROM dicom_image FINAL").await,
        5
    );
    assert_eq!(count(&cfg, "SELECT count() FROM dicom_dlq FINAL").await, 1);
    assert_eq!(
        count(&cfg, "SELECT count() FROM dicom_store FINAL").await,
        6
    );
    assert!(count(&cfg, "SELECT count() FROM dicom_image").await >= 5);
    // Series state: every instance counted once although each was processed twice, and
    // the seen-interval spans the store times of the five messages.
    assert_eq!(
        count(&cfg, "SELECT instance_count FROM dicom_series").await,
        5
    );
    assert_eq!(
        count(&cfg, "SELECT length(sop_uids) FROM dicom_state FINAL").await,
        5
    );
    assert_eq!(
        count(
            &cfg,
            "SELECT toUInt64(last_seen >= first_seen) FROM dicom_series"
        )
        .await,
        1
    );
    drop_database(&cfg).await;
}

/// A resend of identical content collapses; the same SOP Instance UID with a different header
/// is kept as a second version and listed in `dicom_sop_conflicts`, with both digests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_sop_with_different_content_is_recorded_not_collapsed() {
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(1, vec![work.path().to_path_buf()]);
    let spec = CtSpec::numbered("1.2.826.0.1.3680043.10.996", 1, 1, 1, 1);
    let original = work.path().join("a.dcm");
    std::fs::write(&original, ct_file_bytes(&spec)).unwrap();
    let copy = work.path().join("a-copy.dcm");
    std::fs::write(&copy, ct_file_bytes(&spec)).unwrap();
    let changed = work.path().join("a-changed.dcm");
    let edited = CtSpec {
        patient_name: "Other^Name".into(),
        ..spec.clone()
    };
    std::fs::write(&changed, ct_file_bytes(&edited)).unwrap();
    pipeline::ensure_schema(&cfg).await.unwrap();
    let msgs: Vec<Vec<u8>> = [&original, &copy, &changed]
        .iter()
        .map(|p| store_message(p, "v"))
        .collect();
    publish(&cfg, Some(0), &msgs).await;
    let summary = run_until_idle(&cfg).await;
    assert_eq!(summary.workers.indexed, 3);
    let rows = ch(&cfg)
        .query("SELECT sop_uid, header_digest FROM dicom_image FINAL ORDER BY header_digest")
        .fetch_all::<(String, String)>()
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.0 == spec.sop_uid));
    let conflicts = ch(&cfg)
        .query("SELECT sop_uid, versions FROM dicom_sop_conflicts")
        .fetch_all::<(String, u64)>()
        .await
        .unwrap();
    assert_eq!(conflicts, vec![(spec.sop_uid.clone(), 2)]);
    drop_database(&cfg).await;
}

/// One record definition: the `dicom_image` row, the `dicom.image` record and the `derive`
/// line for the same file are the same `ImageRecord` — every header attribute of the table
/// in `attributes.rs` (ProtocolName, the newest, included) travels the whole way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_row_the_topic_record_and_derive_agree() {
    use dicom_pipeline::model::ImageRecord;
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(1, vec![work.path().to_path_buf()]);
    let spec = CtSpec::numbered("1.2.826.0.1.3680043.10.995", 1, 1, 1, 3);
    let file = work.path().join("one.dcm");
    std::fs::write(&file, ct_file_bytes(&spec)).unwrap();
    pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, Some(0), &[store_message(&file, "one")]).await;
    assert_eq!(run_until_idle(&cfg).await.workers.indexed, 1);

    // The row, read back into the record type: the table has every field, typed alike.
    let row = ch(&cfg)
        .query("SELECT ?fields FROM dicom_image FINAL")
        .fetch_one::<ImageRecord>()
        .await
        .unwrap();
    let topic = read_topic(&cfg, &cfg.kafka.image_topic);
    assert_eq!(topic.len(), 1);
    let record: ImageRecord = serde_json::from_value(topic[0].1.clone()).unwrap();
    assert_eq!(row, record);

    let out = bin()
        .args(["derive", "--mode", "full"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let derived: ImageRecord = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((derived.kafka_partition, derived.kafka_offset), (-1, -1));
    assert_eq!(derived.source, "derive");
    assert!(derived.file_mtime.is_some_and(|t| t > 0));
    // Equal but for where and when it was read.
    let comparable = |r: &ImageRecord| ImageRecord {
        tenant_id: String::new(),
        trace_id: String::new(),
        source: String::new(),
        kafka_topic: String::new(),
        kafka_partition: 0,
        kafka_offset: 0,
        file_mtime: None,
        received_at: time::OffsetDateTime::UNIX_EPOCH,
        processed_at: time::OffsetDateTime::UNIX_EPOCH,
        ..r.clone()
    };
    assert_eq!(comparable(&derived), comparable(&row));

    assert_eq!(row.protocol_name, "CHEST ROUTINE");
    assert_eq!(row.instance_number, Some(3));
    assert_eq!(
        row.study_at,
        Some(time::macros::datetime!(2026-01-01 12:00:00 UTC))
    );
    assert!(row.pixel_digest.is_some() && row.header_digest.len() == 64);
    drop_database(&cfg).await;
}

/// `backfill` publishes one store message per regular file, with absolute paths, and skips
/// what is not a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_publishes_one_message_per_file() {
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(2, vec![work.path().to_path_buf()]);
    std::fs::create_dir_all(work.path().join("a/b")).unwrap();
    for p in ["one.dcm", "a/two.dcm", "a/b/three.dcm"] {
        std::fs::write(work.path().join(p), ct_file_bytes(&CtSpec::default())).unwrap();
    }
    // a dangling symlink is an unreadable entry, not a crash
    std::os::unix::fs::symlink(work.path().join("nowhere"), work.path().join("dangling")).unwrap();
    pipeline::ensure_schema(&cfg).await.unwrap();
    let summary = dicom_pipeline::backfill::backfill(&cfg, &[work.path().to_path_buf()])
        .await
        .unwrap();
    assert_eq!(summary.published, 3, "{summary:?}");
    assert_eq!(summary.errors, 1, "{summary:?}");
    assert_eq!(summary.failed, 0, "{summary:?}");
    let msgs = read_topic(&cfg, &cfg.kafka.input_topic);
    assert_eq!(msgs.len(), 3);
    let paths: BTreeSet<String> = msgs
        .iter()
        .map(|(_, v)| v["file_path"].as_str().unwrap().to_string())
        .collect();
    assert!(paths.iter().all(|p| p.starts_with('/')));
    assert!(paths.contains(work.path().join("a/b/three.dcm").to_str().unwrap()));
    for (key, v) in &msgs {
        assert_eq!(key, v["trace_id"].as_str().unwrap());
        assert_eq!(v["tenant_id"], "default");
    }
    drop_database(&cfg).await;
}

/// A publish the broker never acknowledges (here: the topic does not exist, and neither the
/// dev Kafka node nor tansu creates topics on first use) is counted as failed, not as
/// published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_counts_unacknowledged_publishes_as_failed() {
    let work = tempfile::tempdir().unwrap();
    let mut cfg = test_config(1, vec![work.path().to_path_buf()]);
    cfg.kafka.message_timeout_ms = 1_500;
    std::fs::write(work.path().join("one.dcm"), b"x").unwrap();
    // no ensure_schema: the input topic is missing
    let summary = dicom_pipeline::backfill::backfill(&cfg, &[work.path().to_path_buf()])
        .await
        .unwrap();
    assert_eq!((summary.published, summary.failed), (0, 1), "{summary:?}");
}

/// Every bad-input class yields exactly one dead letter with its reason, the good files
/// around them are all indexed, and nothing is left uncommitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_class_gets_its_reason() {
    let work = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let mut cfg = test_config(2, vec![work.path().to_path_buf()]);
    cfg.pipeline.max_file_size = 100_000;
    let root = work.path();
    let good = |i: u32| {
        let spec = CtSpec::numbered("1.2.826.0.1.3680043.10.993", 1, 1, 1, i);
        let p = root.join(format!("good{i}.dcm"));
        std::fs::write(&p, ct_file_bytes(&spec)).unwrap();
        p
    };
    let base = ct_file_bytes(&CtSpec::default()); // 64×64: ~9 KB
    let write = |name: &str, bytes: &[u8]| {
        let p = root.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
    cases.push((b"{\"trace_id\": 1".to_vec(), "bad_json"));
    cases.push((Vec::new(), "empty_payload"));
    cases.push((
        store_message(&root.join("nope.dcm"), "missing"),
        "file_not_found",
    ));
    std::fs::create_dir(root.join("adir")).unwrap();
    cases.push((store_message(&root.join("adir"), "directory"), "not_a_file"));
    let secret = outside.path().join("s.dcm");
    std::fs::write(&secret, &base).unwrap();
    cases.push((store_message(&secret, "outside"), "path_outside_root"));
    std::os::unix::fs::symlink(&secret, root.join("escape.dcm")).unwrap();
    cases.push((
        store_message(&root.join("escape.dcm"), "symlink"),
        "path_outside_root",
    ));
    cases.push((store_message(&write("zero.dcm", b""), "zero"), "not_dicom"));
    let noise: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    cases.push((
        store_message(&write("noise.dcm", &noise), "random"),
        "not_dicom",
    ));
    cases.push((
        store_message(&write("text.dcm", &b"plain text\n".repeat(50)), "text"),
        "not_dicom",
    ));
    cases.push((
        store_message(&write("head.dcm", &base[..300]), "trunc-header"),
        "truncated",
    ));
    cases.push((
        store_message(
            &write("pix.dcm", &base[..base.len() - 1000]),
            "trunc-pixels",
        ),
        "truncated",
    ));
    let mut absurd = base.clone();
    let at = absurd
        .windows(6)
        .position(|w| w == [0x10, 0x00, 0x10, 0x00, b'P', b'N'])
        .unwrap();
    absurd[at + 6..at + 8].copy_from_slice(&0xFFF0u16.to_le_bytes());
    cases.push((
        store_message(&write("absurd.dcm", &absurd), "absurd"),
        "truncated",
    ));
    // Rows doubled: the PixelData element is whole, but holds half of what Rows × Columns
    // claims.
    let mut short = base.clone();
    let at = short
        .windows(8)
        .position(|w| w == [0x28, 0x00, 0x10, 0x00, b'U', b'S', 2, 0])
        .unwrap();
    let rows = u16::from_le_bytes([short[at + 8], short[at + 9]]);
    short[at + 8..at + 10].copy_from_slice(&(rows * 2).to_le_bytes());
    cases.push((
        store_message(&write("short.dcm", &short), "short-pixels"),
        "pixel_data_short",
    ));
    let no_uid = ct_file_bytes(&CtSpec {
        omit_sop_uid: true,
        ..CtSpec::default()
    });
    cases.push((
        store_message(&write("nouid.dcm", &no_uid), "no-uid"),
        "missing_uid",
    ));
    let mut unknown_ts = base.clone();
    let ts = b"1.2.840.10008.1.2.1\0";
    let at = unknown_ts.windows(ts.len()).position(|w| w == ts).unwrap();
    unknown_ts[at..at + ts.len()].copy_from_slice(b"1.2.3.4.5.6.7.8.9.10");
    cases.push((
        store_message(&write("ts.dcm", &unknown_ts), "unknown-ts"),
        "unsupported_transfer_syntax",
    ));
    let big = ct_file_bytes(&CtSpec {
        rows: 256,
        columns: 256,
        ..CtSpec::default()
    });
    cases.push((
        store_message(&write("big.dcm", &big), "oversized"),
        "too_large",
    ));

    let mut payloads = Vec::new();
    for (i, (bad, _)) in cases.iter().enumerate() {
        payloads.push(store_message(&good(i as u32 + 1), &format!("good-{i}")));
        payloads.push(bad.clone());
    }
    pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, None, &payloads).await;
    let summary = run_until_idle(&cfg).await;
    assert_eq!(summary.workers.indexed, cases.len() as u64, "{summary:?}");
    assert_eq!(
        summary.workers.dead_lettered,
        cases.len() as u64,
        "{summary:?}"
    );
    assert_eq!(summary.workers.abandoned, 0);

    let dlq = dlq_rows(&cfg).await;
    assert_eq!(dlq.len(), cases.len(), "{dlq:?}");
    let by_trace: BTreeMap<&str, &str> = dlq
        .iter()
        .map(|r| (r.trace_id.as_str(), r.reason.as_str()))
        .collect();
    for (payload, want) in &cases {
        let trace = serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v["trace_id"].as_str().map(str::to_string));
        match trace {
            Some(t) => assert_eq!(
                by_trace.get(t.as_str()).copied(),
                Some(*want),
                "{t}: {dlq:?}"
            ),
            // bad_json / empty_payload carry no trace id
            None => assert!(
                dlq.iter()
                    .any(|r| r.trace_id.is_empty() && r.reason == *want),
                "{want}: {dlq:?}"
            ),
        }
    }
    assert_eq!(
        count(&cfg, "SELECT count() FROM dicom_image FINAL").await,
        cases.len() as u64
    );
    assert_eq!(lag(&cfg).await, 0);
    drop_database(&cfg).await;
}

/// With a tiny partition window the worker keeps pausing the partition while a window's worth
/// of messages is unfinished, and resumes at half: everything is indexed exactly once, the
/// committed offset reaches the end, and pauses stay at most one per half window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_partition_window_pauses_the_partition_and_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    // Two workers on two partitions: the second worker's join revokes partitions that are
    // paused with messages parked, which must be forgotten, not dispatched later.
    let mut cfg = test_config(2, vec![work.path().to_path_buf()]);
    cfg.pipeline.max_in_flight = 64;
    cfg.pipeline.max_partition_gap = 8;
    // Each resume costs about 0.6 s before tansu delivers the partition again (measured
    // here: librdkafka drops the paused partition's prefetch and restarts its fetch), so the
    // run is kept short; the product's default window (10,000) makes pauses rare.
    let n = 120u32;
    let payloads = synth_messages(work.path(), "1.2.826.0.1.3680043.10.989", n, 4);
    pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, None, &payloads).await;
    let summary = run_until_idle(&cfg).await;
    let w = summary.workers;
    assert!(w.pauses > 0, "the window never filled: {w:?}");
    assert_eq!(
        count(&cfg, "SELECT count() FROM dicom_store FINAL").await,
        u64::from(n)
    );
    assert!(
        w.pauses <= w.consumed / 4 + 4,
        "pause/resume thrash: {} pauses for {} messages",
        w.pauses,
        w.consumed
    );
    assert_eq!(
        count(&cfg, "SELECT count() FROM dicom_image FINAL").await,
        u64::from(n)
    );
    assert_eq!(lag(&cfg).await, 0);
    eprintln!(
        "window 8, in flight 64, 2 workers on 2 partitions: {} messages, {} pauses",
        w.consumed, w.pauses
    );
    drop_database(&cfg).await;
}

/// A record that can never be published (here: larger than the producer's
/// `message.max.bytes`, the same permanent `MessageSizeTooLarge` a broker returns) is a
/// permanent failure: the message is dead-lettered as `produce_failed` instead of being
/// retried forever, its offset is committed only once the dead letter is stored, and the
/// pipeline goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_can_never_be_published_is_dead_lettered() {
    let work = tempfile::tempdir().unwrap();
    let mut cfg = test_config(1, vec![work.path().to_path_buf()]);
    // Image records of these files are ~1.6 KB, their dead letters ~1 KB.
    cfg.kafka
        .extra
        .insert("message.max.bytes".into(), "1300".into());
    let n = 3u32;
    let payloads = synth_messages(work.path(), "1.2.826.0.1.3680043.10.987", n, 1);
    pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, None, &payloads).await;
    let summary = run_until_idle(&cfg).await;
    assert_eq!(summary.workers.dead_lettered, u64::from(n), "{summary:?}");
    let dlq = dlq_rows(&cfg).await;
    assert_eq!(dlq.len(), n as usize, "{dlq:?}");
    for d in &dlq {
        assert_eq!(d.reason, "produce_failed", "{d:?}");
        assert!(d.error.contains("too large"), "{d:?}");
    }
    assert_eq!(count(&cfg, "SELECT count() FROM dicom_image").await, 0);
    assert_eq!(lag(&cfg).await, 0);
    drop_database(&cfg).await;
}

/// An error of the file's own while its storage root answers — here a symlink loop inside
/// the root (ELOOP) — is retried with backoff (100 ms, 400 ms, 1.6 s) before it becomes
/// `read_failed`; a file that is fixed between two attempts is indexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_fails_to_read_is_retried_before_it_is_dead_lettered() {
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(1, vec![work.path().to_path_buf()]);
    let good = synth_messages(work.path(), "1.2.826.0.1.3680043.10.968", 2, 1);
    // i1.dcm becomes a loop for good; i2.dcm is a loop until 300 ms after the run starts.
    let looped = |name: &str| {
        let (a, b) = (
            work.path().join(name),
            work.path().join(format!("{name}.b")),
        );
        let keep = std::fs::read(&a).unwrap();
        std::fs::remove_file(&a).unwrap();
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        (a, b, keep)
    };
    let _broken = looped("i1.dcm");
    let (healed, healed_b, content) = looped("i2.dcm");
    pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, Some(0), &good).await;
    let fixer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::remove_file(&healed_b).unwrap();
        let tmp = healed.with_extension("tmp");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, &healed).unwrap();
    });
    let started = std::time::Instant::now();
    let summary = run_until_idle(&cfg).await;
    fixer.await.unwrap();
    assert_eq!(
        (summary.workers.indexed, summary.workers.dead_lettered),
        (1, 1),
        "{summary:?}"
    );
    let dlq = dlq_rows(&cfg).await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0].reason, "read_failed", "{dlq:?}");
    assert_eq!(dlq[0].trace_id, "t1");
    // Three retries came first: 2.1 s of pauses (plus the idle wait that ends the run).
    assert!(
        started.elapsed() >= Duration::from_millis(2_100 + 1_500),
        "dead-lettered after {:?}",
        started.elapsed()
    );
    assert_eq!(image_rows(&cfg).await.len(), 1);
    drop_database(&cfg).await;
}

/// A dead letter the broker refuses (here: larger than `message.max.bytes`) is published
/// shrunk — free text bounded, payload withheld; one refused even shrunk lives in
/// `dicom_dlq` alone. Either way its offset completes and the partition moves on. (Before,
/// such a dead letter left its offset unfinished for good: the partition never moved again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_the_broker_refuses_still_completes_its_offset() {
    let work = tempfile::tempdir().unwrap();
    let mut cfg = test_config(1, vec![work.path().to_path_buf()]);
    cfg.kafka
        .extra
        .insert("message.max.bytes".into(), "1000".into());
    // 1: a trace id of 2,000 characters: refused whole, published shrunk.
    let long_trace = "t".repeat(2_000);
    let m1 = store_message(&work.path().join("gone.dcm"), &long_trace);
    // 2: a path of 1,500 bytes (directories that do not exist): even shrunk (1,024 bytes of
    // path) the record is over 1,000 bytes.
    let deep = (0..7).fold(work.path().to_path_buf(), |p, i| {
        p.join(format!("{i}{}", "d".repeat(200)))
    });
    let m2 = store_message(&deep.join("x.dcm"), "t2");
    // 3: then an ordinary dead letter, which must not be held up.
    let m3 = b"{not json".to_vec();
    pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, Some(0), &[m1, m2, m3]).await;
    let summary = run_until_idle(&cfg).await;
    assert_eq!(summary.workers.dead_lettered, 3, "{summary:?}");
    assert_eq!(lag(&cfg).await, 0);
    // Every dead letter is in the table whole.
    let rows = dlq_rows(&cfg).await;
    let reasons: Vec<&str> = rows.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons, ["file_not_found", "file_not_found", "bad_json"]);
    assert_eq!(rows[0].trace_id, long_trace);
    // On the topic: the first shrunk, the second not at all, the third as it was.
    let topic = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || read_topic(&cfg, &cfg.kafka.dlq_topic))
            .await
            .unwrap()
    };
    let mut topic: Vec<serde_json::Value> = topic.into_iter().map(|(_, v)| v).collect();
    topic.sort_by_key(|v| v["kafka_offset"].as_i64());
    let offsets: Vec<i64> = topic
        .iter()
        .map(|v| v["kafka_offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, [0, 2], "{topic:?}");
    let shrunk = &topic[0];
    assert_eq!(shrunk["trace_id"].as_str().unwrap().len(), 256);
    assert!(shrunk["payload"].as_str().unwrap().starts_with("<withheld"));
    drop_database(&cfg).await;
}
