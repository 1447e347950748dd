//! Resolving a store message's `file_path` inside the configured storage roots.
//!
//! The path is canonicalised (symlinks and `..` resolved) before the containment check, so a
//! symlink inside a root that points outside it is refused like any other outside path.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::model::Reason;

#[derive(Debug, Error)]
pub enum ResolveError {
    #[error("file_path is not absolute")]
    NotAbsolute,
    #[error("file not found")]
    NotFound,
    #[error("resolves outside every storage root")]
    OutsideRoot,
    #[error("not a regular file")]
    NotAFile,
    #[error("cannot resolve path: {0}")]
    Io(#[from] std::io::Error),
}

impl ResolveError {
    pub fn reason(&self) -> Reason {
        match self {
            ResolveError::NotAbsolute => Reason::InvalidMessage,
            ResolveError::NotFound => Reason::FileNotFound,
            ResolveError::OutsideRoot => Reason::PathOutsideRoot,
            ResolveError::NotAFile => Reason::NotAFile,
            ResolveError::Io(_) => Reason::ReadFailed,
        }
    }
}

/// Canonical storage roots, in preference order, and an optional secondary copy.
#[derive(Debug, Clone)]
pub struct StorageRoots {
    roots: Vec<PathBuf>,
    secondary: Option<PathBuf>,
}

/// Where a file was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The real path to read.
    pub path: PathBuf,
    /// Found under the secondary root (missing from its primary root).
    pub secondary: bool,
}

impl StorageRoots {
    /// `roots` must already be canonical (see `Config::validate_for_run`).
    pub fn new(roots: Vec<PathBuf>) -> Self {
        StorageRoots {
            roots,
            secondary: None,
        }
    }

    /// With a (canonical) secondary root: a file missing under its primary root is looked up
    /// at the same path relative to that root under `secondary`.
    pub fn with_secondary(mut self, secondary: Option<PathBuf>) -> Self {
        self.secondary = secondary;
        self
    }

    /// [`Self::resolve`], then the secondary root for a file that is not found.
    pub fn locate(&self, file_path: &str) -> Result<Resolved, ResolveError> {
        match self.resolve(file_path) {
            Ok(path) => Ok(Resolved {
                path,
                secondary: false,
            }),
            Err(ResolveError::NotFound) => match &self.secondary {
                Some(secondary) => self.in_secondary(file_path, secondary),
                None => Err(ResolveError::NotFound),
            },
            Err(e) => Err(e),
        }
    }

    fn in_secondary(&self, file_path: &str, secondary: &Path) -> Result<Resolved, ResolveError> {
        // `resolve` said NotFound, so the path lies lexically inside a primary root.
        let lexical = lexical_normalize(Path::new(file_path));
        let Some(relative) = self.roots.iter().find_map(|r| lexical.strip_prefix(r).ok()) else {
            return Err(ResolveError::NotFound);
        };
        let real = match secondary.join(relative).canonicalize() {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ResolveError::NotFound)
            }
            Err(e) => return Err(ResolveError::Io(e)),
        };
        if !real.starts_with(secondary) {
            return Err(ResolveError::OutsideRoot);
        }
        if !real.is_file() {
            return Err(ResolveError::NotAFile);
        }
        Ok(Resolved {
            path: real,
            secondary: true,
        })
    }

    /// The real path of `file_path` if it is a regular file inside a root.
    pub fn resolve(&self, file_path: &str) -> Result<PathBuf, ResolveError> {
        let path = Path::new(file_path);
        if !path.is_absolute() {
            return Err(ResolveError::NotAbsolute);
        }
        let real = match path.canonicalize() {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Say "outside" rather than "not found" for paths that could never be inside:
                // no probing of the rest of the file system through the DLQ.
                let lexical = lexical_normalize(path);
                if self.roots.iter().any(|r| lexical.starts_with(r)) {
                    return Err(ResolveError::NotFound);
                }
                return Err(ResolveError::OutsideRoot);
            }
            Err(e) => return Err(ResolveError::Io(e)),
        };
        if !self.roots.iter().any(|r| real.starts_with(r)) {
            return Err(ResolveError::OutsideRoot);
        }
        if !real.is_file() {
            return Err(ResolveError::NotAFile);
        }
        Ok(real)
    }
}

