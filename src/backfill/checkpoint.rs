//! Restartable backfills: a per-source watermark over the walk order and the checkpoint file.
//!
//! Each source is walked in a deterministic order (directory entries sorted by file name,
//! depth first), which is exactly the order of [`Pos`] (root index, then the path relative
//! to the root compared component by component). The [`Watermark`] records the last position
//! before which everything is finished: published *and* acknowledged, or needing no publish
//! (not a regular file, unreadable, already indexed). Acknowledgements arrive out of order
//! (one partition's are in order, partitions interleave), so it is the position just before
//! the lowest publish still unacknowledged. A failed publish holds it for good: the next run
//! starts before that file again.
//!
//! The checkpoint file holds every source's watermark and a fingerprint of what was walked
//! (the input topic, each source's name and absolute roots); it is rewritten atomically
//! (temporary file, fsync, rename) every few seconds and at the end. A resumed run skips
//! every position at or before its source's watermark, so it publishes again at most what was
//! acknowledged after the last write: each file at most once more.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Version of the checkpoint file format.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("reading checkpoint {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {path} is not a checkpoint of this version ({FORMAT_VERSION}): {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "checkpoint {path} was made for other sources ({recorded}); this run walks {given}. \
         Resume with the same sources and paths, or pass --reset-checkpoint to start over"
    )]
    Mismatch {
        path: PathBuf,
        recorded: String,
        given: String,
    },
    #[error("writing checkpoint {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding checkpoint: {0}")]
    Encode(#[source] serde_json::Error),
}

impl CheckpointError {
    /// A write may succeed later (disk full, a share back); a mismatch or a corrupt file not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CheckpointError::Write { .. } | CheckpointError::Read { .. }
        )
    }
}

/// A position in one source's walk: the root (index into the source's roots) and the path
/// relative to it. The derived order is the walk order (`Path` compares by components, as
/// the walk sorts each directory's entries by file name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pos {
    pub root: usize,
    pub path: PathBuf,
}

/// What to do with a walk entry when resuming after `resume` (in the same root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// After the watermark: process it.
    Visit,
    /// At or before it: skip it.
    Skip,
    /// A directory wholly before it: skip it and everything below.
    Prune,
}

/// Whether the entry `rel` (relative to its root; `is_dir` as walked) is past `resume`.
pub fn resume_action(rel: &Path, is_dir: bool, resume: &Path) -> Resume {
    if is_dir {
        // A directory on the way to the watermark is entered; one before it, not.
        if rel < resume && !resume.starts_with(rel) {
            Resume::Prune
        } else {
            Resume::Visit
        }
    } else if rel <= resume {
        Resume::Skip
    } else {
        Resume::Visit
    }
}

/// The watermark of one source over its walk order, with memory bounded by the number of
/// publishes awaiting acknowledgement (not by how far acknowledgements run ahead).
#[derive(Debug, Clone)]
pub struct Watermark<P> {
    next: u64,
    /// The latest entry handed to the watermark, finished or not.
    last: Option<P>,
    /// Unacknowledged publishes: sequence number → the entry before it.
    pending: BTreeMap<u64, Option<P>>,
    /// The lowest failed publish and the entry before it: the watermark never passes it.
    failed: Option<(u64, Option<P>)>,
}

impl<P: Clone> Watermark<P> {
    /// A watermark resuming after `start` (`None`: from the beginning).
    pub fn new(start: Option<P>) -> Self {
        Watermark {
            next: 0,
            last: start,
            pending: BTreeMap::new(),
            failed: None,
        }
    }

    /// An entry that needs no acknowledgement, in walk order.
    pub fn done(&mut self, pos: P) {
        self.last = Some(pos);
    }

    /// A published entry, in walk order; returns the number to acknowledge it with.
    pub fn sent(&mut self, pos: P) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.pending.insert(seq, self.last.replace(pos));
        seq
    }

    /// The broker acknowledged publish `seq`.
    pub fn acked(&mut self, seq: u64) {
        self.pending.remove(&seq);
    }

    /// Publish `seq` was not acknowledged: the watermark stays before it.
    pub fn failed(&mut self, seq: u64) {
        if let Some(before) = self.pending.remove(&seq) {
            if self.failed.as_ref().is_none_or(|(f, _)| seq < *f) {
                self.failed = Some((seq, before));
            }
        }
    }

    /// Everything up to and including this position is finished (`None`: nothing is).
    pub fn position(&self) -> Option<P> {
        let lowest_pending = self.pending.first_key_value();
        let lowest = match (lowest_pending, &self.failed) {
            (Some((p, before)), Some((f, fbefore))) => Some(if p < f { before } else { fbefore }),
            (Some((_, before)), None) => Some(before),
            (None, Some((_, fbefore))) => Some(fbefore),
            (None, None) => None,
        };
        match lowest {
            Some(before) => before.clone(),
            None => self.last.clone(),
        }
    }

    /// Publishes awaiting acknowledgement.
    pub fn unacked(&self) -> usize {
        self.pending.len()
    }
}

