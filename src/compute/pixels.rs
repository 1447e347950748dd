//! Per-image pixel derivation: statistics and a digest of the decoded stored values.
//!
//! Definitions (the pydicom reference table in `tests/data/expected_pixels.tsv` uses the same):
//! - **Stored values** are the pixel values as the image stores them: the low `BitsStored` bits
//!   of each sample, sign-extended when `PixelRepresentation` is 1; 1-bit data is 0/1. No
//!   colour-space conversion (YBR stays YBR for native data).
//! - `min`/`max`/`mean`/`std` (population) and the `p01`/`p50`/`p99` percentiles ("lower"
//!   method: the value at rank ⌊q·(n−1)⌋) are taken over every sample of every frame.
//! - **Modality values** (grayscale only) are `stored × RescaleSlope + RescaleIntercept`; their
//!   statistics follow from the stored ones exactly because the map is linear.
//! - The **digest** is BLAKE3 over the canonical bytes: each stored value as a little-endian
//!   integer 1, 2 or 4 bytes wide (by BitsAllocated), samples interleaved per pixel, frames in
//!   order. It depends only on the pixel values, not on the transfer syntax: an image has the
//!   same digest uncompressed, RLE or JPEG-LS lossless.
//!
//! Native (uncompressed) data is read straight from the parsed PixelData value — no decode copy.
//! Encapsulated data goes through dicom-pixeldata's decoders. Statistics come from a histogram
//! (data up to 16 bits stored), so one pass yields moments and percentiles together; the mean
//! and variance are exact integer sums.

use dicom_core::value::{PrimitiveValue, Value};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;
use serde::Serialize;

use super::{rle, ComputeError, InstanceMeta, Limits};

/// What the pixels of one instance summarise to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PixelSummary {
    /// Number of samples summarised (rows × columns × samples per pixel × frames).
    pub values: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub std: f64,
    pub p01: f64,
    pub p50: f64,
    pub p99: f64,
    /// Statistics of the modality values (rescaled); `None` for colour images.
    pub modality: Option<Moments>,
    /// Hex BLAKE3 of the canonical stored-value bytes.
    pub digest: String,
}

/// Four moments of a set of values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Moments {
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub std: f64,
}

/// Image geometry as declared by the header, validated.
#[derive(Debug, Clone, Copy)]
struct Layout {
    frames: u64,
    /// Pixels per frame.
    pixels: u64,
    samples: u64,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    planar: bool,
    /// YBR_FULL_422: two luma samples share one Cb/Cr pair; native data holds 2 values per
    /// pixel, which are expanded to 3 (as pydicom does).
    ybr422: bool,
}

impl Layout {
    fn from_meta(m: &InstanceMeta) -> Result<Self, ComputeError> {
        let bad = |what: String| ComputeError::Malformed { detail: what };
        if m.rows == 0 || m.columns == 0 {
            return Err(bad(format!("image is {}×{} pixels", m.rows, m.columns)));
        }
        if !matches!(m.bits_allocated, 1 | 8 | 16 | 32) {
            return Err(ComputeError::UnsupportedPixelFormat {
                detail: format!("BitsAllocated {}", m.bits_allocated),
            });
        }
        if m.samples_per_pixel == 0 || m.samples_per_pixel > 4 {
            return Err(bad(format!("SamplesPerPixel {}", m.samples_per_pixel)));
        }
        // Absent or impossible BitsStored: every allocated bit is stored.
        let bits_stored = if m.bits_stored == 0 || m.bits_stored > m.bits_allocated {
            m.bits_allocated
        } else {
            m.bits_stored
        };
        let frames = u64::from(m.number_of_frames.max(1));
        let pixels = u64::from(m.rows) * u64::from(m.columns);
        let samples = u64::from(m.samples_per_pixel);
        // frames × pixels × samples must fit in 64 bits (values() multiplies unchecked): a
        // header whose product does not is refused, never wrapped to a small count.
        frames
            .checked_mul(pixels)
            .and_then(|v| v.checked_mul(samples))
            .ok_or(ComputeError::LayoutOverflow {
                frames: m.number_of_frames,
                rows: m.rows,
                columns: m.columns,
                samples: m.samples_per_pixel,
            })?;
        Ok(Layout {
            frames,
            pixels,
            samples,
            bits_allocated: m.bits_allocated,
            bits_stored,
            signed: m.pixel_representation == 1,
            planar: m.planar_configuration == 1 && m.samples_per_pixel > 1,
            ybr422: m.photometric_interpretation == "YBR_FULL_422" && m.samples_per_pixel == 3,
        })
    }

