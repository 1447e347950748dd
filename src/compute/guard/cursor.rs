//! Reading element headers: a cursor over the source that knows its position and the bytes
//! left, reads fixed-size fields, and skips values only after checking they fit; plus the
//! byte-order and VR helpers the direct read (`direct`) shares with the walk.

use std::io::{self, Read, Seek, SeekFrom};

use dicom_core::{Tag, VR};

use super::Stop;

/// Values up to this size are skipped by reading, larger ones by seeking.
const SKIP_BY_READING: u32 = 8 * 1024;

/// The walk's position in `src`, a source `size` bytes long.
pub(super) struct Cursor<'a, R> {
    pub(super) src: &'a mut R,
    pub(super) pos: u64,
    pub(super) size: u64,
}

impl<R: Read + Seek> Cursor<'_, R> {
    pub(super) fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }

    pub(super) fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Stop> {
        let mut b = [0u8; N];
        self.src.read_exact(&mut b)?;
        self.pos += N as u64;
        Ok(b)
    }

    pub(super) fn skip(&mut self, tag: Tag, len: u32) -> Result<(), Stop> {
        self.fits(tag, len)?;
        if len <= SKIP_BY_READING {
            // Small values are read through: a seek would throw away a BufReader's buffer
            // and cost a system call per element (benches/README.md, "Choices measured in
            // the compute code").
            let copied = io::copy(&mut (&mut *self.src).take(u64::from(len)), &mut io::sink())?;
            if copied < u64::from(len) {
                return Err(Stop::GiveUp);
            }
        } else {
            self.src.seek(SeekFrom::Current(i64::from(len)))?;
        }
        self.pos += u64::from(len);
        Ok(())
    }

    pub(super) fn fits(&self, tag: Tag, len: u32) -> Result<(), Stop> {
        if u64::from(len) > self.remaining() {
            return Err(Stop::Reject(format!(
                "element ({:04X},{:04X}) at byte {} declares {} value bytes but only {} remain",
                tag.group(),
                tag.element(),
                self.pos,
                len,
                self.remaining()
            )));
        }
        Ok(())
    }
}

pub(in crate::compute) fn u16_of(b: [u8; 2], be: bool) -> u16 {
    if be {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    }
}

pub(in crate::compute) fn u32_of(b: [u8; 4], be: bool) -> u32 {
    if be {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

/// VRs with a 2-byte reserved field and a 4-byte length in explicit syntaxes.
pub(in crate::compute) fn long_length(vr: VR) -> bool {
    use VR::*;
    matches!(
        vr,
        OB | OD | OF | OL | OV | OW | SQ | SV | UC | UN | UR | UT | UV
    )
}

pub(in crate::compute) fn u16_at(b: &[u8], pos: usize, be: bool) -> Option<u16> {
    let s = b.get(pos..pos.checked_add(2)?)?;
    Some(u16_of([s[0], s[1]], be))
}

pub(in crate::compute) fn u32_at(b: &[u8], pos: usize, be: bool) -> Option<u32> {
    let s = b.get(pos..pos.checked_add(4)?)?;
    Some(u32_of([s[0], s[1], s[2], s[3]], be))
}
