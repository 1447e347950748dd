//! Tests of the statistics and digest over hand-made layouts: sign extension, moments and
//! percentiles, the digest's independence from how values are held, 1-bit and planar data.

use super::accumulator::Accumulator;
use super::layout::Layout;
use super::PixelSummary;
use crate::compute::{InstanceMeta, Limits};

fn layout(bits_allocated: u16, bits_stored: u16, signed: bool) -> Layout {
    Layout {
        frames: 1,
        pixels: 4,
        samples: 1,
        bits_allocated,
        bits_stored,
        signed,
        planar: false,
        ybr422: false,
    }
}

#[test]
fn a_layout_whose_size_overflows_is_too_large_not_wrapped() {
    let meta = InstanceMeta {
        rows: 65535,
        columns: 65535,
        number_of_frames: u32::MAX,
        samples_per_pixel: 4,
        bits_allocated: 8,
        bits_stored: 8,
        ..InstanceMeta::default()
    };
    let Err(err) = Accumulator::for_image(&meta, Limits::default()) else {
        panic!("accepted");
    };
    assert_eq!(err.reason(), crate::model::Reason::TooLarge, "{err}");
    assert!(err.to_string().contains("overflows"), "{err}");
    // One frame fewer of a smaller image fits in 64 bits, and is too large as a size.
    let meta = InstanceMeta {
        number_of_frames: 1 << 20,
        ..meta
    };
    let Err(err) = Accumulator::for_image(&meta, Limits::default()) else {
        panic!("accepted");
    };
    assert!(err.to_string().contains("over the limit"), "{err}");
}

fn summary(l: Layout, raw: &[u32]) -> PixelSummary {
    let mut acc = Accumulator::new(l).unwrap();
    acc.feed(raw, |&r| r, 2).unwrap();
    acc.finish(&InstanceMeta {
        rescale_slope: Some(2.0),
        rescale_intercept: Some(-10.0),
        ..InstanceMeta::default()
    })
}

#[test]
fn signed_values_below_bits_allocated_are_sign_extended() {
    // 12 bits stored in 16: 0x0FFF is −1, 0x0800 is −2048; high bits are not pixel data.
    let s = summary(layout(16, 12, true), &[0x0FFF, 0x0800, 0xF001, 0x07FF]);
    assert_eq!((s.min, s.max), (-2048.0, 2047.0));
    assert_eq!(s.mean, (-1.0 - 2048.0 + 1.0 + 2047.0) / 4.0);
}

#[test]
fn moments_percentiles_and_modality_follow_the_definitions() {
    let s = summary(layout(16, 16, false), &[10, 20, 30, 40]);
    assert_eq!((s.min, s.max, s.mean), (10.0, 40.0, 25.0));
    assert!((s.std - 125f64.sqrt()).abs() < 1e-12);
    // Lower-rank percentiles over 4 values: ranks 0, 1, 2.
    assert_eq!((s.p01, s.p50, s.p99), (10.0, 20.0, 30.0));
    let m = s.modality.unwrap();
    assert_eq!((m.min, m.max, m.mean), (10.0, 70.0, 40.0));
    assert!((m.std - 2.0 * 125f64.sqrt()).abs() < 1e-12);
}

#[test]
fn digest_depends_on_values_not_on_how_they_were_held() {
    let a = summary(layout(16, 12, false), &[1, 2, 3, 4]);
    // Same stored values with junk in the bits above BitsStored.
    let b = summary(layout(16, 12, false), &[0xF001, 0x1002, 3, 4]);
    assert_eq!(a.digest, b.digest);
    let c = summary(layout(16, 12, false), &[1, 2, 3, 5]);
    assert_ne!(a.digest, c.digest);
    // The canonical bytes: 2-byte little-endian values.
    let mut want = Vec::new();
    for v in [1u16, 2, 3, 4] {
        want.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(a.digest, blake3::hash(&want).to_hex().to_string());
}

#[test]
fn thirty_two_bit_values_use_the_sorted_path() {
    let s = summary(layout(32, 32, true), &[u32::MAX, 5, 70_000, 0]);
    assert_eq!((s.min, s.max), (-1.0, 70_000.0));
    assert_eq!(s.p50, 0.0);
}

#[test]
fn one_bit_data_unpacks_least_significant_bit_first() {
    let mut l = layout(1, 1, false);
    l.pixels = 10;
    let mut acc = Accumulator::new(l).unwrap();
    acc.feed_bits(&[0b0000_0101, 0b11]).unwrap();
    let s = acc.finish(&InstanceMeta::default());
    assert_eq!(s.mean, 4.0 / 10.0);
    let want = blake3::hash(&[1, 0, 1, 0, 0, 0, 0, 0, 1, 1]);
    assert_eq!(s.digest, want.to_hex().to_string());
}

#[test]
fn planar_colour_is_interleaved_for_the_digest() {
    let mut l = layout(8, 8, false);
    l.pixels = 2;
    l.samples = 3;
    l.planar = true;
    let mut acc = Accumulator::new(l).unwrap();
    // R R G G B B → R G B R G B
    acc.feed(&[1u8, 2, 3, 4, 5, 6][..], |&b| u32::from(b), 1)
        .unwrap();
    let s = acc.finish(&InstanceMeta::default());
    assert_eq!(
        s.digest,
        blake3::hash(&[1, 3, 5, 2, 4, 6]).to_hex().to_string()
    );
    assert!(s.modality.is_none());
}

#[test]
fn short_pixel_data_is_an_error_not_a_partial_result() {
    let mut acc = Accumulator::new(layout(16, 16, false)).unwrap();
    let err = acc.feed(&[1u32, 2, 3][..], |&r| r, 2).unwrap_err();
    assert_eq!(err.reason(), crate::model::Reason::PixelDataShort);
}
