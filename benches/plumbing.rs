//! The plumbing alone: what the pipeline spends per message besides the DICOM work.
//!
//! `cargo bench --bench plumbing [-- --n-header N --n-full N --rounds R]`
//!
//! For each mode, in one process and one sitting:
//! 1. `derive` CPU: every file derived by two threads side by side, as `derive --threads 2`
//!    and the pipeline's two compute threads do it (`compute::derive_file`, warm page
//!    cache); one thread alone is printed beside it (`derive_alone_us`);
//! 2. `pipeline::run` (the real one: workers, tracker, compute pool, records, producer, sink
//!    batcher, commits) against in-process ends: librdkafka's mock cluster as the broker
//!    and a loopback HTTP server that reads and discards every request as ClickHouse;
//!    until idle.
//!
//! Plumbing per message = (the process's CPU during the run − the mock broker's and the fake
//! ClickHouse's threads' CPU) / N − derive CPU / N. The same difference is taken for heap
//! allocations (a counting allocator) and context switches. The librdkafka client threads
//! (consumer, producer) are plumbing and count. `compute_us` is the pipeline's compute threads'
//! own CPU (`off_compute_us` the rest); `derive_preempt` and `compute_preempt` are the
//! involuntary context switches per file of the derive threads and of the compute threads:
//! how often another thread took a deriving thread's core. One line per mode and round (TSV);
//! only rounds of one sitting compare.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dicom_pipeline::compute::synth::{ct_file_bytes, CtSpec};
use dicom_pipeline::compute::{derive_file, Limits, Mode};
use dicom_pipeline::config::Config;
use dicom_pipeline::model::DicomStoreMeta;
use dicom_pipeline::pipeline;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// CPU time and context switches, of the process or of one thread.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    cpu: Duration,
    switches: u64,
    /// Involuntary switches alone: the thread was preempted by another that wanted its core.
    preempted: u64,
}

impl std::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, o: Usage) -> Usage {
        Usage {
            cpu: self.cpu.saturating_sub(o.cpu),
            switches: self.switches.saturating_sub(o.switches),
            preempted: self.preempted.saturating_sub(o.preempted),
        }
    }
}

/// CPU time and context switches of the process (`RUSAGE_SELF`) or the calling thread
/// (`RUSAGE_THREAD`).
fn rusage(who: libc::c_int) -> Usage {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Usage {
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        switches: (ru.ru_nvcsw + ru.ru_nivcsw) as u64,
        preempted: ru.ru_nivcsw as u64,
    }
}

/// Every live thread of the process: (name, usage), by thread id.
fn threads() -> HashMap<u64, (String, Usage)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(tid) = e.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        let p = e.path();
        let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let ns: u64 = std::fs::read_to_string(p.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0);
        let status = std::fs::read_to_string(p.join("status")).unwrap_or_default();
        let switches: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .sum();
        let preempted = nonvoluntary(&status).unwrap_or(0);
        out.insert(
            tid,
            (
                name.trim().to_string(),
                Usage {
                    cpu: Duration::from_nanos(ns),
                    switches,
                    preempted,
                },
            ),
        );
    }
    out
}

/// The usage of the given threads between two snapshots (threads that lived through both).
fn of_threads(
    before: &HashMap<u64, (String, Usage)>,
    after: &HashMap<u64, (String, Usage)>,
    tids: &[u64],
) -> Usage {
    let mut u = Usage::default();
    for t in tids {
        if let (Some(a), Some(b)) = (before.get(t), after.get(t)) {
            let d = b.1 - a.1;
            u.cpu += d.cpu;
            u.switches += d.switches;
            u.preempted += d.preempted;
        }
    }
    u
}