/// The checkpoint file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointFile {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// BLAKE3 (hex) of the input topic and each source's name and absolute roots: a resume
    /// must walk the same things.
    pub fingerprint: String,
    /// The input topic the messages went to (for people reading the file).
    pub topic: String,
    /// Per source, its roots and watermark.
    pub sources: Vec<SourceMark>,
    /// When the file was written (RFC 3339, UTC).
    pub updated_at: String,
}

/// One source in the checkpoint file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceMark {
    /// The source name (the store message's `source`).
    pub name: String,
    /// Absolute roots, in walk order.
    pub roots: Vec<PathBuf>,
    /// The last position whose publish and every earlier one were acknowledged (or needed
    /// none); `None` when nothing is finished yet.
    pub done: Option<Pos>,
}

/// The fingerprint of a backfill: `topic` and each `(name, absolute roots)`, sources in name
/// order (the order of `--source` flags does not matter, the order of a source's roots does).
pub fn fingerprint(topic: &str, sources: &[(String, Vec<PathBuf>)]) -> String {
    let mut sorted: Vec<&(String, Vec<PathBuf>)> = sources.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = blake3::Hasher::new();
    // Length-prefixed fields: no two different inputs hash the same bytes.
    let mut field = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(b"dicom-pipeline backfill checkpoint v1");
    field(topic.as_bytes());
    for (name, roots) in sorted {
        field(name.as_bytes());
        field(&(roots.len() as u64).to_le_bytes());
        for r in roots {
            field(r.as_os_str().as_encoded_bytes());
        }
    }
    h.finalize().to_hex().to_string()
}

/// A short human description of sources for error messages: `a=/x,/y b=/z`.
pub fn describe(sources: &[(String, Vec<PathBuf>)]) -> String {
    sources
        .iter()
        .map(|(name, roots)| {
            let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
            format!("{name}={}", roots.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Read the checkpoint at `path`, if there is one.
pub fn load(path: &Path) -> Result<Option<CheckpointFile>, CheckpointError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Read {
                path: path.into(),
                source,
            })
        }
    };
    let file: CheckpointFile =
        serde_json::from_slice(&text).map_err(|source| CheckpointError::Parse {
            path: path.into(),
            source,
        })?;
    if file.version != FORMAT_VERSION {
        return Err(CheckpointError::Parse {
            path: path.into(),
            source: serde::de::Error::custom(format!("version {}", file.version)),
        });
    }
    Ok(Some(file))
}

