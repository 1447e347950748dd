//! The object path: dicom-rs parses the file (or a bare data set) into an object, the
//! attributes and pixels are derived from it, and a header the guard walk could not follow
//! is digested as its explicit VR little endian re-encoding.

use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::{
    error, guard, header, pixels, timing, ComputeError, Derived, InstanceMeta, Limits, Mode,
};

/// dicom-rs's explicit VR little endian (inflated data sets are read, headers re-encoded, in it).
pub(super) fn explicit_vr_le() -> Result<&'static dicom_encoding::TransferSyntax, ComputeError> {
    TransferSyntaxRegistry
        .get(guard::EXPLICIT_VR_LE)
        .ok_or_else(|| ComputeError::UnsupportedTransferSyntax {
            detail: guard::EXPLICIT_VR_LE.into(),
        })
}

/// Derive from a parsed object (the object path).
pub(super) fn from_object(
    obj: &DefaultDicomObject,
    mode: Mode,
    limits: Limits,
    file_size: u64,
    header_digest: String,
) -> Result<Derived, ComputeError> {
    let meta = InstanceMeta::from_object(obj)?;
    let pixels = match mode {
        Mode::Full => timing::decoding(|| pixels::summarise(obj, &meta, limits))?,
        Mode::HeaderOnly => None,
    };
    Ok(Derived {
        meta,
        file_size,
        header_digest,
        pixels,
    })
}

/// Parse a file: preamble + meta group + data set, or a bare data set that plainly is DICOM.
pub(super) fn parse(bytes: &[u8], mode: Mode) -> Result<DefaultDicomObject, ComputeError> {
    let err = match open_options(mode).from_reader(bytes) {
        Ok(obj) => return Ok(obj),
        Err(err) => ComputeError::from_read(err),
    };
    let Some(ts) = (matches!(err, ComputeError::NotDicom { .. }))
        .then(|| guard::bare_dataset_syntax(bytes))
        .flatten()
    else {
        return Err(err);
    };
    let syntax = TransferSyntaxRegistry
        .get(ts)
        .ok_or_else(|| ComputeError::UnsupportedTransferSyntax { detail: ts.into() })?;
    // Header-only callers already cut `bytes` before PixelData.
    let dataset = InMemDicomObject::read_dataset_with_ts(bytes, syntax).map_err(|e| {
        ComputeError::Malformed {
            detail: format!("bare data set: {}", error::chain_text(&e)),
        }
    })?;
    // Identify it before building a meta group, which needs the SOP class and instance.
    header::require_uids(&dataset)?;
    dataset
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(ts))
        .map_err(|e| ComputeError::Malformed {
            detail: format!("bare data set: {}", error::chain_text(&e)),
        })
}

/// Digest of the data set without PixelData, re-encoded as explicit VR little endian.
pub(super) fn reencoded_header_digest(obj: &DefaultDicomObject) -> Result<String, ComputeError> {
    let mut ds: InMemDicomObject = (**obj).clone();
    ds.remove_element(tags::PIXEL_DATA);
    let mut out = Vec::new();
    let ts = explicit_vr_le()?;
    ds.write_dataset_with_ts_cs(&mut out, ts, Default::default())
        .map_err(|e| ComputeError::Malformed {
            detail: format!("re-encoding the header: {}", error::chain_text(&e)),
        })?;
    Ok(blake3::hash(&out).to_hex().to_string())
}

/// dicom-rs options for a mode: header-only stops before PixelData.
fn open_options(mode: Mode) -> OpenFileOptions {
    let options = OpenFileOptions::new();
    match mode {
        Mode::HeaderOnly => options.read_until(tags::PIXEL_DATA),
        Mode::Full => options,
    }
}
