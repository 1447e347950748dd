//! Valid synthetic CT instances, for tests and load generation.
//!
//! Files are written by dicom-rs with a proper preamble and file meta group, in the transfer
//! syntax asked for, and carry non-trivial pixel content (an elliptical body phantom with
//! bone, soft tissue and deterministic noise), so every stage of the pipeline does real work
//! and compression ratios are realistic. pydicom reads them back (`tests/it/compute.rs`).

use dicom_core::value::{PixelFragmentSequence, Value};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use serde::{Deserialize, Serialize};

use super::rle;

/// Transfer syntaxes `synth` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SynthSyntax {
    #[default]
    ExplicitLe,
    ImplicitLe,
    ExplicitBe,
    Deflate,
    Rle,
}

impl SynthSyntax {
    pub const ALL: [SynthSyntax; 5] = [
        SynthSyntax::ExplicitLe,
        SynthSyntax::ImplicitLe,
        SynthSyntax::ExplicitBe,
        SynthSyntax::Deflate,
        SynthSyntax::Rle,
    ];

    pub fn uid(self) -> &'static str {
        match self {
            SynthSyntax::ExplicitLe => uids::EXPLICIT_VR_LITTLE_ENDIAN,
            SynthSyntax::ImplicitLe => uids::IMPLICIT_VR_LITTLE_ENDIAN,
            SynthSyntax::ExplicitBe => "1.2.840.10008.1.2.2",
            SynthSyntax::Deflate => uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
            SynthSyntax::Rle => uids::RLE_LOSSLESS,
        }
    }
}

impl std::str::FromStr for SynthSyntax {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SynthSyntax::ALL
            .into_iter()
            .find(|t| t.name() == s || t.uid() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = SynthSyntax::ALL.iter().map(|t| t.name()).collect();
                format!(
                    "unknown transfer syntax `{s}` (one of {} or its UID)",
                    names.join(", ")
                )
            })
    }
}

impl SynthSyntax {
    pub fn name(self) -> &'static str {
        match self {
            SynthSyntax::ExplicitLe => "explicit-le",
            SynthSyntax::ImplicitLe => "implicit-le",
            SynthSyntax::ExplicitBe => "explicit-be",
            SynthSyntax::Deflate => "deflate",
            SynthSyntax::Rle => "rle",
        }
    }
}

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
    /// "CT" (12-bit stored, rescale to HU) or "MR" (12-bit, no rescale).
    pub modality: String,
    pub transfer_syntax: SynthSyntax,
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
            modality: "CT".into(),
            transfer_syntax: SynthSyntax::ExplicitLe,
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

/// Deterministic noise in [0, 1) from a position and a seed (splitmix64 finaliser).
fn noise(seed: u64, i: u64) -> f64 {
    let mut z = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as f64 / u64::MAX as f64
}

/// Stored 12-bit values of an axial slice: air outside an elliptical body, soft tissue with
/// noise, a bone ring and a lung-like region, varying with the slice position.
fn phantom(spec: &CtSpec) -> Vec<u16> {
    let (rows, cols) = (spec.rows as usize, spec.columns as usize);
    let seed = u64::from(md5::compute(spec.sop_uid.as_bytes()).0[0]) << 8
        | u64::from(spec.instance_number as u32);
    let z = f64::from(spec.instance_number) / 50.0;
    let mr = spec.modality == "MR";
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let y = (r as f64 / rows as f64 - 0.5) * 2.0;
            let x = (c as f64 / cols as f64 - 0.5) * 2.0;
            let body = (x / 0.85).powi(2) + (y / 0.65).powi(2);
            let lung = ((x.abs() - 0.4) / 0.25).powi(2) + (y / (0.35 + 0.05 * z.sin())).powi(2);
            let n = noise(seed, (r * cols + c) as u64) - 0.5;
            // Hounsfield-like values (CT) or signal intensity (MR).
            let v = if body > 1.0 {
                if mr {
                    0.0
                } else {
                    -1000.0 + 5.0 * n
                }
            } else if (0.80..0.92).contains(&body) {
                if mr {
                    300.0 + 40.0 * n
                } else {
                    700.0 + 150.0 * n
                }
            } else if lung < 1.0 {
                if mr {
                    80.0 + 20.0 * n
                } else {
                    -800.0 + 60.0 * n
                }
            } else if mr {
                1200.0 + 300.0 * x * y + 80.0 * n
            } else {
                40.0 + 30.0 * n
            };
            let stored = if mr { v } else { v + 1024.0 };
            out.push(stored.clamp(0.0, 4095.0) as u16);
        }
    }
    out
}

