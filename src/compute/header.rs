use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};

use super::ComputeError;

/// The attributes of one instance the pipeline indexes: identity, geometry and the series /
/// study attributes that feed the coalesced series state.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct InstanceMeta {
    pub patient_id: String,
    pub study_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub modality: String,
    pub rows: u16,
    pub columns: u16,
    pub number_of_frames: u32,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub samples_per_pixel: u16,
    pub pixel_representation: u16,
    pub photometric_interpretation: String,
    pub instance_number: i32,
    pub patient_name: String,
    pub patient_sex: String,
    pub patient_birth_date: String,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub study_description: String,
    pub series_description: String,
    pub body_part: String,
    pub institution: String,
    pub manufacturer: String,
}

impl InstanceMeta {
    /// Extract the attributes from a parsed file. Study, series and SOP instance UIDs are
    /// required; everything else defaults to empty / zero when absent or unreadable.
    pub fn from_object(obj: &DefaultDicomObject) -> Result<Self, ComputeError> {
        let ds: &InMemDicomObject = obj;
        let transfer_syntax_uid = trim(obj.meta().transfer_syntax()).to_string();
        Ok(InstanceMeta {
            study_uid: required(ds, tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?,
            series_uid: required(ds, tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?,
            sop_uid: required(ds, tags::SOP_INSTANCE_UID, "SOPInstanceUID")?,
            sop_class_uid: string(ds, tags::SOP_CLASS_UID),
            patient_id: string(ds, tags::PATIENT_ID),
            transfer_syntax_uid,
            modality: string(ds, tags::MODALITY),
            rows: int(ds, tags::ROWS).unwrap_or(0),
            columns: int(ds, tags::COLUMNS).unwrap_or(0),
            // Absent NumberOfFrames means a single-frame image (PS3.3 C.7.6.6).
            number_of_frames: int(ds, tags::NUMBER_OF_FRAMES).unwrap_or(1),
            bits_allocated: int(ds, tags::BITS_ALLOCATED).unwrap_or(0),
            bits_stored: int(ds, tags::BITS_STORED).unwrap_or(0),
            samples_per_pixel: int(ds, tags::SAMPLES_PER_PIXEL).unwrap_or(0),
            pixel_representation: int(ds, tags::PIXEL_REPRESENTATION).unwrap_or(0),
            photometric_interpretation: string(ds, tags::PHOTOMETRIC_INTERPRETATION),
            instance_number: int(ds, tags::INSTANCE_NUMBER).unwrap_or(0),
            patient_name: string(ds, tags::PATIENT_NAME),
            patient_sex: string(ds, tags::PATIENT_SEX),
            patient_birth_date: string(ds, tags::PATIENT_BIRTH_DATE),
            study_date: string(ds, tags::STUDY_DATE),
            study_time: string(ds, tags::STUDY_TIME),
            accession_number: string(ds, tags::ACCESSION_NUMBER),
            study_description: string(ds, tags::STUDY_DESCRIPTION),
            series_description: string(ds, tags::SERIES_DESCRIPTION),
            body_part: string(ds, tags::BODY_PART_EXAMINED),
            institution: string(ds, tags::INSTITUTION_NAME),
            manufacturer: string(ds, tags::MANUFACTURER),
        })
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
