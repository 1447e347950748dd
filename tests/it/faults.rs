//! Fault behaviour with real services: crashes, outages, restarts, rebalances.
//!
//! CI runs a short version of each test (fewer instances, same assertions); set
//! `DP_FAULT_SCALE=full` for the sizes of the delivery-guarantee issue (20,000 instances).
//! Each test prints what it measured (duplicates, recovery times) on stderr: run with
//! `--nocapture` to see it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dicom_pipeline::compute::synth::CtSpec;
use dicom_pipeline::config::Config;
use dicom_pipeline::config::GroupProtocol::{self, Classic, Consumer};
use dicom_pipeline::pipeline;
use rand::Rng;

use crate::brokers::PrivateBroker;
use crate::common::*;

/// Resident set size of a process now (`VmRSS`), in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// ClickHouse goes away mid-run (every connection refused or cut, through a proxy — to the
/// pipeline the server is down): rows wait, retried with backoff; the workers stop taking
/// messages once the in-flight bound is reached, so memory stays flat; nothing is committed
/// past unsunk rows while it is down; once it is back everything is indexed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_outage_backpressures_in_bounded_memory_and_loses_nothing() {
    let (n, outage) = if full_scale() {
        (20_000u32, Duration::from_secs(30))
    } else {
        (3_000, Duration::from_secs(8))
    };
    let root = "1.2.826.0.1.3680043.10.994";
    let work = workdir();
    let direct = test_config(4, vec![work.path().to_path_buf()]);
    let (proxy, cfg) = CuttableProxy::in_front_of_clickhouse(&direct).await;
    let want = seed(&direct, work.path(), root, n).await;

    let mut run = fault_run(&cfg, work.path(), "run.log");
    run.args(["--until-idle", "3"])
        .env("DICOM_PIPELINE_SINK__RETRY_MAX_MS", "2000");
    let mut child =
        start_and_progress(run, &direct, u64::from(n) / 5, work.path(), "run.log").await;
    let pid = child.id();
    let rss_before = rss_kib(pid);
    proxy.set_up(false);
    let down = Instant::now();
    let at_cut = count(&direct, "SELECT count() FROM dicom_store FINAL").await;
    let mut rss_max = rss_before;
    let mut commit_checks = 0;
    while down.elapsed() < outage {
        assert_commits_backed_by_rows(&direct, &cfg).await;
        commit_checks += 1;
        rss_max = rss_max.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Nothing (beyond a batch in the air at the cut) was written while it was down, and the
    // pipeline is still waiting, not done.
    let during = count(&direct, "SELECT count() FROM dicom_store FINAL").await;
    assert!(
        during <= at_cut + 200,
        "{during} rows with ClickHouse down (had {at_cut})"
    );
    assert_ne!(lag(&cfg).await, 0, "everything committed during the outage");
    let indexed = distinct_indexed(&direct).await;
    proxy.set_up(true);
    let recovered =
        recovers_and_finishes(&mut child, &direct, indexed, work.path(), "run.log").await;
    let log = std::fs::read_to_string(work.path().join("run.log")).unwrap_or_default();
    let retries = log.matches("sink write failed").count();
    assert!(
        retries > 0,
        "the outage was not noticed\n{}",
        log_tail(work.path(), "run.log")
    );
    // Bounded: in-flight messages are capped, so an outage may not grow the process much.
    assert!(
        rss_max <= 256 * 1024 && rss_max <= rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_max} KiB during the outage"
    );
    let (table_dups, topic_dups) = assert_indexed_exactly(&direct, &want).await;
    eprintln!(
        "ClickHouse down {:.0} s at {at_cut}/{n}: RSS {} MiB before, max {} MiB during; {commit_checks} commit checks while down; {retries} failed writes logged; first new row {:.1} s after it came back; {table_dups} duplicate rows before FINAL, {topic_dups} duplicate image records on the topic",
        outage.as_secs_f64(),
        rss_before / 1024,
        rss_max / 1024,
        recovered.as_secs_f64()
    );
    drop_database(&direct).await;
}

