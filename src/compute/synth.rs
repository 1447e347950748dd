//! Valid synthetic CT instances, for tests and load generation.
//!
//! Files are written by dicom-rs with a proper preamble and file meta group (explicit VR little
//! endian) and carry non-trivial pixel content, so every stage of the pipeline does real work.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

/// What to put into one synthetic instance.
#[derive(Debug, Clone, PartialEq)]
pub struct CtSpec {
    pub patient_id: String,
    pub patient_name: String,
    pub study_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
    pub instance_number: i32,
    pub rows: u16,
    pub columns: u16,
    /// Leave SOPInstanceUID out of the data set (a bad-input case).
    pub omit_sop_uid: bool,
}

impl Default for CtSpec {
    fn default() -> Self {
        CtSpec {
            patient_id: "PAT-0001".into(),
            patient_name: "Doe^Jane".into(),
            study_uid: "1.2.826.0.1.3680043.10.1234.1".into(),
            series_uid: "1.2.826.0.1.3680043.10.1234.1.1".into(),
            sop_uid: "1.2.826.0.1.3680043.10.1234.1.1.1".into(),
            instance_number: 1,
            rows: 64,
            columns: 64,
            omit_sop_uid: false,
        }
    }
}

impl CtSpec {
    /// A distinct instance `i` of series `series` of study `study` of patient `patient`,
    /// with deterministic UIDs under the given root (a UID prefix ending without a dot).
    pub fn numbered(root: &str, patient: u32, study: u32, series: u32, instance: u32) -> Self {
        let study_uid = format!("{root}.{patient}.{study}");
        let series_uid = format!("{study_uid}.{series}");
        CtSpec {
            patient_id: format!("PAT-{patient:06}"),
            patient_name: format!("Synthetic^Patient{patient}"),
            sop_uid: format!("{series_uid}.{instance}"),
            study_uid,
            series_uid,
            instance_number: instance as i32,
            ..CtSpec::default()
        }
    }
}

fn text(tag: dicom_core::Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

/// Encode one CT instance as a complete DICOM file (preamble, meta, data set).
pub fn ct_file_bytes(spec: &CtSpec) -> Vec<u8> {
    let pixels = (spec.rows as usize) * (spec.columns as usize);
    // Deterministic, non-constant content: a gradient plus the instance number.
    let data: Vec<u16> = (0..pixels)
        .map(|i| ((i % 4096) as u16).wrapping_add(spec.instance_number as u16))
        .collect();
    let mut elements = vec![
        text(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
        text(tags::STUDY_DATE, VR::DA, "20260101"),
        text(tags::STUDY_TIME, VR::TM, "120000"),
        text(tags::ACCESSION_NUMBER, VR::SH, "ACC0001"),
        text(tags::MODALITY, VR::CS, "CT"),
        text(tags::MANUFACTURER, VR::LO, "dicom-pipeline synth"),
        text(tags::INSTITUTION_NAME, VR::LO, "Synthetic Hospital"),
        text(tags::STUDY_DESCRIPTION, VR::LO, "CT CHEST"),
        text(tags::SERIES_DESCRIPTION, VR::LO, "AXIAL 1mm"),
        text(tags::PATIENT_NAME, VR::PN, &spec.patient_name),
        text(tags::PATIENT_ID, VR::LO, &spec.patient_id),
        text(tags::PATIENT_BIRTH_DATE, VR::DA, "19700101"),
        text(tags::PATIENT_SEX, VR::CS, "O"),
        text(tags::BODY_PART_EXAMINED, VR::CS, "CHEST"),
        text(tags::STUDY_INSTANCE_UID, VR::UI, &spec.study_uid),
        text(tags::SERIES_INSTANCE_UID, VR::UI, &spec.series_uid),
        text(tags::SERIES_NUMBER, VR::IS, "1"),
        text(
            tags::INSTANCE_NUMBER,
            VR::IS,
            &spec.instance_number.to_string(),
        ),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1_u16)),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(spec.rows)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(spec.columns)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16_u16)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12_u16)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11_u16)),
        DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0_u16),
        ),
        text(tags::RESCALE_INTERCEPT, VR::DS, "-1024"),
        text(tags::RESCALE_SLOPE, VR::DS, "1"),
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(data.into())),
    ];
    if !spec.omit_sop_uid {
        elements.push(text(tags::SOP_INSTANCE_UID, VR::UI, &spec.sop_uid));
    }
    let obj = InMemDicomObject::from_element_iter(elements);
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE)
        .media_storage_sop_instance_uid(spec.sop_uid.as_str());
    let file = match obj.with_meta(meta) {
        Ok(file) => file,
        // Every input here is generated by this function; a failure is a programming error.
        Err(e) => panic!("synthetic meta table is invalid: {e}"),
    };
    let mut out = Vec::with_capacity(pixels * 2 + 2048);
    if let Err(e) = file.write_all(&mut out) {
        panic!("writing to a Vec cannot fail: {e}");
    }
    out
}
