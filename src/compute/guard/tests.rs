//! Tests of the header walk through its entry points: nesting and cost limits, lengths that
//! do not fit, the meta group, what the walk finds, trailing junk.

use super::limits::{ITEM_COST, MAX_NESTING, NESTED_ELEMENT_COST};
use super::*;
use crate::compute::synth::{ct_file_bytes, CtSpec};
use crate::model::Reason;

fn check(bytes: &[u8], stop: bool) -> Result<Option<Scan>, ComputeError> {
    check_lengths(
        &mut io::Cursor::new(bytes),
        bytes.len() as u64,
        stop,
        u64::MAX,
    )
}

/// A file of `depth` nested sequences (undefined lengths), each with one item, after a
/// valid CT's header: the walk runs until the end of the data.
fn nested(depth: usize, defined: bool) -> Vec<u8> {
    let item = |len: u32| {
        let mut b = vec![0xFE, 0xFF, 0x00, 0xE0];
        b.extend(len.to_le_bytes());
        b
    };
    let seq = |len: u32| {
        let mut b = vec![0x40, 0x00, 0x30, 0xA7, b'S', b'Q', 0, 0];
        b.extend(len.to_le_bytes());
        b
    };
    let mut body = Vec::new();
    if defined {
        let mut inner: Vec<u8> = Vec::new();
        for _ in 0..depth {
            let mut it = item(inner.len() as u32);
            it.extend(&inner);
            let mut sq = seq(it.len() as u32);
            sq.extend(it);
            inner = sq;
        }
        body = inner;
    } else {
        for _ in 0..depth {
            body.extend(seq(UNDEFINED));
            body.extend(item(UNDEFINED));
        }
        for _ in 0..depth {
            body.extend([0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
            body.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        }
    }
    // A CT's header (cut before its pixel data) followed by the sequences.
    let mut f = ct_file_bytes(&CtSpec::default());
    let pixels = check(&f, true).unwrap().unwrap().pixel_data_at.unwrap();
    f.truncate(pixels as usize);
    f.extend(body);
    f
}

#[test]
fn sequences_nest_at_most_max_nesting_deep() {
    for defined in [false, true] {
        let ok = nested(MAX_NESTING, defined);
        check(&ok, false).unwrap_or_else(|e| panic!("{defined}: {e}"));
        let deep = nested(MAX_NESTING + 1, defined);
        let err = check(&deep, false).unwrap_err();
        assert_eq!(err.reason(), Reason::Malformed, "{defined}: {err}");
        assert!(err.to_string().contains("nested deeper than 64"), "{err}");
        let err = check(&nested(5_000, defined), true).unwrap_err();
        assert_eq!(err.reason(), Reason::Malformed, "{defined}: {err}");
    }
}

#[test]
fn parsing_cost_is_bounded_by_the_budget() {
    let f = nested(10, false);
    let cost = 10 * ITEM_COST + 20 * NESTED_ELEMENT_COST;
    let walk = |budget| check_lengths(&mut io::Cursor::new(&f), f.len() as u64, false, budget);
    walk(cost + 10 * NESTED_ELEMENT_COST).unwrap();
    let err = walk(cost / 2).unwrap_err();
    assert_eq!(err.reason(), Reason::TooLarge, "{err}");
    assert!(err.to_string().contains("max_decoded_size"), "{err}");
}

#[test]
fn accepts_a_valid_file_in_both_modes() {
    let bytes = ct_file_bytes(&CtSpec::default());
    check(&bytes, false).unwrap();
    check(&bytes, true).unwrap();
}

/// Find an element's explicit-VR-LE header in a synthetic file.
fn find_header(bytes: &[u8], group: u16, element: u16, vr: &[u8; 2]) -> usize {
    let mut pat = Vec::new();
    pat.extend_from_slice(&group.to_le_bytes());
    pat.extend_from_slice(&element.to_le_bytes());
    pat.extend_from_slice(vr);
    bytes
        .windows(pat.len())
        .rposition(|w| w == pat.as_slice())
        .expect("element present")
}

#[test]
fn rejects_an_absurd_length_before_anything_is_allocated() {
    let mut bytes = ct_file_bytes(&CtSpec::default());
    // PatientName (0010,0010) PN: short length field at +6.
    let at = find_header(&bytes, 0x0010, 0x0010, b"PN");
    bytes[at + 6..at + 8].copy_from_slice(&0xFFF0u16.to_le_bytes());
    let err = check(&bytes, true).unwrap_err();
    assert_eq!(err.reason(), Reason::Truncated);
    assert!(err.to_string().contains("(0010,0010)"), "{err}");
}

#[test]
fn pixel_data_longer_than_the_file_fails_only_in_full_mode() {
    let mut bytes = ct_file_bytes(&CtSpec::default());
    let at = find_header(&bytes, 0x7FE0, 0x0010, b"OW");
    bytes[at + 8..at + 12].copy_from_slice(&0x7FFF_0000u32.to_le_bytes());
    assert!(check(&bytes, false).is_err());
    check(&bytes, true).unwrap();
}

#[test]
fn gives_up_rather_than_guessing() {
    // No magic, no meta group, not a bare data set: not DICOM, from its first bytes
    // (dicom-rs refuses it too; reading on would only cost the rest of the file).
    let err = check(b"not dicom at all, not even close", false).unwrap_err();
    assert_eq!(err.reason(), Reason::NotDicom, "{err}");
    // Too short to hold anything: nothing to reject (check_size refuses empty files).
    assert!(check(&[], false).is_ok());
}

#[test]
fn finds_the_data_set_and_the_pixel_data() {
    let bytes = ct_file_bytes(&CtSpec::default());
    let scan = check(&bytes, false).unwrap().unwrap();
    let pd = find_header(&bytes, 0x7FE0, 0x0010, b"OW") as u64;
    assert_eq!(scan.pixel_data_at, Some(pd));
    assert_eq!(scan.trailing_at, None);
    // The data set starts right after the meta group: (0008,xxxx) comes first.
    let at = scan.dataset_start as usize;
    assert_eq!(&bytes[at..at + 2], &0x0008u16.to_le_bytes());
    assert_eq!(check(&bytes, true).unwrap().unwrap(), scan);
}

/// The meta group ends where its group length says, as dicom-rs reads it: an element of
/// another group inside it (found by the fuzzer: (0002,0002) mutated to (0006,0002))
/// belongs to the meta group, and the data set's lengths are still checked after it.
#[test]
fn the_meta_group_ends_where_its_group_length_says() {
    let mut bytes = ct_file_bytes(&CtSpec::default());
    let at = find_header(&bytes, 0x0002, 0x0002, b"UI");
    bytes[at..at + 2].copy_from_slice(&0x0006u16.to_le_bytes());
    let scan = check(&bytes, false).unwrap().unwrap();
    let good = check(&ct_file_bytes(&CtSpec::default()), false)
        .unwrap()
        .unwrap();
    assert_eq!(scan.dataset_start, good.dataset_start);
    // And an absurd length in the data set is refused, not left to dicom-rs.
    let at = find_header(&bytes, 0x0010, 0x0010, b"PN");
    bytes[at + 6..at + 8].copy_from_slice(&0xFFF0u16.to_le_bytes());
    assert_eq!(check(&bytes, true).unwrap_err().reason(), Reason::Truncated);
}

#[test]
fn junk_after_the_pixel_data_is_trailing_not_truncation() {
    let bytes = ct_file_bytes(&CtSpec::default());
    for junk in [
        &b"\x00\x01garbage that is no element header"[..],
        b"xyz",
        &[0xFF; 64],
    ] {
        let mut with = bytes.clone();
        with.extend_from_slice(junk);
        let scan = check(&with, false).unwrap().unwrap();
        assert_eq!(scan.trailing_at, Some(bytes.len() as u64), "{junk:?}");
    }
    // A real element after the pixel data (data set trailing padding) is not junk.
    let mut padded = bytes.clone();
    padded.extend_from_slice(&[0xFC, 0xFF, 0xFC, 0xFF, b'O', b'B', 0, 0, 2, 0, 0, 0, 0, 0]);
    assert_eq!(check(&padded, false).unwrap().unwrap().trailing_at, None);
}