/// The storage root disappears mid-run for a while — renamed away, or a share unmounted —
/// and comes back. Its messages wait: no dead letter, `/readyz` not ready and the metric at 0
/// while it is gone, nothing committed past what was indexed, and everything indexed once it
/// is back. (Before, a backlog's files were dead-lettered `file_not_found` and committed: 18,500
/// of 20,000 after an 8 s rename.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_root_renamed_away_and_back_loses_nothing() {
    storage_outage(Outage::Rename, "1.2.826.0.1.3680043.10.981").await;
}

/// The same with a real unmount: the root is a bind mount of the archive, unmounted (the
/// empty mount point stays, on the parent's file system) and mounted again. Skipped where
/// the test may not mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_root_unmounted_and_mounted_again_loses_nothing() {
    storage_outage(Outage::Unmount, "1.2.826.0.1.3680043.10.980").await;
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outage {
    Rename,
    Unmount,
}

/// `mount --bind from to` (true if it worked).
fn bind_mount(from: &Path, to: &Path) -> bool {
    Command::new("mount")
        .arg("--bind")
        .arg(from)
        .arg(to)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A lazy unmount (`umount -l`): detached at once even while files on it are open, as an
/// operator unmounts a busy share; new opens see the empty mount point.
fn unmount(at: &Path) {
    let status = Command::new("umount").arg("-l").arg(at).status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "umount -l {}",
        at.display()
    );
}

