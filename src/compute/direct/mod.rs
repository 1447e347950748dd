//! Direct reading: the attributes the pipeline indexes and the native PixelData value, taken
//! straight from the file's bytes, without building a dicom-rs object.
//!
//! dicom-rs materialises every element of a file (allocating strings, small vectors and a
//! tree map) and then [`InstanceMeta::from_object`] looks ~50 of them up again. Most of a
//! header-only derivation went there (`benches/README.md`). This module walks the top-level
//! data set once over the bytes already in memory, keeps byte ranges for the tags it wants,
//! decodes only those, and hands native pixel data to the statistics as a slice of the file.
//!
//! It is an exact fast path, not a second opinion: it produces the same [`InstanceMeta`] the
//! object path does (same trimming, the same character-set decoding, the same number parsing;
//! the `direct_read_agrees_with_dicom_rs` test compares both over every sample file), and
//! it returns `None` for anything outside what it handles — a transfer syntax dicom-rs does
//! not know, pixel data not in the form its syntax says, bare data sets,
//! character sets other than the default / ISO_IR 100 / ISO_IR 192, a Modality LUT
//! Sequence, a wanted attribute with an unexpected VR or an odd binary length, an explicit-VR
//! `UN` sequence of undefined length, missing UIDs (so the object path names the error). The
//! caller then takes the object path. Lengths were already checked against the file by the
//! guard; every access here is still bounds-checked.
//!
//! - `walk.rs`: the walk over the top-level element headers (sequences skipped).
//! - `fields.rs`: the wanted attributes' raw values, decoded into an [`InstanceMeta`] the way
//!   the object path decodes them.

mod fields;
#[cfg(test)]
mod tests;
mod walk;

use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::guard::{DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, IMPLICIT_VR_LE};
use super::InstanceMeta;
use fields::Fields;
use walk::meta_transfer_syntax;

/// The PixelData element of a file read directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelValue<'a> {
    /// No PixelData element.
    Absent,
    /// Native (uncompressed) pixel data: the value bytes as stored, and whether the value
    /// representation is OW (whose words a big-endian syntax byte-swaps).
    Native { bytes: &'a [u8], ow: bool },
    /// Encapsulated pixel data (fragments): decoded through the object path.
    Encapsulated,
}

/// What a direct read yields.
#[derive(Debug, Clone, PartialEq)]
pub struct Direct<'a> {
    pub meta: InstanceMeta,
    pub pixels: PixelValue<'a>,
}

/// Read `file` (a whole file or its prefix, with preamble and meta group; the data set starts
/// at `dataset_start`). `None`: not a case this module handles; use the object path.
pub fn read(file: &[u8], dataset_start: usize) -> Option<Direct<'_>> {
    let ts = meta_transfer_syntax(file, dataset_start)?;
    let syntax = match ts {
        IMPLICIT_VR_LE => Syntax::ImplicitLe,
        EXPLICIT_VR_BE => Syntax::ExplicitBe,
        // Deflate: the data set is compressed (`read_inflated` reads it once inflated).
        DEFLATED_EXPLICIT_VR_LE => return None,
        _ => Syntax::ExplicitLe,
    };
    read_at(file, dataset_start, ts, syntax)
}

/// Whether a transfer syntax is one dicom-rs reads, and whether its pixel data is
/// encapsulated; `None` for a syntax it does not know (the object path names the error).
fn pixel_encapsulation(ts: &str) -> Option<bool> {
    let known = TransferSyntaxRegistry.get(ts)?;
    known
        .can_decode_dataset()
        .then(|| known.is_encapsulated_pixel_data())
}

/// Read an inflated data set (explicit VR little endian from its first byte) of a file whose
/// transfer syntax is `ts` (deflated explicit VR little endian).
pub fn read_inflated<'a>(dataset: &'a [u8], ts: &str) -> Option<Direct<'a>> {
    read_at(dataset, 0, ts, Syntax::ExplicitLe)
}

fn read_at<'a>(b: &'a [u8], start: usize, ts: &str, syntax: Syntax) -> Option<Direct<'a>> {
    let encapsulated = pixel_encapsulation(ts)?;
    let mut fields = Fields::default();
    let pixels = walk::walk(b, start, syntax, &mut fields)?;
    // Pixel data not in the form the syntax says: the object path decides.
    match pixels {
        PixelValue::Native { .. } if encapsulated => return None,
        PixelValue::Encapsulated if !encapsulated => return None,
        _ => {}
    }
    let meta = fields.into_meta(ts, syntax)?;
    Some(Direct { meta, pixels })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Syntax {
    ImplicitLe,
    ExplicitLe,
    ExplicitBe,
}

impl Syntax {
    fn big_endian(self) -> bool {
        self == Syntax::ExplicitBe
    }
}
