//! The run's side of the checkpoint (the file's format and the watermark are in
//! [`checkpoint`]): where each source resumes, the snapshot of every source's position, the
//! writer that keeps the file current while running, and the last write at the end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{self, CheckpointError, CheckpointFile, Pos, SourceMark};
use super::shared::{lock, SharedMark, SourceRun};
use super::{BackfillError, Options};

/// How often the checkpoint file is rewritten while running.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);

/// The checkpoint as it stands, made on demand (by the writer, and at the end).
pub(super) type Snapshot = Arc<dyn Fn() -> CheckpointFile + Send + Sync>;

/// Where each source resumes: from the checkpoint file, unless there is none or
/// `--reset-checkpoint` ignores it.
pub(super) fn starts(
    opts: &Options,
    fingerprint: &str,
    topic: &str,
    resolved: &[(String, Vec<PathBuf>)],
) -> Result<Vec<Option<Pos>>, BackfillError> {
    match &opts.checkpoint {
        Some(path) if !opts.reset_checkpoint => {
            resume_positions(path, fingerprint, topic, resolved)
        }
        _ => Ok(vec![None; resolved.len()]),
    }
}

/// Where each source resumes, from the checkpoint at `path` (none yet: from the start). A
/// checkpoint of other sources, paths or topic is refused.
fn resume_positions(
    path: &Path,
    fingerprint: &str,
    topic: &str,
    resolved: &[(String, Vec<PathBuf>)],
) -> Result<Vec<Option<Pos>>, BackfillError> {
    let Some(file) = checkpoint::load(path)? else {
        return Ok(vec![None; resolved.len()]);
    };
    let mismatch = |recorded: String| CheckpointError::Mismatch {
        path: path.into(),
        recorded,
        given: format!("{} to {topic}", checkpoint::describe(resolved)),
    };
    if file.fingerprint != fingerprint {
        let recorded: Vec<(String, Vec<PathBuf>)> = file
            .sources
            .iter()
            .map(|m| (m.name.clone(), m.roots.clone()))
            .collect();
        let recorded = format!("{} to {}", checkpoint::describe(&recorded), file.topic);
        return Err(mismatch(recorded).into());
    }
    let mut starts = Vec::new();
    for (name, roots) in resolved {
        let done = file
            .sources
            .iter()
            .find(|m| &m.name == name)
            .and_then(|m| m.done.clone());
        if done.as_ref().is_some_and(|p| p.root >= roots.len()) {
            return Err(mismatch(format!("a position past the roots of `{name}`")).into());
        }
        starts.push(done);
    }
    tracing::info!(
        sources = resolved.len(),
        resumed = starts.iter().filter(|s| s.is_some()).count(),
        "resuming from the checkpoint"
    );
    Ok(starts)
}

/// The checkpoint of `runs`: each source's acknowledged position, under `fingerprint`.
pub(super) fn snapshotter(runs: &[SourceRun], fingerprint: String, topic: &str) -> Snapshot {
    let marks: Vec<(String, Vec<PathBuf>, SharedMark)> = runs
        .iter()
        .map(|r| (r.name.clone(), r.roots.clone(), r.mark.clone()))
        .collect();
    let topic = topic.to_string();
    Arc::new(move || CheckpointFile {
        version: checkpoint::FORMAT_VERSION,
        fingerprint: fingerprint.clone(),
        topic: topic.clone(),
        sources: marks
            .iter()
            .map(|(name, roots, mark)| SourceMark {
                name: name.clone(),
                roots: roots.clone(),
                done: lock(mark).position(),
            })
            .collect(),
        updated_at: OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    })
}

/// Rewrite the checkpoint at `path` every [`CHECKPOINT_INTERVAL`] when it changed, until
/// `stop` fires; a failed write is retried at the next interval.
pub(super) fn spawn_writer(
    path: PathBuf,
    snapshot: Snapshot,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Option<Vec<SourceMark>> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CHECKPOINT_INTERVAL) => {}
                _ = stop.cancelled() => break,
            }
            let file = snapshot();
            if last.as_ref() == Some(&file.sources) {
                continue;
            }
            let marks = file.sources.clone();
            let path = path.clone();
            match tokio::task::spawn_blocking(move || checkpoint::save(&path, &file)).await {
                Ok(Ok(())) => last = Some(marks),
                Ok(Err(e)) => tracing::warn!(error = %e, "checkpoint not written; retrying"),
                Err(e) => tracing::warn!(error = %e, "checkpoint writer failed; retrying"),
            }
        }
    })
}

/// The last write, once everything is settled: the error if the file could not be written.
pub(super) async fn save_final(path: &Path, snapshot: &Snapshot) -> Option<BackfillError> {
    let file = snapshot();
    let path = path.to_path_buf();
    let saved = tokio::task::spawn_blocking(move || checkpoint::save(&path, &file)).await;
    match saved {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.into()),
        Err(e) => {
            tracing::error!(error = %e, "final checkpoint write failed");
            None
        }
    }
}