/// Slice thickness of every synthetic slice, in mm (slices are that far apart).
const SLICE_THICKNESS: f64 = 1.25;

/// Encode one instance as a complete DICOM file (preamble, meta, data set).
pub fn ct_file_bytes(spec: &CtSpec) -> Vec<u8> {
    let sop_class = if spec.modality == "MR" {
        uids::MR_IMAGE_STORAGE
    } else {
        uids::CT_IMAGE_STORAGE
    };
    let mut elements = identification(spec, sop_class);
    elements.extend(image_description(spec));
    elements.push(pixel_data(spec));
    if !spec.omit_sop_uid {
        elements.push(text(tags::SOP_INSTANCE_UID, VR::UI, &spec.sop_uid));
    }
    write_file(
        InMemDicomObject::from_element_iter(elements),
        spec,
        sop_class,
    )
}

/// Who and what the instance is: its class, the patient, study and series, the equipment.
fn identification(spec: &CtSpec, sop_class: &str) -> Vec<DataElement<InMemDicomObject>> {
    let mr = spec.modality == "MR";
    vec![
        text(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL"),
        text(tags::SOP_CLASS_UID, VR::UI, sop_class),
        text(tags::STUDY_DATE, VR::DA, "20260101"),
        text(tags::SERIES_DATE, VR::DA, "20260101"),
        text(tags::CONTENT_DATE, VR::DA, "20260101"),
        text(tags::STUDY_TIME, VR::TM, "120000"),
        text(tags::SERIES_TIME, VR::TM, "120500"),
        text(
            tags::CONTENT_TIME,
            VR::TM,
            &format!("1205{:02}", spec.instance_number.rem_euclid(60)),
        ),
        text(tags::ACCESSION_NUMBER, VR::SH, "ACC0001"),
        text(tags::MODALITY, VR::CS, &spec.modality),
        text(tags::MANUFACTURER, VR::LO, "dicom-pipeline synth"),
        text(tags::INSTITUTION_NAME, VR::LO, "Synthetic Hospital"),
        text(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "Ref^Doctor"),
        text(tags::STATION_NAME, VR::SH, "SYNTH01"),
        text(
            tags::STUDY_DESCRIPTION,
            VR::LO,
            if mr { "MR BRAIN" } else { "CT CHEST" },
        ),
        text(tags::SERIES_DESCRIPTION, VR::LO, "AXIAL"),
        text(
            tags::PROTOCOL_NAME,
            VR::LO,
            if mr { "BRAIN ROUTINE" } else { "CHEST ROUTINE" },
        ),
        text(tags::MANUFACTURER_MODEL_NAME, VR::LO, "Phantom 1"),
        text(tags::PATIENT_NAME, VR::PN, &spec.patient_name),
        text(tags::PATIENT_ID, VR::LO, &spec.patient_id),
        text(tags::PATIENT_BIRTH_DATE, VR::DA, "19700101"),
        text(tags::PATIENT_SEX, VR::CS, "O"),
        text(
            tags::BODY_PART_EXAMINED,
            VR::CS,
            if mr { "HEAD" } else { "CHEST" },
        ),
        text(tags::STUDY_INSTANCE_UID, VR::UI, &spec.study_uid),
        text(tags::SERIES_INSTANCE_UID, VR::UI, &spec.series_uid),
        text(tags::SERIES_NUMBER, VR::IS, "1"),
        text(tags::ACQUISITION_NUMBER, VR::IS, "1"),
        text(
            tags::INSTANCE_NUMBER,
            VR::IS,
            &spec.instance_number.to_string(),
        ),
        text(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            &format!("{}.9", spec.study_uid),
        ),
    ]
}

/// Where the slice lies and how its pixels are stored, windowed and rescaled.
fn image_description(spec: &CtSpec) -> Vec<DataElement<InMemDicomObject>> {
    let mr = spec.modality == "MR";
    let z = -f64::from(spec.instance_number) * SLICE_THICKNESS;
    let spacing = 350.0 / f64::from(spec.columns.max(1));
    let mut elements = vec![
        text(tags::SLICE_THICKNESS, VR::DS, &format!("{SLICE_THICKNESS}")),
        text(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            &format!("-175\\-175\\{z}"),
        ),
        text(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0"),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1_u16)),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(spec.rows)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(spec.columns)),
        text(
            tags::PIXEL_SPACING,
            VR::DS,
            &format!("{spacing:.4}\\{spacing:.4}"),
        ),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16_u16)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12_u16)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11_u16)),
        DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0_u16),
        ),
        text(tags::WINDOW_CENTER, VR::DS, if mr { "600" } else { "40" }),
        text(tags::WINDOW_WIDTH, VR::DS, if mr { "1200" } else { "400" }),
    ];
    if !mr {
        elements.push(text(tags::RESCALE_INTERCEPT, VR::DS, "-1024"));
        elements.push(text(tags::RESCALE_SLOPE, VR::DS, "1"));
        elements.push(text(tags::RESCALE_TYPE, VR::LO, "HU"));
    }
    elements
}