    fn values(&self) -> u64 {
        self.frames * self.pixels * self.samples
    }

    /// What summarising this image may allocate beyond the file's bytes, as checked against
    /// `max_decoded_size` before anything is decoded: a decoded copy of every value (the
    /// codecs', RLE's, a byte swap's), a 4-byte copy of every value where they must be
    /// reordered (planar colour, YBR_FULL_422 expanded), and 4 bytes per value kept for the
    /// percentiles when more than 16 bits are stored (no histogram). The 16-bit and 8-bit
    /// native paths read in place and use far less; the estimate covers the worst path a
    /// layout can take. `tests: pixels_memory` holds every format to it.
    pub(super) fn working_bytes(&self) -> u64 {
        let values = self.values();
        let mut per_value = self.width();
        if self.planar || self.ybr422 {
            per_value += 4;
        }
        if self.bits_stored > 16 {
            per_value += 4;
        }
        values
            .saturating_mul(per_value)
            .saturating_add(HISTOGRAM_BYTES)
    }

    /// Bytes one canonical value takes (also the decoded size per value).
    fn width(&self) -> u64 {
        match self.bits_allocated {
            1 | 8 => 1,
            16 => 2,
            _ => 4,
        }
    }
}

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
            // path: 812 → 432 µs for a 512² CT (criterion derive/ct512_explicit-be/full).
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

fn le16(c: &[u8]) -> u16 {
    u16::from_le_bytes([c[0], c[1]])
}

fn le32(c: &[u8]) -> u32 {
    u32::from_le_bytes([c[0], c[1], c[2], c[3]])
}