/// A thread's involuntary context switches, from the text of its `/proc/.../status`.
fn nonvoluntary(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The CPU time of the pipeline's compute threads (`compute-*`), which exit with the run:
/// a watcher thread reads their `schedstat` every 2 ms and keeps the last value it saw.
struct ComputeWatch {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(Usage, Usage)>,
}

/// How often the watcher reads the compute threads. Their values are final long before the
/// run ends (it waits 0.5 s idle), and a faster watcher would itself preempt them.
const WATCH_EVERY: Duration = Duration::from_millis(50);

impl ComputeWatch {
    fn start() -> ComputeWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            // No allocation in the loop once the threads are found (the bench counts them):
            // the files stay open and are re-read into a stack buffer.
            let mut seen: Vec<(u64, std::fs::File, std::fs::File, Usage)> = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if seen.len() < COMPUTE_THREADS {
                    for (tid, (name, _)) in threads() {
                        if name.starts_with("compute-") && !seen.iter().any(|s| s.0 == tid) {
                            let task = format!("/proc/self/task/{tid}");
                            let sched = std::fs::File::open(format!("{task}/schedstat"));
                            let status = std::fs::File::open(format!("{task}/status"));
                            if let (Ok(a), Ok(b)) = (sched, status) {
                                seen.push((tid, a, b, Usage::default()));
                            }
                        }
                    }
                }
                for (_, sched, status, u) in seen.iter_mut() {
                    if let Some(v) =
                        read_from_start(sched, |t| t.split_whitespace().next()?.parse().ok())
                    {
                        u.cpu = u.cpu.max(Duration::from_nanos(v));
                    }
                    if let Some(v) = read_from_start(status, nonvoluntary) {
                        u.preempted = u.preempted.max(v);
                    }
                }
                std::thread::sleep(WATCH_EVERY);
            }
            let total = seen.iter().fold(Usage::default(), |a, s| Usage {
                cpu: a.cpu + s.3.cpu,
                switches: 0,
                preempted: a.preempted + s.3.preempted,
            });
            (total, rusage(libc::RUSAGE_THREAD))
        });
        ComputeWatch { stop, handle }
    }

    /// The compute threads' CPU and preemptions, and the watcher's own usage (not the
    /// pipeline's).
    fn finish(self) -> (Usage, Usage) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("compute watcher")
    }
}

/// Read an open `/proc` file again from its start into a stack buffer and parse its text.
fn read_from_start<T>(file: &mut std::fs::File, parse: impl Fn(&str) -> Option<T>) -> Option<T> {
    use std::io::{Read, Seek};
    let mut buf = [0u8; 4096];
    file.seek(std::io::SeekFrom::Start(0)).ok()?;
    let n = file.read(&mut buf).ok()?;
    parse(std::str::from_utf8(&buf[..n]).ok()?)
}

/// What one pipeline run measured besides the process totals.
struct Around {
    /// The mock cluster's, the fake ClickHouse's and the watcher's threads.
    outside: Usage,
    /// The pipeline's compute threads (CPU and preemptions).
    compute: Usage,
    indexed: u64,
}

/// The pipeline's compute threads, and the threads `derive` is measured with.
const COMPUTE_THREADS: usize = 2;

struct Dataset {
    name: &'static str,
    mode: Mode,
    rows: u16,
    files: Vec<PathBuf>,
}

fn dataset(root: &Path, name: &'static str, mode: Mode, rows: u16, n: u32) -> Dataset {
    let dir = root.join(format!("{name}-{n}"));
    if !dir.join("done").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench data directory");
        for i in 0..n {
            let spec = CtSpec {
                rows,
                columns: rows,
                ..CtSpec::numbered("1.2.826.0.1.3680043.10.777", i / 1000, 1, 1, i % 1000 + 1)
            };
            std::fs::write(dir.join(format!("{i:06}.dcm")), ct_file_bytes(&spec)).expect("write");
        }
        std::fs::write(dir.join("done"), b"").expect("write");
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("bench data")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    Dataset {
        name,
        mode,
        rows,
        files,
    }
}

/// A loopback HTTP server on its own thread that reads and discards every request and
/// answers 200: ClickHouse as the sink's client sees it, without ClickHouse's work.
fn fake_clickhouse() -> (String, u64) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("fake-clickhouse".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let tid = unsafe { libc::gettid() } as u64;
                let _ = tx.send((
                    format!("http://{}", listener.local_addr().expect("addr")),
                    tid,
                ));
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            |req: hyper::Request<hyper::body::Incoming>| async {
                                use http_body_util::BodyExt;
                                let uri = req.uri().to_string();
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let answer = answer(&uri, &body);
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(answer),
                                ))
                            },
                        );
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await;
                    });
                }
            });
        })
        .expect("fake ClickHouse thread");
    rx.recv().expect("fake ClickHouse started")
}

