//! The wanted attributes' raw values, recorded by the walk, and their decoding into an
//! [`InstanceMeta`] exactly as the object path (`header.rs` over dicom-rs) decodes them: the
//! same character sets, trimming and number parsing, field by field as the attribute table
//! (`attributes.rs`) says.

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;

use super::Syntax;
use crate::compute::guard::{u16_at, u32_at};
use crate::compute::InstanceMeta;

/// Raw values of the wanted attributes (the last occurrence wins, as in dicom-rs's map).
pub(super) struct Fields<'a> {
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
pub(super) const WANTED: [Tag; WANTED_LEN] = wanted_sorted();

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
    pub(super) fn record(&mut self, tag: Tag, vr: VR, value: &'a [u8]) {
        // WANTED is in ascending tag order.
        if let Ok(i) = WANTED.binary_search(&tag) {
            self.raw[i] = Some((vr, value));
        }
    }

    fn get(&self, tag: Tag) -> Option<(VR, &'a [u8])> {
        WANTED.binary_search(&tag).ok().and_then(|i| self.raw[i])
    }

    pub(super) fn into_meta(self, ts: &str, syntax: Syntax) -> Option<InstanceMeta> {
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
