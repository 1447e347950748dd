//! A pre-parse walk over element headers that refuses files whose declared value lengths do
//! not fit in the bytes that remain.
//!
//! dicom-rs allocates (and zero-fills) a value buffer of the length a header declares before
//! reading it: a 674-byte file declaring a 3.7 GB element costs 3.7 GB of RAM and 6 s of CPU
//! (measured on pydicom's `UN_sequence.dcm`). This walk reads only headers, skips values, and
//! fails such a file as `truncated` before dicom-rs sees it.
//!
//! It follows the same stream interpretation as dicom-rs (preamble, explicit-VR-LE meta group,
//! then the data set in the transfer syntax the meta group names; sequences and items are
//! descended into, encapsulated pixel fragments skipped). Where it cannot follow (deflated data
//! sets, no meta group, an unknown VR), it stops and lets dicom-rs decide: the guard only ever
//! rejects a file dicom-rs would also fail to read, never one it would accept.

use std::io::{self, Read, Seek, SeekFrom};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use super::ComputeError;

const UNDEFINED: u32 = 0xFFFF_FFFF;
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Syntax {
    ImplicitLe,
    ExplicitLe,
    ExplicitBe,
}

/// Walk the headers of `src` (`size` bytes long). With `stop_at_pixel_data`, stop at the
/// top-level PixelData element (header-only reading never touches its value).
pub fn check_lengths<R: Read + Seek>(
    src: &mut R,
    size: u64,
    stop_at_pixel_data: bool,
) -> Result<(), ComputeError> {
    match walk(src, size, stop_at_pixel_data) {
        Ok(()) => Ok(()),
        Err(Stop::Reject(detail)) => Err(ComputeError::Truncated { detail }),
        // Could not follow the stream: not our call to make.
        Err(Stop::GiveUp) => Ok(()),
    }
}

enum Stop {
    Reject(String),
    GiveUp,
}

impl From<io::Error> for Stop {
    fn from(_: io::Error) -> Self {
        Stop::GiveUp
    }
}

struct Cursor<'a, R> {
    src: &'a mut R,
    pos: u64,
    size: u64,
}

