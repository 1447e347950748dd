//! Tests of the direct read against the object path: every plain syntax, character sets,
//! number parsing, nested sequences, and the cases it leaves to the object path.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{from_reader, InMemDicomObject};

use super::fields::WANTED;
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
