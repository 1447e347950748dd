//! The storage roots and what each was at start: a root that is missing, replaced (an
//! unmounted share) or failing with I/O errors is an outage, not a file that is missing.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use rustix::fs::{Mode as FileMode, OFlags};

use super::{OpenError, RootId};

/// A storage root: where it is, and what it was at start.
#[derive(Debug, Clone)]
pub(super) struct Root {
    /// Canonical path (symlinks resolved).
    pub(super) path: PathBuf,
    /// The path as configured, when it differs (a root reached through a symlink): store
    /// messages may name files under either.
    alias: Option<PathBuf>,
    /// (device, inode) at start.
    identity: (u64, u64),
}

/// Canonical storage roots, in preference order, and an optional secondary copy.
#[derive(Debug)]
pub struct StorageRoots {
    /// The primary roots, then the secondary (if any) at index `primaries`.
    pub(super) roots: Vec<Root>,
    pub(super) primaries: usize,
    /// Set once `openat2` turned out to be unavailable (old kernel, seccomp): every open
    /// takes the verified slow path from then on.
    pub(super) no_openat2: AtomicBool,
}

impl StorageRoots {
    /// Record the roots' identities. Each must be an existing directory.
    pub fn new(roots: &[PathBuf], secondary: Option<&Path>) -> io::Result<StorageRoots> {
        let mut out = Vec::new();
        for r in roots.iter().map(PathBuf::as_path).chain(secondary) {
            out.push(Root::at(r)?);
        }
        Ok(StorageRoots {
            roots: out,
            primaries: roots.len(),
            no_openat2: AtomicBool::new(false),
        })
    }

    /// The root's canonical path (for logs and metrics: a root names no patient).
    pub fn path(&self, root: RootId) -> &Path {
        &self.roots[root].path
    }

    /// How many roots there are, the secondary included.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// Whether `root` is there and is still the directory it was at start.
    pub fn probe(&self, root: RootId) -> Result<(), String> {
        self.roots[root].handle().map(drop)
    }

    /// A failure to open something beneath `root`: the root's own state decides whether
    /// the file is missing (or unreadable) or the storage is gone.
    pub(super) fn classify(&self, root: RootId, e: io::Error) -> OpenError {
        if let Err(cause) = self.probe(root) {
            return OpenError::Unavailable { root, cause };
        }
        let missing =
            [rustix::io::Errno::NOENT, rustix::io::Errno::NOTDIR].map(|e| e.raw_os_error());
        match e.raw_os_error() {
            Some(code) if missing.contains(&code) => OpenError::NotFound,
            _ => OpenError::Io { root, source: e },
        }
    }

    /// After a failed read of a file opened under `root`: the storage went away, or the
    /// error is the file's own.
    pub fn read_failed_because(&self, root: RootId) -> Option<String> {
        self.probe(root).err()
    }
}

impl Root {
    fn at(path: &Path) -> io::Result<Root> {
        let canonical = path.canonicalize()?;
        let meta = std::fs::metadata(&canonical)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", path.display()),
            ));
        }
        let alias = std::path::absolute(path).ok().filter(|a| *a != canonical);
        use std::os::unix::fs::MetadataExt;
        Ok(Root {
            path: canonical,
            alias,
            identity: (meta.dev(), meta.ino()),
        })
    }

    /// `path` relative to this root, if it lies lexically under it (canonical or alias).
    pub(super) fn relative<'p>(&self, path: &'p Path) -> Option<&'p Path> {
        path.strip_prefix(&self.path)
            .ok()
            .or_else(|| path.strip_prefix(self.alias.as_ref()?).ok())
    }

    /// A handle on the root directory, if it is there and is still what it was at start.
    pub(super) fn handle(&self) -> Result<OwnedFd, String> {
        let fd = rustix::fs::open(
            &self.path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            FileMode::empty(),
        )
        .map_err(|e| describe(io::Error::from(e)))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| describe(io::Error::from(e)))?;
        if (st.st_dev, st.st_ino) != self.identity {
            return Err(
                "not the directory that was there at start (another or no file system mounted there)"
                    .into(),
            );
        }
        Ok(fd)
    }
}

fn describe(e: io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "missing".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Reason;

    use crate::storage::open::tests::{content, s};

    #[test]
    fn a_root_that_is_gone_or_replaced_is_unavailable_not_a_missing_file() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("share");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.dcm"), b"inside").unwrap();
        let roots = StorageRoots::new(std::slice::from_ref(&root), None).unwrap();
        let file = s(root.join("a.dcm"));
        assert!(roots.open(&file).is_ok());
        // Renamed away: missing.
        std::fs::rename(&root, parent.path().join("away")).unwrap();
        match roots.open(&file) {
            Err(OpenError::Unavailable { root: 0, cause }) => assert_eq!(cause, "missing"),
            other => panic!("{other:?}"),
        }
        assert!(roots.probe(0).is_err());
        // An empty directory in its place (what an unmounted share leaves): another identity.
        std::fs::create_dir(&root).unwrap();
        match roots.open(&file) {
            Err(OpenError::Unavailable { cause, .. }) => {
                assert!(cause.contains("not the directory"), "{cause}")
            }
            other => panic!("{other:?}"),
        }
        // Back: available again, and the file opens.
        std::fs::remove_dir(&root).unwrap();
        std::fs::rename(parent.path().join("away"), &root).unwrap();
        assert!(roots.probe(0).is_ok());
        assert_eq!(content(roots.open(&file).unwrap()), "inside");
        // A file missing from a root that is there is just missing.
        assert_eq!(
            roots.open(&s(root.join("b.dcm"))).unwrap_err().reason(),
            Reason::FileNotFound
        );
    }
}
