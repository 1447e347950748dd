//! Fault behaviour with real services: crashes, outages, restarts, rebalances.
//!
//! CI runs a short version of each test (fewer instances, same assertions); set
//! `DP_FAULT_SCALE=full` for the sizes of the delivery-guarantee issue (20,000 instances).
//! Each test prints what it measured (duplicates, recovery times) on stderr: run with
//! `--nocapture` to see it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dicom_pipeline::compute::synth::CtSpec;
use dicom_pipeline::config::Config;
use dicom_pipeline::pipeline;
use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// A TCP proxy in front of ClickHouse that can be cut: while cut, existing connections are
/// dropped and new ones are closed at once — to the pipeline, the server is down.
struct CuttableProxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl CuttableProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut client, _)) = accepted else { continue };
                        if !up2.load(Ordering::SeqCst) {
                            continue; // dropped: connection closed
                        }
                        let upstream = upstream.clone();
                        conns.spawn(async move {
                            if let Ok(mut server) = TcpStream::connect(&upstream).await {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        });
                    }
                    _ = cut2.notified() => conns.abort_all(),
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        CuttableProxy { addr, up, cut }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.cut.notify_one();
        }
    }
}

/// ClickHouse goes away mid-run: rows wait (retried with backoff), nothing is committed past
/// unsunk rows while it is down, and once it is back everything is indexed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_outage_loses_nothing_and_commits_nothing_unsunk() {
    let work = tempfile::tempdir().unwrap();
    let direct = test_config(2, vec![work.path().to_path_buf()]);
    let proxy = CuttableProxy::start(
        direct
            .clickhouse
            .url
            .trim_start_matches("http://")
            .to_string(),
    )
    .await;
    let mut cfg = direct.clone();
    cfg.clickhouse.url = format!("http://{}", proxy.addr);
    cfg.sink.max_rows = 25;
    cfg.sink.retry_max_ms = 500;
    cfg.pipeline.max_in_flight = 50;

    let n = 300u32;
    let payloads = synth_messages(work.path(), "1.2.826.0.1.3680043.10.994", n, 5);
    pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, None, &payloads).await;

    let run = tokio::spawn(pipeline::run(
        cfg.clone(),
        Some(Duration::from_millis(1500)),
        CancellationToken::new(),
    ));
    let started = Instant::now();
    while count(&direct, "SELECT count() FROM dicom_store").await < 30 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no progress before the outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.set_up(false);
    let outage = Instant::now();
    let before = count(&direct, "SELECT count() FROM dicom_store FINAL").await;
    while outage.elapsed() < Duration::from_secs(4) {
        assert_commits_backed_by_rows(&direct, &cfg).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Nothing was written while it was down, and the pipeline is still waiting, not done.
    assert!(count(&direct, "SELECT count() FROM dicom_store FINAL").await <= before + 25);
    assert!(!run.is_finished(), "the pipeline gave up during the outage");
    proxy.set_up(true);

    let summary = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("finished after the outage")
        .unwrap()
        .unwrap();
    assert_eq!(summary.workers.abandoned, 0, "{summary:?}");
    assert!(
        summary.sink.write_retries > 0,
        "the outage was not noticed: {summary:?}"
    );
    assert_eq!(
        count(&direct, "SELECT count() FROM dicom_image FINAL").await,
        n as u64
    );
    assert_eq!(count(&direct, "SELECT count() FROM dicom_dlq").await, 0);
    assert_commits_backed_by_rows(&direct, &cfg).await;
    assert_eq!(lag(&cfg).await, 0);
    drop_database(&direct).await;
}

fn full_scale() -> bool {
    std::env::var("DP_FAULT_SCALE").is_ok_and(|v| v == "full")
}

/// `dicom-pipeline run` with fault-test timings (6 s session, 3 s drain), logging to
/// `log` in the work directory (a pipe nobody reads would stall a long run).
fn fault_run(cfg: &Config, work: &Path, log: &str) -> Command {
    let mut c = run_command(cfg, work);
    c.env("DICOM_PIPELINE_KAFKA__SESSION_TIMEOUT_MS", "6000")
        .env("DICOM_PIPELINE_PIPELINE__DRAIN_TIMEOUT_MS", "3000")
        .env("DICOM_PIPELINE_PIPELINE__MAX_IN_FLIGHT", "200")
        .env("DICOM_PIPELINE_SINK__MAX_ROWS", "200")
        .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join(log)).unwrap());
    c
}

/// The SOP UIDs `synth_messages(dir, root, n, series)` writes.
fn synth_sops(root: &str, n: u32, series: u32) -> BTreeSet<String> {
    (1..=n)
        .map(|i| CtSpec::numbered(root, 1, 1, i % series, i).sop_uid)
        .collect()
}

