//! `backfill` for an archive: rate limit, named sources, `--skip-indexed`, restart from a
//! checkpoint. (The basics — one message per file, unacknowledged publishes counted as
//! failed — are in `pipeline.rs`.)

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use dicom_pipeline::backfill::{self, BackfillError, Options, Source};
use dicom_pipeline::compute::synth::{ct_file_bytes, CtSpec};
use dicom_pipeline::config::Config;
use dicom_pipeline::pipeline;
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// `n` small files under `dir`, spread over subdirectories of `per_dir`.
fn small_files(dir: &Path, n: usize, per_dir: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let sub = dir.join(format!("d{:03}", i / per_dir));
            std::fs::create_dir_all(&sub).unwrap();
            let p = sub.join(format!("f{i:05}.dcm"));
            std::fs::write(&p, format!("file {i}")).unwrap();
            p
        })
        .collect()
}

fn source(name: &str, root: &Path, rate: Option<f64>) -> Source {
    Source {
        name: name.into(),
        roots: vec![root.to_path_buf()],
        rate,
    }
}

async fn input_messages(cfg: &Config) -> Vec<serde_json::Value> {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || read_topic(&cfg, &cfg.kafka.input_topic))
        .await
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

/// How many messages name each file path.
fn per_path(msgs: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in msgs {
        *out.entry(m["file_path"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    out
}

/// `--rate 30` over 60 files: a burst of 3, then one file every 1/30 s, so no less than
/// (60 − 3) / 30 = 1.9 s. A lower bound: a correctness check, not a benchmark. Two sources
/// with a rate each are limited apart and walked at the same time: their publish times
/// each span ≥ 1.5 s and interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_rate_is_honoured() {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    let cfg = test_config(2, vec![work.path().to_path_buf()]);
    small_files(&a, 60, 20);
    small_files(&b, 60, 20);
    pipeline::ensure_schema(&cfg).await.unwrap();
    let opts = Options::new(vec![
        source("rated-a", &a, Some(30.0)),
        source("rated-b", &b, Some(30.0)),
    ]);
    let started = Instant::now();
    let report = backfill::run(&cfg, &opts, CancellationToken::new())
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(report.total.published, 120, "{report:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "2 × 60 files at 30/s each in {took:?}"
    );
    let mut times: BTreeMap<String, Vec<time::OffsetDateTime>> = BTreeMap::new();
    for m in input_messages(&cfg).await {
        let at = time::OffsetDateTime::parse(
            m["received_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        times
            .entry(m["source"].as_str().unwrap().to_string())
            .or_default()
            .push(at);
    }
    let span = |name: &str| {
        let t = &times[name];
        (*t.iter().min().unwrap(), *t.iter().max().unwrap())
    };
    let ((a0, a1), (b0, b1)) = (span("rated-a"), span("rated-b"));
    for (name, first, last) in [("rated-a", a0, a1), ("rated-b", b0, b1)] {
        let spread = last - first;
        assert!(
            spread >= time::Duration::milliseconds(1500),
            "{name}: 60 files published within {spread}"
        );
    }
    assert!(a0 < b1 && b0 < a1, "sources not walked at the same time");
    eprintln!("backfill --rate 30: 2 sources × 60 files in {took:?}");
    drop_database(&cfg).await;
}

/// `received_at` is when a store message was let go, not when it started waiting for its
/// rate limit: at `--rate 4` (a burst of 1, then one file every 250 ms) the broker's record
/// timestamp (taken as librdkafka queues the record) trails the stamp by far less than a slot.
/// Stamped before the wait, each message after the first carried a time about 250 ms early,
/// and a latency run counted that wait as the pipeline's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_stamps_received_at_after_the_rate_limit() {
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(1, vec![work.path().to_path_buf()]);
    small_files(work.path(), 6, 6);
    pipeline::ensure_schema(&cfg).await.unwrap();
    let opts = Options::new(vec![source("slow", work.path(), Some(4.0))]);
    let report = backfill::run(&cfg, &opts, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.total.published, 6, "{report:?}");
    let reader = cfg.clone();
    let stamps = tokio::task::spawn_blocking(move || {
        read_topic_with(&reader, &reader.kafka.input_topic, |msg| {
            let value: serde_json::Value =
                serde_json::from_slice(msg.payload().unwrap_or_default()).unwrap();
            let received = time::OffsetDateTime::parse(
                value["received_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            let record_ms = msg.timestamp().to_millis().unwrap();
            record_ms - (received.unix_timestamp_nanos() / 1_000_000) as i64
        })
    })
    .await
    .unwrap();
    assert_eq!(stamps.len(), 6);
    for lag_ms in &stamps {
        assert!(
            (-5..125).contains(lag_ms),
            "record timestamp − received_at = {lag_ms} ms (all: {stamps:?})"
        );
    }
    drop_database(&cfg).await;
}

/// Two named sources, through the binary: each message carries its source's name, the
/// summary counts per source (a dangling symlink and a non-UTF-8 name are errors of theirs,
/// not fatal), and the total line is the sum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_sources_are_named_and_counted_apart() {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    let cfg = test_config(2, vec![work.path().to_path_buf()]);
    small_files(&a, 5, 2);
    small_files(&b, 7, 3);
    std::os::unix::fs::symlink(b.join("nowhere"), b.join("dangling")).unwrap();
    let bad = b.join(std::ffi::OsStr::from_bytes(b"bad-\xff.dcm"));
    std::fs::write(&bad, b"x").unwrap();
    pipeline::ensure_schema(&cfg).await.unwrap();
    let mut c = bin();
    c.args(["backfill", "--max-unacked", "2", "--rate", "pacs-b=1000"])
        .arg("--source")
        .arg(format!("pacs-a={}", a.display()))
        .arg("--source")
        .arg(format!("pacs-b={}", b.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    kafka_env(&mut c, &cfg);
    let out = output_of(c).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("backfill source=pacs-a published=5 skipped=0 indexed=0 errors=0 failed=0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("backfill source=pacs-b published=7 skipped=0 indexed=0 errors=2 failed=0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("backfill: published=12 skipped=0 indexed=0 errors=2 failed=0"),
        "{stdout}"
    );
    // Not a TTY: plain log lines, and no file path in the log.
    assert!(!stderr.contains(work.path().to_str().unwrap()), "{stderr}");
    let msgs = input_messages(&cfg).await;
    assert_eq!(msgs.len(), 12);
    let mut by_source = BTreeMap::new();
    for m in &msgs {
        let name = m["source"].as_str().unwrap();
        let path = m["file_path"].as_str().unwrap();
        let root = if name == "pacs-a" { &a } else { &b };
        assert!(path.starts_with(root.to_str().unwrap()), "{name}: {path}");
        // RFC 3339 (the store-message contract), and a real modification time.
        let mtime = m["file_mtime"].as_str().unwrap_or_default();
        let mtime =
            time::OffsetDateTime::parse(mtime, &time::format_description::well_known::Rfc3339);
        assert!(mtime.is_ok_and(|t| t.unix_timestamp() > 0), "{m}");
        *by_source.entry(name.to_string()).or_insert(0) += 1;
    }
    assert_eq!(
        by_source,
        BTreeMap::from([("pacs-a".to_string(), 5), ("pacs-b".to_string(), 7)])
    );
    drop_database(&cfg).await;
}

fn small_ct(path: &Path, i: u32, rows: u16) {
    let spec = CtSpec {
        rows,
        columns: 8,
        ..CtSpec::numbered("1.2.826.0.1.3680043.10.981", 1, 1, 1, i)
    };
    std::fs::write(path, ct_file_bytes(&spec)).unwrap();
}

/// Index a set with the pipeline, then backfill it again with `--skip-indexed`: nothing of
/// it is published, except a new file, a file rewritten with another size and a file whose
/// modification time changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_skip_indexed_publishes_only_new_and_changed_files() {
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(2, vec![work.path().to_path_buf()]);
    let file = |i: u32| work.path().join(format!("i{i}.dcm"));
    for i in 1..=6 {
        small_ct(&file(i), i, 8);
    }
    pipeline::ensure_schema(&cfg).await.unwrap();
    let first = backfill::backfill(&cfg, &[work.path().to_path_buf()])
        .await
        .unwrap();
    assert_eq!(first.published, 6);
    run_until_idle(&cfg).await;
    assert_eq!(
        count(
            &cfg,
            "SELECT count() FROM dicom_image FINAL WHERE file_mtime IS NOT NULL"
        )
        .await,
        6,
        "file_mtime reaches dicom_image"
    );

    // Unchanged: nothing published.
    let mut opts = Options::new(vec![source("backfill", work.path(), None)]);
    opts.skip_indexed = true;
    let again = backfill::run(&cfg, &opts, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        (again.total.published, again.total.indexed),
        (0, 6),
        "{again:?}"
    );

    small_ct(&file(7), 7, 8); // new
    small_ct(&file(1), 1, 16); // rewritten, another size
    let f2 = std::fs::File::options().write(true).open(file(2)).unwrap();
    f2.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap(); // same size, other mtime
    drop(f2);
    let third = backfill::run(&cfg, &opts, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        (third.total.published, third.total.indexed),
        (3, 4),
        "{third:?}"
    );
    let counts = per_path(&input_messages(&cfg).await);
    let p = |i: u32| file(i).to_str().unwrap().to_string();
    assert_eq!(counts[&p(1)], 2);
    assert_eq!(counts[&p(2)], 2);
    assert_eq!(counts[&p(7)], 1);
    for i in 3..=6 {
        assert_eq!(counts[&p(i)], 1, "{i}");
    }
    drop_database(&cfg).await;
}

/// `--skip-indexed` asks ClickHouse once per batch (up to 1000 paths, and few enough bytes
/// for the server's parameter limit), never per file: 2,500 short paths take 3 batches,
/// 1,000 long ones (≈ 240 bytes) are split by size and still accepted by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_skip_indexed_queries_once_per_batch() {
    use dicom_pipeline::backfill::indexed::{batch_cost, MAX_BATCH_BYTES};
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(2, vec![work.path().to_path_buf()]);
    let short = work.path().join("short");
    small_files(&short, 2500, 500);
    let long = work.path().join(format!("{}'s export", "l".repeat(150)));
    let long_files = small_files(&long, 1000, 1000);
    pipeline::ensure_schema(&cfg).await.unwrap();
    let lookups = |root: &Path| {
        let mut opts = Options::new(vec![source("backfill", root, None)]);
        opts.skip_indexed = true;
        let cfg = cfg.clone();
        async move {
            let r = backfill::run(&cfg, &opts, CancellationToken::new())
                .await
                .unwrap();
            (r.total.published, r.index_queries)
        }
    };
    // The probe, then the batches; a batch sent early while the walk lags may add one or
    // two, but nowhere near one per file.
    let (published, queries) = lookups(&short).await;
    assert_eq!(published, 2500);
    assert!(
        (4..=7).contains(&queries),
        "{queries} lookup queries for 2500 files"
    );
    let bytes: usize = long_files
        .iter()
        .map(|p| batch_cost(p.to_str().unwrap()))
        .sum();
    let by_size = bytes.div_ceil(MAX_BATCH_BYTES) as u64;
    assert!(by_size >= 2, "{bytes} bytes of paths");
    let (published, long_queries) = lookups(&long).await;
    assert_eq!(published, 1000);
    assert!(
        (1 + by_size..=by_size + 4).contains(&long_queries),
        "{long_queries} lookup queries for {bytes} bytes of paths"
    );
    eprintln!(
        "--skip-indexed: 2500 short paths in {queries} queries, 1000 long ones ({bytes} bytes) in {long_queries}"
    );
    drop_database(&cfg).await;
}

/// With the sink unreachable, `--skip-indexed` fails before publishing anything, naming the
/// sink's address and `what`; `unreachable` points the config at a closed port.
async fn skip_indexed_fails_naming_the_sink(unreachable: impl FnOnce(&mut Config), what: &str) {
    let work = tempfile::tempdir().unwrap();
    let mut cfg = test_config(1, vec![work.path().to_path_buf()]);
    small_files(work.path(), 3, 3);
    pipeline::ensure_schema(&cfg).await.unwrap();
    let good = cfg.clone();
    unreachable(&mut cfg);
    let mut opts = Options::new(vec![source("backfill", work.path(), None)]);
    opts.skip_indexed = true;
    let err = backfill::run(&cfg, &opts, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, BackfillError::QueryIndexed { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("--skip-indexed") && text.contains(what) && text.contains("127.0.0.1:1"),
        "{text}"
    );
    assert!(input_messages(&cfg).await.is_empty());
    drop_database(&good).await;
}

/// With ClickHouse unreachable, `--skip-indexed` fails before publishing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_skip_indexed_fails_clearly_without_clickhouse() {
    let unreachable = |cfg: &mut Config| cfg.clickhouse.url = "http://127.0.0.1:1".into();
    skip_indexed_fails_naming_the_sink(unreachable, "ClickHouse").await;
}

/// `--skip-indexed` asks whichever backend `sink.backend` selects, through the sink seam: with
/// Doris it queries the FE's MySQL port (here nothing listens there), and fails naming it,
/// before publishing anything. It used to refuse any backend but ClickHouse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_skip_indexed_asks_the_doris_sink_when_selected() {
    let unreachable = |cfg: &mut Config| {
        cfg.sink.backend = dicom_pipeline::config::SinkBackend::Doris;
        cfg.doris.mysql_addr = "127.0.0.1:1".into();
        cfg.doris.request_timeout_ms = 3000;
    };
    skip_indexed_fails_naming_the_sink(unreachable, "Doris").await;
}

/// A backfill SIGKILLed mid-way and run again with the same arguments publishes every file,
/// none more than twice; a run with other sources refuses the checkpoint until
/// `--reset-checkpoint`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_resumes_from_its_checkpoint_after_a_kill() {
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("archive");
    let n = 600;
    let files = small_files(&archive, n, 25);
    let cp = work.path().join("backfill.checkpoint");
    let cfg = test_config(2, vec![work.path().to_path_buf()]);
    pipeline::ensure_schema(&cfg).await.unwrap();
    let command = |extra: &[&str]| {
        let mut c = bin();
        c.arg("backfill")
            .arg("--checkpoint")
            .arg(&cp)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        kafka_env(&mut c, &cfg);
        c
    };
    let archive_arg = archive.to_str().unwrap();

    // 600 files at 100/s: about 6 s. Kill it once a checkpoint with progress is on disk.
    let mut child = command(&["--rate", "100", archive_arg]).spawn().unwrap();
    let started = Instant::now();
    let killed_at = loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no checkpoint with progress"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("backfill ended before it was killed: {status:?}");
        }
        let done = std::fs::read(&cp)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["sources"][0]["done"]["path"].as_str().map(String::from));
        if let Some(done) = done {
            child.kill().unwrap(); // SIGKILL: no drain, no final checkpoint
            break done;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = child.wait();
    let before = input_messages(&cfg).await.len();
    assert!(
        before > 0 && before < n,
        "{before} published before the kill"
    );

    let resume = command(&[archive_arg]);
    let out = output_of(resume).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = per_path(&input_messages(&cfg).await);
    assert_eq!(counts.len(), n, "every file published at least once");
    for f in &files {
        let c = counts[f.to_str().unwrap()];
        assert!((1..=2).contains(&c), "{}: {c}", f.display());
    }
    let twice = counts.values().filter(|c| **c == 2).count();
    let resumed: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("backfill: published="))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    assert!(resumed < n, "the second run resumed ({resumed} of {n})");
    assert_eq!(resumed + before, n + twice);
    eprintln!(
        "checkpoint: killed with {before} published (checkpoint at {killed_at}), resumed with {resumed}; {twice} of {n} files published twice"
    );

    // Other sources: refused, clearly, until --reset-checkpoint.
    let other = command(&["--source", &format!("other={archive_arg}")]);
    let out = output_of(other).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("was made for other sources") && stderr.contains("--reset-checkpoint"),
        "{stderr}"
    );
    let reset = command(&[
        "--reset-checkpoint",
        "--source",
        &format!("other={archive_arg}"),
    ]);
    let out = succeeded(reset).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("backfill: published=600 "));
    drop_database(&cfg).await;
}