/// Sort a dicom-pixeldata failure into a reason. Its error type is opaque, so this reads the
/// message chain (codec messages and tags; never pixel values or patient data).
fn classify_decode_error(e: dicom_pixeldata::Error) -> ComputeError {
    let detail = super::error::chain_text(&e);
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

/// The largest histogram (16 stored bits, one u32 count per value).
const HISTOGRAM_BYTES: u64 = (1 << 16) * 4;

/// A zeroed counter table on the heap.
fn boxed_table<const LANES: usize, const BINS: usize>() -> Box<[[u32; LANES]; BINS]> {
    let table: Box<[[u32; LANES]]> = vec![[0u32; LANES]; BINS].into_boxed_slice();
    match table.try_into() {
        Ok(table) => table,
        // The vector has exactly BINS entries.
        Err(_) => unreachable!("table of {BINS} bins"),
    }
}

/// Count 16-bit little-endian samples (`bits` stored, ≤ log2(BINS)) into `table`, sample
/// `i` into lane `i % LANES`; returns the OR of each sample's bits that differ from its
/// canonical 16-bit pattern.
fn count_into<const SIGNED: bool, const LANES: usize, const BINS: usize>(
    stored: &[u8],
    bits: u32,
    table: &mut [[u32; LANES]; BINS],
) -> u32 {
    let mask = (1u32 << bits) - 1;
    let flip = if SIGNED { 1u32 << (bits - 1) } else { 0 };
    let shift = 16 - bits;
    let index_mask = BINS as u32 - 1;
    let sample = |raw: u32| -> (usize, u32) {
        let bin = ((raw ^ flip) & mask & index_mask) as usize;
        let off = if SIGNED {
            // The canonical pattern: the stored bits sign-extended to 16.
            let canonical = ((((raw & mask) << shift) as u16 as i16) >> shift) as u16;
            raw ^ u32::from(canonical)
        } else {
            raw & !mask
        };
        (bin, off)
    };
    let mut dirty = 0u32;
    let mut groups = stored.chunks_exact(2 * LANES);
    for g in &mut groups {
        for (k, pair) in g.chunks_exact(2).enumerate() {
            let (bin, off) = sample(u32::from(u16::from_le_bytes([pair[0], pair[1]])));
            table[bin][k] += 1;
            dirty |= off;
        }
    }
    for pair in groups.remainder().chunks_exact(2) {
        let (bin, off) = sample(u32::from(u16::from_le_bytes([pair[0], pair[1]])));
        table[bin][0] += 1;
        dirty |= off;
    }
    dirty
}

/// Values per digest chunk.
const CHUNK: usize = 4096;

/// Histogram (≤ 16 bits stored) or value list (wider), plus the running digest.
struct Accumulator {
    layout: Layout,
    /// Smallest representable stored value: histogram bin 0.
    lo: i64,
    hist: Vec<u32>,
    /// Values minus `lo` (they span at most 2³² values), sorted at the end.
    wide: Vec<u32>,
    hasher: blake3::Hasher,
    mask: u32,
    shift: u32,
}

impl Accumulator {
    /// An accumulator for the image `meta` describes, once its decoded size is within limits.
    fn for_image(meta: &InstanceMeta, limits: Limits) -> Result<Self, ComputeError> {
        let layout = Layout::from_meta(meta)?;
        let decoded_size = layout.working_bytes();
        if decoded_size > limits.max_decoded_size {
            return Err(ComputeError::TooLarge {
                size: decoded_size,
                limit: limits.max_decoded_size,
            });
        }
        Accumulator::new(layout)
    }

    fn new(layout: Layout) -> Result<Self, ComputeError> {
        let bs = u32::from(layout.bits_stored);
        if layout.values() > u64::from(u32::MAX) {
            return Err(ComputeError::TooLarge {
                size: layout.values(),
                limit: u64::from(u32::MAX),
            });
        }
        let lo = if layout.signed {
            -(1i64 << (bs - 1))
        } else {
            0
        };
        let (hist, wide) = if bs <= 16 {
            (vec![0u32; 1usize << bs], Vec::new())
        } else {
            (Vec::new(), Vec::with_capacity(layout.values() as usize))
        };
        Ok(Accumulator {
            layout,
            lo,
            hist,
            wide,
            hasher: blake3::Hasher::new(),
            mask: if bs == 32 { u32::MAX } else { (1u32 << bs) - 1 },
            shift: 32 - bs,
        })
    }

    /// The stored value of a raw sample: low BitsStored bits, sign-extended if signed.
    #[inline(always)]
    fn canonical(&self, raw: u32) -> i64 {
        let v = raw & self.mask;
        if self.layout.signed {
            i64::from(((v << self.shift) as i32) >> self.shift)
        } else {
            i64::from(v)
        }
    }

    /// Feed the raw samples `items` (each mapped by `raw`), in stored order. `unit` is how many
    /// source bytes one item takes, for the length check's message.
    fn feed<I, F>(&mut self, items: I, raw: F, unit: u64) -> Result<(), ComputeError>
    where
        I: IntoIterator,
        I::IntoIter: ExactSizeIterator,
        F: Fn(I::Item) -> u32,
    {
        let items = items.into_iter();
        let need = self.layout.values();
        if (items.len() as u64) < need {
            return Err(ComputeError::PixelDataShort {
                detail: format!(
                    "{} bytes of pixel data for {} values of {} bits",
                    items.len() as u64 * unit,
                    need,
                    self.layout.bits_allocated
                ),
            });
        }
        let items = items.take(need as usize).map(raw);
        if self.layout.planar {
            let all: Vec<u32> = items.collect();
            let l = self.layout;
            let (px, spp) = (l.pixels as usize, l.samples as usize);
            let frame = px * spp;
            // Colour-by-plane to colour-by-pixel, frame by frame.
            let interleaved = (0..all.len()).map(|k| {
                let (f, r) = (k / frame, k % frame);
                all[f * frame + (r % spp) * px + r / spp]
            });
            self.consume(interleaved);
        } else {
            self.consume(items);
        }
        Ok(())
    }

    /// Feed 16-bit little-endian samples interleaved by pixel (the common CT/MR/CR case),
    /// straight from the file's bytes, in blocks small enough to stay in cache: each block is
    /// counted, then hashed as it is — the stored bytes are the canonical digest bytes unless
    /// some sample has bits set beyond BitsStored (other than its sign extension). Should one
    /// have, the digest restarts over the canonical values (rare: a second pass).
    fn feed_le16(&mut self, bytes: &[u8]) -> Result<(), ComputeError> {
        let need = self.layout.values() as usize;
        let Some(stored) = bytes.get(..need * 2) else {
            return Err(ComputeError::PixelDataShort {
                detail: format!(
                    "{} bytes of pixel data for {need} values of 16 bits",
                    bytes.len()
                ),
            });
        };
        let before = self.hasher.clone();
        // 16-bit data always has BitsStored ≤ 16, so a histogram.
        let bits = u32::from(self.layout.bits_stored);
        let dirty = if bits <= 12 {
            self.count_le16::<4, { 1 << 12 }>(stored)
        } else {
            self.count_le16::<1, { 1 << 16 }>(stored)
        };
        if dirty != 0 {
            self.hasher = before;
            let mut buf = [0u8; CHUNK * 2];
            for block in stored.chunks(CHUNK * 2) {
                for (out, c) in buf.chunks_exact_mut(2).zip(block.chunks_exact(2)) {
                    let v = self.canonical(u32::from(le16(c)));
                    out.copy_from_slice(&(v as u16).to_le_bytes());
                }
                self.hasher.update(&buf[..block.len()]);
            }
        }
        Ok(())
    }

    /// Count 16-bit little-endian samples into the histogram block by block, hashing each
    /// block while it is clean; returns the OR of every sample's bits that differ from its
    /// canonical 16-bit pattern (non-zero: the hash fed so far is not the digest).
    ///
    /// The bin of a sample is its low BitsStored bits with the top one flipped when signed
    /// (two's complement + 2^(bits−1), i.e. value − lowest value). The table is a fixed-size
    /// array indexed under a mask (no bounds checks); with `LANES` 4 (up to 12 bits stored)
    /// runs of one value (air, background) do not serialise on one counter.
    fn count_le16<const LANES: usize, const BINS: usize>(&mut self, stored: &[u8]) -> u32 {
        /// Bytes per block: counted, then hashed while still in cache.
        const BLOCK: usize = 32 * 1024;
        let bits = u32::from(self.layout.bits_stored);
        let mut table: Box<[[u32; LANES]; BINS]> = boxed_table();
        let mut dirty = 0u32;
        for block in stored.chunks(BLOCK) {
            dirty |= if self.layout.signed {
                count_into::<true, LANES, BINS>(block, bits, &mut table)
            } else {
                count_into::<false, LANES, BINS>(block, bits, &mut table)
            };
            if dirty == 0 {
                self.hasher.update(block);
            }
        }
        for (h, lanes) in self.hist.iter_mut().zip(table.iter()) {
            *h += lanes.iter().sum::<u32>();
        }
        dirty
    }

    /// Feed 1-bit data packed eight pixels per byte.
    fn feed_bits(&mut self, bytes: &[u8]) -> Result<(), ComputeError> {
        let need = self.layout.values();
        if (bytes.len() as u64) * 8 < need {
            return Err(ComputeError::PixelDataShort {
                detail: format!(
                    "{} bytes of pixel data for {need} 1-bit values",
                    bytes.len()
                ),
            });
        }
        let bits = bytes
            .iter()
            .flat_map(|&b| (0..8).map(move |i| u32::from((b >> i) & 1)))
            .take(need as usize);
        self.consume(bits);
        Ok(())
    }

    fn consume<I: Iterator<Item = u32>>(&mut self, raw: I) {
        let width = self.layout.width() as usize;
        let mut buf = [0u8; CHUNK * 4];
        let mut n = 0usize;
        let narrow = !self.hist.is_empty();
        for r in raw {
            let v = self.canonical(r);
            if narrow {
                self.hist[(v - self.lo) as usize] += 1;
            } else {
                self.wide.push((v - self.lo) as u32);
            }
            let bytes = (v as u32).to_le_bytes();
            buf[n..n + width].copy_from_slice(&bytes[..width]);
            n += width;
            if n == buf.len() {
                self.hasher.update(&buf);
                n = 0;
            }
        }
        self.hasher.update(&buf[..n]);
    }

    /// (value, count) in ascending value order, from the histogram or the sorted values
    /// (walked again for each pass: nothing of the image's size is collected).
    fn pairs(&self) -> impl Iterator<Item = (i64, u64)> + Clone + '_ {
        let lo = self.lo;
        let from_hist = self
            .hist
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(move |(i, &c)| (lo + i as i64, u64::from(c)));
        let from_wide = RunLengths::new(&self.wide).map(move |(v, c)| (lo + i64::from(v), c));
        from_hist.chain(from_wide)
    }

    fn finish(mut self, meta: &InstanceMeta) -> PixelSummary {
        self.wide.sort_unstable();
        let pairs = self.pairs();
        let n = self.layout.values();
        let ranks = [1.0, 50.0, 99.0].map(|q: f64| ((q / 100.0) * (n - 1) as f64).floor() as u64);
        let mut pct = [0i64; 3];
        let (mut sum, mut sumsq, mut seen) = (0i128, 0i128, 0u64);
        let (mut first, mut last) = (None, None);
        for (v, c) in pairs.clone() {
            first.get_or_insert(v);
            last = Some(v);
            for (p, &rank) in pct.iter_mut().zip(&ranks) {
                if seen <= rank && rank < seen + c {
                    *p = v;
                }
            }
            seen += c;
            sum += i128::from(v) * i128::from(c);
            sumsq += i128::from(v) * i128::from(v) * i128::from(c);
        }
        let (min, max) = match (first, last) {
            (Some(lo), Some(hi)) => (lo as f64, hi as f64),
            _ => (0.0, 0.0),
        };
        let nn = i128::from(n);
        let mean = sum as f64 / n as f64;
        // Exact: n²·var = n·Σv² − (Σv)².
        let std = (((nn * sumsq - sum * sum) as f64) / (n as f64 * n as f64)).sqrt();
        let modality = (self.layout.samples == 1).then(|| match &meta.modality_lut {
            Some(lut) => moments(pairs.clone(), n, |v| lut.apply(v) as f64),
            None => {
                let slope = meta.rescale_slope.unwrap_or(1.0);
                let intercept = meta.rescale_intercept.unwrap_or(0.0);
                moments(pairs.clone(), n, |v| v as f64 * slope + intercept)
            }
        });
        PixelSummary {
            values: n,
            min,
            max,
            mean,
            std,
            p01: pct[0] as f64,
            p50: pct[1] as f64,
            p99: pct[2] as f64,
            modality,
            digest: self.hasher.finalize().to_hex().to_string(),
        }
    }
}

