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

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::guard::{
    long_length, u16_of, u32_of, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, IMPLICIT_VR_LE,
};
use super::InstanceMeta;

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
    let pixels = walk(b, start, syntax, &mut fields)?;
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

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);
/// Deeper nesting than this is left to the object path.
const MAX_DEPTH: u32 = 32;

/// The TransferSyntaxUID of the file meta group (explicit VR little endian, between byte 132
/// and the data set).
fn meta_transfer_syntax(file: &[u8], dataset_start: usize) -> Option<&str> {
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

fn u16_at(b: &[u8], pos: usize, be: bool) -> Option<u16> {
    let s = b.get(pos..pos.checked_add(2)?)?;
    Some(u16_of([s[0], s[1]], be))
}

fn u32_at(b: &[u8], pos: usize, be: bool) -> Option<u32> {
    let s = b.get(pos..pos.checked_add(4)?)?;
    Some(u32_of([s[0], s[1], s[2], s[3]], be))
}

/// Walk the top-level data set from `pos`, recording wanted values, up to PixelData or the
/// end of `b`. Returns what PixelData is.
fn walk<'a>(
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

/// Raw values of the wanted attributes (the last occurrence wins, as in dicom-rs's map).
struct Fields<'a> {
    raw: [Option<(VR, &'a [u8])>; WANTED.len()],
}

impl Default for Fields<'_> {
    fn default() -> Self {
        Fields {
            raw: [None; WANTED.len()],
        }
    }
}

/// How many tags the direct read records: the attribute table's, and the character set.
const WANTED_LEN: usize = crate::attributes::TAGS.len() + 1;

/// Every attribute [`InstanceMeta`] reads (the table in `attributes.rs`), plus the character
/// set that decodes them, in ascending tag order (looked up by binary search).
const WANTED: [Tag; WANTED_LEN] = wanted_sorted();

const fn wanted_sorted() -> [Tag; WANTED_LEN] {
    let tags = crate::attributes::TAGS;
    let mut a = [Tag(0, 0); WANTED_LEN];
    a[0] = tags::SPECIFIC_CHARACTER_SET;
    let mut i = 0;
    while i < tags.len() {
        a[i + 1] = tags[i];
        i += 1;
    }
    // Insertion sort (a compile-time constant: no cost at run time).
    let mut i = 1;
    while i < WANTED_LEN {
        let mut j = i;
        while j > 0 && (a[j].0 < a[j - 1].0 || (a[j].0 == a[j - 1].0 && a[j].1 < a[j - 1].1)) {
            let t = a[j];
            a[j] = a[j - 1];
            a[j - 1] = t;
            j -= 1;
        }
        i += 1;
    }
    a
}

/// An `InstanceMeta` from the recorded raw values, field by field as the table says; any
/// value this reader does not handle makes it `None` (the object path takes over).
macro_rules! read_direct {
    (
        ( $r:ident, { $($extra:tt)* } )
        $( $group:ident { $( $(#[$doc:meta])* $field:ident : $ty:ty = $kind:ident ( $($arg:tt)* ) ),* $(,)? } )*
    ) => {
        InstanceMeta {
            $( $( $field: read_direct!(@$kind $r, $($arg)*), )* )*
            $($extra)*
        }
    };
    (@text $r:ident, $tag:ident) => { $r.string(tags::$tag)? };
    (@uid $r:ident, $tag:ident, $name:literal) => { $r.string(tags::$tag)? };
    (@int $r:ident, $tag:ident) => { $r.int(tags::$tag)? };
    (@int_or $r:ident, $tag:ident, $default:expr) => { $r.int(tags::$tag)?.unwrap_or($default) };
    (@float $r:ident, $tag:ident) => { $r.floats(tags::$tag)?.first().copied() };
    (@floats $r:ident, $tag:ident) => { $r.floats(tags::$tag)? };
}

/// How text values are decoded (PS3.5 6.1; as dicom-rs does it).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Charset {
    /// The default repertoire and ISO_IR 100: dicom-rs decodes both as ISO 8859-1.
    Latin1,
    /// ISO_IR 192.
    Utf8,
}

impl<'a> Fields<'a> {
    fn record(&mut self, tag: Tag, vr: VR, value: &'a [u8]) {
        // WANTED is in ascending tag order.
        if let Ok(i) = WANTED.binary_search(&tag) {
            self.raw[i] = Some((vr, value));
        }
    }

    fn get(&self, tag: Tag) -> Option<(VR, &'a [u8])> {
        WANTED.binary_search(&tag).ok().and_then(|i| self.raw[i])
    }

    fn into_meta(self, ts: &str, syntax: Syntax) -> Option<InstanceMeta> {
        let charset = match self.get(tags::SPECIFIC_CHARACTER_SET) {
            None => Charset::Latin1,
            Some((_, raw)) => match trim_text(std::str::from_utf8(raw).ok()?) {
                "" | "ISO_IR 6" | "ISO_IR_6" | "ISO 2022 IR 6" | "ISO_IR 100" | "ISO_IR_100"
                | "ISO 2022 IR 100" => Charset::Latin1,
                "ISO_IR 192" | "ISO_IR_192" => Charset::Utf8,
                _ => return None,
            },
        };
        let r = Reader {
            fields: &self,
            charset,
            be: syntax.big_endian(),
        };
        let meta = crate::attributes::header_attributes!(read_direct!(r, {
            transfer_syntax_uid: trim_text(ts).to_string(),
            modality_lut: None,
        }));
        // Missing identity: the object path reports it (or whatever else is wrong first).
        let identified =
            !meta.study_uid.is_empty() && !meta.series_uid.is_empty() && !meta.sop_uid.is_empty();
        identified.then_some(meta)
    }
}

/// Decodes recorded values the way the object path (`header.rs` over dicom-rs) does.
/// Every method returns `None` when the value is outside what this module handles.
struct Reader<'f, 'a> {
    fields: &'f Fields<'a>,
    charset: Charset,
    be: bool,
}

impl Reader<'_, '_> {
    /// A text attribute: each `\`-separated value trimmed of trailing spaces and NULs, joined
    /// again, then the whole trimmed (`header::string`).
    fn string(&self, tag: Tag) -> Option<String> {
        let Some((vr, raw)) = self.fields.get(tag) else {
            return Some(String::new());
        };
        if vr == VR::UN {
            return Some(trim_text(&String::from_utf8_lossy(raw)).to_string());
        }
        let charset = match vr {
            // dicom-rs decodes these with the default repertoire whatever the data set says.
            VR::AE | VR::CS | VR::AS => Charset::Latin1,
            VR::DA | VR::DT | VR::TM | VR::LO | VR::PN | VR::SH | VR::UC | VR::UI => self.charset,
            _ => return None,
        };
        let text = decode(raw, charset)?;
        let mut out = String::with_capacity(text.len());
        for (i, part) in text.split('\\').enumerate() {
            if i > 0 {
                out.push('\\');
            }
            out.push_str(part.trim_end_matches([' ', '\0']));
        }
        Some(trim_text(&out).to_string())
    }

    /// The first value of an integer attribute; `Some(None)` when absent, empty or not
    /// convertible (`header::int`).
    fn int<T>(&self, tag: Tag) -> Option<Option<T>>
    where
        T: num_traits::NumCast + std::str::FromStr,
    {
        let Some((vr, raw)) = self.fields.get(tag) else {
            return Some(None);
        };
        if raw.is_empty() {
            return Some(None);
        }
        Some(match vr {
            VR::IS | VR::DS => {
                let text = decode(raw, self.charset)?;
                let first = text.split('\\').next().unwrap_or_default();
                first.trim_matches(whitespace_or_null).parse::<T>().ok()
            }
            VR::US if raw.len() % 2 == 0 => T::from(u16_at(raw, 0, self.be)?),
            VR::SS if raw.len() % 2 == 0 => T::from(u16_at(raw, 0, self.be)? as i16),
            VR::UL if raw.len() % 4 == 0 => T::from(u32_at(raw, 0, self.be)?),
            VR::SL if raw.len() % 4 == 0 => T::from(u32_at(raw, 0, self.be)? as i32),
            _ => return None,
        })
    }

    /// All values of a numeric attribute, non-finite ones dropped; empty when absent or when
    /// any value does not parse (`header::floats`).
    fn floats(&self, tag: Tag) -> Option<Vec<f64>> {
        let Some((vr, raw)) = self.fields.get(tag) else {
            return Some(Vec::new());
        };
        let parsed: Vec<f64> = match vr {
            // UN (implicit-VR private dictionaries): parse what parses, value by value.
            VR::UN => {
                return Some(
                    String::from_utf8_lossy(raw)
                        .split('\\')
                        .filter_map(|part| trim_text(part).parse::<f64>().ok())
                        .filter(|x| x.is_finite())
                        .collect(),
                )
            }
            _ if raw.is_empty() => Vec::new(),
            VR::DS | VR::IS => {
                let text = decode(raw, self.charset)?;
                let all: Result<Vec<f64>, _> = text
                    .split('\\')
                    .map(|v| v.trim_matches(whitespace_or_null).parse::<f64>())
                    .collect();
                all.unwrap_or_default()
            }
            VR::FD if raw.len() % 8 == 0 => raw
                .chunks_exact(8)
                .map(|c| {
                    let a = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
                    if self.be {
                        f64::from_be_bytes(a)
                    } else {
                        f64::from_le_bytes(a)
                    }
                })
                .collect(),
            VR::FL if raw.len() % 4 == 0 => raw
                .chunks_exact(4)
                .map(|c| {
                    let a = [c[0], c[1], c[2], c[3]];
                    f64::from(if self.be {
                        f32::from_be_bytes(a)
                    } else {
                        f32::from_le_bytes(a)
                    })
                })
                .collect(),
            _ => return None,
        };
        Some(parsed.into_iter().filter(|x| x.is_finite()).collect())
    }
}

/// Bytes to text in a character set; `None` for invalid UTF-8 (the object path decides).
fn decode(raw: &[u8], charset: Charset) -> Option<std::borrow::Cow<'_, str>> {
    match charset {
        Charset::Utf8 => std::str::from_utf8(raw).ok().map(Into::into),
        // ASCII (valid UTF-8 too) is the common case: no copy.
        Charset::Latin1 if raw.is_ascii() => std::str::from_utf8(raw).ok().map(Into::into),
        Charset::Latin1 => Some(
            raw.iter()
                .map(|&b| char::from(b))
                .collect::<String>()
                .into(),
        ),
    }
}

/// dicom-rs's trimming for numbers: whitespace and NUL on both sides.
fn whitespace_or_null(c: char) -> bool {
    c.is_whitespace() || c == '\0'
}

/// DICOM pads values to even length with a space (text) or NUL (UI); `header::trim`.
fn trim_text(s: &str) -> &str {
    s.trim_end_matches(['\0', ' ']).trim_start_matches(' ')
}

#[cfg(test)]
mod tests {
    use dicom_core::value::{DataSetSequence, PrimitiveValue};
    use dicom_core::DataElement;
    use dicom_object::{from_reader, InMemDicomObject};

    use super::*;
    use crate::compute::synth::{ct_file_bytes, CtSpec, SynthSyntax};
    use crate::compute::{derive_bytes, derive_bytes_object_path, Limits, Mode};

    fn dataset_start(bytes: &[u8]) -> usize {
        let scan = crate::compute::guard::check_lengths(
            &mut std::io::Cursor::new(bytes),
            bytes.len() as u64,
            false,
            u64::MAX,
        );
        scan.unwrap().unwrap().dataset_start as usize
    }

    /// Both paths give the same result in both modes; returns the direct read.
    fn agrees(bytes: &[u8]) -> Option<InstanceMeta> {
        for mode in [Mode::HeaderOnly, Mode::Full] {
            let direct = derive_bytes(bytes, mode, Limits::default());
            let object = derive_bytes_object_path(bytes, mode, Limits::default());
            match (&direct, &object) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{mode:?}"),
                (Err(a), Err(b)) => assert_eq!(a.reason(), b.reason(), "{mode:?}: {a} / {b}"),
                _ => panic!("{mode:?}: direct {direct:?}, object {object:?}"),
            }
        }
        read(bytes, dataset_start(bytes)).map(|d| d.meta)
    }

    /// A synthetic CT with `edit` applied to its data set, written back as explicit VR LE.
    fn edited(edit: impl FnOnce(&mut InMemDicomObject)) -> Vec<u8> {
        let bytes = ct_file_bytes(&CtSpec::default());
        let mut obj = from_reader(&bytes[..]).unwrap();
        edit(&mut obj);
        let mut out = Vec::new();
        obj.write_all(&mut out).unwrap();
        out
    }

    fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
        obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    }

    #[test]
    fn wanted_tags_are_in_ascending_order() {
        assert!(WANTED.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn reads_every_plain_syntax_like_the_object_path() {
        for ts in [
            SynthSyntax::ExplicitLe,
            SynthSyntax::ImplicitLe,
            SynthSyntax::ExplicitBe,
            SynthSyntax::Rle,
        ] {
            for modality in ["CT", "MR"] {
                let spec = CtSpec {
                    transfer_syntax: ts,
                    modality: modality.into(),
                    ..CtSpec::default()
                };
                let bytes = ct_file_bytes(&spec);
                let meta = agrees(&bytes).unwrap_or_else(|| panic!("{ts:?} not read directly"));
                assert_eq!(meta.sop_uid, spec.sop_uid);
                assert_eq!(meta.rows, spec.rows);
                assert_eq!(meta.bits_stored, 12);
                assert_eq!(meta.image_position.len(), 3);
                let first = &bytes[dataset_start(&bytes)..];
                assert!(!first.is_empty());
            }
        }
        // Deflate: the data set is compressed; the object path reads it.
        let spec = CtSpec {
            transfer_syntax: SynthSyntax::Deflate,
            ..CtSpec::default()
        };
        let bytes = ct_file_bytes(&spec);
        for mode in [Mode::HeaderOnly, Mode::Full] {
            let d = derive_bytes(&bytes, mode, Limits::default()).unwrap();
            assert_eq!(d.meta.sop_uid, spec.sop_uid);
        }
    }

    #[test]
    fn decodes_text_in_the_declared_character_set() {
        for (charset, name) in [
            ("ISO_IR 100", "Müller^Jürgen"),
            ("ISO_IR 192", "山田^太郎=やまだ^たろう"),
            ("ISO_IR 192", "Ødegård^Åse"),
            ("", "Doe^John"),
        ] {
            let bytes = edited(|obj| {
                put(obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, charset);
                put(obj, tags::PATIENT_NAME, VR::PN, name);
                put(obj, tags::INSTITUTION_NAME, VR::LO, name);
            });
            let meta = agrees(&bytes).unwrap_or_else(|| panic!("{charset} not read directly"));
            assert_eq!(meta.patient_name, name, "{charset}");
            assert_eq!(meta.institution, name, "{charset}");
        }
        // Latin-1 bytes without a declared character set: dicom-rs reads the default
        // repertoire as ISO 8859-1, and so does the direct read.
        let mut bytes = edited(|obj| put(obj, tags::PATIENT_NAME, VR::PN, "Muller^Jurgen"));
        let at = bytes.windows(6).position(|w| w == b"Muller").unwrap();
        bytes[at + 1] = 0xFC; // ü in ISO 8859-1
        assert_eq!(agrees(&bytes).unwrap().patient_name, "Müller^Jurgen");
    }

    #[test]
    fn leaves_other_character_sets_to_the_object_path() {
        let bytes = edited(|obj| {
            put(obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 144");
            put(obj, tags::PATIENT_NAME, VR::PN, "Люкceмбypг");
        });
        assert_eq!(agrees(&bytes), None);
        let d = derive_bytes(&bytes, Mode::HeaderOnly, Limits::default()).unwrap();
        assert_eq!(d.meta.patient_name, "Люкceмбypг");
    }

    #[test]
    fn leaves_a_modality_lut_to_the_object_path() {
        let bytes = edited(|obj| {
            let mut item = InMemDicomObject::new_empty();
            item.put(DataElement::new(
                tags::LUT_DESCRIPTOR,
                VR::US,
                PrimitiveValue::U16([4u16, 0, 16].into_iter().collect()),
            ));
            item.put(DataElement::new(
                tags::LUT_DATA,
                VR::US,
                PrimitiveValue::U16([0u16, 10, 20, 30].into_iter().collect()),
            ));
            obj.put(DataElement::new(
                tags::MODALITY_LUT_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![item]),
            ));
        });
        assert_eq!(agrees(&bytes), None);
        let d = derive_bytes(&bytes, Mode::HeaderOnly, Limits::default()).unwrap();
        assert!(d.meta.modality_lut.is_some());
    }

    #[test]
    fn numbers_parse_as_the_object_path_parses_them() {
        let bytes = edited(|obj| {
            put(obj, tags::WINDOW_CENTER, VR::DS, " 40\\400 ");
            put(obj, tags::WINDOW_WIDTH, VR::DS, "abc");
            put(
                obj,
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                "-175 \\ -175\\12.5",
            );
            put(obj, tags::INSTANCE_NUMBER, VR::IS, " 7 ");
            put(obj, tags::SERIES_NUMBER, VR::IS, "2.5");
            put(obj, tags::SLICE_THICKNESS, VR::DS, "NaN");
            obj.put(DataElement::new(
                tags::RESCALE_SLOPE,
                VR::FD,
                PrimitiveValue::from(0.5f64),
            ));
        });
        let meta = agrees(&bytes).unwrap();
        assert_eq!(meta.window_center, Some(40.0));
        assert_eq!(meta.window_width, None);
        assert_eq!(meta.image_position, vec![-175.0, -175.0, 12.5]);
        assert_eq!(meta.instance_number, Some(7));
        assert_eq!(meta.series_number, None);
        assert_eq!(meta.slice_thickness, None);
        assert_eq!(meta.rescale_slope, Some(0.5));
    }

    #[test]
    fn skips_nested_sequences_of_undefined_length() {
        // dicom-rs writes sequences with undefined length: an item holding a sequence.
        let bytes = edited(|obj| {
            let mut inner = InMemDicomObject::new_empty();
            put(&mut inner, tags::CODE_VALUE, VR::SH, "T-D3000");
            let mut item = InMemDicomObject::new_empty();
            item.put(DataElement::new(
                tags::ANATOMIC_REGION_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![inner]),
            ));
            // Inside the sequence, a "Modality" that is not the top-level one.
            put(&mut item, tags::MODALITY, VR::CS, "XX");
            obj.put(DataElement::new(
                tags::REFERENCED_IMAGE_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![item]),
            ));
        });
        let meta = agrees(&bytes).unwrap();
        assert_eq!(meta.modality, "CT");
    }

    #[test]
    fn tags_out_of_order_go_to_the_object_path() {
        // Found by the fuzzer: a tag past PixelData, then RescaleSlope. dicom-rs reading up
        // to PixelData stops at the stray tag (no slope); reading everything, it keeps it.
        let mut bytes = edited(|obj| {
            put(obj, tags::RESCALE_INTERCEPT, VR::DS, "-1024");
            put(obj, tags::RESCALE_SLOPE, VR::DS, "1");
        });
        let at = bytes
            .windows(6)
            .position(|w| w == [0x28, 0x00, 0x52, 0x10, b'D', b'S'])
            .unwrap();
        bytes[at..at + 4].copy_from_slice(&[0xD7, 0xFF, 0xA5, 0x10]);
        assert_eq!(agrees(&bytes), None);
    }

    #[test]
    fn odd_length_values_without_padding_are_read() {
        let mut bytes = ct_file_bytes(&CtSpec::default());
        // PatientID "PAT-0001" (8 bytes) becomes "PAT-001": 7 bytes, odd, unpadded.
        let at = bytes.windows(8).position(|w| w == b"PAT-0001").unwrap();
        bytes[at - 2..at].copy_from_slice(&7u16.to_le_bytes());
        bytes.remove(at + 4);
        let meta = agrees(&bytes).unwrap();
        assert_eq!(meta.patient_id, "PAT-001");
        assert_eq!(meta.patient_birth_date, "19700101");
    }

    #[test]
    fn an_unknown_transfer_syntax_goes_to_the_object_path() {
        let mut bytes = ct_file_bytes(&CtSpec::default());
        let ts = b"1.2.840.10008.1.2.1\0";
        let at = bytes.windows(ts.len()).position(|w| w == ts).unwrap();
        bytes[at..at + ts.len()].copy_from_slice(b"1.2.3.4.5.6.7.8.9.10");
        assert_eq!(agrees(&bytes), None);
        let err = derive_bytes(&bytes, Mode::HeaderOnly, Limits::default()).unwrap_err();
        assert_eq!(
            err.reason(),
            crate::model::Reason::UnsupportedTransferSyntax
        );
        // Native pixel data under a syntax whose pixel data is encapsulated (RLE, same
        // length): not read directly either.
        let mut rle = ct_file_bytes(&CtSpec::default());
        rle[at..at + ts.len()].copy_from_slice(b"1.2.840.10008.1.2.5\0");
        assert_eq!(agrees(&rle), None);
    }

    #[test]
    fn missing_identity_goes_to_the_object_path_for_its_error() {
        let spec = CtSpec {
            omit_sop_uid: true,
            ..CtSpec::default()
        };
        assert_eq!(agrees(&ct_file_bytes(&spec)), None);
    }
}
