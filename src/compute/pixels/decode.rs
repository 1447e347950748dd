//! Which path pixel data takes to the accumulator: native data read in place from the file's
//! bytes or the parsed value (byte-swapped where a big-endian syntax needs it, YBR_FULL_422
//! expanded), RLE decoded here, everything else through dicom-pixeldata's codecs; and how a
//! codec's failure or panic becomes this file's error.

use dicom_core::value::{PrimitiveValue, Value};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;

use super::accumulator::Accumulator;
use super::{le16, le32, PixelSummary};
use crate::compute::{rle, ComputeError, InstanceMeta, Limits};

/// Summarise the pixels of a parsed file; `None` when it has no PixelData.
pub fn summarise(
    obj: &DefaultDicomObject,
    meta: &InstanceMeta,
    limits: Limits,
) -> Result<Option<PixelSummary>, ComputeError> {
    let Ok(Some(elem)) = obj.element_opt(tags::PIXEL_DATA) else {
        return Ok(None);
    };
    let mut acc = Accumulator::for_image(meta, limits)?;
    let layout = acc.layout;
    let big_endian = meta.transfer_syntax_uid == EXPLICIT_VR_BE;
    match elem.value() {
        Value::Primitive(p) if layout.ybr422 => {
            let bytes: std::borrow::Cow<[u8]> = match p {
                // OW words, back to the little-endian byte stream.
                PrimitiveValue::U16(words) => words.iter().flat_map(|w| w.to_le_bytes()).collect(),
                other => other.to_bytes(),
            };
            feed_ybr422(&mut acc, &bytes)?
        }
        Value::Primitive(p) => feed_native(&mut acc, p, big_endian)?,
        Value::PixelSequence(seq) if meta.transfer_syntax_uid == RLE_LOSSLESS => {
            let fragments = seq.fragments();
            if fragments.len() as u64 != layout.frames {
                return Err(ComputeError::DecodeFailed {
                    detail: format!(
                        "RLE: {} fragments for {} frames (one per frame required)",
                        fragments.len(),
                        layout.frames
                    ),
                });
            }
            // RLE frames are always colour-by-pixel once decoded.
            acc.layout.planar = false;
            let (pixels, samples) = (layout.pixels as usize, layout.samples as usize);
            if layout.bits_allocated == 16 {
                // As the little-endian bytes native 16-bit data would have: the fast path.
                let mut bytes = Vec::with_capacity(layout.values() as usize * 2);
                for fragment in fragments {
                    rle::decode_frame_le16(fragment, pixels, samples, &mut bytes)?;
                }
                acc.feed_le16(&bytes)?;
            } else {
                let mut values = Vec::with_capacity(layout.values() as usize);
                for fragment in fragments {
                    let width = layout.width() as usize;
                    rle::decode_frame(fragment, pixels, samples, width, &mut values)?;
                }
                acc.feed(&values, |&v| v, layout.width())?;
            }
        }
        Value::PixelSequence(_) => feed_decoded(&mut acc, obj)?,
        Value::Sequence(_) => {
            return Err(ComputeError::Malformed {
                detail: "PixelData is a sequence".into(),
            })
        }
    }
    Ok(Some(acc.finish(meta)))
}

/// Feed the pixels through dicom-pixeldata's generic decode (a decoded copy of every frame).
fn feed_decoded(acc: &mut Accumulator, obj: &DefaultDicomObject) -> Result<(), ComputeError> {
    // The codecs can panic on hostile input (the fuzzer found dicom-rs's JPEG adapter slicing
    // past its buffer): that is this file's decode failing, not the worker's.
    let decoded =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| obj.decode_pixel_data()))
            .map_err(|panic| ComputeError::DecodeFailed {
                detail: format!("the decoder panicked: {}", panic_text(&*panic)),
            })?
            .map_err(classify_decode_error)?;
    let data = decoded.data();
    match acc.layout.bits_allocated {
        1 => acc.feed(data, |&b| u32::from(b != 0), 1),
        8 => acc.feed(data, |&b| u32::from(b), 1),
        16 => acc.feed(data.chunks_exact(2), |c| u32::from(le16(c)), 2),
        _ => acc.feed(data.chunks_exact(4), le32, 4),
    }
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Summarise through the generic decode even for native data: what reading in place saves
/// is measured against this (`benches/core.rs`, `pixels/…`).
#[cfg(any(test, feature = "testing"))]
pub fn summarise_decoded(
    obj: &DefaultDicomObject,
    meta: &InstanceMeta,
    limits: Limits,
) -> Result<PixelSummary, ComputeError> {
    let mut acc = Accumulator::for_image(meta, limits)?;
    feed_decoded(&mut acc, obj)?;
    Ok(acc.finish(meta))
}

/// Feed native pixel data from the parsed value, without a decode copy for the common cases.
fn feed_native(
    acc: &mut Accumulator,
    p: &PrimitiveValue,
    big_endian: bool,
) -> Result<(), ComputeError> {
    let ba = acc.layout.bits_allocated;
    match (p, ba) {
        (PrimitiveValue::U16(words), 16) => acc.feed(&words[..], |&w| u32::from(w), 2),
        (PrimitiveValue::U16(words), 32) => {
            // OW read in the file's byte order word by word: rebuild each 32-bit value.
            acc.feed(
                words.chunks_exact(2),
                |w| {
                    if big_endian {
                        (u32::from(w[0]) << 16) | u32::from(w[1])
                    } else {
                        (u32::from(w[1]) << 16) | u32::from(w[0])
                    }
                },
                2 * 2,
            )
        }
        (PrimitiveValue::U8(bytes), _) => feed_bytes(acc, bytes, big_endian),
        (PrimitiveValue::U16(words), _) => {
            // 8- or 1-bit data in an OW value. OW is a run of 16-bit words whose byte order
            // the transfer syntax swaps (PS3.5 8.2): the pixel byte stream is each word's
            // little-endian bytes, whatever the file's endianness.
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            feed_bytes(acc, &bytes, false)
        }
        (other, _) => feed_bytes(acc, &other.to_bytes(), false),
    }
}

