//! The commands that talk to the broker and the sink.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio_util::sync::CancellationToken;

use super::args::{BackfillArgs, RunArgs};
use super::{Output, EXIT_CANNOT, EXIT_FAILURE};
use crate::config::Config;
use crate::{backfill, kafka, pipeline, status, verify};

/// Cancel `token` on SIGINT or SIGTERM.
pub fn on_signals(token: CancellationToken) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        token.cancel();
    });
    Ok(())
}

pub async fn schema(cfg: &Config) -> Result<ExitCode> {
    pipeline::ensure_schema(cfg).await?;
    println!(
        "schema ready: topics {}, {}, {}, {}, {} ({} partitions); {} database {}",
        cfg.kafka.input_topic,
        cfg.kafka.image_topic,
        cfg.kafka.state_topic,
        cfg.kafka.log_topic,
        cfg.kafka.dlq_topic,
        cfg.kafka.partitions,
        cfg.sink.backend,
        cfg.sink_database()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn run(cfg: Config, args: &RunArgs, out: Output) -> Result<ExitCode> {
    let until_idle = match args.until_idle {
        Some(s) if s.is_finite() && s >= 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => bail!("--until-idle must be a non-negative number of seconds, got {s}"),
        None => None,
    };
    // Before anything else: a stop during start-up is honoured at once.
    let shutdown = CancellationToken::new();
    on_signals(shutdown.clone())?;
    let started = Instant::now();
    let summary = pipeline::run(cfg, until_idle, shutdown).await?;
    let secs = started.elapsed().as_secs_f64();
    let w = summary.workers;
    let rate = w.consumed as f64 / secs.max(1e-9);
    out.summary(
        "run",
        &format!(
            "run: consumed={} indexed={} dead_lettered={} abandoned={} sink_flushes={} elapsed={secs:.1}s rate={rate:.0}/s",
            w.consumed, w.indexed, w.dead_lettered, w.abandoned, summary.sink.flushes
        ),
        serde_json::json!({
            "consumed": w.consumed,
            "indexed": w.indexed,
            "dead_lettered": w.dead_lettered,
            "abandoned": w.abandoned,
            "sink_flushes": summary.sink.flushes,
            "elapsed_s": secs,
            "rate_per_s": rate,
        }),
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn backfill(cfg: &Config, a: &BackfillArgs, out: Output) -> Result<ExitCode> {
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
    let r = backfill::run(cfg, &opts, stop).await?;
    let secs = r.elapsed.as_secs_f64();
    let fields = |s: &backfill::BackfillSummary| {
        serde_json::json!({
            "published": s.published,
            "skipped": s.skipped,
            "indexed": s.indexed,
            "errors": s.errors,
            "failed": s.failed,
            "bytes": s.bytes,
        })
    };
    let line = |s: &backfill::BackfillSummary| {
        format!(
            "published={} skipped={} indexed={} errors={} failed={} bytes={}",
            s.published, s.skipped, s.indexed, s.errors, s.failed, s.bytes
        )
    };
    for (name, s) in &r.sources {
        let mut f = fields(s);
        f["source"] = name.clone().into();
        out.summary(
            "backfill_source",
            &format!("backfill source={name} {}", line(s)),
            f,
        );
    }
    let t = r.total;
    let rate = t.published as f64 / secs.max(1e-9);
    let mut f = fields(&t);
    f["elapsed_s"] = secs.into();
    f["rate_per_s"] = rate.into();
    out.summary(
        "backfill",
        &format!("backfill: {} elapsed={secs:.1}s rate={rate:.0}/s", line(&t)),
        f,
    );
    if t.errors > 0 {
        out.message(
            "warn",
            &format!("backfill: {} entries could not be read (see log)", t.errors),
        );
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
            None => "no --checkpoint was kept: --skip-indexed skips what is indexed already".into(),
        };
        bail!("backfill interrupted before the walk finished; {how}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn lag(cfg: Config) -> Result<ExitCode> {
    kafka::reach_async(&cfg.kafka).await?;
    let lags = tokio::task::spawn_blocking(move || crate::lag::partition_lags(&cfg)).await??;
    println!("partition\tend\tcommitted\tlag");
    for l in lags {
        let committed = l.committed.map_or("-".to_string(), |c| c.to_string());
        println!("{}\t{}\t{}\t{}", l.partition, l.high, committed, l.lag);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn status(cfg: &Config, json: bool) -> Result<ExitCode> {
    let status = status::read(cfg).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.to_text());
    }
    if let Some(problem) = status.problem() {
        bail!("status incomplete: {problem}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(cfg: &Config, json: bool, out: Output) -> Result<ExitCode> {
    let audit = match kafka::reach_async(&cfg.kafka).await {
        Ok(()) => verify::audit(cfg).await.map_err(anyhow::Error::from),
        Err(e) => Err(e.into()),
    };
    Ok(match audit {
        Ok(audit) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&audit)?);
            } else {
                print!("{}", audit.to_text());
            }
            if audit.complete {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
        Err(e) => {
            out.message("error", &format!("verify: cannot audit: {e:#}"));
            ExitCode::from(EXIT_CANNOT)
        }
    })
}
