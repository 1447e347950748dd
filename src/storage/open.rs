//! Opening a file contained in a storage root: `openat2(RESOLVE_BENEATH)` relative to the
//! root's handle or, where that cannot decide, the verified slow path (canonicalise, open
//! with `O_NOFOLLOW`, check the opened file's own path). Only regular files are returned.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::Ordering;

use rustix::fs::{Mode as FileMode, OFlags, ResolveFlags};

use super::{OpenError, RootId, StorageRoots};

/// An opened file inside a root.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    /// Found under the secondary root (missing from its primary root).
    pub secondary: bool,
    /// The root it was found under.
    pub root: RootId,
}

impl StorageRoots {
    /// Open `file_path` if it is a regular file inside a root; a file missing from its
    /// primary root is looked up at the same relative path under the secondary root.
    pub fn open(&self, file_path: &str) -> Result<Opened, OpenError> {
        let path = Path::new(file_path);
        if !path.is_absolute() {
            return Err(OpenError::NotAbsolute);
        }
        let Some((root, relative)) = self.roots[..self.primaries]
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.relative(path).map(|rel| (i, rel)))
        else {
            // Say "outside" for paths that could never be inside: no probing of the rest of
            // the file system through the dead-letter topic.
            return Err(OpenError::OutsideRoot);
        };
        match self.open_in(root, relative) {
            Err(OpenError::NotFound) if self.roots.len() > self.primaries => {
                let secondary = self.primaries;
                let mut opened = self.open_in(secondary, relative)?;
                opened.secondary = true;
                Ok(opened)
            }
            other => other,
        }
    }

    /// Open `relative` beneath root `root`.
    fn open_in(&self, root: RootId, relative: &Path) -> Result<Opened, OpenError> {
        let r = &self.roots[root];
        if relative.as_os_str().is_empty() {
            return Err(OpenError::NotAFile);
        }
        if climbs_out(relative) {
            // `..` past the root, whatever exists: refused without touching the disk.
            return Err(OpenError::OutsideRoot);
        }
        let dir = r
            .handle()
            .map_err(|cause| OpenError::Unavailable { root, cause })?;
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let opened = if self.no_openat2.load(Ordering::Relaxed) {
            Err(rustix::io::Errno::NOSYS)
        } else {
            rustix::fs::openat2(
                &dir,
                relative,
                flags,
                FileMode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            )
        };
        let fd = match opened {
            Ok(fd) => fd,
            // Absolute symlinks (refused by RESOLVE_BENEATH even when they stay inside) and
            // escapes: decide on the canonical path.
            Err(rustix::io::Errno::XDEV) => self.open_verified(root, relative)?,
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
                if !self.no_openat2.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "openat2 is not available here (kernel before 5.6, or a sandbox refusing it): storage containment uses canonical paths checked after the open"
                    );
                }
                self.open_verified(root, relative)?
            }
            Err(e) => return Err(self.classify(root, io::Error::from(e))),
        };
        let file = regular(fd).map_err(|e| match e {
            Some(e) => self.classify(root, e),
            None => OpenError::NotAFile,
        })?;
        Ok(Opened {
            file,
            secondary: false,
            root,
        })
    }

    /// The slow path: canonicalise, refuse what lies outside the root, open without
    /// following a final symlink, and check the opened file's own path.
    fn open_verified(&self, root: RootId, relative: &Path) -> Result<OwnedFd, OpenError> {
        let r = &self.roots[root];
        let full = r.path.join(relative);
        let real = match full.canonicalize() {
            Ok(p) => p,
            Err(e) => return Err(self.classify(root, e)),
        };
        if !real.starts_with(&r.path) {
            return Err(OpenError::OutsideRoot);
        }
        let fd = rustix::fs::open(
            &real,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::NOFOLLOW,
            FileMode::empty(),
        )
        .map_err(|e| match e {
            // The last component became a symlink after canonicalisation: refused.
            rustix::io::Errno::LOOP => OpenError::OutsideRoot,
            e => self.classify(root, io::Error::from(e)),
        })?;
        // What was opened is what was checked: a directory swapped for a symlink between
        // the canonicalisation and the open shows here.
        let link = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        match std::fs::read_link(&link) {
            Ok(opened) if opened == real => Ok(fd),
            Ok(_) => Err(OpenError::OutsideRoot),
            Err(e) => Err(OpenError::Io { root, source: e }),
        }
    }
}

