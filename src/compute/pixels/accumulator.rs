//! One pass over an image's samples: each raw sample reduced to its stored value, counted
//! into a histogram (up to 16 bits stored; wider values are kept to be sorted), and fed to
//! the digest as canonical bytes. 16-bit little-endian data, the common case, is counted
//! straight from the file's bytes and hashed as it is whenever those are the canonical bytes.

use super::layout::Layout;
use super::le16;
use crate::compute::{ComputeError, InstanceMeta, Limits};

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
pub(super) struct Accumulator {
    pub(super) layout: Layout,
    /// Smallest representable stored value: histogram bin 0.
    pub(super) lo: i64,
    pub(super) hist: Vec<u32>,
    /// Values minus `lo` (they span at most 2³² values), sorted at the end.
    pub(super) wide: Vec<u32>,
    pub(super) hasher: blake3::Hasher,
    mask: u32,
    shift: u32,
}

impl Accumulator {
    /// An accumulator for the image `meta` describes, once its decoded size is within limits.
    pub(super) fn for_image(meta: &InstanceMeta, limits: Limits) -> Result<Self, ComputeError> {
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

    pub(super) fn new(layout: Layout) -> Result<Self, ComputeError> {
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
    pub(super) fn feed<I, F>(&mut self, items: I, raw: F, unit: u64) -> Result<(), ComputeError>
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
    pub(super) fn feed_le16(&mut self, bytes: &[u8]) -> Result<(), ComputeError> {
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
    pub(super) fn feed_bits(&mut self, bytes: &[u8]) -> Result<(), ComputeError> {
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
}
