//! No patient identifier reaches the logs, at any level.

use dicom_pipeline::compute::synth::{ct_file_bytes, CtSpec};
use dicom_pipeline::pipeline;

use crate::common::*;

/// The pipeline runs with tracing at TRACE (every crate) over files and messages carrying
/// distinctive patient identifiers — good files, a file missing its SOP UID, a bad message
/// that names a patient — and its whole log is searched for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_patient_identifiers_in_trace_logs() {
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(2, vec![work.path().to_path_buf()]);
    let name = "Zyxwvut^Qponml";
    let pid = "PHI-7731-QX";
    let mut payloads = Vec::new();
    for i in 1..=6 {
        let spec = CtSpec {
            patient_name: name.into(),
            patient_id: pid.into(),
            omit_sop_uid: i == 6,
            ..CtSpec::numbered("1.2.826.0.1.3680043.10.995", 1, 1, 1, i)
        };
        let path = work.path().join(format!("i{i}.dcm"));
        std::fs::write(&path, ct_file_bytes(&spec)).unwrap();
        payloads.push(store_message(&path, &format!("t{i}")));
    }
    payloads.push(format!(r#"{{"patient_id":"{pid}","broken":"#).into_bytes());
    pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, None, &payloads).await;

    let mut cmd = run_command(&cfg, work.path());
    cmd.args(["--until-idle", "1.5"]).env("RUST_LOG", "trace");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.lines().count() > 100,
        "expected a TRACE-level log, got:\n{log}"
    );
    // The identifiers did flow through the pipeline…
    assert_eq!(
        count(
            &cfg,
            "SELECT count() FROM dicom_image FINAL WHERE patient_id = 'PHI-7731-QX'"
        )
        .await,
        5
    );
    assert_eq!(count(&cfg, "SELECT count() FROM dicom_dlq FINAL").await, 2);
    // …but never into the log.
    for needle in [pid, name, "Zyxwvut", "Qponml", "19700101", "ACC0001"] {
        assert!(!log.contains(needle), "log contains {needle:?}");
    }
    drop_database(&cfg).await;
}