/// Feed pixel data held as the file's bytes.
fn feed_bytes(acc: &mut Accumulator, bytes: &[u8], big_endian: bool) -> Result<(), ComputeError> {
    match acc.layout.bits_allocated {
        // 1-bit data: eight pixels per byte, least significant bit first (PS3.5 8.1.1).
        1 => acc.feed_bits(bytes),
        8 => acc.feed(bytes, |&b| u32::from(b), 1),
        16 if big_endian && !acc.layout.planar => {
            // One byte swap to the little-endian stream (a copy, vectorised), then the fast
            // path: about half the time of swapping per sample (benches/README.md, "Choices
            // measured in the compute code").
            acc.feed_le16(&swap_pairs(bytes))
        }
        16 if big_endian => acc.feed(
            bytes.chunks_exact(2),
            |c| u32::from(u16::from_be_bytes([c[0], c[1]])),
            2,
        ),
        16 if !acc.layout.planar => acc.feed_le16(bytes),
        16 => acc.feed(bytes.chunks_exact(2), |c| u32::from(le16(c)), 2),
        _ if big_endian => acc.feed(
            bytes.chunks_exact(4),
            |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
            4,
        ),
        _ => acc.feed(bytes.chunks_exact(4), le32, 4),
    }
}

const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";

/// Native YBR_FULL_422 (`bytes`: the little-endian byte stream): each pair of pixels is
/// stored as Y1 Y2 Cb Cr; expand to Y1 Cb Cr Y2 Cb Cr.
fn feed_ybr422(acc: &mut Accumulator, bytes: &[u8]) -> Result<(), ComputeError> {
    let l = acc.layout;
    let width = if l.bits_allocated == 16 { 2 } else { 1 };
    let stored = bytes.len() / width;
    let need = (l.frames * l.pixels * 2) as usize;
    if stored < need || l.pixels % 2 == 1 {
        return Err(ComputeError::PixelDataShort {
            detail: format!(
                "{stored} YBR_FULL_422 values for {} pixels × {} frames",
                l.pixels, l.frames
            ),
        });
    }
    let value = |i: usize| -> u32 {
        if width == 2 {
            u32::from(le16(&bytes[2 * i..2 * i + 2]))
        } else {
            u32::from(bytes[i])
        }
    };
    // Y1 Y2 Cb Cr → Y1 Cb Cr Y2 Cb Cr, straight from the stored bytes.
    let expanded: Vec<u32> = (0..need / 4)
        .flat_map(|q| {
            let [y1, y2, cb, cr] = [0, 1, 2, 3].map(|k| value(4 * q + k));
            [y1, cb, cr, y2, cb, cr]
        })
        .collect();
    acc.layout.planar = false;
    acc.feed(&expanded, |&v| v, l.width())
}

/// Summarise native pixel data given as the PixelData value's bytes, exactly as stored in
/// the file (`ow`: the value representation is OW, whose 16-bit words a big-endian syntax
/// swaps). The statistics read the file's buffer in place.
pub fn summarise_native(
    bytes: &[u8],
    ow: bool,
    meta: &InstanceMeta,
    limits: Limits,
) -> Result<PixelSummary, ComputeError> {
    let mut acc = Accumulator::for_image(meta, limits)?;
    let big_endian = meta.transfer_syntax_uid == EXPLICIT_VR_BE;
    let ba = acc.layout.bits_allocated;
    if big_endian && ow && (ba <= 8 || acc.layout.ybr422) {
        // 1/8-bit samples in byte-swapped OW words: the sample stream is each word's
        // little-endian bytes (PS3.5 8.2), so swap back (a copy; rare in practice).
        let swapped = swap_pairs(bytes);
        if acc.layout.ybr422 {
            feed_ybr422(&mut acc, &swapped)?;
        } else {
            feed_bytes(&mut acc, &swapped, false)?;
        }
    } else if acc.layout.ybr422 {
        feed_ybr422(&mut acc, bytes)?;
    } else {
        feed_bytes(&mut acc, bytes, big_endian)?;
    }
    Ok(acc.finish(meta))
}

/// The bytes with each 16-bit pair swapped (an odd last byte dropped, as a 16-bit reader
/// drops it): big-endian words to the little-endian stream.
fn swap_pairs(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes[..bytes.len() & !1].to_vec();
    for pair in out.chunks_exact_mut(2) {
        pair.swap(0, 1);
    }
    out
}

/// Sort a dicom-pixeldata failure into a reason. Its error type is opaque, so this reads the
/// message chain (codec messages and tags; never pixel values or patient data).
fn classify_decode_error(e: dicom_pixeldata::Error) -> ComputeError {
    let detail = crate::compute::error::chain_text(&e);
    let lower = detail.to_ascii_lowercase();
    if lower.contains("unsupported transfersyntax") || lower.contains("unknown transfer syntax") {
        ComputeError::UnsupportedTransferSyntax { detail }
    } else if lower.contains("unsupported") || lower.contains("not supported") {
        // e.g. 12-bit JPEG extended (`SamplePrecision(12)`), 32-bit RLE.
        ComputeError::UnsupportedPixelFormat { detail }
    } else {
        ComputeError::DecodeFailed { detail }
    }
}
