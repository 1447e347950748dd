//! The image geometry a header declares, validated before anything is decoded, and the
//! working memory summarising such an image may take (checked against `max_decoded_size`).

use crate::compute::{ComputeError, InstanceMeta};

/// Image geometry as declared by the header, validated.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    pub(super) frames: u64,
    /// Pixels per frame.
    pub(super) pixels: u64,
    pub(super) samples: u64,
    pub(super) bits_allocated: u16,
    pub(super) bits_stored: u16,
    pub(super) signed: bool,
    pub(super) planar: bool,
    /// YBR_FULL_422: two luma samples share one Cb/Cr pair; native data holds 2 values per
    /// pixel, which are expanded to 3 (as pydicom does).
    pub(super) ybr422: bool,
}

impl Layout {
    pub(super) fn from_meta(m: &InstanceMeta) -> Result<Self, ComputeError> {
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

    pub(super) fn values(&self) -> u64 {
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
    pub(super) fn width(&self) -> u64 {
        match self.bits_allocated {
            1 | 8 => 1,
            16 => 2,
            _ => 4,
        }
    }
}

/// The largest histogram (16 stored bits, one u32 count per value).
const HISTOGRAM_BYTES: u64 = (1 << 16) * 4;
