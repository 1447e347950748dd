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
//!
//! - `decode.rs`: which path the pixel data takes (in place, RLE, the codecs) and how its
//!   bytes become samples.
//! - `layout.rs`: the image geometry the header declares, and what summarising it may
//!   allocate.
//! - `accumulator.rs`: one pass over the samples: histogram (or value list) and digest.
//! - `stats.rs`: moments and percentiles from the histogram.

mod accumulator;
mod decode;
mod layout;
mod stats;
#[cfg(test)]
mod tests;

use serde::Serialize;

#[cfg(any(test, feature = "testing"))]
pub use decode::summarise_decoded;
pub use decode::{summarise, summarise_native};

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

pub(super) fn le16(c: &[u8]) -> u16 {
    u16::from_le_bytes([c[0], c[1]])
}

pub(super) fn le32(c: &[u8]) -> u32 {
    u32::from_le_bytes([c[0], c[1], c[2], c[3]])
}