/// Resolve `.` and `..` without touching the file system (for paths that do not exist).
fn lexical_normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, tempfile::TempDir, StorageRoots) {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("a.dcm"), b"x").unwrap();
        std::fs::create_dir(root.path().join("sub")).unwrap();
        std::fs::write(outside.path().join("secret.dcm"), b"x").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.dcm"),
            root.path().join("escape.dcm"),
        )
        .unwrap();
        let roots = StorageRoots::new(vec![root.path().canonicalize().unwrap()]);
        (root, outside, roots)
    }

    #[test]
    fn resolves_files_inside_a_root() {
        let (root, _o, roots) = setup();
        let p = root.path().join("a.dcm");
        assert!(roots.resolve(p.to_str().unwrap()).is_ok());
    }

    #[test]
    fn a_missing_file_is_taken_from_the_secondary_root() {
        let (root, outside, roots) = setup();
        let mirror = tempfile::tempdir().unwrap();
        std::fs::create_dir(mirror.path().join("sub")).unwrap();
        std::fs::write(mirror.path().join("sub/only-here.dcm"), b"x").unwrap();
        std::fs::write(mirror.path().join("a.dcm"), b"mirror").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.dcm"),
            mirror.path().join("sub/escape.dcm"),
        )
        .unwrap();
        let roots = roots.with_secondary(Some(mirror.path().canonicalize().unwrap()));
        let s = |p: PathBuf| p.to_str().unwrap().to_string();

        // Present under the primary root: the primary copy, even if the mirror has one.
        let found = roots.locate(&s(root.path().join("a.dcm"))).unwrap();
        assert!(!found.secondary);
        assert!(found.path.starts_with(root.path().canonicalize().unwrap()));
        // Missing from the primary: the mirror's copy at the same relative path.
        let found = roots
            .locate(&s(root.path().join("sub/only-here.dcm")))
            .unwrap();
        assert!(found.secondary);
        assert!(found.path.ends_with("sub/only-here.dcm"));
        // Missing from both: still file_not_found.
        let err = roots.locate(&s(root.path().join("gone.dcm"))).unwrap_err();
        assert_eq!(err.reason(), Reason::FileNotFound);
        // A symlink in the mirror that leaves it is refused like one in a primary root.
        let err = roots
            .locate(&s(root.path().join("sub/escape.dcm")))
            .unwrap_err();
        assert_eq!(err.reason(), Reason::PathOutsideRoot);
        // Paths outside every primary root never reach the mirror.
        let err = roots
            .locate(&s(outside.path().join("only-here.dcm")))
            .unwrap_err();
        assert_eq!(err.reason(), Reason::PathOutsideRoot);
        // Without a secondary root nothing changes.
        let (root, _o, plain) = setup();
        assert_eq!(
            plain
                .locate(&s(root.path().join("sub/only-here.dcm")))
                .unwrap_err()
                .reason(),
            Reason::FileNotFound
        );
    }

    #[test]
    fn classifies_each_failure() {
        let (root, outside, roots) = setup();
        let s = |p: PathBuf| p.to_str().unwrap().to_string();
        let cases = [
            (s(root.path().join("missing.dcm")), Reason::FileNotFound),
            (s(root.path().join("sub")), Reason::NotAFile),
            (s(root.path().join("escape.dcm")), Reason::PathOutsideRoot),
            (
                s(outside.path().join("secret.dcm")),
                Reason::PathOutsideRoot,
            ),
            (
                s(root.path().join("../x/../../etc/passwd")),
                Reason::PathOutsideRoot,
            ),
            (
                "/nonexistent/elsewhere.dcm".to_string(),
                Reason::PathOutsideRoot,
            ),
            ("relative/a.dcm".to_string(), Reason::InvalidMessage),
        ];
        for (path, want) in cases {
            let err = roots.resolve(&path).unwrap_err();
            assert_eq!(err.reason(), want, "{path}: {err}");
        }
    }
}
