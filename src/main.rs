use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use dicom_pipeline::compute::Mode;
use dicom_pipeline::config::{Config, Overrides, SinkBackend};
use dicom_pipeline::{backfill, pipeline, status, verify};

/// Index stored DICOM files: Kafka store messages in; image/state records, dead letters and
/// ClickHouse or Apache Doris rows out.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file (see config.example.toml).
    #[arg(long, global = true, env = "DICOM_PIPELINE_CONFIG")]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long, global = true)]
    brokers: Option<String>,
    /// ClickHouse HTTP URL.
    #[arg(long, global = true)]
    clickhouse_url: Option<String>,
    /// Database of the selected sink backend (ClickHouse or Doris).
    #[arg(long, global = true)]
    database: Option<String>,
    /// Sink backend: clickhouse or doris (`sink.backend`).
    #[arg(long, global = true, value_name = "BACKEND")]
    sink: Option<SinkBackend>,
    /// Consumer group.
    #[arg(long, global = true)]
    group: Option<String>,
    /// Input topic (store messages).
    #[arg(long, global = true)]
    input_topic: Option<String>,
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long, global = true)]
    print_config: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the topics and the sink backend's tables if they do not exist (`--sink doris`:
    /// the Doris tables of sql/doris.sql, over the FE's MySQL port).
    Schema {
        /// Partitions for new topics.
        #[arg(long)]
        partitions: Option<i32>,
    },
    /// Consume store messages and index them.
    Run(RunArgs),
    /// Publish a store message for every file under the given paths / sources.
    Backfill(BackfillArgs),
    /// Print the group's lag per partition on the input topic.
    Lag,
    /// Where the pipeline stands: per partition end / committed offsets and lag, rows per
    /// table, dead letters per reason. Exits 1 if the broker or the sink cannot be read.
    Status {
        /// One JSON object instead of tables (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Completeness audit: every message on the input topic has a terminal row (indexed or
    /// dead-lettered), every indexed row its dicom_image row, every dead letter its dicom_dlq
    /// row; dead letters by reason. Exits 0 when complete, 1 when something is missing, 2
    /// when the broker or the sink cannot be read.
    Verify {
        /// One JSON object instead of lines (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Write synthetic CT instances (valid DICOM, deterministic UIDs) for load tests.
    Synth(SynthArgs),
    /// Run the per-file derivation alone (no Kafka, no ClickHouse): one JSON line per file
    /// on stdout (a dead-letter-style line with the reason for a file that fails), a summary
    /// with files/s on stderr. The compute-only ceiling the benchmarks compare against.
    Derive(DeriveArgs),
}

/// `backfill`: see README "Backfilling an archive".
#[derive(Debug, Args)]
struct BackfillArgs {
    /// Files or directories to walk, as the source named by `pipeline.source`.
    paths: Vec<PathBuf>,
    /// A named source, NAME=PATH (repeatable; sources are walked concurrently, and every
    /// message carries its source's name; a name given twice walks both paths).
    #[arg(long = "source", value_name = "NAME=PATH")]
    sources: Vec<backfill::SourceArg>,
    /// Most files per second: N for every source, NAME=N for one (repeatable). Unlimited
    /// by default.
    #[arg(long = "rate", value_name = "[NAME=]N")]
    rates: Vec<backfill::RateArg>,
    /// Most messages awaiting the broker's acknowledgement, over all sources.
    #[arg(long, default_value_t = backfill::MAX_UNACKED)]
    max_unacked: usize,
    /// Do not publish files that ClickHouse's dicom_image already has (same path and size,
    /// and modification time when known); fails if ClickHouse cannot be queried.
    #[arg(long)]
    skip_indexed: bool,
    /// Checkpoint file: resume from it and keep it up to date (same sources and paths only).
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Start over: ignore and overwrite the checkpoint file.
    #[arg(long, requires = "checkpoint")]
    reset_checkpoint: bool,
    /// No counting pass (no total, no ETA): list the share only once.
    #[arg(long)]
    no_count: bool,
}

#[derive(Debug, Args)]
struct DeriveArgs {
    /// Files or directories (walked recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// header_only or full.
    #[arg(long, default_value = "full")]
    mode: Mode,
    /// Threads (0 = number of CPUs).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Files larger than this many bytes fail as too_large.
    #[arg(long, default_value_t = 2 * 1024 * 1024 * 1024)]
    max_file_size: u64,
    /// Images decoding to more than this many bytes fail as too_large.
    #[arg(long, default_value_t = 1024 * 1024 * 1024)]
    max_decoded_size: u64,
}

#[derive(Debug, Args)]
struct SynthArgs {
    /// Output directory (created).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 1)]
    patients: u32,
    #[arg(long, default_value_t = 1)]
    studies_per_patient: u32,
    #[arg(long, default_value_t = 1)]
    series_per_study: u32,
    #[arg(long, default_value_t = 10)]
    instances_per_series: u32,
    #[arg(long, default_value_t = 512)]
    rows: u16,
    #[arg(long, default_value_t = 512)]
    columns: u16,
    /// UID root (numbers are appended per patient/study/series/instance); with the counts
    /// it determines every UID and pixel, so the same arguments write the same files.
    #[arg(long, default_value = "1.2.826.0.1.3680043.10.1")]
    uid_root: String,
    /// explicit-le, implicit-le, explicit-be, deflate or rle (or the UID).
    #[arg(long, default_value = "explicit-le")]
    transfer_syntax: dicom_pipeline::compute::synth::SynthSyntax,
    /// CT or MR.
    #[arg(long, default_value = "CT", value_parser = ["CT", "MR"])]
    modality: String,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Directory stored files must resolve into (repeatable; at least one).
    #[arg(long = "storage-root")]
    storage_roots: Vec<PathBuf>,
    /// Exit 0 once the input is fully committed and idle for this many seconds.
    #[arg(long, value_name = "SECS")]
    until_idle: Option<f64>,
    /// Workers (consumers) in this process.
    #[arg(long)]
    workers: Option<usize>,
    /// header_only or full.
    #[arg(long)]
    mode: Option<Mode>,
    /// A second copy of the archive: files missing under their storage root are read from
    /// the same relative path here before they are dead-lettered as file_not_found.
    #[arg(long, value_name = "DIR")]
    secondary_storage_root: Option<PathBuf>,
    /// host:port of the /metrics, /healthz and /readyz endpoint ("" disables).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
}

/// dicom-rs warns about every recoverable oddity of every file (missing meta elements, odd
/// lengths); at volume that drowns the pipeline's own log. `RUST_LOG` overrides.
const DEFAULT_LOG_FILTER: &str = "info,dicom_object=error,dicom_parser=error,dicom_encoding=error";

fn init_tracing(format: &str) -> Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    // Colour only on a terminal (and never with NO_COLOR): a log file or a collector gets
    // plain text, not escape codes.
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(backfill::progress::stderr_for_logs);
    match format {
        "text" => builder.init(),
        "json" => builder.json().init(),
        other => bail!("unknown --log-format `{other}` (text or json)"),
    }
    Ok(())
}