/// Write `file` to `path` atomically: a temporary file next to it, fsync, rename, then fsync
/// the directory (best effort), so a crash leaves the old checkpoint or the new one.
pub fn save(path: &Path, file: &CheckpointFile) -> Result<(), CheckpointError> {
    let err = |source| CheckpointError::Write {
        path: path.into(),
        source,
    };
    let mut text = serde_json::to_vec_pretty(file).map_err(CheckpointError::Encode)?;
    text.push(b'\n');
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&text).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_waits_for_the_lowest_unacknowledged_publish() {
        let mut w: Watermark<u32> = Watermark::new(None);
        assert_eq!(w.position(), None);
        let a = w.sent(1);
        let b = w.sent(2);
        w.done(3); // not a file: nothing to wait for
        let c = w.sent(4);
        let d = w.sent(5);
        // Acks out of order: 4 and 2 first; 1 is still out, so nothing is finished.
        w.acked(c);
        w.acked(b);
        assert_eq!(w.position(), None);
        assert_eq!(w.unacked(), 2);
        // 1 acked: 1..4 are finished, 5 is not.
        w.acked(a);
        assert_eq!(w.position(), Some(4));
        w.acked(d);
        assert_eq!(w.position(), Some(5));
        w.done(6);
        assert_eq!(w.position(), Some(6));
        assert_eq!(w.unacked(), 0);
    }

    #[test]
    fn a_failed_publish_holds_the_watermark_for_good() {
        let mut w: Watermark<u32> = Watermark::new(Some(10));
        assert_eq!(w.position(), Some(10));
        let a = w.sent(11);
        let b = w.sent(12);
        let c = w.sent(13);
        w.failed(b);
        w.acked(a);
        w.acked(c);
        assert_eq!(w.position(), Some(11));
        w.done(14);
        let d = w.sent(15);
        w.failed(d); // a later failure does not lower it further than the first
        assert_eq!(w.position(), Some(11));
        // An earlier failure does.
        let mut w: Watermark<u32> = Watermark::new(None);
        let a = w.sent(1);
        let b = w.sent(2);
        w.failed(b);
        w.failed(a);
        assert_eq!(w.position(), None);
        // Acknowledging a publish twice, or one never sent, changes nothing.
        let mut w: Watermark<u32> = Watermark::new(None);
        let a = w.sent(1);
        w.acked(a);
        w.acked(a);
        w.acked(99);
        w.failed(99);
        assert_eq!(w.position(), Some(1));
    }

    /// Every completion order ends at the same watermark, and at every step the watermark is
    /// exactly the last position before the first unfinished one.
    #[test]
    fn any_ack_order_gives_the_prefix_watermark() {
        use proptest::prelude::*;
        proptest!(|(order in Just((0..12u64).collect::<Vec<_>>()).prop_shuffle(),
                    done_mask in proptest::collection::vec(any::<bool>(), 12))| {
            let mut w: Watermark<u64> = Watermark::new(None);
            let mut seq_of = BTreeMap::new();
            let mut finished = [false; 12];
            for pos in 0..12u64 {
                if done_mask[pos as usize] {
                    w.done(pos);
                    finished[pos as usize] = true;
                } else {
                    seq_of.insert(pos, w.sent(pos));
                }
            }
            for pos in order {
                if let Some(seq) = seq_of.get(&pos) {
                    w.acked(*seq);
                    finished[pos as usize] = true;
                }
                let prefix = finished.iter().take_while(|f| **f).count() as u64;
                let want = prefix.checked_sub(1);
                prop_assert_eq!(w.position(), want);
            }
            prop_assert_eq!(w.position(), Some(11));
        });
    }

    #[test]
    fn positions_order_like_the_sorted_walk() {
        let p = |root: usize, path: &str| Pos {
            root,
            path: path.into(),
        };
        // Depth first, names sorted: a, a/b, a/b/z, a/b.c, a/c, b; then the next root.
        let walk = [
            p(0, ""),
            p(0, "a"),
            p(0, "a/b"),
            p(0, "a/b/z"),
            p(0, "a/b.c"),
            p(0, "a/c"),
            p(0, "b"),
            p(1, ""),
            p(1, "0"),
        ];
        for pair in walk.windows(2) {
            assert!(pair[0] < pair[1], "{pair:?}");
        }
    }

    #[test]
    fn resuming_skips_and_prunes_what_is_behind() {
        let at = Path::new("p2/st1/i3.dcm");
        let act = |rel: &str, dir: bool| resume_action(Path::new(rel), dir, at);
        assert_eq!(act("", true), Resume::Visit); // the root
        assert_eq!(act("p1", true), Resume::Prune);
        assert_eq!(act("p2", true), Resume::Visit);
        assert_eq!(act("p2/st0", true), Resume::Prune);
        assert_eq!(act("p2/st1", true), Resume::Visit);
        assert_eq!(act("p2/st1/i2.dcm", false), Resume::Skip);
        assert_eq!(act("p2/st1/i3.dcm", false), Resume::Skip);
        assert_eq!(act("p2/st1/i4.dcm", false), Resume::Visit);
        assert_eq!(act("p2/st2", true), Resume::Visit);
        assert_eq!(act("p3", true), Resume::Visit);
        assert_eq!(act("p10", true), Resume::Prune); // "p10" < "p2" byte-wise
                                                     // A root that is a file: its only entry has the empty relative path.
        assert_eq!(
            resume_action(Path::new(""), false, Path::new("")),
            Resume::Skip
        );
    }

    #[test]
    fn the_fingerprint_covers_topic_names_and_roots() {
        let s = |v: &[(&str, &[&str])]| -> Vec<(String, Vec<PathBuf>)> {
            v.iter()
                .map(|(n, r)| (n.to_string(), r.iter().map(PathBuf::from).collect()))
                .collect()
        };
        let base = fingerprint("t", &s(&[("a", &["/x"]), ("b", &["/y", "/z"])]));
        // Source order on the command line does not matter.
        assert_eq!(
            base,
            fingerprint("t", &s(&[("b", &["/y", "/z"]), ("a", &["/x"])]))
        );
        for other in [
            fingerprint("u", &s(&[("a", &["/x"]), ("b", &["/y", "/z"])])),
            fingerprint("t", &s(&[("a", &["/x"]), ("b", &["/z", "/y"])])),
            fingerprint("t", &s(&[("a", &["/x"]), ("c", &["/y", "/z"])])),
            fingerprint("t", &s(&[("a", &["/x", "/y"]), ("b", &["/z"])])),
            fingerprint("t", &s(&[("a", &["/x"])])),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn the_file_is_written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        assert!(load(&path).unwrap().is_none());
        let file = CheckpointFile {
            version: FORMAT_VERSION,
            fingerprint: "f".into(),
            topic: "dicom.store".into(),
            sources: vec![SourceMark {
                name: "a".into(),
                roots: vec!["/x".into()],
                done: Some(Pos {
                    root: 0,
                    path: "p/q.dcm".into(),
                }),
            }],
            updated_at: "2026-01-01T00:00:00Z".into(),
        };
        save(&path, &file).unwrap();
        save(&path, &file).unwrap();
        assert_eq!(load(&path).unwrap(), Some(file.clone()));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("cp.json")]);
        std::fs::write(&path, "{\"version\": 1}").unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(err, CheckpointError::Parse { .. }), "{err}");
        let mut v2 = file;
        v2.version = 2;
        std::fs::write(&path, serde_json::to_vec(&v2).unwrap()).unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("version 2"));
        let err = save(&dir.path().join("missing/cp.json"), &v2).unwrap_err();
        assert!(err.is_retryable(), "{err}");
    }
}