impl<R: Read + Seek> Cursor<'_, R> {
    fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Stop> {
        let mut b = [0u8; N];
        self.src.read_exact(&mut b)?;
        self.pos += N as u64;
        Ok(b)
    }

    fn skip(&mut self, tag: Tag, len: u32) -> Result<(), Stop> {
        self.fits(tag, len)?;
        self.src.seek(SeekFrom::Current(i64::from(len)))?;
        self.pos += u64::from(len);
        Ok(())
    }

    fn fits(&self, tag: Tag, len: u32) -> Result<(), Stop> {
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

fn u16_of(b: [u8; 2], be: bool) -> u16 {
    if be {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    }
}

fn u32_of(b: [u8; 4], be: bool) -> u32 {
    if be {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

/// VRs with a 2-byte reserved field and a 4-byte length in explicit syntaxes.
fn long_length(vr: VR) -> bool {
    use VR::*;
    matches!(
        vr,
        OB | OD | OF | OL | OV | OW | SQ | SV | UC | UN | UR | UT | UV
    )
}

fn walk<R: Read + Seek>(src: &mut R, size: u64, stop_at_pixel_data: bool) -> Result<(), Stop> {
    let mut c = Cursor { src, pos: 0, size };
    // Preamble + magic, if present.
    if size >= 132 {
        c.src.seek(SeekFrom::Start(128))?;
        c.pos = 128;
        let magic: [u8; 4] = c.bytes()?;
        if &magic != b"DICM" {
            c.src.seek(SeekFrom::Start(0))?;
            c.pos = 0;
        }
    }
    // File meta group: always explicit VR little endian.
    let mut syntax = None;
    loop {
        if c.remaining() < 8 {
            return Ok(());
        }
        let start = c.pos;
        let g: [u8; 2] = c.bytes()?;
        if u16::from_le_bytes(g) != 0x0002 {
            c.src.seek(SeekFrom::Start(start))?;
            c.pos = start;
            break;
        }
        let e = u16::from_le_bytes(c.bytes()?);
        let tag = Tag(0x0002, e);
        let vr = VR::from_binary(c.bytes::<2>()?).ok_or(Stop::GiveUp)?;
        let len = if long_length(vr) {
            c.bytes::<2>()?;
            u32::from_le_bytes(c.bytes()?)
        } else {
            u32::from(u16::from_le_bytes(c.bytes()?))
        };
        if len == UNDEFINED {
            return Err(Stop::GiveUp);
        }
        if e == 0x0010 {
            c.fits(tag, len)?;
            let mut uid = vec![0u8; len as usize];
            c.src.read_exact(&mut uid)?;
            c.pos += u64::from(len);
            let uid = String::from_utf8_lossy(&uid);
            syntax = Some(match uid.trim_end_matches(['\0', ' ']) {
                "1.2.840.10008.1.2" => Syntax::ImplicitLe,
                "1.2.840.10008.1.2.2" => Syntax::ExplicitBe,
                // Deflated data sets cannot be walked without inflating them.
                "1.2.840.10008.1.2.1.99" => return Err(Stop::GiveUp),
                _ => Syntax::ExplicitLe,
            });
        } else {
            c.skip(tag, len)?;
        }
    }
    let Some(syntax) = syntax else {
        return Err(Stop::GiveUp);
    };
    let be = syntax == Syntax::ExplicitBe;
    let dict = StandardDataDictionary;
    // Depth of undefined-length encapsulated pixel data (its items hold fragments, not data
    // sets, so their values are skipped rather than walked).
    let mut in_fragments = false;
    let mut depth = 0u32;
    loop {
        if c.remaining() < 8 {
            return Ok(());
        }
        let g = u16_of(c.bytes()?, be);
        let e = u16_of(c.bytes()?, be);
        let tag = Tag(g, e);
        if g == 0xFFFE {
            let len = u32_of(c.bytes()?, be);
            match e {
                0xE000 if in_fragments && len != UNDEFINED => c.skip(tag, len)?,
                0xE000 => c.fits(tag, if len == UNDEFINED { 0 } else { len })?,
                0xE0DD => {
                    if in_fragments {
                        in_fragments = false;
                    } else {
                        depth = depth.saturating_sub(1);
                    }
                }
                _ => {}
            }
            continue;
        }
        if stop_at_pixel_data && depth == 0 && tag == PIXEL_DATA {
            return Ok(());
        }
        let (vr, len) = match syntax {
            Syntax::ImplicitLe => {
                let len = u32_of(c.bytes()?, false);
                let vr = match dict.by_tag(tag).map(|entry| entry.vr()) {
                    Some(VirtualVr::Exact(vr)) => vr,
                    _ => VR::UN,
                };
                (vr, len)
            }
            Syntax::ExplicitLe | Syntax::ExplicitBe => {
                // dicom-rs reads an unknown VR as UN (reserved bytes + 4-byte length).
                let vr = VR::from_binary(c.bytes::<2>()?).unwrap_or(VR::UN);
                let len = if long_length(vr) {
                    c.bytes::<2>()?;
                    u32_of(c.bytes()?, be)
                } else {
                    u32::from(u16_of(c.bytes()?, be))
                };
                (vr, len)
            }
        };
        if len == UNDEFINED {
            if tag == PIXEL_DATA {
                in_fragments = true;
            } else {
                // A sequence (SQ, or UN read as implicit-VR sequence): walk its items.
                depth += 1;
            }
            continue;
        }
        if vr == VR::SQ {
            // Defined-length sequence: its items follow inline.
            c.fits(tag, len)?;
            continue;
        }
        c.skip(tag, len)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::synth::{ct_file_bytes, CtSpec};
    use crate::model::Reason;

    fn check(bytes: &[u8], stop: bool) -> Result<(), ComputeError> {
        check_lengths(&mut io::Cursor::new(bytes), bytes.len() as u64, stop)
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
        // no meta group: dicom-rs decides
        check(b"not dicom at all, not even close to it", false).unwrap();
        check(&[], false).unwrap();
    }
}