/// Unmounts at drop (a failed test must not leave a mount behind).
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn storage_outage(kind: Outage, uid_root: &str) {
    let (n, gone_for) = if full_scale() {
        (20_000u32, Duration::from_secs(8))
    } else {
        (2_000, Duration::from_secs(4))
    };
    let work = workdir();
    let archive = work.path().join("archive");
    let root = work.path().join("root");
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::create_dir_all(&root).unwrap();
    let _mounted = match kind {
        Outage::Rename => {
            std::fs::remove_dir(&archive).unwrap();
            None
        }
        Outage::Unmount => {
            if !bind_mount(&archive, &root) {
                eprintln!("skipped: this machine does not allow mount --bind");
                return;
            }
            Some(Mounted(root.clone()))
        }
    };
    // Files are written (and named in the messages) under the root.
    let cfg = test_config(4, vec![root.clone()]);
    let want = seed(&cfg, &root, uid_root, n).await;
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut run = fault_run_in(&cfg, &root, work.path(), "run.log");
    run.args(["--until-idle", "3", "--metrics-listen", &metrics]);
    let mut child = start_and_progress(run, &cfg, u64::from(n) / 5, work.path(), "run.log").await;

    match kind {
        Outage::Rename => std::fs::rename(&root, &archive).unwrap(),
        Outage::Unmount => unmount(&root),
    }
    let gone = Instant::now();
    let at_outage = distinct_indexed(&cfg).await;
    let mut not_ready_seen = false;
    let mut metric_zero_seen = false;
    while gone.elapsed() < gone_for {
        assert_commits_backed_by_rows(&cfg, &cfg).await;
        assert_eq!(
            count(&cfg, "SELECT count() FROM dicom_dlq").await,
            0,
            "dead letters during the outage\n{}",
            log_tail(work.path(), "run.log")
        );
        if let Some((status, _)) = http_get(&metrics, "/readyz").await {
            not_ready_seen |= status == 503;
        }
        if let Some((_, text)) = http_get(&metrics, "/metrics").await {
            metric_zero_seen |= text.contains("dicom_pipeline_storage_root_available{root=")
                && text.lines().any(|l| {
                    l.starts_with("dicom_pipeline_storage_root_available") && l.ends_with(" 0")
                });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let during = distinct_indexed(&cfg).await;
    assert_ne!(lag(&cfg).await, 0, "everything committed during the outage");
    match kind {
        Outage::Rename => std::fs::rename(&archive, &root).unwrap(),
        Outage::Unmount => assert!(bind_mount(&archive, &root), "mounting again"),
    }
    let recovered = recovers_and_finishes(&mut child, &cfg, during, work.path(), "run.log").await;
    let log = std::fs::read_to_string(work.path().join("run.log")).unwrap_or_default();
    assert!(not_ready_seen, "/readyz stayed ready during the outage");
    assert!(metric_zero_seen, "storage_root_available never went to 0");
    assert!(
        log.contains("storage root unavailable") && log.contains("available again"),
        "{}",
        log_tail(work.path(), "run.log")
    );
    // The log names the root, never a file.
    assert!(!log.contains(".dcm"), "a file path in the log");
    let (table_dups, topic_dups) = assert_indexed_exactly(&cfg, &want).await;
    eprintln!(
        "storage {kind:?} for {:.0} s at {at_outage}/{n} indexed ({during} when it came back): 0 dead letters, /readyz 503 during it; first new row {:.1} s after it was back; {table_dups} duplicate rows before FINAL, {topic_dups} duplicate image records",
        gone_for.as_secs_f64(),
        recovered.as_secs_f64()
    );
    drop_database(&cfg).await;
}

fn full_scale() -> bool {
    std::env::var("DP_FAULT_SCALE").is_ok_and(|v| v == "full")
}

/// `dicom-pipeline run` with fault-test timings (6 s session, 3 s drain), logging to
/// `log` in the work directory (a pipe nobody reads would stall a long run).
/// The test's working directory (files, logs). `DP_KEEP_FAULT_LOGS=1` keeps it after the
/// test (its path is printed) to read the processes' whole logs.
fn workdir() -> tempfile::TempDir {
    let mut dir = tempfile::Builder::new()
        .prefix("dp-fault-")
        .tempdir()
        .unwrap();
    if std::env::var_os("DP_KEEP_FAULT_LOGS").is_some() {
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    dir
}

fn fault_run(cfg: &Config, work: &Path, log: &str) -> Command {
    fault_run_in(cfg, work, work, log)
}

/// [`fault_run`] with the storage root elsewhere than the log.
fn fault_run_in(cfg: &Config, root: &Path, work: &Path, log: &str) -> Command {
    let mut c = run_command(cfg, root);
    c.env("DICOM_PIPELINE_KAFKA__SESSION_TIMEOUT_MS", "6000")
        .env("DICOM_PIPELINE_PIPELINE__DRAIN_TIMEOUT_MS", "3000")
        .env("DICOM_PIPELINE_PIPELINE__MAX_IN_FLIGHT", "200")
        .env("DICOM_PIPELINE_SINK__MAX_ROWS", "200")
        .env(
            "RUST_LOG",
            std::env::var("DP_FAULT_RUST_LOG")
                .unwrap_or_else(|_| "info,librdkafka=warn,rdkafka=warn".into()),
        )
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join(log)).unwrap());
    c
}

/// Write `n` synthetic instances under `root` (20 series), create the topics and tables, and
/// publish one store message per file. Returns the SOP UIDs that must end up indexed.
async fn seed(cfg: &Config, work: &Path, root: &str, n: u32) -> BTreeSet<String> {
    const SERIES: u32 = 20;
    let payloads = synth_messages(work, root, n, SERIES);
    pipeline::ensure_schema(cfg).await.unwrap();
    publish(cfg, None, &payloads).await;
    (1..=n)
        .map(|i| CtSpec::numbered(root, 1, 1, i % SERIES, i).sop_uid)
        .collect()
}

/// Start `run` and wait until at least `at_least` distinct SOPs are indexed (its log's tail in
/// the failure message otherwise).
async fn start_and_progress(
    run: Command,
    cfg: &Config,
    at_least: u64,
    work: &Path,
    log: &str,
) -> Proc {
    let child = Proc::spawn(run);
    assert!(
        wait_indexed(cfg, at_least, Duration::from_secs(90)).await,
        "no progress to {at_least} indexed\n{}",
        log_tail(work, log)
    );
    child
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

/// Run to completion (`--until-idle`), asserting a clean exit within 5 minutes.
async fn finish_run(cfg: &Config, work: &Path, log: &str) {
    let mut last = fault_run(cfg, work, log);
    last.args(["--until-idle", "2"]);
    let status = Proc::spawn(last).wait(Duration::from_secs(300)).await;
    assert!(
        status.is_some_and(|s| s.success()),
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
    // The completeness audit agrees: every message on the input topic has its terminal row
    // and every indexed row its image row.
    let audit = dicom_pipeline::verify::audit(cfg).await.unwrap();
    assert!(audit.complete, "{}", audit.to_text());
    assert_eq!(
        (audit.messages, audit.indexed),
        (n, n),
        "{}",
        audit.to_text()
    );
    // The series state, in the table and on the topic, holds every instance.
    assert_eq!(
        count(cfg, "SELECT sum(instance_count) FROM dicom_series").await,
        n,
        "dicom_series instances"
    );
    let state = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || read_topic(&cfg, &cfg.kafka.state_topic))
            .await
            .unwrap()
    };
    let on_state_topic: BTreeSet<String> = state
        .iter()
        .flat_map(|(_, v)| v["sop_uids"].as_array().cloned().unwrap_or_default())
        .filter_map(|u| u.as_str().map(str::to_string))
        .collect();
    assert_eq!(&on_state_topic, want, "SOP UIDs on the state topic");
    (raw - n, records.len() - want.len())
}

/// `kill -9` five times at random points of a run, restarting each time: every instance ends
/// up indexed exactly once (after FINAL) and on the image topic at least once. A restarted
/// process must win back every partition — including when tansu 0.6.0 forms the group with
/// empty assignments after a member was killed (the group watchdog rejoins).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_five_times_loses_nothing() {
    kill_9_five_times(Classic, "1.2.826.0.1.3680043.10.993").await;
}

