//! The `dicom-pipeline` command: argument parsing, configuration, logs, exit codes, and one
//! function per command. The only place that uses `anyhow`.
//!
//! - `args.rs`: the command line (clap), with its help texts and examples.
//! - `output.rs`: log filter and format; summaries and errors as text or JSON lines.
//! - `commands.rs`: schema, run, backfill, lag, status, verify.
//! - `check.rs`: `check`, everything `run` needs, one line per check.
//! - `derive.rs`, `synth.rs`: the commands that need no services.
//!
//! Exit codes: 0 success; 1 failure (a run that failed, unacknowledged publishes, a file
//! `derive` could not derive, an incomplete `verify`); 2 a path that does not exist
//! (`derive`), a `verify` that cannot read the broker or sink, or a usage error; 78 an
//! invalid configuration or a failed `check` (EX_CONFIG, as Vector's `validate`).

mod args;
mod check;
mod commands;
mod derive;
mod output;
mod synth;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;

pub use args::{Cli, Command};
pub use output::{filter as log_filter, Output};

use crate::config::{Config, ConfigError, Overrides};

/// Failure (see the module docs).
pub const EXIT_FAILURE: u8 = 1;
/// A path that does not exist, an audit that could not read, a usage error.
pub const EXIT_CANNOT: u8 = 2;
/// The configuration is invalid, or `check` found a problem (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

/// The program: parse, set up logs, load the configuration, run the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = match Output::init(&cli.log_format, cli.log_level.as_deref()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_CANNOT);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            out.message("error", &format!("starting the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli, out));
    // Dropping the runtime would wait without end for blocking-pool threads; one stuck in a
    // librdkafka call must not keep a finished process alive. Everything the run owed is done
    // (or abandoned to redelivery) by now.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(code) => code,
        Err(e) => {
            out.message("error", &format!("{e:#}"));
            match e.downcast_ref::<ConfigError>() {
                Some(_) => ExitCode::from(EXIT_CONFIG),
                None => ExitCode::from(EXIT_FAILURE),
            }
        }
    }
}

/// The overrides the command's flags make.
fn overrides(cli: &Cli) -> Overrides {
    let mut o = Overrides {
        brokers: cli.brokers.clone(),
        clickhouse_url: cli.clickhouse_url.clone(),
        database: cli.database.clone(),
        sink_backend: cli.sink,
        group_id: cli.group.clone(),
        input_topic: cli.input_topic.clone(),
        ..Overrides::default()
    };
    match &cli.command {
        Command::Schema { partitions } => o.partitions = *partitions,
        Command::Run(a) => {
            o.storage_roots = a.storage_roots.clone();
            o.workers = a.workers;
            o.mode = a.mode;
            o.secondary_storage_root = a.secondary_storage_root.clone();
            o.metrics_listen = a.metrics_listen.clone();
        }
        Command::Check { storage_roots } => o.storage_roots = storage_roots.clone(),
        Command::Derive(a) => o.mode = Some(a.mode),
        Command::Backfill(_)
        | Command::Lag
        | Command::Status { .. }
        | Command::Verify { .. }
        | Command::Synth(_) => {}
    }
    o
}

async fn run(cli: Cli, out: Output) -> Result<ExitCode> {
    // Every command loads and validates the same configuration: a missing file, an unknown
    // key or a bad value is refused before anything runs (and `derive` pseudonymizes as
    // `run` does).
    let mut cfg = Config::load(cli.config.as_deref(), &overrides(&cli))?;
    if cli.print_config {
        print!("{}", cfg.to_redacted_toml());
        if let Command::Run(_) = cli.command {
            if let Err(e) = cfg.clone().validate_for_run() {
                println!("# run would not start as configured: {e}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    match cli.command {
        Command::Check { .. } => check::check(&cfg, out).await,
        Command::Schema { .. } => commands::schema(&cfg).await,
        Command::Run(args) => {
            cfg.validate_for_run()?;
            commands::run(cfg, &args, out).await
        }
        Command::Backfill(args) => commands::backfill(&cfg, &args, out).await,
        Command::Lag => commands::lag(cfg).await,
        Command::Status { json } => commands::status(&cfg, json).await,
        Command::Verify { json } => commands::verify(&cfg, json, out).await,
        Command::Synth(args) => synth::synth(&args, out),
        Command::Derive(args) => derive::derive(&cfg, &args, out),
    }
}