async fn distinct_indexed(cfg: &Config) -> u64 {
    count(cfg, "SELECT uniqExact(sop_uid) FROM dicom_image").await
}

/// Wait until at least `target` distinct SOPs are indexed; false at the deadline.
async fn wait_indexed(cfg: &Config, target: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if distinct_indexed(cfg).await >= target {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

fn log_tail(work: &Path, log: &str) -> String {
    let text = std::fs::read_to_string(work.join(log)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Run to completion (`--until-idle`), asserting a clean exit.
async fn finish_run(cfg: &Config, work: &Path, log: &str) {
    let mut last = fault_run(cfg, work, log);
    last.args(["--until-idle", "2"]);
    let status = tokio::task::spawn_blocking(move || last.status())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "final run: {status:?}\n{}",
        log_tail(work, log)
    );
}

/// Every expected SOP is in `dicom_image` exactly once after FINAL and on the image topic at
/// least once; nothing was dead-lettered and nothing is left to consume. Returns the
/// duplicates seen (table rows before FINAL, topic records) beyond one per SOP.
async fn assert_indexed_exactly(cfg: &Config, want: &BTreeSet<String>) -> (u64, usize) {
    let n = want.len() as u64;
    let rows: Vec<String> = ch(cfg)
        .query("SELECT sop_uid FROM dicom_image FINAL")
        .fetch_all::<String>()
        .await
        .unwrap();
    assert_eq!(rows.len() as u64, n, "rows after FINAL");
    let got: BTreeSet<String> = rows.into_iter().collect();
    assert_eq!(&got, want, "indexed SOP UIDs");
    let raw = count(cfg, "SELECT count() FROM dicom_image").await;
    let records = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || read_topic(&cfg, &cfg.kafka.image_topic))
            .await
            .unwrap()
    };
    let on_topic: BTreeSet<String> = records
        .iter()
        .map(|(_, v)| v["sop_uid"].as_str().unwrap_or_default().to_string())
        .collect();
    let missing: Vec<&String> = want.difference(&on_topic).take(5).collect();
    assert!(
        missing.is_empty(),
        "records missing on the image topic: {missing:?}"
    );
    assert_eq!(count(cfg, "SELECT count() FROM dicom_dlq").await, 0);
    assert_eq!(lag(cfg).await, 0);
    (raw - n, records.len() - want.len())
}

/// `kill -9` five times at random points of a run, restarting each time: every instance ends
/// up indexed exactly once (after FINAL) and on the image topic at least once. A restarted
/// process must win back every partition — including when tansu 0.6.0 forms the group with
/// empty assignments after a member was killed (the group watchdog rejoins).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_five_times_loses_nothing() {
    let n: u32 = if full_scale() { 20_000 } else { 1_500 };
    let root = "1.2.826.0.1.3680043.10.993";
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(4, vec![work.path().to_path_buf()]);
    let payloads = synth_messages(work.path(), root, n, 20);
    pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, None, &payloads).await;

    let mut rng = rand::rng();
    let mut report = Vec::new();
    for kill in 1..=5 {
        let before = distinct_indexed(&cfg).await;
        let log = format!("run{kill}.log");
        let started = Instant::now();
        let mut child: Child = fault_run(&cfg, work.path(), &log).spawn().unwrap();
        assert!(
            wait_indexed(&cfg, before + 1, Duration::from_secs(90)).await,
            "restart {kill} made no progress\n{}",
            log_tail(work.path(), &log)
        );
        let recovered = started.elapsed();
        // Kill at a random point: after a random share of the run, plus a random delay.
        let target = (before + rng.random_range(1..=u64::from(n) / 10)).min(u64::from(n) - 1);
        wait_indexed(&cfg, target, Duration::from_secs(90)).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let at_kill = distinct_indexed(&cfg).await;
        let rejoins = std::fs::read_to_string(work.path().join(&log))
            .unwrap_or_default()
            .matches("rejoining the group")
            .count();
        report.push(format!(
            "kill {kill}: first new row {:.1} s after restart, {at_kill}/{n} indexed at the kill, {rejoins} watchdog rejoins",
            recovered.as_secs_f64()
        ));
    }
    let started = Instant::now();
    finish_run(&cfg, work.path(), "final.log").await;
    report.push(format!(
        "final run to idle: {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let (table_dups, topic_dups) = assert_indexed_exactly(&cfg, &synth_sops(root, n, 20)).await;
    eprintln!(
        "kill -9 x5 over {n} instances: {table_dups} duplicate rows before FINAL, {topic_dups} duplicate image records on the topic\n  {}",
        report.join("\n  ")
    );
    drop_database(&cfg).await;
}
