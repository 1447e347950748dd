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
    let out = succeeded(cmd).await;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log.contains('\x1b'),
        "escape codes in a log that is not a terminal"
    );
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
    // Each message's lines carry its span: topic, partition, offset, trace id (t6 was
    // dead-lettered, which is logged).
    assert!(
        log.lines()
            .any(|l| l.contains("message{topic=") && l.contains("trace_id=t6}")),
        "no message span with the trace id in the log:\n{}",
        log.lines()
            .filter(|l| l.contains("dead-lettering"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // …but never into the log.
    for needle in [pid, name, "Zyxwvut", "Qponml", "19700101", "ACC0001"] {
        assert!(!log.contains(needle), "log contains {needle:?}");
    }
    drop_database(&cfg).await;
}

/// With `privacy.pseudonymize` and a key, PatientID, PatientName and AccessionNumber reach
/// no topic and no table: the rows carry the keyed pseudonym (the same for every instance of
/// the patient, so counting and joining still work), the dead letter of a bad message that
/// names the patient carries the pseudonym or nothing, and the log at TRACE none of either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pseudonymization_keeps_identifiers_out_of_topics_and_tables() {
    use dicom_pipeline::config::PrivacyConfig;
    use dicom_pipeline::privacy::Pseudonymizer;

    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(2, vec![work.path().to_path_buf()]);
    let key = "it-pseudonym-key-0123456789abcdef-0123456789";
    let name = "Qwertzu^Asdfgh";
    let pid = "PHI-5512-ZK";
    let accession = "ACC0001"; // what synth writes
    let mut payloads = Vec::new();
    for i in 1..=4 {
        let spec = CtSpec {
            patient_name: name.into(),
            patient_id: pid.into(),
            ..CtSpec::numbered("1.2.826.0.1.3680043.10.996", 1, 1, 1, i)
        };
        let path = work.path().join(format!("i{i}.dcm"));
        std::fs::write(&path, ct_file_bytes(&spec)).unwrap();
        payloads.push(store_message(&path, &format!("t{i}")));
    }
    // A store message naming the patient, for a file that is not there, and one that is
    // not even JSON: both dead letters.
    let missing = work.path().join("missing.dcm");
    payloads.push(
        format!(
            r#"{{"trace_id":"t5","tenant_id":"t","file_path":"{}","received_at":"2026-01-01T00:00:00Z","patient_id":"{pid}"}}"#,
            missing.display()
        )
        .into_bytes(),
    );
    payloads.push(format!(r#"{{"patient_id":"{pid}","broken":"#).into_bytes());
    pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, None, &payloads).await;

    let mut cmd = run_command(&cfg, work.path());
    cmd.args(["--until-idle", "1.5"])
        .env("RUST_LOG", "trace")
        .env("DICOM_PIPELINE_PRIVACY__PSEUDONYMIZE", "true")
        .env("DICOM_PIPELINE_PRIVACY__KEY", key);
    let out = succeeded(cmd).await;
    let log = String::from_utf8_lossy(&out.stderr);

    let p = Pseudonymizer::new(&PrivacyConfig {
        pseudonymize: true,
        key: key.into(),
    });
    let (p_pid, p_name, p_acc) = (p.pseudonym(pid), p.pseudonym(name), p.pseudonym(accession));
    assert_eq!(
        count(
            &cfg,
            &format!("SELECT count() FROM dicom_image FINAL WHERE patient_id = '{p_pid}'")
        )
        .await,
        4
    );
    assert_eq!(
        count(
            &cfg,
            &format!(
                "SELECT count() FROM dicom_state FINAL WHERE patient_id = '{p_pid}' \
                 AND patient_name = '{p_name}' AND accession_number = '{p_acc}'"
            )
        )
        .await,
        1
    );
    assert_eq!(count(&cfg, "SELECT count() FROM dicom_dlq FINAL").await, 2);
    for needle in [pid, name, accession] {
        for (table, columns) in [
            ("dicom_image", "patient_id, file_path"),
            ("dicom_state", "patient_id, patient_name, accession_number"),
            ("dicom_dlq", "payload, error, file_path"),
        ] {
            let sql = format!(
                "SELECT count() FROM {table} WHERE position(concat({columns}), '{needle}') > 0"
            );
            assert_eq!(count(&cfg, &sql).await, 0, "{needle} in {table}");
        }
        for topic in [
            &cfg.kafka.image_topic,
            &cfg.kafka.state_topic,
            &cfg.kafka.dlq_topic,
        ] {
            for (key, record) in read_topic(&cfg, topic) {
                let text = record.to_string();
                assert!(!text.contains(needle), "{needle} on {topic}: {text}");
                assert!(!key.contains(needle));
            }
        }
        assert!(!log.contains(needle), "log contains {needle:?}");
    }
    // The dead letter of the JSON message shows the pseudonym in place of the identifier.
    let dlq = read_topic(&cfg, &cfg.kafka.dlq_topic);
    assert!(
        dlq.iter()
            .any(|(_, r)| r["payload"].as_str().is_some_and(|s| s.contains(&p_pid))),
        "{dlq:?}"
    );
    assert!(!log.contains(&p_pid), "the log shows no pseudonym either");
    drop_database(&cfg).await;
}