/// What the fake answers: nothing, except to the `DESCRIBE TABLE` the client sends once per
/// table before its first insert (it checks the rows against the table's columns, as it does
/// against the real server): the columns of `sql/clickhouse.sql`.
fn answer(uri: &str, body: &[u8]) -> bytes::Bytes {
    let query = format!("{} {}", percent_decoded(uri), String::from_utf8_lossy(body));
    let Some(at) = query.find("DESCRIBE TABLE ") else {
        return bytes::Bytes::new();
    };
    let table = query[at + "DESCRIBE TABLE ".len()..]
        .split(|c: char| c.is_whitespace() || c == '&')
        .next()
        .unwrap_or("")
        .rsplit('.')
        .next()
        .unwrap_or("")
        .trim_matches('`')
        .to_string();
    let rows = dicom_pipeline::sink::sql::table_column_types(
        include_str!("../sql/clickhouse.sql"),
        &table,
    );
    // RowBinaryWithNamesAndTypes: the header (7 String columns), then one row per column.
    let mut out = Vec::new();
    let names = [
        "name",
        "type",
        "default_type",
        "default_expression",
        "comment",
        "codec_expression",
        "ttl_expression",
    ];
    leb128(&mut out, names.len());
    for n in names {
        put_str(&mut out, n);
    }
    for _ in names {
        put_str(&mut out, "String");
    }
    for (name, ty) in rows {
        let (ty, default) = match ty.split_once(" DEFAULT ") {
            Some((t, d)) => (t.to_string(), Some(d.to_string())),
            None => (ty, None),
        };
        put_str(&mut out, &name);
        put_str(&mut out, &ty);
        put_str(&mut out, if default.is_some() { "DEFAULT" } else { "" });
        put_str(&mut out, default.as_deref().unwrap_or(""));
        for _ in 4..names.len() {
            put_str(&mut out, "");
        }
    }
    if uri.contains("compress=1") {
        clickhouse::_priv::lz4_compress(&out).expect("lz4")
    } else {
        out.into()
    }
}

