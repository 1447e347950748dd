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

/// Canonical storage roots, in preference order.
#[derive(Debug, Clone)]
pub struct StorageRoots {
    roots: Vec<PathBuf>,
}

impl StorageRoots {
    /// `roots` must already be canonical (see `Config::validate_for_run`).
    pub fn new(roots: Vec<PathBuf>) -> Self {
        StorageRoots { roots }
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