/// The phantom's pixels: one RLE fragment in the RLE syntax, native OW words otherwise.
fn pixel_data(spec: &CtSpec) -> DataElement<InMemDicomObject> {
    let data = phantom(spec);
    if spec.transfer_syntax == SynthSyntax::Rle {
        let values: Vec<u32> = data.iter().map(|&v| u32::from(v)).collect();
        let frame = rle::encode_frame(&values, 1, 2);
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            Value::PixelSequence(PixelFragmentSequence::new(vec![], vec![frame])),
        )
    } else {
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(data.into()))
    }
}

/// Write the data set as a file: preamble, a meta group for `spec`'s syntax, the data set.
fn write_file(obj: InMemDicomObject, spec: &CtSpec, sop_class: &str) -> Vec<u8> {
    let pixels = (spec.rows as usize) * (spec.columns as usize);
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(spec.transfer_syntax.uid())
        .media_storage_sop_class_uid(sop_class)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::{derive_bytes, Limits, Mode};

    /// Every syntax encodes the same pixels: the pixel digest (defined over stored values) is
    /// the same, the header digest (over the encoded header) differs.
    #[test]
    fn every_transfer_syntax_round_trips_to_the_same_pixels() {
        for modality in ["CT", "MR"] {
            let mut digests = Vec::new();
            for ts in SynthSyntax::ALL {
                let spec = CtSpec {
                    rows: 96,
                    columns: 80,
                    modality: modality.into(),
                    transfer_syntax: ts,
                    ..CtSpec::default()
                };
                let d = derive_bytes(&ct_file_bytes(&spec), Mode::Full, Limits::default())
                    .unwrap_or_else(|e| panic!("{ts:?}: {e}"));
                assert_eq!(d.meta.transfer_syntax_uid, ts.uid());
                assert_eq!(d.meta.modality, modality);
                let px = d.pixels.unwrap();
                assert_eq!(px.values, 96 * 80);
                assert!(px.max > px.min + 500.0, "{ts:?}: flat image");
                digests.push((px.digest, d.header_digest));
            }
            assert!(digests.iter().all(|d| d.0 == digests[0].0), "{digests:?}");
            // The header digest covers the encoded header: implicit and big endian differ from
            // explicit LE; deflate is digested as its explicit-LE re-encoding, so it and RLE
            // (explicit LE header) match explicit LE.
            let h: Vec<&String> = digests.iter().map(|d| &d.1).collect();
            assert_eq!((h[0], h[0], h[0]), (h[3], h[4], h[0]), "{digests:?}");
            assert!(h[1] != h[0] && h[2] != h[0] && h[1] != h[2], "{digests:?}");
        }
    }

    #[test]
    fn ct_values_rescale_to_hounsfield_units() {
        let d = derive_bytes(
            &ct_file_bytes(&CtSpec::default()),
            Mode::Full,
            Limits::default(),
        )
        .unwrap();
        let m = d.pixels.unwrap().modality.unwrap();
        // Air (−1000) outside the body, bone (~700) in the ring.
        assert!(m.min < -990.0 && m.max > 600.0, "{m:?}");
        assert_eq!(d.meta.rescale_intercept, Some(-1024.0));
        assert_eq!(d.meta.pixel_spacing.len(), 2);
        assert_eq!(d.meta.image_orientation, vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn same_arguments_write_the_same_bytes() {
        let a = CtSpec::numbered("1.2.3", 1, 2, 3, 4);
        assert_eq!(ct_file_bytes(&a), ct_file_bytes(&a.clone()));
        let b = CtSpec::numbered("1.2.3", 1, 2, 3, 5);
        assert_ne!(ct_file_bytes(&a), ct_file_bytes(&b));
    }

    #[test]
    fn syntax_names_parse() {
        for ts in SynthSyntax::ALL {
            assert_eq!(ts.name().parse::<SynthSyntax>(), Ok(ts));
            assert_eq!(ts.uid().parse::<SynthSyntax>(), Ok(ts));
        }
        assert!("jpeg".parse::<SynthSyntax>().is_err());
    }
}
