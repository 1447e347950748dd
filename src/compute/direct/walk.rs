//! The walk over a data set's top-level element headers, straight over the file's bytes:
//! wanted values are recorded as byte ranges, undefined-length sequences skipped (to a
//! bounded depth), and the walk ends at PixelData. Anything unusual (a stray item, tags out of
//! order, an explicit-VR `UN` of undefined length, a Modality LUT Sequence) ends it with
//! `None`, for the object path.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};

use super::fields::Fields;
use super::{PixelValue, Syntax};
use crate::compute::guard::{long_length, u16_at, u32_at};

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);
/// Deeper nesting than this is left to the object path.
const MAX_DEPTH: u32 = 32;

/// The TransferSyntaxUID of the file meta group (explicit VR little endian, between byte 132
/// and the data set).
pub(super) fn meta_transfer_syntax(file: &[u8], dataset_start: usize) -> Option<&str> {
    if file.get(128..132)? != b"DICM" {
        return None;
    }
    let mut pos = 132;
    while pos < dataset_start {
        let h = Header::parse(file, pos, Syntax::ExplicitLe)?;
        let end = h.value_at.checked_add(h.len as usize)?;
        if h.tag == tags::TRANSFER_SYNTAX_UID {
            let value = std::str::from_utf8(file.get(h.value_at..end)?).ok()?;
            return Some(value.trim_end_matches(['\0', ' ']));
        }
        pos = end;
    }
    None
}

/// One element header.
struct Header {
    tag: Tag,
    vr: VR,
    len: u32,
    /// Where the value starts.
    value_at: usize,
}

impl Header {
    fn parse(b: &[u8], pos: usize, syntax: Syntax) -> Option<Header> {
        let be = syntax.big_endian();
        let g = u16_at(b, pos, be)?;
        let e = u16_at(b, pos + 2, be)?;
        let tag = Tag(g, e);
        if g == 0xFFFE {
            // Items and delimiters: tag + 4-byte length in every syntax.
            let len = u32_at(b, pos + 4, be)?;
            return Some(Header {
                tag,
                vr: VR::UN,
                len,
                value_at: pos + 8,
            });
        }
        match syntax {
            Syntax::ImplicitLe => {
                let vr = match StandardDataDictionary.by_tag(tag).map(|entry| entry.vr()) {
                    Some(VirtualVr::Exact(vr)) => vr,
                    // PixelData's dictionary VR is "OB or OW": dicom-rs reads it as OW.
                    _ if tag == tags::PIXEL_DATA => VR::OW,
                    _ => VR::UN,
                };
                Some(Header {
                    tag,
                    vr,
                    len: u32_at(b, pos + 4, false)?,
                    value_at: pos + 8,
                })
            }
            Syntax::ExplicitLe | Syntax::ExplicitBe => {
                let code = b.get(pos + 4..pos + 6)?;
                let vr = VR::from_binary([code[0], code[1]]).unwrap_or(VR::UN);
                if long_length(vr) {
                    Some(Header {
                        tag,
                        vr,
                        len: u32_at(b, pos + 8, be)?,
                        value_at: pos + 12,
                    })
                } else {
                    Some(Header {
                        tag,
                        vr,
                        len: u32::from(u16_at(b, pos + 6, be)?),
                        value_at: pos + 8,
                    })
                }
            }
        }
    }
}

/// Walk the top-level data set from `pos`, recording wanted values, up to PixelData or the
/// end of `b`. Returns what PixelData is.
pub(super) fn walk<'a>(
    b: &'a [u8],
    mut pos: usize,
    syntax: Syntax,
    fields: &mut Fields<'a>,
) -> Option<PixelValue<'a>> {
    let mut previous: Option<Tag> = None;
    while pos < b.len() {
        let h = Header::parse(b, pos, syntax)?;
        if h.tag.group() == 0xFFFE || previous.is_some_and(|p| h.tag <= p) {
            // A stray item or delimiter, or tags out of ascending order: not a plain file
            // (dicom-rs reading up to PixelData stops at the first tag past it, reading the
            // whole file it keeps everything: the object path decides).
            return None;
        }
        previous = Some(h.tag);
        if h.tag == tags::PIXEL_DATA {
            if h.len == UNDEFINED {
                return Some(PixelValue::Encapsulated);
            }
            let bytes = b.get(h.value_at..h.value_at.checked_add(h.len as usize)?)?;
            let ow = match h.vr {
                VR::OW => true,
                VR::OB | VR::UN => false,
                _ => return None,
            };
            return Some(PixelValue::Native { bytes, ow });
        }
        if h.len == UNDEFINED {
            // An explicit-VR UN of undefined length holds implicit-VR content (PS3.5 6.2.2).
            if syntax != Syntax::ImplicitLe && h.vr != VR::SQ {
                return None;
            }
            if h.tag == tags::MODALITY_LUT_SEQUENCE {
                return None;
            }
            pos = skip_sequence(b, h.value_at, syntax, 1)?;
            continue;
        }
        let end = h.value_at.checked_add(h.len as usize)?;
        let value = b.get(h.value_at..end)?;
        if h.tag == tags::MODALITY_LUT_SEQUENCE {
            return None;
        }
        fields.record(h.tag, h.vr, value);
        pos = end;
    }
    Some(PixelValue::Absent)
}

/// Skip the items of an undefined-length sequence whose first item starts at `pos`; returns
/// the position after its delimiter.
fn skip_sequence(b: &[u8], mut pos: usize, syntax: Syntax, depth: u32) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    loop {
        let h = Header::parse(b, pos, syntax)?;
        match h.tag {
            SEQUENCE_END => return Some(h.value_at),
            ITEM if h.len == UNDEFINED => pos = skip_item(b, h.value_at, syntax, depth)?,
            ITEM => pos = h.value_at.checked_add(h.len as usize)?,
            _ => return None,
        }
        if pos > b.len() {
            return None;
        }
    }
}

/// Skip the elements of an undefined-length item starting at `pos`; returns the position
/// after its delimiter.
fn skip_item(b: &[u8], mut pos: usize, syntax: Syntax, depth: u32) -> Option<usize> {
    loop {
        let h = Header::parse(b, pos, syntax)?;
        if h.tag == ITEM_END {
            return Some(h.value_at);
        }
        if h.len == UNDEFINED {
            if syntax != Syntax::ImplicitLe && h.vr != VR::SQ {
                return None;
            }
            pos = skip_sequence(b, h.value_at, syntax, depth + 1)?;
        } else {
            pos = h.value_at.checked_add(h.len as usize)?;
        }
        if pos > b.len() {
            return None;
        }
    }
}