/// The same with the KIP-848 group protocol (`group.protocol=consumer`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_five_times_loses_nothing_kip848() {
    if kip848_available() {
        kill_9_five_times(Consumer, "1.2.826.0.1.3680043.10.985").await;
    }
}

/// Whether the broker has KIP-848 consumer groups (Kafka 4 does, tansu 0.6.0 does not).
fn kip848_available() -> bool {
    let yes = crate::brokers::broker_kind() == crate::brokers::BrokerKind::Kafka;
    if !yes {
        eprintln!("skipped: tansu 0.6.0 has no KIP-848 consumer groups");
    }
    yes
}

/// A config for the fault tests with the given group protocol (the broker's KIP-848 session
/// timeout on the dev nodes is 6 s, as the fault runs' classic one: scripts/dev/kafka/node.sh).
fn fault_config(partitions: i32, work: &Path, protocol: GroupProtocol) -> Config {
    let mut cfg = test_config(partitions, vec![work.to_path_buf()]);
    cfg.kafka.group_protocol = protocol;
    cfg
}

async fn kill_9_five_times(protocol: GroupProtocol, root: &str) {
    let n: u32 = if full_scale() { 20_000 } else { 3_000 };
    let work = workdir();
    let cfg = fault_config(4, work.path(), protocol);
    let want = seed(&cfg, work.path(), root, n).await;

    // Kill k falls at a random point in the k-th sixth of the run (plus a random delay), so
    // every restart has work left however fast the broker is. The seed replays the points.
    let seed: u64 = std::env::var("DP_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("kill -9 x5 ({}): DP_FAULT_SEED={seed}", protocol.as_str());
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let sixth = u64::from(n) / 6;
    let mut report = Vec::new();
    for kill in 1..=5u64 {
        let before = distinct_indexed(&cfg).await;
        let log = format!("run{kill}.log");
        let started = Instant::now();
        let run = fault_run(&cfg, work.path(), &log);
        let mut child = start_and_progress(run, &cfg, before + 1, work.path(), &log).await;
        let recovered = started.elapsed();
        let target = (kill * sixth + rng.random_range(0..sixth / 2)).max(before + 1);
        wait_indexed(&cfg, target, Duration::from_secs(90)).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        child.kill();
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
    let (table_dups, topic_dups) = assert_indexed_exactly(&cfg, &want).await;
    eprintln!(
        "kill -9 x5 ({}) over {n} instances: {table_dups} duplicate rows before FINAL, {topic_dups} duplicate image records on the topic\n  {}",
        protocol.as_str(),
        report.join("\n  ")
    );
    drop_database(&cfg).await;
}

/// Wait until some line of the log file satisfies `found`; false at the deadline.
async fn wait_log(work: &Path, log: &str, found: impl Fn(&str) -> bool, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(work.join(log)).unwrap_or_default();
        if text.lines().any(&found) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Wait for the first row beyond `had` (returning how long that took), then for the run to
/// exit cleanly.
async fn recovers_and_finishes(
    child: &mut Proc,
    cfg: &Config,
    had: u64,
    work: &Path,
    log: &str,
) -> Duration {
    let since = Instant::now();
    assert!(
        wait_indexed(cfg, had + 1, Duration::from_secs(90)).await,
        "no progress after the fault ended\n{}",
        log_tail(work, log)
    );
    let recovered = since.elapsed();
    let status = child.wait(Duration::from_secs(240)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        log_tail(work, log)
    );
    recovered
}

/// The broker is killed (`kill -9`) mid-run and restarted on its persistent storage: the
/// pipeline reconnects, retries what it could not produce or commit, and finishes with every
/// instance indexed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_run_loses_nothing() {
    broker_restart_mid_run(Classic, "1.2.826.0.1.3680043.10.991").await;
}

/// The same with the KIP-848 group protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_run_loses_nothing_kip848() {
    if kip848_available() {
        broker_restart_mid_run(Consumer, "1.2.826.0.1.3680043.10.984").await;
    }
}

async fn broker_restart_mid_run(protocol: GroupProtocol, root: &str) {
    let (n, down_for) = if full_scale() {
        (20_000u32, Duration::from_secs(15))
    } else {
        (2_000, Duration::from_secs(3))
    };
    let mut broker = PrivateBroker::start().await;
    let work = workdir();
    let mut cfg = fault_config(4, work.path(), protocol);
    cfg.kafka.brokers = broker.addr();
    let want = seed(&cfg, work.path(), root, n).await;

    let mut run = fault_run(&cfg, work.path(), "run.log");
    run.args(["--until-idle", "3"]);
    let mut child = start_and_progress(run, &cfg, u64::from(n) / 5, work.path(), "run.log").await;
    broker.kill();
    let at_kill = distinct_indexed(&cfg).await;
    tokio::time::sleep(down_for).await;
    broker.restart().await;
    let recovered = recovers_and_finishes(&mut child, &cfg, at_kill, work.path(), "run.log").await;
    let (table_dups, topic_dups) = assert_indexed_exactly(&cfg, &want).await;
    eprintln!(
        "broker kill -9 + restart ({}) after {:.0} s down, {at_kill}/{n} indexed at the kill: first new row {:.1} s after the restart; {table_dups} duplicate rows before FINAL, {topic_dups} duplicate image records on the topic",
        protocol.as_str(),
        down_for.as_secs_f64(),
        recovered.as_secs_f64()
    );
    drop_database(&cfg).await;
}

/// [`assert_commits_backed_by_rows`] if the group's offsets can be read now; false if they
/// cannot (a broker of the cluster is down and its partitions have no leader yet).
async fn commits_backed_by_rows_if_readable(cfg: &Config) -> bool {
    let reader = cfg.clone();
    let readable =
        tokio::task::spawn_blocking(move || dicom_pipeline::lag::partition_lags(&reader))
            .await
            .unwrap()
            .is_ok();
    if readable {
        assert_commits_backed_by_rows(cfg, cfg).await;
    }
    readable
}

/// The broker id leading `partition` of `topic` (-1 if none does now).
fn leader_of(brokers: &str, topic: &str, partition: i32) -> i32 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    md.topics()[0]
        .partitions()
        .iter()
        .find(|p| p.id() == partition)
        .map_or(-1, |p| p.leader())
}