/// Cancelled in-process (what SIGINT does): what was sent is awaited, the checkpoint is
/// written, and the run resumed with the same options publishes exactly the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_cancelled_then_resumed_publishes_each_file_once() {
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("archive");
    let n = 200;
    small_files(&archive, n, 16);
    let cfg = test_config(2, vec![work.path().to_path_buf()]);
    pipeline::ensure_schema(&cfg).await.unwrap();
    let mut opts = Options::new(vec![source("backfill", &archive, Some(200.0))]);
    opts.checkpoint = Some(work.path().join("cp.json"));
    let cancel = CancellationToken::new();
    let stopper = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            cancel.cancel();
        })
    };
    let first = backfill::run(&cfg, &opts, cancel).await.unwrap();
    stopper.await.unwrap();
    assert!(first.interrupted);
    assert!(
        first.total.published > 0 && (first.total.published as usize) < n,
        "{first:?}"
    );
    opts.sources[0].rate = None;
    let second = backfill::run(&cfg, &opts, CancellationToken::new())
        .await
        .unwrap();
    assert!(!second.interrupted);
    assert_eq!(
        first.total.published + second.total.published,
        n as u64,
        "{first:?} {second:?}"
    );
    let counts = per_path(&input_messages(&cfg).await);
    assert_eq!(counts.len(), n);
    assert!(counts.values().all(|c| *c == 1));
    drop_database(&cfg).await;
}

