//! Operating it: the metrics and health endpoints of a running process, `status`, and the
//! secondary storage root — all against the real broker and ClickHouse.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dicom_pipeline::pipeline;

use crate::common::*;

/// Scrape `addr` until `done` holds for the exposition (the last one in the panic otherwise).
async fn wait_metrics(addr: &str, within: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some((200, text)) = http_get(addr, "/metrics").await {
            if done(&text) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("metrics never reached the expected state; last scrape:\n{last}");
}

async fn wait_status(addr: &str, path: &str, want: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        match http_get(addr, path).await {
            Some((status, body)) if status == want => return body,
            other => last = other,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{path} never answered {want}; last: {last:?}");
}

/// `run` against `cfg` with its endpoint on `addr`, output discarded (killed when dropped).
fn spawn_run(cfg: &dicom_pipeline::config::Config, root: &std::path::Path, addr: &str) -> Proc {
    let mut run = run_command(cfg, root);
    run.args(["--metrics-listen", addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    Proc::spawn(run)
}

/// Partitions that have a series of `name` in an exposition.
fn partitions_of(text: &str, name: &str) -> BTreeSet<i32> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| {
            let p = l.split("partition=\"").nth(1)?;
            p.split('"').next()?.parse().ok()
        })
        .collect()
}

fn sum_of(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A run over good and bad input, watched through its endpoint: every counter, histogram and
/// per-partition gauge tells what happened; then `status` reads the same totals from the
/// broker and ClickHouse, and names ClickHouse when it cannot reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_status_report_what_a_run_did() {
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(4, vec![work.path().to_path_buf()]);
    let mut payloads = synth_messages(work.path(), "1.2.826.0.1.3680043.10.981", 12, 3);
    let junk = work.path().join("junk.dcm");
    std::fs::write(&junk, b"not a DICOM file at all").unwrap();
    payloads.push(store_message(&junk, "junk"));
    payloads.push(store_message(&work.path().join("gone.dcm"), "gone"));
    payloads.push(b"{oops".to_vec());
    pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, None, &payloads).await;

    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = spawn_run(&cfg, work.path(), &addr);

    let ready = wait_status(&addr, "/readyz", 200, Duration::from_secs(60)).await;
    assert!(ready.starts_with("ready: "), "{ready}");
    // Lag is there from the first assignment (it used to wait for the watchdog's first
    // tick, 15 s into a run with the default session timeout).
    let assigned_at = Instant::now();
    wait_metrics(&addr, Duration::from_secs(60), |t| {
        t.contains("dicom_pipeline_partition_lag{")
    })
    .await;
    assert!(
        assigned_at.elapsed() < Duration::from_secs(3),
        "partition_lag appeared {:?} after the first assignment",
        assigned_at.elapsed()
    );
    assert_eq!(
        http_get(&addr, "/healthz").await,
        Some((200, "ok\n".into()))
    );
    assert_eq!(http_get(&addr, "/nope").await.map(|r| r.0), Some(404));

    let m = |t: &str, s: &str| metric(t, s).unwrap_or(-1.0);
    let input = &cfg.kafka.input_topic;
    let text = wait_metrics(&addr, Duration::from_secs(60), |t| {
        m(
            t,
            &format!("dicom_pipeline_messages_consumed_total{{topic=\"{input}\"}}"),
        ) == 15.0
            && m(t, "dicom_pipeline_sink_rows_total{table=\"dicom_store\"}") == 15.0
            && m(t, "dicom_pipeline_in_flight") == 0.0
            // committed offsets: one past the last offset of each partition, 15 in all
            && sum_of(t, "dicom_pipeline_partition_committed_offset") == 15.0
            // lag comes from the lag reader (every session_timeout / 2 = 5 s here)
            && partitions_of(t, "dicom_pipeline_partition_lag").len() == 4
            && sum_of(t, "dicom_pipeline_partition_lag") == 0.0
            // each worker sets its partitions' window gauges at its next commit tick
            && partitions_of(t, "dicom_pipeline_partition_watermark_gap").len() == 4
    })
    .await;
    let image = &cfg.kafka.image_topic;
    let dlq = &cfg.kafka.dlq_topic;
    for (series, want) in [
        (
            "dicom_pipeline_sink_rows_total{table=\"dicom_image\"}",
            12.0,
        ),
        ("dicom_pipeline_sink_rows_total{table=\"dicom_dlq\"}", 3.0),
        (
            &format!("dicom_pipeline_messages_produced_total{{topic=\"{image}\"}}"),
            12.0,
        ),
        (
            &format!("dicom_pipeline_messages_produced_total{{topic=\"{dlq}\"}}"),
            3.0,
        ),
        (
            "dicom_pipeline_dlq_records_total{reason=\"not_dicom\"}",
            1.0,
        ),
        (
            "dicom_pipeline_dlq_records_total{reason=\"file_not_found\"}",
            1.0,
        ),
        ("dicom_pipeline_dlq_records_total{reason=\"bad_json\"}", 1.0),
        (
            "dicom_pipeline_dlq_records_total{reason=\"truncated\"}",
            0.0,
        ),
        (
            "dicom_pipeline_stage_duration_seconds_count{stage=\"decode\"}",
            12.0,
        ),
        (
            "dicom_pipeline_stage_duration_seconds_count{stage=\"produce\"}",
            12.0,
        ),
        (
            "dicom_pipeline_stage_duration_seconds_count{stage=\"sink\"}",
            12.0,
        ),
        // read and parse: the 12 images and the junk file (the missing one is never read)
        (
            "dicom_pipeline_stage_duration_seconds_count{stage=\"read\"}",
            13.0,
        ),
        ("dicom_pipeline_assigned_partitions", 4.0),
        ("dicom_pipeline_ready", 1.0),
        ("dicom_pipeline_consume_errors_total", 0.0),
        ("dicom_pipeline_sink_errors_total{kind=\"retryable\"}", 0.0),
    ] {
        assert_eq!(metric(&text, series), Some(want), "{series} in\n{text}");
    }
    assert_eq!(
        partitions_of(&text, "dicom_pipeline_partition_watermark_gap"),
        (0..4).collect()
    );
    assert!(text.ends_with("# EOF\n"));

    // status: the same totals, read from the broker and ClickHouse.
    let mut status = bin();
    kafka_env(&mut status, &cfg)
        .env("CLICKHOUSE_URL", &cfg.clickhouse.url)
        .env(
            "DICOM_PIPELINE_CLICKHOUSE__DATABASE",
            &cfg.clickhouse.database,
        )
        .args(["status", "--json"]);
    let out = status.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["input"]["lag"], 0, "{json}");
    assert_eq!(json["input"]["partitions"].as_array().unwrap().len(), 4);
    let tables: Vec<(String, u64)> =
        serde_json::from_value(json["sink"]["tables"].clone()).unwrap();
    assert_eq!(
        tables,
        vec![
            ("dicom_image".to_string(), 12),
            ("dicom_state".to_string(), 3),
            ("dicom_store".to_string(), 15),
            ("dicom_dlq".to_string(), 3),
        ]
    );
    let reasons: Vec<(String, u64)> =
        serde_json::from_value(json["sink"]["dead_letters"].clone()).unwrap();
    assert_eq!(
        reasons,
        vec![
            ("bad_json".to_string(), 1),
            ("file_not_found".to_string(), 1),
            ("not_dicom".to_string(), 1),
        ]
    );
    let mut plain = bin();
    kafka_env(&mut plain, &cfg)
        .env("CLICKHOUSE_URL", &cfg.clickhouse.url)
        .env(
            "DICOM_PIPELINE_CLICKHOUSE__DATABASE",
            &cfg.clickhouse.database,
        )
        .arg("status");
    let text = printed_config(&mut plain);
    assert!(text.contains("not_dicom\t1"), "{text}");
    assert!(text.contains("dicom_image\t12"), "{text}");

    // ClickHouse unreachable: the partitions still print, the command fails naming it.
    let mut broken = bin();
    kafka_env(&mut broken, &cfg)
        .env("CLICKHOUSE_URL", "http://127.0.0.1:1")
        .arg("status");
    let out = broken.output().unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("total\t\t\t0"), "{stdout}");
    assert!(stderr.contains("ClickHouse"), "{stderr}");

    sigterm(child.id());
    let exited = child.wait(Duration::from_secs(30)).await;
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
    drop_database(&cfg).await;
}

