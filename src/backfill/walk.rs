//! The two walks of one source's roots, both blocking (directory reads and `stat` block, and
//! a network share can be slow) and so run on the blocking pool: the publishing walk, in a
//! fixed order so that a checkpoint position means the same on every run, and the counting
//! pass, which only lists directories, for the ETA.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{self, Pos, Resume};
use super::indexed::Candidate;
use super::progress::Counters;
use super::shared::SourceRun;

/// Walked entries waiting to be published, per source.
pub const WALK_CHANNEL: usize = 1024;

/// What the walker found.
#[derive(Debug)]
pub(super) enum Walked {
    File {
        pos: Pos,
        candidate: Candidate,
    },
    NotFile {
        pos: Option<Pos>,
    },
    Unreadable {
        pos: Option<Pos>,
        kind: Option<std::io::ErrorKind>,
    },
    NotUtf8,
}

/// Start the publishing walk of `run` on the blocking pool; it sends what it finds to `tx`.
pub(super) fn spawn_walk(run: &SourceRun, tx: mpsc::Sender<Walked>) -> JoinHandle<()> {
    let (roots, start) = (run.roots.clone(), run.start.clone());
    tokio::task::spawn_blocking(move || walk(&roots, start.as_ref(), &tx))
}

/// Start the counting pass of `run` on the blocking pool; it gives up once `done` fires.
pub(super) fn spawn_count(run: &SourceRun, done: CancellationToken) {
    let (roots, start, counters) = (run.roots.clone(), run.start.clone(), run.counters.clone());
    tokio::task::spawn_blocking(move || count(&roots, start.as_ref(), &counters, &done));
}

/// Modification time in epoch milliseconds, if the filesystem has one.
fn mtime_ms(md: &std::fs::Metadata) -> Option<i64> {
    let t = md.modified().ok()?;
    let ms = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).ok()?,
        Err(before) => -i64::try_from(before.duration().as_millis()).ok()?,
    };
    Some(ms)
}

/// Where root `index` resumes: `None` = from its start, `Some(None)` = skip it entirely
/// (the watermark is in a later root), `Some(Some(rel))` = after `rel`.
fn root_resume(index: usize, start: Option<&Pos>) -> Option<Option<&Path>> {
    match start {
        Some(p) if p.root > index => Some(None),
        Some(p) if p.root == index => Some(Some(p.path.as_path())),
        _ => None,
    }
}

/// The publishing walk of one source (blocking: runs on the blocking pool), in the
/// deterministic order; ends early when the receiver is gone.
fn walk(roots: &[PathBuf], start: Option<&Pos>, tx: &mpsc::Sender<Walked>) {
    for (index, root) in roots.iter().enumerate() {
        let resume = match root_resume(index, start) {
            Some(None) => continue,
            Some(Some(rel)) => Some(rel),
            None => None,
        };
        let mut it = walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter();
        while let Some(entry) = it.next() {
            let walked = match entry {
                Err(e) => Walked::Unreadable {
                    pos: None,
                    kind: e.io_error().map(|io| io.kind()),
                },
                Ok(e) => {
                    let is_dir = e.file_type().is_dir();
                    let rel = e.path().strip_prefix(root).unwrap_or(e.path());
                    if resumed_past(&mut it, rel, is_dir, resume) {
                        continue;
                    }
                    if is_dir {
                        continue;
                    }
                    let pos = rel.to_str().map(|r| Pos {
                        root: index,
                        path: PathBuf::from(r),
                    });
                    // Follow a symlink to see what it points at; `run` decides whether its
                    // target is inside a storage root.
                    match std::fs::metadata(e.path()) {
                        Err(err) => Walked::Unreadable {
                            pos,
                            kind: Some(err.kind()),
                        },
                        Ok(md) if !md.is_file() => Walked::NotFile { pos },
                        Ok(md) => match (pos, e.path().to_str()) {
                            (Some(pos), Some(path)) => Walked::File {
                                pos,
                                candidate: Candidate {
                                    file_path: path.to_string(),
                                    size: md.len(),
                                    mtime: mtime_ms(&md),
                                },
                            },
                            _ => Walked::NotUtf8,
                        },
                    }
                }
            };
            if tx.blocking_send(walked).is_err() {
                return;
            }
        }
    }
}

/// Whether the checkpoint `resume` (a path relative to the root) says this entry was already
/// published; a directory wholly before it is not descended into.
fn resumed_past(
    it: &mut walkdir::IntoIter,
    rel: &Path,
    is_dir: bool,
    resume: Option<&Path>,
) -> bool {
    let Some(at) = resume else {
        return false;
    };
    match checkpoint::resume_action(rel, is_dir, at) {
        Resume::Prune => {
            it.skip_current_dir();
            true
        }
        Resume::Skip => true,
        Resume::Visit => false,
    }
}

/// The counting pass of one source (blocking): entries the walk will hand over, by listing
/// directories only (no `stat`), skipping what the checkpoint skips.
fn count(roots: &[PathBuf], start: Option<&Pos>, counters: &Counters, done: &CancellationToken) {
    let mut n = 0u64;
    for (index, root) in roots.iter().enumerate() {
        let resume = match root_resume(index, start) {
            Some(None) => continue,
            Some(Some(rel)) => Some(rel),
            None => None,
        };
        let mut it = walkdir::WalkDir::new(root).follow_links(false).into_iter();
        while let Some(entry) = it.next() {
            if n.is_multiple_of(1024) && done.is_cancelled() {
                return;
            }
            let Ok(e) = entry else {
                n += 1;
                continue;
            };
            let is_dir = e.file_type().is_dir();
            let rel = e.path().strip_prefix(root).unwrap_or(e.path());
            if resumed_past(&mut it, rel, is_dir, resume) {
                continue;
            }
            if !is_dir {
                n += 1;
            }
        }
    }
    counters.total.store(n, Ordering::Relaxed);
    counters.counted.store(true, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_walk_yields_exactly_what_follows_the_position() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for p in ["a/1", "a/2", "b/c/1", "b/c/2", "b/d", "c", "z/9"] {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, p).unwrap();
        }
        std::fs::create_dir_all(root.join("e")).unwrap(); // empty directory: nothing
        let walked = |start: Option<Pos>| {
            let (tx, mut rx) = mpsc::channel(100);
            walk(&[root.to_path_buf()], start.as_ref(), &tx);
            drop(tx);
            let mut out = Vec::new();
            while let Ok(w) = rx.try_recv() {
                match w {
                    Walked::File { pos, candidate } => {
                        assert!(candidate.mtime.is_some());
                        assert_eq!(candidate.size as usize, pos.path.to_str().unwrap().len());
                        out.push(pos.path.to_str().unwrap().to_string());
                    }
                    other => panic!("{other:?}"),
                }
            }
            let counters = Counters::default();
            count(
                &[root.to_path_buf()],
                start.as_ref(),
                &counters,
                &CancellationToken::new(),
            );
            assert_eq!(counters.total.load(Ordering::Relaxed), out.len() as u64);
            out
        };
        let all = walked(None);
        assert_eq!(all, ["a/1", "a/2", "b/c/1", "b/c/2", "b/d", "c", "z/9"]);
        for (i, at) in all.iter().enumerate() {
            let rest = walked(Some(Pos {
                root: 0,
                path: at.into(),
            }));
            assert_eq!(rest, all[i + 1..], "after {at}");
        }
        // A later root's watermark skips this root entirely.
        assert!(walked(Some(Pos {
            root: 1,
            path: "".into()
        }))
        .is_empty());
    }
}