/// A real cluster: three Kafka nodes (KRaft, each broker and controller), every topic
/// replicated three ways with `min.insync.replicas` 2, producers `acks=all` (librdkafka's
/// default, idempotent). Mid-run the leader of an input partition is killed (`kill -9`) and
/// later restarted, then the leader of an image-topic partition (wherever it is by then).
/// While a node is down the run keeps going on the others, nothing is committed past rows
/// that are not in ClickHouse, and at the end every instance is indexed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kills_in_a_three_node_cluster_lose_nothing() {
    if crate::brokers::broker_kind() == crate::brokers::BrokerKind::Tansu {
        eprintln!("skipped: tansu 0.6.0 has no replication");
        return;
    }
    // Enough that work remains after the first node is back (Kafka runs this at
    // ≈1,000 instances/s on two cores, with three JVMs beside it).
    let (n, down_for) = if full_scale() {
        (20_000u32, Duration::from_secs(20))
    } else {
        (8_000, Duration::from_secs(6))
    };
    let root = "1.2.826.0.1.3680043.10.986";
    let mut cluster = PrivateBroker::cluster(3).await;
    let work = workdir();
    let mut cfg = test_config(4, vec![work.path().to_path_buf()]);
    cfg.kafka.brokers = cluster.addr();
    cfg.kafka.replication_factor = 3;
    let want = seed(&cfg, work.path(), root, n).await;

    let mut run = fault_run(&cfg, work.path(), "run.log");
    run.args(["--until-idle", "3"]);
    let mut child = start_and_progress(run, &cfg, u64::from(n) / 6, work.path(), "run.log").await;
    let mut report = Vec::new();
    for (what, topic) in [
        ("input", cfg.kafka.input_topic.clone()),
        ("image", cfg.kafka.image_topic.clone()),
    ] {
        let brokers = cfg.kafka.brokers.clone();
        let leader = tokio::task::spawn_blocking(move || leader_of(&brokers, &topic, 0))
            .await
            .unwrap();
        assert!(leader > 0, "{what} partition 0 has no leader");
        let node = cluster.node_index(leader);
        let at_kill = distinct_indexed(&cfg).await;
        assert!(
            at_kill < u64::from(n),
            "the run ended before the {what} leader was killed"
        );
        cluster.kill_node(node);
        let killed = Instant::now();
        // The run goes on with two of three nodes, and nothing is committed past unsunk rows
        // (checked whenever the offsets can be read: a partition whose leader just died has
        // no end offset to read until the controller has moved its leadership).
        let mut progressed = None;
        let mut checks = 0;
        while killed.elapsed() < down_for || progressed.is_none() || checks == 0 {
            if commits_backed_by_rows_if_readable(&cfg).await {
                checks += 1;
            }
            if progressed.is_none() && distinct_indexed(&cfg).await > at_kill {
                progressed = Some(killed.elapsed());
            }
            assert!(
                killed.elapsed() < Duration::from_secs(90),
                "no progress for 90 s after the {what} leader (node {leader}) was killed\n{}",
                log_tail(work.path(), "run.log")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let restarting = Instant::now();
        cluster.restart_node(node).await;
        report.push(format!(
            "{what} leader (node {leader}) killed at {at_kill}/{n}: first new row {:.1} s later, {checks} commit checks while it was down; restarted node back in {:.1} s",
            progressed.unwrap_or_default().as_secs_f64(),
            restarting.elapsed().as_secs_f64()
        ));
    }
    let status = child.wait(Duration::from_secs(240)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        log_tail(work.path(), "run.log")
    );
    assert_commits_backed_by_rows(&cfg, &cfg).await;
    let (table_dups, topic_dups) = assert_indexed_exactly(&cfg, &want).await;
    eprintln!(
        "three-node cluster over {n} instances:\n  {}\n  {table_dups} duplicate rows before FINAL, {topic_dups} duplicate image records on the topic",
        report.join("\n  ")
    );
    drop_database(&cfg).await;
}

/// A second process joins the group mid-run and is stopped (SIGTERM) mid-run: the partitions
/// move to it and back, and every instance is indexed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_joining_and_leaving_mid_run_loses_nothing() {
    second_process_joins_and_leaves("range,roundrobin", Classic, "1.2.826.0.1.3680043.10.990")
        .await;
}

