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
    pub planar_configuration: u16,
    pub frame_of_reference_uid: String,
    pub series_number: i32,
    pub acquisition_number: i32,
    pub series_date: String,
    pub series_time: String,
    pub acquisition_date: String,
    pub acquisition_time: String,
    pub content_date: String,
    pub content_time: String,
    /// Row and column spacing in mm (PixelSpacing), empty when absent.
    pub pixel_spacing: Vec<f64>,
    pub slice_thickness: Option<f64>,
    /// ImagePositionPatient (x, y, z in mm), empty when absent.
    pub image_position: Vec<f64>,
    /// ImageOrientationPatient (row and column direction cosines), empty when absent.
    pub image_orientation: Vec<f64>,
    pub rescale_slope: Option<f64>,
    pub rescale_intercept: Option<f64>,
    /// First window of WindowCenter / WindowWidth.
    pub window_center: Option<f64>,
    pub window_width: Option<f64>,
    pub manufacturer_model: String,
    pub station_name: String,
    pub referring_physician: String,
    /// ModalityLUTSequence's first LUT, when present (it replaces the rescale).
    #[serde(skip)]
    pub modality_lut: Option<ModalityLut>,
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
            planar_configuration: int(ds, tags::PLANAR_CONFIGURATION).unwrap_or(0),
            frame_of_reference_uid: string(ds, tags::FRAME_OF_REFERENCE_UID),
            series_number: int(ds, tags::SERIES_NUMBER).unwrap_or(0),
            acquisition_number: int(ds, tags::ACQUISITION_NUMBER).unwrap_or(0),
            series_date: string(ds, tags::SERIES_DATE),
            series_time: string(ds, tags::SERIES_TIME),
            acquisition_date: string(ds, tags::ACQUISITION_DATE),
            acquisition_time: string(ds, tags::ACQUISITION_TIME),
            content_date: string(ds, tags::CONTENT_DATE),
            content_time: string(ds, tags::CONTENT_TIME),
            pixel_spacing: floats(ds, tags::PIXEL_SPACING),
            slice_thickness: float(ds, tags::SLICE_THICKNESS),
            image_position: floats(ds, tags::IMAGE_POSITION_PATIENT),
            image_orientation: floats(ds, tags::IMAGE_ORIENTATION_PATIENT),
            rescale_slope: float(ds, tags::RESCALE_SLOPE),
            rescale_intercept: float(ds, tags::RESCALE_INTERCEPT),
            window_center: float(ds, tags::WINDOW_CENTER),
            window_width: float(ds, tags::WINDOW_WIDTH),
            manufacturer_model: string(ds, tags::MANUFACTURER_MODEL_NAME),
            station_name: string(ds, tags::STATION_NAME),
            referring_physician: string(ds, tags::REFERRING_PHYSICIAN_NAME),
            modality_lut: ModalityLut::from_dataset(ds),
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