/// Two processes share a group: after the second joins, each one's endpoint reports exactly
/// the partitions it owns — the first one's series of the partitions it gave up are gone,
/// not left stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_partitions_leave_the_metrics() {
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(4, vec![work.path().to_path_buf()]);
    pipeline::ensure_schema(&cfg).await.unwrap();
    let spawn = |addr: &str| spawn_run(&cfg, work.path(), addr);
    let gap = "dicom_pipeline_partition_watermark_gap";
    let a_addr = format!("127.0.0.1:{}", free_port());
    let mut a = spawn(&a_addr);
    wait_metrics(&a_addr, Duration::from_secs(60), |t| {
        partitions_of(t, gap).len() == 4
    })
    .await;

    let b_addr = format!("127.0.0.1:{}", free_port());
    let mut b = spawn(&b_addr);
    let assigned = |t: &str| metric(t, "dicom_pipeline_assigned_partitions").unwrap_or(0.0);
    let deadline = Instant::now() + Duration::from_secs(90);
    let (a_parts, b_parts) = loop {
        let a_text = http_get(&a_addr, "/metrics").await.unwrap_or_default().1;
        let b_text = http_get(&b_addr, "/metrics").await.unwrap_or_default().1;
        let (pa, pb) = (partitions_of(&a_text, gap), partitions_of(&b_text, gap));
        let settled = assigned(&a_text) > 0.0
            && assigned(&b_text) > 0.0
            && assigned(&a_text) + assigned(&b_text) == 4.0
            && pa.len() as f64 == assigned(&a_text)
            && pb.len() as f64 == assigned(&b_text);
        if settled {
            break (pa, pb);
        }
        assert!(
            Instant::now() < deadline,
            "never settled: a {pa:?} ({}), b {pb:?} ({})",
            assigned(&a_text),
            assigned(&b_text)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(a_parts.is_disjoint(&b_parts), "{a_parts:?} {b_parts:?}");
    assert_eq!(
        a_parts.union(&b_parts).copied().collect::<BTreeSet<_>>(),
        (0..4).collect()
    );
    for child in [&mut b, &mut a] {
        sigterm(child.id());
        assert!(child.wait(Duration::from_secs(30)).await.is_some());
    }
    drop_database(&cfg).await;
}

/// `/readyz` follows the sink: 503 naming it while ClickHouse is cut off, 200 again when it
/// is back (probed every 5 s); `/healthz` stays 200 throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_sink() {
    let work = tempfile::tempdir().unwrap();
    let direct = test_config(2, vec![work.path().to_path_buf()]);
    pipeline::ensure_schema(&direct).await.unwrap();
    let (proxy, cfg) = CuttableProxy::in_front_of_clickhouse(&direct).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = spawn_run(&cfg, work.path(), &addr);
    wait_status(&addr, "/readyz", 200, Duration::from_secs(60)).await;

    proxy.set_up(false);
    let body = wait_status(&addr, "/readyz", 503, Duration::from_secs(20)).await;
    assert!(body.contains("sink unreachable"), "{body}");
    assert_eq!(http_get(&addr, "/healthz").await.map(|r| r.0), Some(200));
    let text = http_get(&addr, "/metrics").await.unwrap().1;
    assert_eq!(metric(&text, "dicom_pipeline_ready"), Some(0.0));

    proxy.set_up(true);
    wait_status(&addr, "/readyz", 200, Duration::from_secs(20)).await;
    sigterm(child.id());
    assert!(child.wait(Duration::from_secs(30)).await.is_some());
    drop_database(&direct).await;
}