/// Bad arguments fail before anything is published, with the reason.
#[test]
fn backfill_refuses_bad_arguments_clearly() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_str().unwrap();
    let missing = work.path().join("not-mounted");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--source".into(), format!("pacs={}", missing.display())],
            "source `pacs`",
        ),
        (vec!["--source".into(), dir.into()], "expected NAME=PATH"),
        (
            vec!["--rate".into(), "0".into(), dir.into()],
            "files per second",
        ),
        (
            vec!["--rate".into(), "other=5".into(), dir.into()],
            "no source is named `other`",
        ),
        (
            vec!["--reset-checkpoint".into(), dir.into()],
            "--checkpoint",
        ),
        (vec![], "nothing to walk"),
    ];
    for (args, want) in cases {
        let out = bin()
            .arg("backfill")
            .args(&args)
            .env("KAFKA_BROKERS", "127.0.0.1:1") // never contacted
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

/// SIGTERM (as Ctrl-C) through the binary: it stops walking, awaits what it sent, writes
/// the checkpoint and exits non-zero saying how to resume; the same command then publishes
/// exactly the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_stopped_by_a_signal_resumes_exactly() {
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("archive");
    let n = 300;
    small_files(&archive, n, 30);
    let cp = work.path().join("cp.json");
    let cfg = test_config(2, vec![work.path().to_path_buf()]);
    pipeline::ensure_schema(&cfg).await.unwrap();
    let command = |rate: &str| {
        let mut c = bin();
        c.args(["backfill", "--rate", rate, "--checkpoint"])
            .arg(&cp)
            .arg(&archive)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        kafka_env(&mut c, &cfg);
        c
    };
    let child = command("100").spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    sigterm(child.id());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("interrupted") && stderr.contains("run the same command to resume"),
        "{stderr}"
    );
    let first = input_messages(&cfg).await.len();
    assert!(first > 0 && first < n, "{first}");
    let again = command("100000");
    let _out = succeeded(again).await;
    let counts = per_path(&input_messages(&cfg).await);
    assert_eq!(counts.len(), n);
    assert!(
        counts.values().all(|c| *c == 1),
        "a file published twice after a clean stop"
    );
    eprintln!(
        "signal: {first} published before SIGTERM, the rest ({}) after",
        n - first
    );
    drop_database(&cfg).await;
}

