//! `check`: everything `run` needs, one line per check (Vector's `validate` is the model).

use std::process::ExitCode;

use anyhow::Result;

use super::{Output, EXIT_CONFIG};
use crate::config::Config;
use crate::{kafka, sink};

/// The checks' results, in order: (passed, what, detail).
struct Report {
    lines: Vec<(bool, String, String)>,
}

impl Report {
    fn add(&mut self, ok: bool, what: impl Into<String>, detail: impl Into<String>) {
        self.lines.push((ok, what.into(), detail.into()));
    }

    fn failed(&self) -> usize {
        self.lines.iter().filter(|l| !l.0).count()
    }
}

pub async fn check(cfg: &Config, out: Output) -> Result<ExitCode> {
    let mut r = Report { lines: Vec::new() };
    // Loading validated it; the run-only checks (the storage roots) come below.
    r.add(
        true,
        "config",
        format!(
            "valid (brokers {}, {} database {})",
            cfg.kafka.brokers,
            cfg.sink.backend,
            cfg.sink_database()
        ),
    );
    check_kafka(cfg, &mut r).await?;
    check_sink(cfg, &mut r).await;
    check_storage_roots(cfg, &mut r);
    Ok(print_report(&r, out))
}

/// The broker answers, then every configured topic exists.
async fn check_kafka(cfg: &Config, r: &mut Report) -> Result<()> {
    match kafka::reach_async(&cfg.kafka).await {
        Err(e) => r.add(false, "kafka", e.to_string()),
        Ok(()) => {
            r.add(true, "kafka", format!("{} answers", cfg.kafka.brokers));
            check_topics(cfg, r).await?;
        }
    }
    Ok(())
}

/// One line per configured topic: its partition count, or missing.
async fn check_topics(cfg: &Config, r: &mut Report) -> Result<()> {
    let topics = [
        &cfg.kafka.input_topic,
        &cfg.kafka.image_topic,
        &cfg.kafka.state_topic,
        &cfg.kafka.log_topic,
        &cfg.kafka.dlq_topic,
    ]
    .map(|t| t.to_string());
    let kcfg = cfg.kafka.clone();
    let wanted = topics.to_vec();
    let partitions =
        tokio::task::spawn_blocking(move || kafka::topic_partitions(&kcfg, &wanted)).await?;
    match partitions {
        Err(e) => r.add(false, "topics", e.to_string()),
        Ok(found) => {
            for (topic, n) in found {
                match n {
                    Some(n) => r.add(true, format!("topic {topic}"), format!("{n} partitions")),
                    None => r.add(
                        false,
                        format!("topic {topic}"),
                        "missing (create it: dicom-pipeline schema)",
                    ),
                }
            }
        }
    }
    Ok(())
}

/// The selected sink backend answers, then every table exists with every column.
async fn check_sink(cfg: &Config, r: &mut Report) {
    let backend = cfg.sink.backend.to_string();
    match sink::reach(cfg).await {
        Err(e) => r.add(false, backend, e.to_string()),
        Ok(()) => {
            r.add(true, backend, "answers");
            check_tables(cfg, r).await;
        }
    }
}

/// One line per table: complete, missing, or the columns it lacks.
async fn check_tables(cfg: &Config, r: &mut Report) {
    match sink::missing_columns(cfg).await {
        Err(e) => r.add(false, "tables", e.to_string()),
        Ok(tables) => {
            for (table, missing) in tables {
                let what = format!("table {table}");
                match missing {
                    None => r.add(false, what, "missing (create it: dicom-pipeline schema)"),
                    Some(m) if m.is_empty() => r.add(true, what, "has every column"),
                    Some(m) => r.add(
                        false,
                        what,
                        format!(
                            "lacks columns {} (dicom-pipeline schema adds them)",
                            m.join(", ")
                        ),
                    ),
                }
            }
        }
    }
}

/// At least one storage root is configured, and each root (the secondary too) is a
/// directory this process can list.
fn check_storage_roots(cfg: &Config, r: &mut Report) {
    if cfg.pipeline.storage_roots.is_empty() {
        r.add(
            false,
            "storage roots",
            "none configured (--storage-root or pipeline.storage_roots)",
        );
    }
    let secondary = &cfg.pipeline.secondary_storage_root;
    let roots = cfg
        .pipeline
        .storage_roots
        .iter()
        .map(|p| ("storage root", p))
        .chain(
            (!secondary.as_os_str().is_empty()).then_some(("secondary storage root", secondary)),
        );
    for (what, root) in roots {
        let what = format!("{what} {}", root.display());
        match std::fs::read_dir(root) {
            Ok(mut entries) => match entries.next() {
                Some(Err(e)) => r.add(false, what, format!("cannot list it: {e}")),
                _ => r.add(true, what, "readable"),
            },
            Err(e) => r.add(false, what, e.to_string()),
        }
    }
}

/// Print one line per check (text or JSON) and the exit code: a configuration failure when
/// any check failed.
fn print_report(r: &Report, out: Output) -> ExitCode {
    for (ok, what, detail) in &r.lines {
        if out.json() {
            println!(
                "{}",
                serde_json::json!({ "check": what, "ok": ok, "detail": detail })
            );
        } else {
            println!("{:<4}  {what}: {detail}", if *ok { "ok" } else { "FAIL" });
        }
    }
    let failed = r.failed();
    if failed > 0 {
        out.message(
            "error",
            &format!("check: {failed} of {} checks failed", r.lines.len()),
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    ExitCode::SUCCESS
}
