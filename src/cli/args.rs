//! The command line: every command, flag and example `--help` shows.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::backfill;
use crate::compute::synth::SynthSyntax;
use crate::compute::Mode;
use crate::config::SinkBackend;

const GLOBAL: &str = "Global options (any command)";

/// Index stored DICOM files: Kafka store messages in; image/state records, dead letters and
/// ClickHouse or Apache Doris rows out.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Examples:
  dicom-pipeline check --storage-root /archive            # config, broker, sink, tables, roots
  dicom-pipeline schema                                   # topics and tables
  dicom-pipeline backfill /archive --checkpoint bf.ckpt    # one store message per file
  dicom-pipeline run --storage-root /archive               # index, until stopped
  dicom-pipeline status                                    # lag, rows, dead letters
  dicom-pipeline verify                                    # prove every message was indexed or dead-lettered
  dicom-pipeline --print-config run                        # the effective configuration

Configuration: defaults < --config FILE < DICOM_PIPELINE_<SECTION>__<KEY> (and KAFKA_BROKERS,
CLICKHOUSE_URL) < flags. Logs: --log-level or RUST_LOG; --log-format json for collectors."
)]
pub struct Cli {
    /// TOML configuration file (see config.example.toml); env DICOM_PIPELINE_CONFIG.
    #[arg(long, global = true, env = "DICOM_PIPELINE_CONFIG", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers, host:port[,host:port] (env KAFKA_BROKERS).
    #[arg(long, global = true, value_name = "HOST:PORT", help_heading = GLOBAL)]
    pub brokers: Option<String>,
    /// ClickHouse HTTP URL (env CLICKHOUSE_URL).
    #[arg(long, global = true, value_name = "URL", help_heading = GLOBAL)]
    pub clickhouse_url: Option<String>,
    /// Database of the selected sink backend (ClickHouse or Doris).
    #[arg(long, global = true, value_name = "NAME", help_heading = GLOBAL)]
    pub database: Option<String>,
    /// Sink backend: clickhouse or doris (`sink.backend`).
    #[arg(long, global = true, value_name = "BACKEND", help_heading = GLOBAL)]
    pub sink: Option<SinkBackend>,
    /// Consumer group (`kafka.group_id`).
    #[arg(long, global = true, value_name = "GROUP", help_heading = GLOBAL)]
    pub group: Option<String>,
    /// Input topic of store messages (`kafka.input_topic`).
    #[arg(long, global = true, value_name = "TOPIC", help_heading = GLOBAL)]
    pub input_topic: Option<String>,
    /// Log format: text, or json (one JSON object per line; summaries too).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"], help_heading = GLOBAL)]
    pub log_format: String,
    /// This program's log level: error, warn, info, debug or trace (dependencies stay at
    /// warn). Wins over RUST_LOG, which sets a whole filter (e.g. `info,rdkafka=debug`).
    #[arg(long, global = true, value_name = "LEVEL", value_parser = ["error", "warn", "info", "debug", "trace"], help_heading = GLOBAL)]
    pub log_level: Option<String>,
    /// Print the effective configuration (secrets redacted) for the command and exit;
    /// what the command would still need is noted.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub print_config: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that everything `run` needs is in place: the configuration, the broker and the
    /// sink answer, the topics and tables exist with the expected schema, the storage roots
    /// are readable. One line per check; exits 78 if any fails.
    #[command(after_help = "Example:\n  dicom-pipeline check --storage-root /mnt/pacs-a")]
    Check {
        /// Storage roots to check (default: `pipeline.storage_roots`).
        #[arg(long = "storage-root", value_name = "DIR")]
        storage_roots: Vec<PathBuf>,
    },
    /// Create the topics and the sink backend's tables if they do not exist (`--sink doris`:
    /// the Doris tables of sql/doris.sql, over the FE's MySQL port).
    #[command(after_help = "Example:\n  dicom-pipeline schema --partitions 16")]
    Schema {
        /// Partitions for new topics (`kafka.partitions`).
        #[arg(long, value_name = "N")]
        partitions: Option<i32>,
    },
    /// Consume store messages and index them.
    #[command(after_help = "Examples:
  dicom-pipeline run --storage-root /mnt/pacs-a --storage-root /mnt/pacs-b
  dicom-pipeline run --storage-root /archive --mode header_only --until-idle 5")]
    Run(RunArgs),
    /// Publish a store message for every file under the given paths / sources.
    #[command(after_help = "Examples:
  dicom-pipeline backfill /archive
  dicom-pipeline backfill --source pacs-a=/mnt/pacs-a --rate 200 --checkpoint /var/lib/dicom/bf.ckpt")]
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
    /// Write synthetic CT/MR instances (valid DICOM, deterministic UIDs) for load tests.
    #[command(
        after_help = "Example:\n  dicom-pipeline synth --out /tmp/ct --series-per-study 10 --instances-per-series 100"
    )]
    Synth(SynthArgs),
    /// Run the per-file derivation alone (no Kafka, no ClickHouse): one JSON line per file
    /// on stdout — the dicom.image record `run` would publish for it (source "derive",
    /// kafka_partition/kafka_offset -1), or a line with the reason for a file that fails — a summary
    /// with files/s on stderr. Exits 0 when every file was derived, 1 when any failed, 2
    /// when a path does not exist. Pseudonymizes like `run` when `privacy.pseudonymize` is on.
    #[command(
        after_help = "Example:\n  dicom-pipeline derive --mode header_only /archive/study1 > study1.jsonl"
    )]
    Derive(DeriveArgs),
}

