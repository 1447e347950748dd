use dicom_object::ReadError;
use thiserror::Error;

use crate::model::Reason;

/// Why a file could not be turned into records. All variants are permanent for that file:
/// retrying the same bytes gives the same answer, so the caller dead-letters them.
#[derive(Debug, Error)]
pub enum ComputeError {
    #[error("reading the file failed: {source}")]
    Read { source: std::io::Error },
    #[error("file is {size} bytes, over the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("the image's size overflows: {frames} frames × {rows} rows × {columns} columns × {samples} samples")]
    LayoutOverflow {
        frames: u32,
        rows: u16,
        columns: u16,
        samples: u16,
    },
    #[error("parsing its sequences would take about {estimate} bytes of memory, over max_decoded_size ({limit})")]
    HeaderTooLarge { estimate: u64, limit: u64 },
    #[error("not a DICOM file: {detail}")]
    NotDicom { detail: String },
    #[error("file ends early: {detail}")]
    Truncated { detail: String },
    #[error("malformed DICOM data: {detail}")]
    Malformed { detail: String },
    #[error("transfer syntax not supported: {detail}")]
    UnsupportedTransferSyntax { detail: String },
    #[error("required attribute {name} {tag} is missing or empty")]
    MissingUid { name: &'static str, tag: String },
    #[error("pixel data is shorter than the image it declares: {detail}")]
    PixelDataShort { detail: String },
    #[error("pixel format not supported: {detail}")]
    UnsupportedPixelFormat { detail: String },
    #[error("decoding the pixel data failed: {detail}")]
    DecodeFailed { detail: String },
}

impl ComputeError {
    /// The stable dead-letter reason code.
    pub fn reason(&self) -> Reason {
        match self {
            ComputeError::Read { .. } => Reason::ReadFailed,
            ComputeError::TooLarge { .. }
            | ComputeError::HeaderTooLarge { .. }
            | ComputeError::LayoutOverflow { .. } => Reason::TooLarge,
            ComputeError::NotDicom { .. } => Reason::NotDicom,
            ComputeError::Truncated { .. } => Reason::Truncated,
            ComputeError::Malformed { .. } => Reason::Malformed,
            ComputeError::UnsupportedTransferSyntax { .. } => Reason::UnsupportedTransferSyntax,
            ComputeError::MissingUid { .. } => Reason::MissingUid,
            ComputeError::PixelDataShort { .. } => Reason::PixelDataShort,
            ComputeError::UnsupportedPixelFormat { .. } => Reason::UnsupportedPixelFormat,
            ComputeError::DecodeFailed { .. } => Reason::DecodeFailed,
        }
    }

    /// Classify a dicom-object read error.
    pub(crate) fn from_read(err: ReadError) -> Self {
        let detail = chain_text(&err);
        match &err {
            ReadError::OpenFile { source, .. } | ReadError::ReadFile { source, .. }
                if source.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                ComputeError::Truncated { detail }
            }
            ReadError::OpenFile { source, .. } | ReadError::ReadFile { source, .. } => {
                ComputeError::Read {
                    source: std::io::Error::new(source.kind(), source.to_string()),
                }
            }
            // Shorter than a preamble, or no `DICM` magic and no recognisable meta group.
            ReadError::ReadPreambleBytes { .. } => ComputeError::NotDicom { detail },
            ReadError::ParseMetaDataSet { source, .. } => match source {
                dicom_object::meta::Error::NotDicom { .. }
                | dicom_object::meta::Error::ReadMagicCode { .. } => {
                    ComputeError::NotDicom { detail }
                }
                _ if ends_early(&err) => ComputeError::Truncated { detail },
                _ => ComputeError::Malformed { detail },
            },
            ReadError::ReadUnrecognizedTransferSyntax { .. }
            | ReadError::ReadUnsupportedTransferSyntax { .. }
            | ReadError::ReadUnsupportedTransferSyntaxWithSuggestion { .. } => {
                ComputeError::UnsupportedTransferSyntax { detail }
            }
            _ if ends_early(&err) => ComputeError::Truncated { detail },
            ReadError::PrematureEnd { .. } => ComputeError::Truncated { detail },
            _ => ComputeError::Malformed { detail },
        }
    }
}

/// True when an `UnexpectedEof` I/O error is anywhere in the chain.
fn ends_early(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::UnexpectedEof {
                return true;
            }
        }
        if e.to_string().contains("failed to fill whole buffer") {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The error and its sources, joined with `: `. dicom-rs messages name tags and positions,
/// never element values, so this is safe to log and to store.
pub(crate) fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if parts.last() != Some(&s) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}