/// The input contract: every store message `backfill` publishes is valid against
/// `docs/store-message.schema.json` (checked with the reference JSON Schema implementation,
/// Python's `jsonschema`), and the schema is not vacuous — messages the pipeline refuses as
/// `invalid_message` or `bad_json` are invalid against it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_publishes_what_the_store_message_schema_describes() {
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(1, vec![work.path().to_path_buf()]);
    synth_messages(work.path(), "1.2.826.0.1.3680043.10.964", 3, 1);
    dicom_pipeline::pipeline::ensure_schema(&cfg).await.unwrap();
    dicom_pipeline::backfill::backfill(&cfg, &[work.path().to_path_buf()])
        .await
        .unwrap();
    let published: Vec<serde_json::Value> = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || read_topic(&cfg, &cfg.kafka.input_topic))
            .await
            .unwrap()
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    };
    assert_eq!(published.len(), 3);
    let invalid = [
        serde_json::json!({"tenant_id": "t", "file_path": "/a", "received_at": "2026-12-03T10:00:00Z"}),
        serde_json::json!({"trace_id": " ", "tenant_id": "t", "file_path": "/a", "received_at": "2026-12-03T10:00:00Z"}),
        serde_json::json!({"trace_id": "x", "tenant_id": "t", "file_path": "relative.dcm", "received_at": "2026-12-03T10:00:00Z"}),
        serde_json::json!({"trace_id": "x", "tenant_id": "t", "file_path": "/a", "received_at": "yesterday"}),
        serde_json::json!({"trace_id": "x", "tenant_id": "t", "file_path": "/a", "received_at": 1, "file_size": -4}),
    ];
    let schema =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/store-message.schema.json");
    let script = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
for line in sys.stdin:
    doc = json.loads(line)
    print("valid" if v.is_valid(doc) else "invalid")
for example in schema["examples"]:
    assert v.is_valid(example), example
"#;
    let input: String = published
        .iter()
        .chain(&invalid)
        .map(|v| format!("{v}\n"))
        .collect();
    let python = std::env::var("DP_REFERENCE_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .arg(&schema)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the reference python (scripts/dev/make-expected.sh --venv)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(&verdicts[..3], ["valid", "valid", "valid"], "{published:?}");
    assert!(verdicts[3..].iter().all(|v| v == "invalid"), "{verdicts:?}");
    // And the pipeline refuses each of the invalid ones.
    for doc in &invalid {
        let refused =
            dicom_pipeline::workers::process::parse_store_meta(doc.to_string().as_bytes());
        assert!(refused.is_err(), "{doc} accepted by the pipeline");
    }
    drop_database(&cfg).await;
}
