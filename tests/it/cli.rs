//! The binary's contract: exit codes, messages, signals.

use std::time::{Duration, Instant};

use dicom_pipeline::compute::synth::{ct_file_bytes, CtSpec};
use dicom_pipeline::pipeline;

use crate::common::*;

#[test]
fn run_refuses_to_start_without_a_storage_root() {
    let out = bin().args(["run"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("storage-root"), "{err}");
}

#[test]
fn unknown_config_keys_are_rejected_by_name() {
    let out = bin()
        .args(["--print-config", "schema"])
        .env("DICOM_PIPELINE_SINK__MAX_ROWZ", "5")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DICOM_PIPELINE_SINK__MAX_ROWZ unknown key"),
        "{err}"
    );
}

/// `DICOM_PIPELINE_CONFIG` (the `--config` flag's variable) names the file; it is not read
/// as a config key (it once was, and `deny_unknown_fields` refused every run that set it).
#[test]
fn the_config_file_can_be_named_by_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "[kafka.extra]\n\"linger.ms\" = \"42\"\n[sink]\nmax_rows = 77\n",
    )
    .unwrap();
    let text = printed_config(
        bin()
            .args(["--print-config", "schema"])
            .env("DICOM_PIPELINE_CONFIG", &file),
    );
    assert!(text.contains("max_rows = 77"), "{text}");
    assert!(text.contains("\"linger.ms\" = \"42\""), "{text}");
}

#[test]
fn print_config_shows_flags_and_env_and_redacts_secrets() {
    let text = printed_config(
        bin()
            .args(["--print-config", "--group", "g-from-flag", "schema"])
            .env("DICOM_PIPELINE_CLICKHOUSE__PASSWORD", "hunter2")
            .env("KAFKA_BROKERS", "broker.example:9092"),
    );
    assert!(text.contains("g-from-flag"), "{text}");
    assert!(text.contains("broker.example:9092"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

/// SIGTERM mid-run: the process drains and exits 0 well within the drain deadline, commits
/// only finished work, and a restart completes the rest with every instance indexed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_commits_and_a_restart_finishes_the_job() {
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(2, vec![work.path().to_path_buf()]);
    let n = 400u32;
    let payloads = synth_messages(work.path(), "1.2.826.0.1.3680043.10.997", n, 7);
    pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, None, &payloads).await;

    let run = |until_idle: bool| {
        let mut c = run_command(&cfg, work.path());
        c.env("DICOM_PIPELINE_PIPELINE__MAX_IN_FLIGHT", "8")
            .env("DICOM_PIPELINE_SINK__MAX_ROWS", "20");
        if until_idle {
            c.args(["--until-idle", "1.5"]);
        }
        c
    };

    let child = run(false).spawn().unwrap();
    let pid = child.id();
    // Wait until some (not all) instances are in ClickHouse, then SIGTERM.
    let started = Instant::now();
    loop {
        let have = count(&cfg, "SELECT count() FROM dicom_image").await;
        if have >= 20 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "pipeline made no progress"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = Instant::now();
    sigterm(pid);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let took = sent.elapsed();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(6), "drain took {took:?}");

    // Committed offsets cover only finished messages: each committed offset's predecessors
    // are all in dicom_store.
    assert_commits_backed_by_rows(&cfg, &cfg).await;

    let second = run(true);
    let _out = succeeded(second).await;
    assert_eq!(
        count(&cfg, "SELECT count() FROM dicom_image FINAL").await,
        n as u64
    );
    assert_eq!(count(&cfg, "SELECT count() FROM dicom_dlq").await, 0);
    assert_eq!(lag(&cfg).await, 0);
    // The restart redid at most what was in flight at the SIGTERM (2 workers × 8).
    let records = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || read_topic(&cfg, &cfg.kafka.image_topic))
            .await
            .unwrap()
    };
    let redone = records.len() as i64 - i64::from(n);
    assert!(
        (0..=16).contains(&redone),
        "{redone} image records beyond one per instance"
    );
    eprintln!("SIGTERM: drained in {took:?}; the restart redid {redone} messages");
    drop_database(&cfg).await;
}

/// `derive` prints one JSON line per file — attributes, or the failure reason — and a
/// files/s summary on stderr, without any service.
#[test]
fn derive_prints_one_line_per_file_and_a_summary() {
    let work = tempfile::tempdir().unwrap();
    let spec = CtSpec::default();
    std::fs::write(work.path().join("good.dcm"), ct_file_bytes(&spec)).unwrap();
    std::fs::write(work.path().join("notes.txt"), "not dicom\n".repeat(30)).unwrap();
    std::fs::write(work.path().join("empty.dcm"), b"").unwrap();
    let out = bin()
        .args(["derive", "--mode", "header_only", "--threads", "2"])
        .arg(work.path())
        .env("KAFKA_BROKERS", "127.0.0.1:1") // never contacted
        .output()
        .unwrap();
    // Two of three files failed: exit 1.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let by_name = |n: &str| {
        lines
            .iter()
            .find(|v| v["file_path"].as_str().unwrap().ends_with(n))
            .unwrap()
            .clone()
    };
    let good = by_name("good.dcm");
    assert_eq!(good["sop_uid"], spec.sop_uid.as_str());
    assert_eq!(good["header_digest"].as_str().unwrap().len(), 64);
    // header_only: no pixels read, so no pixel columns.
    assert!(good["pixel_min"].is_null() && good["pixel_digest"].is_null());
    assert_eq!(by_name("notes.txt")["reason"], "not_dicom");
    assert_eq!(by_name("empty.dcm")["reason"], "not_dicom");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("files=3 failed=2")
            && err.contains("mode=header_only")
            && err.contains("files/s"),
        "{err}"
    );

    // full: the pixel keys the dicom_image columns carry, equal to the library's result.
    let out = bin()
        .args(["derive", "--mode", "full"])
        .arg(work.path().join("good.dcm"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = dicom_pipeline::compute::derive_bytes(
        &ct_file_bytes(&spec),
        dicom_pipeline::compute::Mode::Full,
        Default::default(),
    )
    .unwrap();
    let px = want.pixels.unwrap();
    assert_eq!(line["pixel_min"], px.min);
    assert_eq!(line["pixel_max"], px.max);
    assert_eq!(line["pixel_mean"], px.mean);
    assert_eq!(line["pixel_std"], px.std);
    assert_eq!(line["pixel_digest"], px.digest.as_str());
    assert_eq!(line["modality_min"], px.modality.unwrap().min);
    assert_eq!(line["header_digest"], want.header_digest.as_str());
}