/// The same with `cooperative-sticky`: only the partitions that move are revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_joining_and_leaving_mid_run_loses_nothing_cooperatively() {
    second_process_joins_and_leaves("cooperative-sticky", Classic, "1.2.826.0.1.3680043.10.988")
        .await;
}

/// The same with the KIP-848 group protocol (always incremental; the broker assigns).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_joining_and_leaving_mid_run_loses_nothing_kip848() {
    if kip848_available() {
        second_process_joins_and_leaves("range,roundrobin", Consumer, "1.2.826.0.1.3680043.10.983")
            .await;
    }
}

async fn second_process_joins_and_leaves(strategy: &str, protocol: GroupProtocol, root: &str) {
    // Enough that work remains after the ~3 s tansu takes to bring the second one in.
    let n: u32 = if full_scale() { 20_000 } else { 5_000 };
    let work = workdir();
    let mut cfg = fault_config(4, work.path(), protocol);
    cfg.kafka.assignment_strategy = strategy.into();
    let want = seed(&cfg, work.path(), root, n).await;

    let mut first = fault_run(&cfg, work.path(), "a.log");
    first.args(["--until-idle", "3"]);
    let mut a = start_and_progress(first, &cfg, u64::from(n) / 6, work.path(), "a.log").await;
    // B's endpoint tells when it has taken work (its log says so only when it stops).
    let b_metrics = format!("127.0.0.1:{}", free_port());
    let mut b_run = fault_run(&cfg, work.path(), "b.log");
    b_run.args(["--metrics-listen", &b_metrics]);
    let mut b = Proc::spawn(b_run);
    let joined = Instant::now();
    // B takes over some partitions (a rebalance with both processes' workers)...
    let owns_some = |l: &str| l.contains("partitions assigned") && !l.ends_with("assigned=0");
    let rebalance = if cfg.kafka.incremental_rebalances() {
        "protocol=\"Cooperative\""
    } else {
        "protocol=\"Eager\""
    };
    assert!(
        wait_log(work.path(), "b.log", owns_some, Duration::from_secs(60)).await,
        "the second process never got partitions\n{}",
        log_tail(work.path(), "b.log")
    );
    let took_over = joined.elapsed();
    let b_log = std::fs::read_to_string(work.path().join("b.log")).unwrap_or_default();
    assert!(
        b_log.contains(rebalance),
        "{strategy} not in effect:\n{b_log}"
    );
    // ... works on them, and is stopped while work remains.
    // Long enough for its first fetches to be processed (2 s), not so long that the run has
    // no work left when it leaves: with cooperative assignment the other partitions never
    // stop, so stop early once 80 % is indexed.
    // It is stopped once it has taken messages (its endpoint says so) and either 2 s have
    // passed or 70 % is indexed — whichever comes first, at most 20 s.
    let working = Instant::now();
    let b_consumed_now = || async {
        let text = http_get(&b_metrics, "/metrics").await.unwrap_or_default().1;
        let series = format!(
            "dicom_pipeline_messages_consumed_total{{topic=\"{}\"}}",
            cfg.kafka.input_topic
        );
        metric(&text, &series).unwrap_or(0.0)
    };
    while working.elapsed() < Duration::from_secs(20) {
        let enough = working.elapsed() >= Duration::from_secs(2)
            || distinct_indexed(&cfg).await >= u64::from(n) * 7 / 10;
        if enough && b_consumed_now().await > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at_leave = distinct_indexed(&cfg).await;
    assert!(
        at_leave < u64::from(n),
        "the run ended before the second process was stopped"
    );
    sigterm(b.id());
    let b_status = b.wait(Duration::from_secs(30)).await;
    assert!(
        b_status.is_some_and(|s| s.success()),
        "{b_status:?}\n{}",
        log_tail(work.path(), "b.log")
    );
    let a_status = a.wait(Duration::from_secs(240)).await;
    assert!(
        a_status.is_some_and(|s| s.success()),
        "{a_status:?}\n{}",
        log_tail(work.path(), "a.log")
    );
    let b_log = std::fs::read_to_string(work.path().join("b.log")).unwrap_or_default();
    let a_log = std::fs::read_to_string(work.path().join("a.log")).unwrap_or_default();
    let failed_revoke_commits = a_log.matches("commit on revoke failed").count()
        + b_log.matches("commit on revoke failed").count();
    let revoked_in_a = a_log
        .lines()
        .filter(|l| l.contains("partitions revoked"))
        .filter_map(|l| {
            l.split("revoked=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum::<u64>();
    let b_consumed: u64 = b_log
        .lines()
        .filter(|l| l.contains("worker stopped"))
        .filter_map(|l| {
            l.split("consumed=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        b_consumed > 0,
        "the second process consumed nothing\n{b_log}"
    );
    let (table_dups, topic_dups) = assert_indexed_exactly(&cfg, &want).await;
    eprintln!(
        "second process ({strategy}, {}) over {n} instances: owned partitions {:.1} s after starting, consumed {b_consumed}, left at {at_leave}/{n}; the first process gave up {revoked_in_a} partitions in all ({failed_revoke_commits} commits on revoke failed); {table_dups} duplicate rows before FINAL, {topic_dups} duplicate image records on the topic",
        protocol.as_str(),
        took_over.as_secs_f64()
    );
    drop_database(&cfg).await;
}

/// Cooperative members stopped (SIGTERM) at every stage of joining — before the join,
/// during the rebalance, just after the assignment — exit promptly and cleanly, and the run
/// still indexes everything exactly once. A cooperative process once hung after SIGTERM in
/// CI: librdkafka reported no rebalance protocol during close, rdkafka's default callback
/// answered the revoke with an eager unassign, librdkafka refused it, and the consumer's
/// drop waited forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_members_stopped_while_joining_exit_promptly() {
    members_stopped_while_joining(Classic, "1.2.826.0.1.3680043.10.987").await;
}

/// The same with the KIP-848 group protocol (whose rebalances are always incremental).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_members_stopped_while_joining_exit_promptly() {
    if kip848_available() {
        members_stopped_while_joining(Consumer, "1.2.826.0.1.3680043.10.982").await;
    }
}

async fn members_stopped_while_joining(protocol: GroupProtocol, root: &str) {
    let n: u32 = if full_scale() { 20_000 } else { 3_000 };
    let work = workdir();
    let mut cfg = fault_config(4, work.path(), protocol);
    if protocol == Classic {
        cfg.kafka.assignment_strategy = "cooperative-sticky".into();
    }
    let want = seed(&cfg, work.path(), root, n).await;

    let mut first = fault_run(&cfg, work.path(), "a.log");
    first.args(["--until-idle", "3"]);
    let mut a = start_and_progress(first, &cfg, u64::from(n) / 10, work.path(), "a.log").await;
    let mut exits = Vec::new();
    for (i, after_ms) in [300u64, 1_500, 2_500, 3_500, 5_000].into_iter().enumerate() {
        let log = format!("b{i}.log");
        let mut b = Proc::spawn(fault_run(&cfg, work.path(), &log));
        assert!(
            wait_log(
                work.path(),
                &log,
                |l| l.contains("worker started"),
                Duration::from_secs(30)
            )
            .await,
            "member {i} never started\n{}",
            log_tail(work.path(), &log)
        );
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
        let stopping = Instant::now();
        sigterm(b.id());
        // drain (3 s) + leave (2 s) + close (5 s) at most, with room for a loaded machine.
        let status = b.wait(Duration::from_secs(20)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "member {i}, stopped {after_ms} ms after starting: {status:?}\n{}",
            log_tail(work.path(), &log)
        );
        let b_log = std::fs::read_to_string(work.path().join(&log)).unwrap_or_default();
        for symptom in ["did not close in time", "applying the rebalance failed"] {
            assert!(
                !b_log.contains(symptom),
                "member {i}: {symptom}\n{}",
                log_tail(work.path(), &log)
            );
        }
        exits.push(format!(
            "{after_ms} ms → {:.1} s",
            stopping.elapsed().as_secs_f64()
        ));
    }
    let a_status = a.wait(Duration::from_secs(240)).await;
    assert!(
        a_status.is_some_and(|s| s.success()),
        "{a_status:?}\n{}",
        log_tail(work.path(), "a.log")
    );
    let a_log = std::fs::read_to_string(work.path().join("a.log")).unwrap_or_default();
    assert!(
        !a_log.contains("applying the rebalance failed"),
        "{}",
        log_tail(work.path(), "a.log")
    );
    let (table_dups, topic_dups) = assert_indexed_exactly(&cfg, &want).await;
    eprintln!(
        "{} members stopped while joining (stopped after → exited within): {}; {table_dups} duplicate rows before FINAL, {topic_dups} duplicate image records",
        if protocol == Classic {
            "cooperative"
        } else {
            "KIP-848"
        },
        exits.join(", ")
    );
    drop_database(&cfg).await;
}