/// Whether `..` components take a relative path above its start (read lexically).
fn climbs_out(relative: &Path) -> bool {
    use std::path::Component;
    let mut depth = 0i64;
    for c in relative.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// The opened descriptor as a file, if it is a regular file (`Err(None)` if it is not).
fn regular(fd: OwnedFd) -> Result<File, Option<io::Error>> {
    let st = rustix::fs::fstat(fd.as_fd()).map_err(|e| Some(io::Error::from(e)))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(None);
    }
    // Back to blocking reads (O_NONBLOCK was only for the open; regular files ignore it).
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| Some(io::Error::from(e)))?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(|e| Some(io::Error::from(e)))?;
    Ok(File::from(fd))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::Reason;
    use std::io::Read;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicBool;

    struct Setup {
        root: tempfile::TempDir,
        outside: tempfile::TempDir,
        roots: StorageRoots,
    }

    impl StorageRoots {
        /// As on a kernel without openat2: every open takes the verified path.
        fn without_openat2(self) -> Self {
            self.no_openat2.store(true, Ordering::Relaxed);
            self
        }
    }

    fn setup() -> Setup {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("a.dcm"), b"inside").unwrap();
        std::fs::create_dir(root.path().join("sub")).unwrap();
        std::fs::write(outside.path().join("secret.dcm"), b"outside").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.dcm"),
            root.path().join("escape.dcm"),
        )
        .unwrap();
        let roots = StorageRoots::new(&[root.path().to_path_buf()], None).unwrap();
        Setup {
            root,
            outside,
            roots,
        }
    }

    pub(in crate::storage) fn s(p: PathBuf) -> String {
        p.to_str().unwrap().to_string()
    }

    pub(in crate::storage) fn content(o: Opened) -> String {
        let mut text = String::new();
        let mut f = o.file;
        f.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn opens_files_inside_a_root() {
        let t = setup();
        let o = t.roots.open(&s(t.root.path().join("a.dcm"))).unwrap();
        assert!(!o.secondary);
        assert_eq!(content(o), "inside");
    }

    #[test]
    fn classifies_each_failure() {
        classifies_each_failure_with(setup());
        let mut t = setup();
        t.roots = t.roots.without_openat2();
        classifies_each_failure_with(t);
    }

    fn classifies_each_failure_with(t: Setup) {
        let root = t.root.path();
        let cases = [
            (s(root.join("missing.dcm")), Reason::FileNotFound),
            (s(root.join("sub/missing.dcm")), Reason::FileNotFound),
            (s(root.join("a.dcm/x")), Reason::FileNotFound),
            (s(root.join("sub")), Reason::NotAFile),
            (s(root.to_path_buf()), Reason::NotAFile),
            (s(root.join("escape.dcm")), Reason::PathOutsideRoot),
            (
                s(t.outside.path().join("secret.dcm")),
                Reason::PathOutsideRoot,
            ),
            (
                s(root.join("../x/../../etc/passwd")),
                Reason::PathOutsideRoot,
            ),
            (
                s(root.join("sub/../../etc/passwd")),
                Reason::PathOutsideRoot,
            ),
            (
                "/nonexistent/elsewhere.dcm".to_string(),
                Reason::PathOutsideRoot,
            ),
            ("relative/a.dcm".to_string(), Reason::InvalidMessage),
        ];
        for (path, want) in cases {
            let err = t.roots.open(&path).unwrap_err();
            assert_eq!(err.reason(), want, "{path}: {err}");
        }
    }

    #[test]
    fn symlinks_that_stay_inside_are_followed_absolute_or_relative() {
        symlinks_inside_with(setup());
        let mut t = setup();
        t.roots = t.roots.without_openat2();
        symlinks_inside_with(t);
    }

    fn symlinks_inside_with(t: Setup) {
        let root = t.root.path().canonicalize().unwrap();
        std::os::unix::fs::symlink("a.dcm", root.join("rel.dcm")).unwrap();
        std::os::unix::fs::symlink(root.join("a.dcm"), root.join("abs.dcm")).unwrap();
        std::os::unix::fs::symlink(&root, root.join("sub/loop")).unwrap();
        for name in ["rel.dcm", "abs.dcm", "sub/loop/a.dcm", "sub/../a.dcm"] {
            let o = t.roots.open(&s(root.join(name))).unwrap();
            assert_eq!(content(o), "inside", "{name}");
        }
    }

    #[test]
    fn a_fifo_is_not_a_file_and_does_not_block() {
        let t = setup();
        let fifo = t.root.path().join("pipe.dcm");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = t.roots.open(&s(fifo)).unwrap_err();
        assert_eq!(err.reason(), Reason::NotAFile, "{err}");
    }

    #[test]
    fn a_root_reached_through_a_symlink_accepts_either_path() {
        let t = setup();
        let link_dir = tempfile::tempdir().unwrap();
        let link = link_dir.path().join("archive");
        std::os::unix::fs::symlink(t.root.path(), &link).unwrap();
        let roots = StorageRoots::new(std::slice::from_ref(&link), None).unwrap();
        assert_eq!(
            content(roots.open(&s(link.join("a.dcm"))).unwrap()),
            "inside"
        );
        let canonical = t.root.path().canonicalize().unwrap().join("a.dcm");
        assert_eq!(content(roots.open(&s(canonical)).unwrap()), "inside");
    }

    #[test]
    fn a_missing_file_is_taken_from_the_secondary_root() {
        let t = setup();
        let mirror = tempfile::tempdir().unwrap();
        std::fs::create_dir(mirror.path().join("sub")).unwrap();
        std::fs::write(mirror.path().join("sub/only-here.dcm"), b"mirror").unwrap();
        std::fs::write(mirror.path().join("a.dcm"), b"mirror").unwrap();
        std::os::unix::fs::symlink(
            t.outside.path().join("secret.dcm"),
            mirror.path().join("sub/escape.dcm"),
        )
        .unwrap();
        let roots = StorageRoots::new(&[t.root.path().to_path_buf()], Some(mirror.path())).unwrap();
        let root = t.root.path();

        // Present under the primary root: the primary copy, even if the mirror has one.
        let found = roots.open(&s(root.join("a.dcm"))).unwrap();
        assert!(!found.secondary);
        assert_eq!(content(found), "inside");
        // Missing from the primary: the mirror's copy at the same relative path.
        let found = roots.open(&s(root.join("sub/only-here.dcm"))).unwrap();
        assert!(found.secondary);
        assert_eq!(content(found), "mirror");
        // Missing from both: still file_not_found.
        let err = roots.open(&s(root.join("gone.dcm"))).unwrap_err();
        assert_eq!(err.reason(), Reason::FileNotFound);
        // A symlink in the mirror that leaves it is refused like one in a primary root.
        let err = roots.open(&s(root.join("sub/escape.dcm"))).unwrap_err();
        assert_eq!(err.reason(), Reason::PathOutsideRoot);
        // Paths outside every primary root never reach the mirror.
        let err = roots
            .open(&s(t.outside.path().join("only-here.dcm")))
            .unwrap_err();
        assert_eq!(err.reason(), Reason::PathOutsideRoot);
    }

    /// A directory on the path is swapped for a symlink to the outside, again and again,
    /// while files are opened through it: every open either reads the inside file or is
    /// refused; none ever reads the outside one.
    #[test]
    fn a_symlink_swapped_in_during_opens_never_leads_outside() {
        swapped_symlink_with(setup());
        let mut t = setup();
        t.roots = t.roots.without_openat2();
        swapped_symlink_with(t);
    }

    fn swapped_symlink_with(t: Setup) {
        let root = t.root.path().canonicalize().unwrap();
        let real = root.join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("x.dcm"), b"inside").unwrap();
        std::fs::write(t.outside.path().join("x.dcm"), b"outside").unwrap();
        let dir = root.join("d");
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flipper = {
            let (dir, real, outside, stop) = (
                dir.clone(),
                real.clone(),
                t.outside.path().to_path_buf(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Inside through a relative link (the openat2 path), inside through an
                    // absolute one (the verified path), outside.
                    let target = match i % 3 {
                        0 => PathBuf::from("real"),
                        1 => real.clone(),
                        _ => outside.clone(),
                    };
                    let tmp = dir.with_extension(format!("tmp{i}"));
                    std::os::unix::fs::symlink(&target, &tmp).unwrap();
                    std::fs::rename(&tmp, &dir).unwrap();
                    i += 1;
                }
                i
            })
        };
        let file = s(dir.join("x.dcm"));
        let (mut inside, mut refused) = (0, 0);
        for _ in 0..3000 {
            match t.roots.open(&file) {
                Ok(o) => {
                    assert_eq!(content(o), "inside");
                    inside += 1;
                }
                Err(e) => {
                    assert!(
                        matches!(e.reason(), Reason::PathOutsideRoot | Reason::FileNotFound),
                        "{e}"
                    );
                    refused += 1;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let flips = flipper.join().unwrap();
        assert!(flips > 10, "the symlink was swapped only {flips} times");
        assert!(
            inside > 0 && refused > 0,
            "inside {inside}, refused {refused}"
        );
    }
}
