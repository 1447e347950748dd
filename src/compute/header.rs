use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};

use super::ComputeError;

use crate::attributes::{define_instance_meta, header_attributes};

header_attributes!(define_instance_meta!(
    /// The attributes of one instance the pipeline indexes: identity, geometry and the
    /// series / study attributes that feed the coalesced series state. Its fields are the
    /// table in `attributes.rs`, plus the two below.
    #[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
    struct InstanceMeta {
        /// The file's transfer syntax (from its file meta group).
        pub transfer_syntax_uid: String,
        /// ModalityLUTSequence's first LUT, when present (it replaces the rescale).
        #[serde(skip)]
        pub modality_lut: Option<ModalityLut>,
    }
));

/// An `InstanceMeta` read from a dicom-rs data set, field by field as the table says.
macro_rules! read_object {
    (
        ( $ds:ident, { $($extra:tt)* } )
        $( $group:ident { $( $(#[$doc:meta])* $field:ident : $ty:ty = $kind:ident ( $($arg:tt)* ) ),* $(,)? } )*
    ) => {
        InstanceMeta {
            $( $( $field: read_object!(@$kind $ds, $($arg)*), )* )*
            $($extra)*
        }
    };
    (@text $ds:ident, $tag:ident) => { string($ds, tags::$tag) };
    (@uid $ds:ident, $tag:ident, $name:literal) => { required($ds, tags::$tag, $name)? };
    (@int $ds:ident, $tag:ident) => { int($ds, tags::$tag) };
    (@int_or $ds:ident, $tag:ident, $default:expr) => { int($ds, tags::$tag).unwrap_or($default) };
    (@float $ds:ident, $tag:ident) => { float($ds, tags::$tag) };
    (@floats $ds:ident, $tag:ident) => { floats($ds, tags::$tag) };
}

impl InstanceMeta {
    /// Extract the attributes from a parsed file. Study, series and SOP instance UIDs are
    /// required; everything else defaults to empty / zero / null when absent or unreadable.
    pub fn from_object(obj: &DefaultDicomObject) -> Result<Self, ComputeError> {
        let ds: &InMemDicomObject = obj;
        Ok(header_attributes!(read_object!(ds, {
            transfer_syntax_uid: trim(obj.meta().transfer_syntax()).to_string(),
            modality_lut: ModalityLut::from_dataset(ds),
        })))
    }
}

/// A Modality LUT (PS3.3 C.11.1): stored value `v` maps to `data[clamp(v − first, 0, n−1)]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModalityLut {
    pub first: i64,
    pub data: Vec<i64>,
}

impl ModalityLut {
    fn from_dataset(ds: &InMemDicomObject) -> Option<Self> {
        let seq = ds.element_opt(tags::MODALITY_LUT_SEQUENCE).ok()??;
        let item = seq.items()?.first()?;
        let desc: Vec<i64> = item
            .element_opt(tags::LUT_DESCRIPTOR)
            .ok()??
            .to_multi_int::<i64>()
            .ok()?;
        let data: Vec<i64> = item
            .element_opt(tags::LUT_DATA)
            .ok()??
            .to_multi_int::<i64>()
            .ok()?;
        let (&entries, &first) = (desc.first()?, desc.get(1)?);
        // 0 entries means 65536 (the count does not fit in 16 bits).
        let entries = if entries == 0 { 65536 } else { entries } as usize;
        let pixel_signed = int::<u16>(ds, tags::PIXEL_REPRESENTATION) == Some(1);
        // The first mapped value is US or SS as the pixel representation says.
        let first = if pixel_signed && first > 0x7FFF {
            first - 0x1_0000
        } else {
            first
        };
        if data.is_empty() {
            return None;
        }
        let mut data = data;
        data.truncate(entries);
        Some(ModalityLut { first, data })
    }

    pub fn apply(&self, v: i64) -> i64 {
        let last = self.data.len() as i64 - 1;
        self.data[(v - self.first).clamp(0, last) as usize]
    }
}

/// DICOM pads values to even length with a space (text) or NUL (UI).
fn trim(s: &str) -> &str {
    s.trim_end_matches(['\0', ' ']).trim_start_matches(' ')
}

/// A text attribute, trimmed of padding; empty when absent. Values stored with VR UN (an
/// implicit-VR private dictionary or an unknown tag) are decoded from their raw bytes, not
/// rendered as a byte list.
fn string(ds: &InMemDicomObject, tag: Tag) -> String {
    match ds.element_opt(tag) {
        Ok(Some(elem)) if elem.vr() == VR::UN => elem
            .to_bytes()
            .map(|b| trim(&String::from_utf8_lossy(&b)).to_string())
            .unwrap_or_default(),
        Ok(Some(elem)) => elem
            .to_str()
            .map(|s| trim(&s).to_string())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// An integer attribute (US/UL/SS/IS, via dicom-core's conversions); `None` when absent or
/// not convertible.
fn int<T>(ds: &InMemDicomObject, tag: Tag) -> Option<T>
where
    T: Clone + num_traits::NumCast + std::str::FromStr<Err = std::num::ParseIntError>,
{
    match ds.element_opt(tag) {
        Ok(Some(elem)) => elem.to_int::<T>().ok(),
        _ => None,
    }
}

/// All values of a numeric attribute (DS/FD/IS...); empty when absent or unreadable, and
/// non-finite values are dropped (NaN has no place in a table column).
fn floats(ds: &InMemDicomObject, tag: Tag) -> Vec<f64> {
    match ds.element_opt(tag) {
        // VR UN (implicit-VR private dictionaries): the value is the DS/IS text.
        Ok(Some(elem)) if elem.vr() == VR::UN => elem
            .to_bytes()
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .split('\\')
                    .filter_map(|part| trim(part).parse::<f64>().ok())
                    .filter(|x| x.is_finite())
                    .collect()
            })
            .unwrap_or_default(),
        Ok(Some(elem)) => elem
            .to_multi_float64()
            .map(|v| v.into_iter().filter(|x| x.is_finite()).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The first value of a numeric attribute.
fn float(ds: &InMemDicomObject, tag: Tag) -> Option<f64> {
    floats(ds, tag).first().copied()
}

/// Fail unless the study, series and SOP instance UIDs are present.
pub(crate) fn require_uids(ds: &InMemDicomObject) -> Result<(), ComputeError> {
    required(ds, tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?;
    required(ds, tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?;
    required(ds, tags::SOP_INSTANCE_UID, "SOPInstanceUID")?;
    Ok(())
}

fn required(ds: &InMemDicomObject, tag: Tag, name: &'static str) -> Result<String, ComputeError> {
    let value = string(ds, tag);
    if value.is_empty() {
        return Err(ComputeError::MissingUid {
            name,
            tag: format!("({:04X},{:04X})", tag.group(), tag.element()),
        });
    }
    Ok(value)
}