fn percent_decoded(s: &str) -> String {
    let b = s.replace('+', " ");
    let b = b.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&String::from_utf8_lossy(&b[i + 1..i + 3]), 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn leb128(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    leb128(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn store_message(path: &Path, i: usize) -> Vec<u8> {
    let meta = DicomStoreMeta {
        trace_id: format!("bench-{i}"),
        tenant_id: "bench".into(),
        source: "bench".into(),
        file_path: path.to_string_lossy().into_owned(),
        file_size: 0,
        file_mtime: None,
        received_at: time::OffsetDateTime::now_utc(),
        patient_id: None,
        study_uid: None,
        series_uid: None,
        sop_uid: None,
    };
    serde_json::to_vec(&meta).expect("store message")
}

struct Measured {
    usage: Usage,
    allocs: u64,
    wall: Duration,
}

/// Every file derived by `threads` threads side by side (each takes every `threads`-th
/// file), as `derive --threads N` and the pipeline's compute pool do: CPU summed over them.
/// Two threads deriving at once on two cores each run slower than one alone (shared caches
/// and memory bandwidth); that is the DICOM work's cost, not the plumbing's.
fn measure_derive(d: &Dataset, threads: usize) -> Measured {
    let limits = Limits {
        max_file_size: 1 << 30,
        max_decoded_size: 1 << 30,
    };
    // Warm the page cache and the allocator.
    for f in d.files.iter().take(200) {
        let _ = derive_file(f, d.mode, limits);
    }
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let usage = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                scope.spawn(move || {
                    let u0 = rusage(libc::RUSAGE_THREAD);
                    for f in d.files.iter().skip(k).step_by(threads) {
                        let derived = derive_file(f, d.mode, limits).expect("bench files derive");
                        std::hint::black_box(derived);
                    }
                    rusage(libc::RUSAGE_THREAD) - u0
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("derive thread"))
            .fold(Usage::default(), |a, b| Usage {
                cpu: a.cpu + b.cpu,
                switches: a.switches + b.switches,
                preempted: a.preempted + b.preempted,
            })
    });
    let wall = t0.elapsed();
    let allocs = ALLOCS.load(Ordering::Relaxed) - a0;
    Measured {
        usage,
        allocs,
        wall,
    }
}

fn measure_pipeline(d: &Dataset, workers: usize, partitions: i32) -> (Measured, Around) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (ch_url, ch_tid) = fake_clickhouse();
    let mock = MockCluster::new(1).expect("mock cluster");
    let brokers = mock.bootstrap_servers();
    let mut cfg = Config::default();
    let s = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    cfg.kafka.brokers = brokers.clone();
    cfg.kafka.group_id = format!("bench-{s}");
    cfg.kafka.input_topic = format!("bench-{s}.store");
    cfg.kafka.image_topic = format!("bench-{s}.image");
    cfg.kafka.state_topic = format!("bench-{s}.state");
    cfg.kafka.log_topic = format!("bench-{s}.log");
    cfg.kafka.dlq_topic = format!("bench-{s}.dlq");
    cfg.kafka.partitions = partitions;
    cfg.kafka.session_timeout_ms = 10_000;
    cfg.clickhouse.url = ch_url;
    cfg.clickhouse.database = "bench".into();
    cfg.pipeline.workers = workers;
    cfg.pipeline.compute_threads = COMPUTE_THREADS;
    cfg.pipeline.mode = d.mode;
    let root = d.files[0]
        .parent()
        .expect("file in a directory")
        .to_path_buf();
    cfg.pipeline.storage_roots = vec![root];
    cfg.metrics.listen = String::new();
    // DP_BENCH_KAFKA_EXTRA="key=value,...": librdkafka settings to try (kafka.extra).
    if let Ok(extra) = std::env::var("DP_BENCH_KAFKA_EXTRA") {
        for kv in extra.split(',').filter(|kv| !kv.is_empty()) {
            if let Some((k, v)) = kv.split_once('=') {
                cfg.kafka.extra.insert(k.to_string(), v.to_string());
            }
        }
    }
    cfg.validate_for_run().expect("bench config");
    for t in [
        &cfg.kafka.input_topic,
        &cfg.kafka.image_topic,
        &cfg.kafka.state_topic,
        &cfg.kafka.log_topic,
        &cfg.kafka.dlq_topic,
    ] {
        mock.create_topic(t, partitions, 1).expect("mock topic");
    }
    rt.block_on(async {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        for chunk in d.files.chunks(5000).enumerate() {
            let sends: Vec<_> = chunk
                .1
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let payload = store_message(f, chunk.0 * 5000 + i);
                    let key = format!("k{i}");
                    let producer = producer.clone();
                    let topic = cfg.kafka.input_topic.clone();
                    async move {
                        producer
                            .send(
                                FutureRecord::to(&topic).key(&key).payload(&payload),
                                Duration::from_secs(30),
                            )
                            .await
                            .map_err(|(e, _)| e)
                    }
                })
                .collect();
            for r in futures::future::join_all(sends).await {
                r.expect("publish to the mock cluster");
            }
        }
    });
    // The mock broker's threads: every thread now alive that is not this one, the fake
    // ClickHouse, or the runtime's (the publisher is gone).
    std::thread::sleep(Duration::from_millis(300));
    let me = unsafe { libc::gettid() } as u64;
    let before = threads();
    let mock_tids: Vec<u64> = before
        .iter()
        .filter(|(tid, (name, _))| {
            **tid != me && **tid != ch_tid && !name.starts_with("tokio-runtime")
        })
        .map(|(tid, _)| *tid)
        .collect();
    let p0 = rusage(libc::RUSAGE_SELF);
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let watch = ComputeWatch::start();
    let t0 = Instant::now();
    let summary = rt
        .block_on(pipeline::run(
            cfg,
            Some(Duration::from_millis(500)),
            CancellationToken::new(),
        ))
        .expect("pipeline run");
    let wall = t0.elapsed();
    let (compute, watcher) = watch.finish();
    let allocs = ALLOCS.load(Ordering::Relaxed) - a0;
    let usage = rusage(libc::RUSAGE_SELF) - p0;
    let after = threads();
    let outside = of_threads(&before, &after, &mock_tids);
    let fake = of_threads(&before, &after, &[ch_tid]);
    // At least once: a file can be indexed twice when the group's second member joins while
    // the first has it in flight (a rebalance); never fewer, never a dead letter.
    assert!(
        summary.workers.indexed as usize >= d.files.len() && summary.workers.dead_lettered == 0,
        "every file indexed: {} indexed, {} dead-lettered, {} files",
        summary.workers.indexed,
        summary.workers.dead_lettered,
        d.files.len()
    );
    let outside = Usage {
        cpu: outside.cpu + fake.cpu + watcher.cpu,
        switches: outside.switches + fake.switches + watcher.switches,
        preempted: outside.preempted + fake.preempted + watcher.preempted,
    };
    drop(rt);
    (
        Measured {
            usage,
            allocs,
            wall,
        },
        Around {
            outside,
            compute,
            indexed: summary.workers.indexed,
        },
    )
}

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // The subscriber `run` installs (its filter: info for the pipeline, dependencies quiet),
    // so the per-message spans cost what they cost in `run`; the lines go nowhere unless
    // RUST_LOG is set (then to stderr, with that filter).
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = dicom_pipeline::cli::log_filter(None, rust_log.as_deref()).expect("log filter");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    if rust_log.is_some() {
        builder.with_writer(std::io::stderr).init();
    } else {
        builder.with_writer(std::io::sink).init();
    }
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run tiny then.
    let testing = !std::env::args().any(|a| a == "--bench");
    let (n_header, n_full, rounds) = if testing {
        (200, 50, 1)
    } else {
        (
            arg("--n-header", 20_000),
            arg("--n-full", 3_000),
            arg("--rounds", 2),
        )
    };
    // `--only ct64|ct512`: one dataset (for a profile of one mode).
    let only = {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1).cloned())
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-plumbing");
    let sets = [
        dataset(&root, "ct64", Mode::HeaderOnly, 64, n_header),
        dataset(&root, "ct512", Mode::Full, 512, n_full),
    ];
    println!(
        "round\tdataset\tmode\tN\tderive_alone_us\tderive_us\tpipeline_us\tbroker_us\tplumbing_us\tcompute_us\toff_compute_us\tplumbing_allocs\tplumbing_switches\tderive_preempt\tcompute_preempt\twall_per_s"
    );
    for round in 1..=rounds {
        for d in sets
            .iter()
            .filter(|d| only.as_deref().is_none_or(|o| o == d.name))
        {
            let n = d.files.len() as f64;
            let alone = measure_derive(d, 1);
            let derive = measure_derive(d, COMPUTE_THREADS);
            let (run, around) = measure_pipeline(d, 2, 8);
            let (outside, indexed) = (around.outside, around.indexed);
            let pipeline_cpu = run.usage.cpu.saturating_sub(outside.cpu);
            let us = |t: Duration| t.as_secs_f64() * 1e6 / n;
            let plumbing = us(pipeline_cpu) - us(derive.usage.cpu);
            let allocs = (run.allocs as f64 - derive.allocs as f64) / n;
            let switches = (run.usage.switches.saturating_sub(outside.switches) as f64
                - derive.usage.switches as f64)
                / n;
            // The compute threads' own CPU in the run, and everything else the pipeline spent
            // (tokio, librdkafka, the batcher): their sum is pipeline_us.
            let compute = us(around.compute.cpu);
            let off_compute = us(pipeline_cpu) - compute;
            println!(
                "{round}\t{}\t{}\t{indexed}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{plumbing:.1}\t{compute:.1}\t{off_compute:.1}\t{allocs:.1}\t{switches:.2}\t{:.2}\t{:.2}\t{:.0}",
                d.name,
                d.mode.as_str(),
                us(alone.usage.cpu),
                us(derive.usage.cpu),
                us(pipeline_cpu),
                us(outside.cpu),
                derive.usage.preempted as f64 / n,
                around.compute.preempted as f64 / n,
                n / run.wall.as_secs_f64(),
            );
            let _ = (d.rows, derive.wall);
        }
    }
}