/// `backfill`: see docs/OPERATIONS.md, "Backfilling an archive".
#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Files or directories to walk, as the source named by `pipeline.source`.
    pub paths: Vec<PathBuf>,
    /// A named source, NAME=PATH (repeatable; sources are walked concurrently, and every
    /// message carries its source's name; a name given twice walks both paths).
    #[arg(long = "source", value_name = "NAME=PATH")]
    pub sources: Vec<backfill::SourceArg>,
    /// Most files per second: N for every source, NAME=N for one (repeatable). Unlimited
    /// by default.
    #[arg(long = "rate", value_name = "[NAME=]N")]
    pub rates: Vec<backfill::RateArg>,
    /// Most messages awaiting the broker's acknowledgement, over all sources.
    #[arg(long, value_name = "N", default_value_t = backfill::MAX_UNACKED)]
    pub max_unacked: usize,
    /// Do not publish files that the sink already has (same path and size, and
    /// modification time when known); fails if the sink cannot be queried.
    #[arg(long)]
    pub skip_indexed: bool,
    /// Checkpoint file: resume from it and keep it up to date (same sources and paths only).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Start over: ignore and overwrite the checkpoint file.
    #[arg(long, requires = "checkpoint")]
    pub reset_checkpoint: bool,
    /// No counting pass (no total, no ETA): list the share only once.
    #[arg(long)]
    pub no_count: bool,
}

#[derive(Debug, Args)]
pub struct DeriveArgs {
    /// Files or directories (walked recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// header_only or full.
    #[arg(long, default_value = "full")]
    pub mode: Mode,
    /// Threads (0 = number of CPUs).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// Files larger than this many bytes fail as too_large (default: `pipeline.max_file_size`).
    #[arg(long, value_name = "BYTES")]
    pub max_file_size: Option<u64>,
    /// Images whose derivation would need more than this many bytes fail as too_large
    /// (default: `pipeline.max_decoded_size`).
    #[arg(long, value_name = "BYTES")]
    pub max_decoded_size: Option<u64>,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output directory (created).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Patients to write.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub patients: u32,
    /// Studies per patient.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub studies_per_patient: u32,
    /// Series per study.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub series_per_study: u32,
    /// Instances (files) per series.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub instances_per_series: u32,
    /// Rows of each image.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub rows: u16,
    /// Columns of each image.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub columns: u16,
    /// UID root (numbers are appended per patient/study/series/instance); with the counts
    /// it determines every UID and pixel, so the same arguments write the same files.
    #[arg(long, value_name = "UID", default_value = "1.2.826.0.1.3680043.10.1")]
    pub uid_root: String,
    /// explicit-le, implicit-le, explicit-be, deflate or rle (or the UID).
    #[arg(long, value_name = "SYNTAX", default_value = "explicit-le")]
    pub transfer_syntax: SynthSyntax,
    /// CT or MR.
    #[arg(long, default_value = "CT", value_parser = ["CT", "MR"])]
    pub modality: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directory stored files must resolve into (repeatable; at least one).
    #[arg(long = "storage-root", value_name = "DIR")]
    pub storage_roots: Vec<PathBuf>,
    /// Exit 0 once the input is fully committed and idle for this many seconds.
    #[arg(long, value_name = "SECS")]
    pub until_idle: Option<f64>,
    /// Workers (consumers) in this process (0 = number of CPUs).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// header_only or full.
    #[arg(long)]
    pub mode: Option<Mode>,
    /// A second copy of the archive: files missing under their storage root are read from
    /// the same relative path here before they are dead-lettered as file_not_found.
    #[arg(long, value_name = "DIR")]
    pub secondary_storage_root: Option<PathBuf>,
    /// host:port of the /metrics, /healthz and /readyz endpoint ("" disables).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}