/// Moments of `f(v)` over (value, count) pairs: two passes in f64.
fn moments(
    pairs: impl Iterator<Item = (i64, u64)> + Clone,
    n: u64,
    f: impl Fn(i64) -> f64,
) -> Moments {
    let (mut min, mut max, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
    for (v, c) in pairs.clone() {
        let x = f(v);
        min = min.min(x);
        max = max.max(x);
        sum += x * c as f64;
    }
    let mean = sum / n as f64;
    let var = pairs
        .map(|(v, c)| {
            let d = f(v) - mean;
            d * d * c as f64
        })
        .sum::<f64>()
        / n as f64;
    Moments {
        min,
        max,
        mean,
        std: var.sqrt(),
    }
}

/// (value, count) runs of a sorted slice.
#[derive(Clone)]
struct RunLengths<'a> {
    rest: &'a [u32],
}

impl<'a> RunLengths<'a> {
    fn new(sorted: &'a [u32]) -> Self {
        RunLengths { rest: sorted }
    }
}

impl Iterator for RunLengths<'_> {
    type Item = (u32, u64);
    fn next(&mut self) -> Option<Self::Item> {
        let &v = self.rest.first()?;
        let run = self.rest.iter().take_while(|&&x| x == v).count();
        self.rest = &self.rest[run..];
        Some((v, run as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