/// A metrics port that is taken fails the start with a message naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_metrics_port_fails_the_start() {
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(1, vec![work.path().to_path_buf()]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut run = run_command(&cfg, work.path());
    run.args(["--metrics-listen", &addr]);
    let out = output_of(run).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("binding the metrics endpoint") && stderr.contains(&addr),
        "{stderr}"
    );
}

/// Files missing from the primary archive are read from the secondary copy (same relative
/// path); the row keeps the path the store message named; a file in neither is
/// `file_not_found`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_files_are_read_from_the_secondary_root() {
    use dicom_pipeline::compute::synth::{ct_file_bytes, CtSpec};
    let primary = tempfile::tempdir().unwrap();
    let mirror = tempfile::tempdir().unwrap();
    let mut cfg = test_config(2, vec![primary.path().to_path_buf()]);
    cfg.pipeline.secondary_storage_root = mirror.path().to_path_buf();
    cfg.validate_for_run().unwrap();
    let root = "1.2.826.0.1.3680043.10.982";
    let mut payloads = Vec::new();
    for i in 1..=6 {
        // 1-3 in the primary archive, 4-6 only in the mirror (under a subfolder).
        let bytes = ct_file_bytes(&CtSpec::numbered(root, 1, 1, 1, i));
        let rel = format!("study/i{i}.dcm");
        let dir = if i <= 3 {
            primary.path()
        } else {
            mirror.path()
        };
        std::fs::create_dir_all(dir.join("study")).unwrap();
        std::fs::write(dir.join(&rel), bytes).unwrap();
        payloads.push(store_message(&primary.path().join(&rel), &format!("t{i}")));
    }
    payloads.push(store_message(
        &primary.path().join("study/nowhere.dcm"),
        "t7",
    ));
    pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, None, &payloads).await;
    run_until_idle(&cfg).await;

    let rows = image_rows(&cfg).await;
    assert_eq!(rows.len(), 6, "{rows:?}");
    let primary_prefix = primary.path().to_str().unwrap();
    assert!(
        rows.iter().all(|r| r.file_path.starts_with(primary_prefix)),
        "{rows:?}"
    );
    let dlq = dlq_rows(&cfg).await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0].reason, "file_not_found");
    drop_database(&cfg).await;
}
