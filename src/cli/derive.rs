//! `derive`: the per-file derivation alone, one JSON line per file: the `dicom.image`
//! record `run` would publish for it (one definition, `model::ImageRecord`).

use std::io::{BufWriter, IsTerminal, Stdout, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use time::OffsetDateTime;

use super::args::DeriveArgs;
use super::{Output, EXIT_CANNOT, EXIT_FAILURE};
use crate::backfill::progress;
use crate::compute::{derive_file, Derived, Limits, Mode, THREAD_STACK_BYTES};
use crate::config::Config;
use crate::model::{DicomStoreMeta, SourceOffset};
use crate::privacy::Pseudonymizer;
use crate::records::records;

/// Where a `derive` line's record was "read from": no topic (the record is the one `run`
/// would publish for the file, with `kafka_partition` / `kafka_offset` -1).
fn not_from_kafka() -> SourceOffset {
    SourceOffset {
        topic: String::new(),
        partition: -1,
        offset: -1,
    }
}

/// The store message `run` would have received for `path`, as `backfill` writes it.
fn store_message(cfg: &Config, path: String, d: &Derived, now: OffsetDateTime) -> DicomStoreMeta {
    let file_mtime = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .map(|t| (OffsetDateTime::from(t).unix_timestamp_nanos() / 1_000_000) as i64);
    DicomStoreMeta {
        trace_id: String::new(),
        tenant_id: cfg.pipeline.tenant_id.clone(),
        source: "derive".into(),
        file_path: path,
        file_size: d.file_size,
        file_mtime,
        received_at: now,
        patient_id: None,
        study_uid: None,
        series_uid: None,
        sop_uid: None,
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
    let job = Job::new(cfg, a, &files);
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    job.run(threads, tty, started)?;
    let _ = job.writer.lock().unwrap_or_else(|p| p.into_inner()).flush();
    Ok(job.finish(out, threads, missing, started))
}

/// What the derive threads share: the files, how to derive them, the counters and stdout.
struct Job<'a> {
    cfg: &'a Config,
    files: &'a [PathBuf],
    mode: Mode,
    limits: Limits,
    /// The same pseudonyms as `run` writes: with `privacy.pseudonymize` on, no identifier
    /// reaches stdout either.
    privacy: Pseudonymizer,
    /// Index of the next file to take.
    next: AtomicUsize,
    done: AtomicUsize,
    failed: AtomicUsize,
    bytes: AtomicU64,
    /// Set once every derive thread has stopped: ends the progress line.
    finished: AtomicBool,
    writer: Mutex<BufWriter<Stdout>>,
}

impl<'a> Job<'a> {
    fn new(cfg: &'a Config, a: &DeriveArgs, files: &'a [PathBuf]) -> Job<'a> {
        Job {
            cfg,
            files,
            mode: a.mode,
            limits: Limits {
                max_file_size: a.max_file_size.unwrap_or(cfg.pipeline.max_file_size),
                max_decoded_size: a.max_decoded_size.unwrap_or(cfg.pipeline.max_decoded_size),
            },
            privacy: Pseudonymizer::new(&cfg.privacy),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            writer: Mutex::new(BufWriter::new(std::io::stdout())),
        }
    }

    /// Derive every file on `threads` threads of their own (compute-sized stacks), showing
    /// progress on a terminal, until the list is done.
    fn run(&self, threads: usize, tty: bool, started: Instant) -> Result<()> {
        std::thread::scope(|s| -> Result<()> {
            if tty {
                // A long derive over an archive shows where it is, as backfill does.
                s.spawn(|| self.show_progress(started));
            }
            let mut workers = Vec::new();
            for i in 0..threads {
                let worker = std::thread::Builder::new()
                    .name(format!("derive-{i}"))
                    .stack_size(THREAD_STACK_BYTES);
                workers.push(worker.spawn_scoped(s, || self.work())?);
            }
            for w in workers {
                let _ = w.join();
            }
            self.finished.store(true, Ordering::Relaxed);
            Ok(())
        })
    }

    /// The progress line on stderr, redrawn every 250 ms until the threads have stopped.
    fn show_progress(&self, started: Instant) {
        while !self.finished.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            let n = self.done.load(Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            progress::show_line(&format!(
                "derive: {n}/{} files, {:.0} files/s, {} failed",
                self.files.len(),
                n as f64 / secs,
                self.failed.load(Ordering::Relaxed)
            ));
        }
        progress::clear_line();
    }

    /// One derive thread: take the next file until none is left, writing each file's line
    /// to stdout whole.
    fn work(&self) {
        let mut line = Vec::with_capacity(2048);
        let src = not_from_kafka();
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(path) = self.files.get(i) else { break };
            line.clear();
            let written = self.derive_line(path, &src, &mut line);
            self.done.fetch_add(1, Ordering::Relaxed);
            if written.is_ok() {
                line.push(b'\n');
                let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
                // A closed stdout (e.g. `| head`) ends the output, not the program.
                let _ = w.write_all(&line);
            }
        }
    }

    /// `path`'s JSON line into `line`: the image record `run` would publish, or the failure
    /// (reason code and error).
    fn derive_line(
        &self,
        path: &Path,
        src: &SourceOffset,
        line: &mut Vec<u8>,
    ) -> serde_json::Result<()> {
        let path_text = path.to_string_lossy();
        match derive_file(path, self.mode, self.limits) {
            Ok(mut d) => {
                self.privacy.instance(&mut d.meta);
                self.bytes.fetch_add(d.file_size, Ordering::Relaxed);
                let now = OffsetDateTime::now_utc();
                let msg = store_message(self.cfg, path_text.to_string(), &d, now);
                let (image, _) = records(&msg, d, src, now);
                serde_json::to_writer(line, &image)
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let record = serde_json::json!({
                    "file_path": path_text,
                    "reason": e.reason().as_str(),
                    "error": e.to_string(),
                });
                serde_json::to_writer(line, &record)
            }
        }
    }

    /// The summary on stderr, and the exit code: paths that were not there first, then files
    /// that could not be derived.
    fn finish(&self, out: Output, threads: usize, missing: usize, started: Instant) -> ExitCode {
        let secs = started.elapsed().as_secs_f64();
        let n = self.files.len();
        let failed = self.failed.load(Ordering::Relaxed);
        let rate = n as f64 / secs.max(1e-9);
        let mb_per_s = self.bytes.load(Ordering::Relaxed) as f64 / 1e6 / secs.max(1e-9);
        out.summary_stderr(
            "derive",
            &format!(
                "derive: files={n} failed={failed} missing_paths={missing} mode={} threads={threads} elapsed={secs:.3}s rate={rate:.0} files/s {mb_per_s:.1} MB/s",
                self.mode.as_str()
            ),
            serde_json::json!({
                "files": n,
                "failed": failed,
                "missing_paths": missing,
                "mode": self.mode.as_str(),
                "threads": threads,
                "elapsed_s": secs,
                "rate_per_s": rate,
                "mb_per_s": mb_per_s,
            }),
        );
        if missing > 0 {
            ExitCode::from(EXIT_CANNOT)
        } else if failed > 0 {
            ExitCode::from(EXIT_FAILURE)
        } else {
            ExitCode::SUCCESS
        }
    }
}
