use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use clickhouse::Row;
use dicom_pipeline::config::Config;
use dicom_pipeline::model::DicomStoreMeta;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Deserialize;

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn clickhouse_url() -> String {
    std::env::var("CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// Real DICOM files fetched by `scripts/dev/fetch-samples.sh`.
pub fn samples_dir() -> PathBuf {
    let dir = std::env::var("DP_SAMPLES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".var/samples"));
    assert!(
        dir.join("pydicom").is_dir(),
        "sample DICOM files missing at {}: run scripts/dev/fetch-samples.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

pub fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// A config with unique topics, group and database, pointing at the test services.
pub fn test_config(partitions: i32, roots: Vec<PathBuf>) -> Config {
    // Pipeline logs in test output (captured unless --nocapture); level from RUST_LOG.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let s = random_suffix();
    let mut c = Config::default();
    c.kafka.brokers = brokers();
    c.kafka.group_id = format!("it-group-{s}");
    c.kafka.input_topic = format!("it-{s}.store");
    c.kafka.image_topic = format!("it-{s}.image");
    c.kafka.state_topic = format!("it-{s}.state");
    c.kafka.log_topic = format!("it-{s}.log");
    c.kafka.dlq_topic = format!("it-{s}.dlq");
    c.kafka.partitions = partitions;
    c.kafka.session_timeout_ms = 10_000;
    // tansu holds a fetch for the whole wait even when data is ready.
    if std::env::var("DP_BROKER").is_ok_and(|b| b == "tansu") {
        c.kafka.fetch_wait_max_ms = 10;
    }
    c.clickhouse.url = clickhouse_url();
    c.clickhouse.database = format!("it_{s}");
    c.pipeline.workers = 2;
    c.pipeline.storage_roots = roots;
    c.pipeline.commit_interval_ms = 200;
    c.pipeline.drain_timeout_ms = 5_000;
    c.sink.flush_interval_ms = 100;
    // Tests run pipelines side by side: each endpoint on a free port.
    c.metrics.listen = "127.0.0.1:0".into();
    c.validate_for_run().expect("test config is valid");
    c
}

pub fn store_message(path: &Path, trace_id: &str) -> Vec<u8> {
    let meta = DicomStoreMeta {
        trace_id: trace_id.into(),
        tenant_id: "it-tenant".into(),
        source: "it".into(),
        file_path: path.to_str().expect("utf-8 test path").into(),
        file_size: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        file_mtime: None,
        received_at: time::OffsetDateTime::now_utc(),
        patient_id: None,
        study_uid: None,
        series_uid: None,
        sop_uid: None,
    };
    serde_json::to_vec(&meta).unwrap()
}

/// Publish raw payloads to a partition of the input topic, in order.
pub async fn publish(cfg: &Config, partition: Option<i32>, payloads: &[Vec<u8>]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    // Enqueued together, awaited together: librdkafka keeps per-partition order.
    for chunk in payloads.chunks(2000).enumerate() {
        let (c, chunk) = chunk;
        let keys: Vec<String> = (0..chunk.len())
            .map(|i| format!("k{}", c * 2000 + i))
            .collect();
        let sends = chunk.iter().zip(&keys).map(|(p, key)| {
            let mut record = FutureRecord::to(&cfg.kafka.input_topic).key(key).payload(p);
            if let Some(part) = partition {
                record = record.partition(part);
            }
            producer.send(record, Duration::from_secs(30))
        });
        for result in futures::future::join_all(sends).await {
            result
                .map_err(|(e, _)| e)
                .expect("publish to the test broker");
        }
    }
}

/// Every record of a topic (key, payload), read from the beginning up to the end offsets.
pub fn read_topic(cfg: &Config, topic: &str) -> Vec<(String, serde_json::Value)> {
    read_topic_with(cfg, topic, |msg| {
        let key = msg
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let value: serde_json::Value =
            serde_json::from_slice(msg.payload().unwrap_or_default()).unwrap();
        (key, value)
    })
}

/// Every record of `topic`, each turned into a `T` by `each`.
pub fn read_topic_with<T>(
    cfg: &Config,
    topic: &str,
    each: impl Fn(&rdkafka::message::BorrowedMessage<'_>) -> T,
) -> Vec<T> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .set("group.id", format!("it-reader-{}", random_suffix()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for t in md.topics() {
        for p in t.partitions() {
            let (lo, hi) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap();
            if hi > lo {
                tpl.add_partition_offset(topic, p.id(), Offset::Offset(lo))
                    .unwrap();
                ends.insert(p.id(), hi);
            }
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut done: BTreeMap<i32, bool> = ends.keys().map(|&p| (p, false)).collect();
    while done.values().any(|d| !d) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out reading {topic}"
        );
        if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
            // Transient client errors (a dropped connection) are reported through poll too;
            // librdkafka reconnects by itself.
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("read_topic({topic}): {e}");
                    continue;
                }
            };
            out.push(each(&msg));
            if msg.offset() + 1 >= ends[&msg.partition()] {
                done.insert(msg.partition(), true);
            }
        }
    }
    out
}

pub fn ch(cfg: &Config) -> clickhouse::Client {
    dicom_pipeline::sink::clickhouse::ClickHouseSink::new(&cfg.clickhouse)
        .client()
        .clone()
}

#[derive(Debug, Row, Deserialize)]
pub struct ImageRow {
    pub sop_uid: String,
    pub modality: String,
    pub rows: u16,
    pub columns: u16,
    pub file_path: String,
    pub pixel_min: Option<f64>,
    pub pixel_max: Option<f64>,
    pub pixel_mean: Option<f64>,
    pub pixel_std: Option<f64>,
    pub pixel_digest: Option<String>,
    pub header_digest: String,
}

pub async fn image_rows(cfg: &Config) -> Vec<ImageRow> {
    ch(cfg)
        .query("SELECT ?fields FROM dicom_image FINAL ORDER BY sop_uid")
        .fetch_all::<ImageRow>()
        .await
        .unwrap()
}

#[derive(Debug, Row, Deserialize)]
pub struct DlqRow {
    pub trace_id: String,
    pub reason: String,
    pub error: String,
    pub kafka_offset: i64,
}

pub async fn dlq_rows(cfg: &Config) -> Vec<DlqRow> {
    ch(cfg)
        .query("SELECT ?fields FROM dicom_dlq FINAL ORDER BY kafka_partition, kafka_offset")
        .fetch_all::<DlqRow>()
        .await
        .unwrap()
}

pub async fn count(cfg: &Config, sql: &str) -> u64 {
    ch(cfg).query(sql).fetch_one::<u64>().await.unwrap()
}

pub async fn drop_database(cfg: &Config) {
    let _ = dicom_pipeline::sink::clickhouse::service::server_client(&cfg.clickhouse)
        .query(&format!(
            "DROP DATABASE IF EXISTS {}",
            cfg.clickhouse.database
        ))
        .execute()
        .await;
}

/// The `dicom-pipeline` binary, without the caller's RUST_LOG.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dicom-pipeline"));
    c.env_remove("RUST_LOG")
        // Processes run side by side: each metrics endpoint on a free port.
        .env("DICOM_PIPELINE_METRICS__LISTEN", "127.0.0.1:0");
    c
}

/// Run a `--print-config` command, assert it succeeded (its stderr otherwise), and return
/// the printed configuration.
pub fn printed_config(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Point a `dicom-pipeline` command at `cfg`'s broker, group and topics.
pub fn kafka_env<'c>(c: &'c mut Command, cfg: &Config) -> &'c mut Command {
    c.env("KAFKA_BROKERS", &cfg.kafka.brokers)
        .env("DICOM_PIPELINE_KAFKA__GROUP_ID", &cfg.kafka.group_id)
        .env("DICOM_PIPELINE_KAFKA__INPUT_TOPIC", &cfg.kafka.input_topic)
        .env("DICOM_PIPELINE_KAFKA__IMAGE_TOPIC", &cfg.kafka.image_topic)
        .env("DICOM_PIPELINE_KAFKA__STATE_TOPIC", &cfg.kafka.state_topic)
        .env("DICOM_PIPELINE_KAFKA__LOG_TOPIC", &cfg.kafka.log_topic)
        .env("DICOM_PIPELINE_KAFKA__DLQ_TOPIC", &cfg.kafka.dlq_topic)
}

/// Run the pipeline in this process until the input is drained and idle for 1.5 s.
pub async fn run_until_idle(cfg: &Config) -> dicom_pipeline::pipeline::RunSummary {
    tokio::time::timeout(
        Duration::from_secs(120),
        dicom_pipeline::pipeline::run(
            cfg.clone(),
            Some(Duration::from_millis(1500)),
            tokio_util::sync::CancellationToken::new(),
        ),
    )
    .await
    .expect("pipeline finished within 120 s")
    .expect("pipeline ran without error")
}

/// `dicom-pipeline run` against `cfg`'s topics, group and database, with output captured.
pub fn run_command(cfg: &Config, root: &Path) -> Command {
    let mut c = bin();
    c.args([
        "run",
        "--storage-root",
        root.to_str().unwrap(),
        "--workers",
        "2",
    ])
    .env("CLICKHOUSE_URL", &cfg.clickhouse.url)
    .env(
        "DICOM_PIPELINE_CLICKHOUSE__DATABASE",
        &cfg.clickhouse.database,
    );
    kafka_env(&mut c, cfg)
        .env(
            "DICOM_PIPELINE_KAFKA__ASSIGNMENT_STRATEGY",
            &cfg.kafka.assignment_strategy,
        )
        .env(
            "DICOM_PIPELINE_KAFKA__GROUP_PROTOCOL",
            cfg.kafka.group_protocol.as_str(),
        )
        .env("DICOM_PIPELINE_KAFKA__SESSION_TIMEOUT_MS", "10000")
        .env("DICOM_PIPELINE_PIPELINE__DRAIN_TIMEOUT_MS", "5000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Write `n` synthetic CT instances (spread over `series` series) into `dir` and return one
/// store message per file (trace ids `t1`..`tn`).
pub fn synth_messages(dir: &Path, uid_root: &str, n: u32, series: u32) -> Vec<Vec<u8>> {
    use dicom_pipeline::compute::synth::{ct_file_bytes, CtSpec};
    (1..=n)
        .map(|i| {
            let spec = CtSpec::numbered(uid_root, 1, 1, i % series, i);
            let path = dir.join(format!("i{i}.dcm"));
            std::fs::write(&path, ct_file_bytes(&spec)).unwrap();
            store_message(&path, &format!("t{i}"))
        })
        .collect()
}

/// Per-partition end/committed offsets of `cfg`'s group (off the runtime threads).
pub async fn lags(cfg: &Config) -> Vec<dicom_pipeline::lag::PartitionLag> {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || dicom_pipeline::lag::partition_lags(&cfg))
        .await
        .unwrap()
        .unwrap()
}

/// Total lag of `cfg`'s group on its input topic.
pub async fn lag(cfg: &Config) -> i64 {
    lags(cfg).await.iter().map(|l| l.lag).sum()
}

/// Every committed offset is backed by sunk rows: for each partition, all offsets below the
/// committed one are in `dicom_store`. `rows` is where to read ClickHouse (it may differ from
/// `cfg`'s URL when the pipeline talks through a proxy).
pub async fn assert_commits_backed_by_rows(rows: &Config, cfg: &Config) {
    for l in lags(cfg).await {
        if let Some(c) = l.committed {
            let done = count(
                rows,
                &format!(
                    "SELECT count() FROM dicom_store FINAL WHERE kafka_partition = {} AND kafka_offset < {c}",
                    l.partition
                ),
            )
            .await as i64;
            assert_eq!(
                done,
                c - l.low,
                "partition {} committed {c} with only {done} rows sunk",
                l.partition
            );
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Ask a child process to shut down (SIGTERM).
pub fn sigterm(pid: u32) {
    let rc = unsafe { libc_kill(pid as i32, 15) };
    assert_eq!(rc, 0, "kill -TERM {pid}");
}

/// A TCP proxy in front of ClickHouse that can be cut: while cut, existing connections are
/// dropped and new ones are closed at once — to the pipeline, the server is down.
pub struct CuttableProxy {
    pub addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl CuttableProxy {
    pub async fn start(upstream: String) -> Self {
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

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.cut.notify_one();
        }
    }
}

/// A child process that is killed when the test ends, panics included: a failed test must
/// not leave a pipeline consuming its topics.
pub struct Proc(pub Child);

impl Proc {
    pub fn spawn(mut c: Command) -> Self {
        Proc(c.spawn().unwrap())
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Wait for the process to exit; `None` if it is still running after `within` (the
    /// callers print `None` with the log tail: "did not exit in time").
    pub async fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free TCP port on loopback (bound and released: good enough for a test's child process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` from an HTTP endpoint on `addr`: (status, body); `None` if nothing answers.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// The value of one series (`name{labels}` exactly as exported) in a metrics exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Run a command to completion on the blocking pool.
pub async fn output_of(mut c: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || c.output())
        .await
        .unwrap()
        .unwrap()
}

/// [`output_of`], asserting the command succeeded (its stderr in the failure otherwise).
pub async fn succeeded(c: Command) -> std::process::Output {
    let out = output_of(c).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl CuttableProxy {
    /// A proxy in front of `direct`'s ClickHouse, and `direct` pointed through it.
    pub async fn in_front_of_clickhouse(direct: &Config) -> (CuttableProxy, Config) {
        let upstream = direct
            .clickhouse
            .url
            .trim_start_matches("http://")
            .to_string();
        let proxy = CuttableProxy::start(upstream).await;
        let mut cfg = direct.clone();
        cfg.clickhouse.url = format!("http://{}", proxy.addr);
        (proxy, cfg)
    }
}
