//! What opening a store message's file can fail with, and the dead-letter reason of each
//! failure ([`OpenError::Unavailable`] is waited out instead).

use std::io;

use thiserror::Error;

use crate::model::Reason;

/// Which configured root (index into the primary roots; the secondary comes last).
pub type RootId = usize;

#[derive(Debug, Error)]
pub enum OpenError {
    #[error("file_path is not absolute")]
    NotAbsolute,
    #[error("file not found")]
    NotFound,
    #[error("resolves outside every storage root")]
    OutsideRoot,
    #[error("not a regular file")]
    NotAFile,
    #[error("cannot open the file: {source}")]
    Io {
        root: RootId,
        #[source]
        source: io::Error,
    },
    #[error("storage root {root} is unavailable: {cause}")]
    Unavailable { root: RootId, cause: String },
}

impl OpenError {
    /// The dead-letter reason (never asked of [`OpenError::Unavailable`], which is waited
    /// out, not dead-lettered).
    pub fn reason(&self) -> Reason {
        match self {
            OpenError::NotAbsolute => Reason::InvalidMessage,
            OpenError::NotFound => Reason::FileNotFound,
            OpenError::OutsideRoot => Reason::PathOutsideRoot,
            OpenError::NotAFile => Reason::NotAFile,
            OpenError::Io { .. } | OpenError::Unavailable { .. } => Reason::ReadFailed,
        }
    }
}