/// Cancel `token` on SIGINT or SIGTERM.
fn on_signals(token: CancellationToken) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
        token.cancel();
    });
    Ok(())
}

fn synth(a: &SynthArgs) -> Result<()> {
    use dicom_pipeline::compute::synth::{ct_file_bytes, CtSpec};
    let started = Instant::now();
    let mut files = 0u64;
    let mut bytes = 0u64;
    for p in 1..=a.patients {
        for st in 1..=a.studies_per_patient {
            for se in 1..=a.series_per_study {
                let dir = a.out.join(format!("p{p:06}/st{st:03}/se{se:03}"));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                for i in 1..=a.instances_per_series {
                    let spec = CtSpec {
                        rows: a.rows,
                        columns: a.columns,
                        transfer_syntax: a.transfer_syntax,
                        modality: a.modality.clone(),
                        ..CtSpec::numbered(&a.uid_root, p, st, se, i)
                    };
                    let data = ct_file_bytes(&spec);
                    let path = dir.join(format!("i{i:05}.dcm"));
                    std::fs::write(&path, &data)
                        .with_context(|| format!("writing {}", path.display()))?;
                    files += 1;
                    bytes += data.len() as u64;
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "synth: files={files} bytes={bytes} elapsed={secs:.1}s rate={:.0}/s out={}",
        files as f64 / secs.max(1e-9),
        a.out.display()
    );
    Ok(())
}

/// One `derive` output line: the instance attributes and the same pixel / digest keys as the
/// `dicom_image` columns (null where not derived, e.g. header_only mode). Serialised
/// straight to the output (no intermediate JSON map per file).
#[derive(serde::Serialize)]
struct DeriveLine<'a> {
    file_path: &'a str,
    file_size: u64,
    #[serde(flatten)]
    meta: &'a dicom_pipeline::compute::InstanceMeta,
    header_digest: &'a str,
    pixel_min: Option<f64>,
    pixel_max: Option<f64>,
    pixel_mean: Option<f64>,
    pixel_std: Option<f64>,
    pixel_p01: Option<f64>,
    pixel_p50: Option<f64>,
    pixel_p99: Option<f64>,
    modality_min: Option<f64>,
    modality_max: Option<f64>,
    modality_mean: Option<f64>,
    modality_std: Option<f64>,
    pixel_digest: Option<&'a str>,
}

impl<'a> DeriveLine<'a> {
    fn new(path: &'a str, d: &'a dicom_pipeline::compute::Derived) -> Self {
        let px = d.pixels.as_ref();
        let m = px.and_then(|p| p.modality);
        DeriveLine {
            file_path: path,
            file_size: d.file_size,
            meta: &d.meta,
            header_digest: &d.header_digest,
            pixel_min: px.map(|p| p.min),
            pixel_max: px.map(|p| p.max),
            pixel_mean: px.map(|p| p.mean),
            pixel_std: px.map(|p| p.std),
            pixel_p01: px.map(|p| p.p01),
            pixel_p50: px.map(|p| p.p50),
            pixel_p99: px.map(|p| p.p99),
            modality_min: m.map(|m| m.min),
            modality_max: m.map(|m| m.max),
            modality_mean: m.map(|m| m.mean),
            modality_std: m.map(|m| m.std),
            pixel_digest: px.map(|p| p.digest.as_str()),
        }
    }
}

fn derive(a: &DeriveArgs) -> Result<()> {
    use dicom_pipeline::compute::{derive_file, Limits};
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    let mut files = Vec::new();
    for root in &a.paths {
        for entry in walkdir::WalkDir::new(root) {
            match entry {
                Ok(e) if e.file_type().is_file() => files.push(e.into_path()),
                Ok(_) => {}
                Err(e) => eprintln!("derive: skipping unreadable entry: {e}"),
            }
        }
    }
    let threads = if a.threads == 0 {
        num_cpus::get().max(1)
    } else {
        a.threads
    };
    let limits = Limits {
        max_file_size: a.max_file_size,
        max_decoded_size: a.max_decoded_size,
    };
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let bytes = std::sync::atomic::AtomicU64::new(0);
    let out = Mutex::new(std::io::BufWriter::new(std::io::stdout()));
    let started = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        for i in 0..threads {
            let worker = std::thread::Builder::new()
                .name(format!("derive-{i}"))
                .stack_size(dicom_pipeline::compute::THREAD_STACK_BYTES);
            worker.spawn_scoped(s, || {
                let mut line = Vec::with_capacity(1024);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    line.clear();
                    let path_text = path.to_string_lossy();
                    let written = match derive_file(path, a.mode, limits) {
                        Ok(d) => {
                            bytes.fetch_add(d.file_size, Ordering::Relaxed);
                            serde_json::to_writer(&mut line, &DeriveLine::new(&path_text, &d))
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            let record = serde_json::json!({
                                "file_path": path_text,
                                "reason": e.reason().as_str(),
                                "error": e.to_string(),
                            });
                            serde_json::to_writer(&mut line, &record)
                        }
                    };
                    if written.is_ok() {
                        line.push(b'\n');
                        let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
                        // A closed stdout (e.g. `| head`) ends the output, not the program.
                        let _ = w.write_all(&line);
                    }
                }
            })?;
        }
        Ok(())
    })?;
    let _ = out.lock().unwrap_or_else(|p| p.into_inner()).flush();
    let secs = started.elapsed().as_secs_f64();
    let n = files.len();
    eprintln!(
        "derive: files={n} failed={} mode={:?} threads={threads} elapsed={secs:.3}s rate={:.0} files/s {:.1} MB/s",
        failed.load(Ordering::Relaxed),
        a.mode,
        n as f64 / secs.max(1e-9),
        bytes.load(Ordering::Relaxed) as f64 / 1e6 / secs.max(1e-9)
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Dropping the runtime would wait without end for blocking-pool threads; one stuck in a
    // librdkafka call must not keep a finished process alive. Everything the run owed is done
    // (or abandoned to redelivery) by now.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `verify` found something missing.
const EXIT_INCOMPLETE: u8 = 1;
/// `verify` could not read the broker or the sink.
const EXIT_CANNOT_AUDIT: u8 = 2;

async fn run(cli: Cli) -> Result<ExitCode> {
    init_tracing(&cli.log_format)?;
    let mut overrides = Overrides {
        brokers: cli.brokers.clone(),
        clickhouse_url: cli.clickhouse_url.clone(),
        database: cli.database.clone(),
        sink_backend: cli.sink,
        group_id: cli.group.clone(),
        input_topic: cli.input_topic.clone(),
        ..Overrides::default()
    };
    match &cli.command {
        Command::Schema { partitions } => overrides.partitions = *partitions,
        Command::Run(a) => {
            overrides.storage_roots = a.storage_roots.clone();
            overrides.workers = a.workers;
            overrides.mode = a.mode;
            overrides.secondary_storage_root = a.secondary_storage_root.clone();
            overrides.metrics_listen = a.metrics_listen.clone();
        }
        Command::Backfill(_) | Command::Lag | Command::Status { .. } | Command::Verify { .. } => {}
        // These need no services and no configuration.
        Command::Synth(args) => return synth(args).map(|()| ExitCode::SUCCESS),
        Command::Derive(args) => return derive(args).map(|()| ExitCode::SUCCESS),
    }
    let mut cfg = Config::load(cli.config.as_deref(), &overrides)?;
    if matches!(cli.command, Command::Run(_)) {
        cfg.validate_for_run()?;
    }
    if cli.print_config {
        print!("{}", cfg.to_redacted_toml());
        return Ok(ExitCode::SUCCESS);
    }

    match cli.command {
        Command::Schema { .. } => {
            pipeline::ensure_schema(&cfg).await?;
            let database = cfg.sink_database();
            println!(
                "schema ready: topics {}, {}, {}, {}, {} ({} partitions); {} database {}",
                cfg.kafka.input_topic,
                cfg.kafka.image_topic,
                cfg.kafka.state_topic,
                cfg.kafka.log_topic,
                cfg.kafka.dlq_topic,
                cfg.kafka.partitions,
                cfg.sink.backend,
                database
            );
        }
        Command::Run(args) => {
            let until_idle = match args.until_idle {
                Some(s) if s.is_finite() && s >= 0.0 => Some(Duration::from_secs_f64(s)),
                Some(s) => bail!("--until-idle must be a non-negative number of seconds, got {s}"),
                None => None,
            };
            let shutdown = CancellationToken::new();
            on_signals(shutdown.clone())?;
            let started = Instant::now();
            let summary = pipeline::run(cfg, until_idle, shutdown).await?;
            let secs = started.elapsed().as_secs_f64();
            let w = summary.workers;
            println!(
                "run: consumed={} indexed={} dead_lettered={} abandoned={} sink_flushes={} elapsed={:.1}s rate={:.0}/s",
                w.consumed,
                w.indexed,
                w.dead_lettered,
                w.abandoned,
                summary.sink.flushes,
                secs,
                w.consumed as f64 / secs.max(1e-9)
            );
        }
        Command::Backfill(a) => {
            let sources =
                backfill::args::plan_sources(&cfg.pipeline.source, &a.paths, &a.sources, &a.rates)?;
            let opts = backfill::Options {
                sources,
                max_unacked: a.max_unacked,
                skip_indexed: a.skip_indexed,
                checkpoint: a.checkpoint.clone(),
                reset_checkpoint: a.reset_checkpoint,
                count: !a.no_count,
            };
            let stop = CancellationToken::new();
            on_signals(stop.clone())?;
            let r = backfill::run(&cfg, &opts, stop).await?;
            let secs = r.elapsed.as_secs_f64();
            let line = |s: &backfill::BackfillSummary| {
                format!(
                    "published={} skipped={} indexed={} errors={} failed={} bytes={}",
                    s.published, s.skipped, s.indexed, s.errors, s.failed, s.bytes
                )
            };
            for (name, s) in &r.sources {
                println!("backfill source={name} {}", line(s));
            }
            let t = r.total;
            println!(
                "backfill: {} elapsed={secs:.1}s rate={:.0}/s",
                line(&t),
                t.published as f64 / secs.max(1e-9)
            );
            if t.errors > 0 {
                eprintln!("backfill: {} entries could not be read (see log)", t.errors);
            }
            if t.failed > 0 {
                // Unpublished files must not look like success to a batch job.
                bail!(
                    "{} store messages were not acknowledged by the broker",
                    t.failed
                );
            }
            if r.interrupted {
                let how = match &opts.checkpoint {
                    Some(f) => format!("run the same command to resume from {}", f.display()),
                    None => {
                        "no --checkpoint was kept: --skip-indexed skips what is indexed already"
                            .into()
                    }
                };
                bail!("backfill interrupted before the walk finished; {how}");
            }
        }
        Command::Synth(_) | Command::Derive(_) => {}
        Command::Status { json } => {
            let status = status::read(&cfg).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.to_text());
            }
            if let Some(problem) = status.problem() {
                bail!("status incomplete: {problem}");
            }
        }
        Command::Verify { json } => {
            return Ok(match verify::audit(&cfg).await {
                Ok(audit) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&audit)?);
                    } else {
                        print!("{}", audit.to_text());
                    }
                    if audit.complete {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(EXIT_INCOMPLETE)
                    }
                }
                Err(e) => {
                    eprintln!("verify: cannot audit: {e}");
                    ExitCode::from(EXIT_CANNOT_AUDIT)
                }
            });
        }
        Command::Lag => {
            let lags =
                tokio::task::spawn_blocking(move || pipeline::partition_lags(&cfg)).await??;
            println!("partition\tend\tcommitted\tlag");
            for l in lags {
                let committed = l.committed.map_or("-".to_string(), |c| c.to_string());
                println!("{}\t{}\t{}\t{}", l.partition, l.high, committed, l.lag);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
