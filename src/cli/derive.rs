//! `derive`: the per-file derivation alone, one JSON line per file.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::args::DeriveArgs;
use super::{Output, EXIT_CANNOT, EXIT_FAILURE};
use crate::backfill::progress;
use crate::compute::{derive_file, Derived, InstanceMeta, Limits, THREAD_STACK_BYTES};
use crate::config::Config;
use crate::privacy::Pseudonymizer;

/// One `derive` output line: the instance attributes and the same pixel / digest keys as the
/// `dicom_image` columns (null where not derived, e.g. header_only mode). Serialised
/// straight to the output (no intermediate JSON map per file).
#[derive(serde::Serialize)]
struct DeriveLine<'a> {
    file_path: &'a str,
    file_size: u64,
    #[serde(flatten)]
    meta: &'a InstanceMeta,
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
    fn new(path: &'a str, d: &'a Derived) -> Self {
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

/// Every file under `paths`; the paths that do not exist (or cannot be walked) are
/// reported and counted.
fn walk(paths: &[PathBuf], out: Output) -> (Vec<PathBuf>, usize) {
    let mut files = Vec::new();
    let mut missing = 0;
    for root in paths {
        if std::fs::symlink_metadata(root).is_err() {
            out.message(
                "error",
                &format!("derive: {}: no such file or directory", root.display()),
            );
            missing += 1;
            continue;
        }
        for entry in walkdir::WalkDir::new(root) {
            match entry {
                Ok(e) if e.file_type().is_file() => files.push(e.into_path()),
                Ok(_) => {}
                Err(e) => out.message("warn", &format!("derive: skipping unreadable entry: {e}")),
            }
        }
    }
    (files, missing)
}

pub fn derive(cfg: &Config, a: &DeriveArgs, out: Output) -> Result<ExitCode> {
    let (files, missing) = walk(&a.paths, out);
    let threads = if a.threads == 0 {
        num_cpus::get().max(1)
    } else {
        a.threads
    };
    let limits = Limits {
        max_file_size: a.max_file_size.unwrap_or(cfg.pipeline.max_file_size),
        max_decoded_size: a.max_decoded_size.unwrap_or(cfg.pipeline.max_decoded_size),
    };
    // The same pseudonyms as `run` writes: with `privacy.pseudonymize` on, no identifier
    // reaches stdout either.
    let privacy = Pseudonymizer::new(&cfg.privacy);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    let finished = AtomicBool::new(false);
    let writer = Mutex::new(std::io::BufWriter::new(std::io::stdout()));
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        if tty {
            // A long derive over an archive shows where it is, as backfill does.
            s.spawn(|| {
                while !finished.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let n = done.load(Ordering::Relaxed);
                    let secs = started.elapsed().as_secs_f64().max(1e-9);
                    progress::show_line(&format!(
                        "derive: {n}/{} files, {:.0} files/s, {} failed",
                        files.len(),
                        n as f64 / secs,
                        failed.load(Ordering::Relaxed)
                    ));
                }
                progress::clear_line();
            });
        }
        let mut workers = Vec::new();
        for i in 0..threads {
            let worker = std::thread::Builder::new()
                .name(format!("derive-{i}"))
                .stack_size(THREAD_STACK_BYTES);
            workers.push(worker.spawn_scoped(s, || {
                let mut line = Vec::with_capacity(1024);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    line.clear();
                    let path_text = path.to_string_lossy();
                    let written = match derive_file(path, a.mode, limits) {
                        Ok(mut d) => {
                            privacy.instance(&mut d.meta);
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
                    done.fetch_add(1, Ordering::Relaxed);
                    if written.is_ok() {
                        line.push(b'\n');
                        let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
                        // A closed stdout (e.g. `| head`) ends the output, not the program.
                        let _ = w.write_all(&line);
                    }
                }
            })?);
        }
        for w in workers {
            let _ = w.join();
        }
        finished.store(true, Ordering::Relaxed);
        Ok(())
    })?;
    let _ = writer.lock().unwrap_or_else(|p| p.into_inner()).flush();
    let secs = started.elapsed().as_secs_f64();
    let n = files.len();
    let failed = failed.load(Ordering::Relaxed);
    let rate = n as f64 / secs.max(1e-9);
    let mb_per_s = bytes.load(Ordering::Relaxed) as f64 / 1e6 / secs.max(1e-9);
    out.summary_stderr(
        "derive",
        &format!(
            "derive: files={n} failed={failed} missing_paths={missing} mode={} threads={threads} elapsed={secs:.3}s rate={rate:.0} files/s {mb_per_s:.1} MB/s",
            a.mode.as_str()
        ),
        serde_json::json!({
            "files": n,
            "failed": failed,
            "missing_paths": missing,
            "mode": a.mode.as_str(),
            "threads": threads,
            "elapsed_s": secs,
            "rate_per_s": rate,
            "mb_per_s": mb_per_s,
        }),
    );
    Ok(if missing > 0 {
        ExitCode::from(EXIT_CANNOT)
    } else if failed > 0 {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}
