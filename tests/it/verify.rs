//! `verify`, the completeness audit, against the real broker and ClickHouse.

use std::time::Duration;

use dicom_pipeline::pipeline;

use crate::common::*;

fn verify_command(cfg: &dicom_pipeline::config::Config) -> std::process::Command {
    let mut c = bin();
    kafka_env(&mut c, cfg)
        .env("CLICKHOUSE_URL", &cfg.clickhouse.url)
        .env(
            "DICOM_PIPELINE_CLICKHOUSE__DATABASE",
            &cfg.clickhouse.database,
        )
        .args(["verify", "--json"]);
    c
}

/// A finished run audits complete (exit 0), with the dead letters by reason; messages
/// published after it, and rows lost from `dicom_store` and `dicom_image`, make it incomplete
/// (exit 1) and are named by partition and offset; an unreachable broker is exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_proves_a_run_complete_and_finds_what_is_missing() {
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(2, vec![work.path().to_path_buf()]);
    let mut payloads = synth_messages(work.path(), "1.2.826.0.1.3680043.10.966", 10, 2);
    payloads.push(b"{not json".to_vec());
    payloads.push(store_message(&work.path().join("gone.dcm"), "gone"));
    pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, Some(0), &payloads).await;
    run_until_idle(&cfg).await;

    let out = output_of(verify_command(&cfg)).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let a: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(a["complete"], true);
    assert_eq!(
        (a["messages"].as_u64(), a["indexed"].as_u64()),
        (Some(12), Some(10))
    );
    assert_eq!(a["dead_lettered"], 2);
    let reasons: Vec<(String, u64)> =
        serde_json::from_value(a["dead_letters_by_reason"].clone()).unwrap();
    assert_eq!(
        reasons,
        [
            ("bad_json".to_string(), 1),
            ("file_not_found".to_string(), 1)
        ]
    );

    // Two more messages nobody processed, an image row and a store row lost.
    publish(
        &cfg,
        Some(1),
        &synth_messages(work.path(), "1.2.826.0.1.3680043.10.965", 2, 1),
    )
    .await;
    let ch = ch(&cfg);
    ch.query("ALTER TABLE dicom_store DELETE WHERE kafka_partition = 0 AND kafka_offset = 3")
        .with_setting("mutations_sync", "1")
        .execute()
        .await
        .unwrap();
    let lost_sop: String = ch
        .query(
            "SELECT sop_uid FROM dicom_store FINAL WHERE kafka_offset = 5 AND kafka_partition = 0",
        )
        .fetch_one()
        .await
        .unwrap();
    ch.query("ALTER TABLE dicom_image DELETE WHERE sop_uid = ?")
        .bind(&lost_sop)
        .with_setting("mutations_sync", "1")
        .execute()
        .await
        .unwrap();
    let out = output_of(verify_command(&cfg)).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(a["complete"], false);
    assert_eq!(a["missing"], 3, "{a}");
    let ranges = |p: usize| a["partitions"][p]["missing_ranges"].clone();
    assert_eq!(ranges(0), serde_json::json!([{"first": 3, "last": 3}]));
    assert_eq!(ranges(1), serde_json::json!([{"first": 0, "last": 1}]));
    assert_eq!(a["indexed_without_image"], 1);
    assert_eq!(
        a["indexed_without_image_sample"],
        serde_json::json!([[0, 5]])
    );

    // The text form says the same.
    let plain = {
        let mut c = bin();
        kafka_env(&mut c, &cfg)
            .env("CLICKHOUSE_URL", &cfg.clickhouse.url)
            .env(
                "DICOM_PIPELINE_CLICKHOUSE__DATABASE",
                &cfg.clickhouse.database,
            )
            .arg("verify");
        output_of(c).await
    };
    let shown = String::from_utf8_lossy(&plain.stdout);
    assert!(
        shown.contains("INCOMPLETE") && shown.contains("(3)") && shown.contains("(0-1)"),
        "{shown}"
    );

    // Nothing answers: cannot audit.
    let mut down = cfg.clone();
    down.kafka.brokers = format!("127.0.0.1:{}", free_port());
    let started = std::time::Instant::now();
    let out = output_of(verify_command(&down)).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot audit"));
    assert!(started.elapsed() < Duration::from_secs(30));
    drop_database(&cfg).await;
}
