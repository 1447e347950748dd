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
/// Values up to this size are skipped by reading, larger ones by seeking.
const SKIP_BY_READING: u32 = 8 * 1024;
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
/// Deepest nesting of sequences a file may have. dicom-rs parses nested sequences
/// recursively: 2,000 levels in a 72 KB file overflowed an 8 MiB stack and aborted the
/// process. Real files nest a few levels (a structured report's content tree a few tens);
/// deeper is `malformed`. The compute threads' stack ([`super::THREAD_STACK_BYTES`]) fits
/// this many levels many times over.
pub const MAX_NESTING: usize = 64;
/// What dicom-rs's object path allocates per sequence item (an `InMemDicomObject`, its map's
/// first node) and per element inside an item, as an upper estimate: a 40 MB file whose
/// sequences form a binary tree 20 levels deep took 2.7 GB and 21 s to parse. The walk
/// counts both and refuses a file whose estimate exceeds `max_decoded_size` (`too_large`)
/// before anything parses it; a 10,000-frame enhanced MR (≈200,000 items, 1,000,000 nested
/// elements) estimates ≈ 350 MB.
pub const ITEM_COST: u64 = 1024;
pub const NESTED_ELEMENT_COST: u64 = 160;

pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";

/// The transfer syntax of a data set with neither preamble nor file meta group, when its first
/// bytes plainly are DICOM: a group-0008 element (identifying attributes come first), read as
/// explicit VR little endian when a valid VR follows the tag, else implicit. `None` otherwise.
pub fn bare_dataset_syntax(head: &[u8]) -> Option<&'static str> {
    let h = head.get(..6)?;
    let explicit = VR::from_binary([h[4], h[5]]).is_some();
    if u16::from_le_bytes([h[0], h[1]]) == 0x0008 {
        Some(if explicit {
            EXPLICIT_VR_LE
        } else {
            IMPLICIT_VR_LE
        })
    } else if u16::from_be_bytes([h[0], h[1]]) == 0x0008 && explicit {
        Some(EXPLICIT_VR_BE)
    } else {
        None
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Syntax {
    ImplicitLe,
    ExplicitLe,
    ExplicitBe,
    /// Deflated explicit VR little endian: walked once inflated.
    Deflated,
}

/// Where things are in a file the walk could follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scan {
    /// First byte of the data set (after preamble and file meta group).
    pub dataset_start: u64,
    /// Position of the top-level PixelData element's tag, if there is one.
    pub pixel_data_at: Option<u64>,
    /// Where bytes that are not part of the data set start: junk after the pixel data that
    /// does not parse as an element (archives hold such files; pydicom reads them).
    pub trailing_at: Option<u64>,
    /// The data set is deflated (from `dataset_start` on): the walk stopped there; inflate
    /// it and walk the result with [`check_inflated`].
    pub deflated: bool,
}

/// Walk the headers of `src` (`size` bytes long). With `stop_at_pixel_data`, stop at the
/// top-level PixelData element (header-only reading never touches its value). `Ok(None)`
/// means the walk could not follow the stream (deflate, no meta group): dicom-rs decides.
///
/// `budget` bounds the memory parsing the walked structure may take (sequence items and the
/// elements inside them, see [`ITEM_COST`]): a walk past it fails as `too_large`.
pub fn check_lengths<R: Read + Seek>(
    src: &mut R,
    size: u64,
    stop_at_pixel_data: bool,
    budget: u64,
) -> Result<Option<Scan>, ComputeError> {
    let mut scan = Scan::default();
    match walk(src, size, stop_at_pixel_data, budget, &mut scan) {
        Ok(()) => Ok(Some(scan)),
        Err(Stop::Reject(detail) | Stop::Cut(detail)) => Err(ComputeError::Truncated { detail }),
        Err(Stop::Malformed(detail)) => Err(ComputeError::Malformed { detail }),
        Err(Stop::Costly(estimate)) => Err(ComputeError::HeaderTooLarge {
            estimate,
            limit: budget,
        }),
        Err(Stop::NotDicom) => Err(ComputeError::NotDicom {
            detail: "no DICM magic, no file meta group, and not a bare data set".into(),
        }),
        // Could not follow the stream: not our call to make.
        Err(Stop::GiveUp) => Ok(None),
    }
}

/// Walk an inflated data set (explicit VR little endian, no preamble or meta group) held in
/// memory. `dataset_start` of the result is 0.
pub fn check_inflated(
    dataset: &[u8],
    stop_at_pixel_data: bool,
    budget: u64,
) -> Result<Scan, ComputeError> {
    let mut scan = Scan::default();
    let mut src = io::Cursor::new(dataset);
    let mut c = Cursor {
        src: &mut src,
        pos: 0,
        size: dataset.len() as u64,
    };
    match walk_dataset(
        &mut c,
        Syntax::ExplicitLe,
        stop_at_pixel_data,
        budget,
        &mut scan,
    ) {
        Ok(()) => Ok(scan),
        Err(Stop::Reject(detail) | Stop::Cut(detail)) => Err(ComputeError::Truncated { detail }),
        Err(Stop::Malformed(detail)) => Err(ComputeError::Malformed { detail }),
        Err(Stop::Costly(estimate)) => Err(ComputeError::HeaderTooLarge {
            estimate,
            limit: budget,
        }),
        // Only the file-level walk decides that (an inflated data set has no magic).
        Err(Stop::NotDicom) => Err(ComputeError::Malformed {
            detail: "inflated data set does not start with an element".into(),
        }),
        // An I/O error from memory is the data ending mid-header.
        Err(Stop::GiveUp) => Err(ComputeError::Truncated {
            detail: "inflated data set ends inside an element header".into(),
        }),
    }
}

enum Stop {
    /// A declared length does not fit: refuse before anything is allocated.
    Reject(String),
    /// Parsing the nested structure would take more memory than the budget (estimate).
    Costly(u64),
    /// A structure no reader should follow (sequences nested past [`MAX_NESTING`]).
    Malformed(String),
    /// Neither the DICM magic, nor a file meta group, nor a bare data set: dicom-rs refuses
    /// such a file from its first bytes, and nothing more of it needs reading.
    NotDicom,
    /// The data ends inside a structure (full reads only).
    Cut(String),
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
        if len <= SKIP_BY_READING {
            // Small values are read through: a seek would throw away a BufReader's buffer
            // and cost a system call per element (`derive --mode header_only`, 1 thread, 512²
            // CT: 10.6k → 13–20k files/s, noisy machine).
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

pub(super) fn u16_of(b: [u8; 2], be: bool) -> u16 {
    if be {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    }
}

pub(super) fn u32_of(b: [u8; 4], be: bool) -> u32 {
    if be {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

/// VRs with a 2-byte reserved field and a 4-byte length in explicit syntaxes.
pub(super) fn long_length(vr: VR) -> bool {
    use VR::*;
    matches!(
        vr,
        OB | OD | OF | OL | OV | OW | SQ | SV | UC | UN | UR | UT | UV
    )
}

fn walk<R: Read + Seek>(
    src: &mut R,
    size: u64,
    stop_at_pixel_data: bool,
    budget: u64,
    scan: &mut Scan,
) -> Result<(), Stop> {
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
    // File meta group: always explicit VR little endian. dicom-rs reads the group length
    // (0002,0000) first and then elements of any group until that many bytes are consumed;
    // without a group length (which dicom-rs refuses), this walk reads group 0002.
    let mut syntax = None;
    let mut group_end: Option<u64> = None;
    let mut first = true;
    loop {
        if group_end.is_some_and(|end| c.pos >= end) {
            break;
        }
        if c.remaining() < 8 {
            return Ok(());
        }
        let start = c.pos;
        let g = u16::from_le_bytes(c.bytes()?);
        if group_end.is_none() && g != 0x0002 {
            c.src.seek(SeekFrom::Start(start))?;
            c.pos = start;
            break;
        }
        let e = u16::from_le_bytes(c.bytes()?);
        let tag = Tag(g, e);
        let len = if g == 0xFFFE {
            // Item tags have no VR: tag + 4-byte length.
            u32::from_le_bytes(c.bytes()?)
        } else {
            // dicom-rs reads an unknown VR as UN (reserved bytes + 4-byte length), here too.
            let vr = VR::from_binary(c.bytes::<2>()?).unwrap_or(VR::UN);
            if long_length(vr) {
                c.bytes::<2>()?;
                u32::from_le_bytes(c.bytes()?)
            } else {
                u32::from(u16::from_le_bytes(c.bytes()?))
            }
        };
        if len == UNDEFINED {
            // dicom-rs's meta reader refuses it (after reserving 4 GiB for some tags).
            return Err(Stop::Reject(format!(
                "file meta element ({:04X},{:04X}) at byte {start} has an undefined length",
                tag.group(),
                tag.element(),
            )));
        }
        if first && tag == Tag(0x0002, 0x0000) && len == 4 {
            let group_length = u32::from_le_bytes(c.bytes()?);
            group_end = Some(c.pos + u64::from(group_length));
        } else if tag == Tag(0x0002, 0x0010) {
            c.fits(tag, len)?;
            let mut uid = vec![0u8; len as usize];
            c.src.read_exact(&mut uid)?;
            c.pos += u64::from(len);
            let uid = String::from_utf8_lossy(&uid);
            syntax = Some(match uid.trim_end_matches(['\0', ' ']) {
                "1.2.840.10008.1.2" => Syntax::ImplicitLe,
                "1.2.840.10008.1.2.2" => Syntax::ExplicitBe,
                // Walked after inflating (`check_inflated`).
                DEFLATED_EXPLICIT_VR_LE => Syntax::Deflated,
                _ => Syntax::ExplicitLe,
            });
        } else {
            c.skip(tag, len)?;
        }
        first = false;
    }
    let syntax = match syntax {
        Some(Syntax::Deflated) => {
            scan.dataset_start = c.pos;
            scan.deflated = true;
            return Ok(());
        }
        Some(syntax) => syntax,
        None => {
            // No meta group: a bare data set is accepted when it plainly is one.
            let mut head = [0u8; 6];
            c.src.read_exact(&mut head)?;
            c.src.seek(SeekFrom::Start(c.pos))?;
            match bare_dataset_syntax(&head) {
                Some(IMPLICIT_VR_LE) => Syntax::ImplicitLe,
                Some(EXPLICIT_VR_BE) => Syntax::ExplicitBe,
                Some(_) => Syntax::ExplicitLe,
                None => return Err(Stop::NotDicom),
            }
        }
    };
    scan.dataset_start = c.pos;
    walk_dataset(&mut c, syntax, stop_at_pixel_data, budget, scan)
}

/// Walk a data set from the cursor to the end.
fn walk_dataset<R: Read + Seek>(
    c: &mut Cursor<'_, R>,
    syntax: Syntax,
    stop_at_pixel_data: bool,
    budget: u64,
    scan: &mut Scan,
) -> Result<(), Stop> {
    // What parsing the nested structure walked so far would allocate (estimate).
    let mut cost = 0u64;
    let mut spend = |bytes: u64| -> Result<(), Stop> {
        cost = cost.saturating_add(bytes);
        if cost > budget {
            return Err(Stop::Costly(cost));
        }
        Ok(())
    };
    let be = syntax == Syntax::ExplicitBe;
    let dict = StandardDataDictionary;
    // Set once the top-level PixelData value has ended: what follows must be a valid element
    // with a higher tag, or it is trailing junk.
    let mut after_pixels = false;
    // Depth of undefined-length encapsulated pixel data (its items hold fragments, not data
    // sets, so their values are skipped rather than walked).
    let mut in_fragments = false;
    let mut depth = 0u32;
    // Ends of the defined-length sequences and items we are inside (their content is walked
    // inline), each marked whether it is a sequence: an element is top-level only when this
    // is empty and `depth` is 0.
    let mut open_ends: Vec<(u64, bool)> = Vec::new();
    // Defined-length sequences among `open_ends`: with `depth`, the nesting of sequences.
    let mut defined_sequences = 0usize;
    loop {
        while let Some(&(end, sequence)) = open_ends.last() {
            if end > c.pos {
                break;
            }
            open_ends.pop();
            defined_sequences -= usize::from(sequence);
        }
        let top = depth == 0 && open_ends.is_empty();
        if c.remaining() < 8 {
            if in_fragments && !stop_at_pixel_data {
                return Err(Stop::Cut(
                    "encapsulated pixel data ends without its sequence delimiter".into(),
                ));
            }
            if after_pixels && c.remaining() > 0 {
                scan.trailing_at = Some(c.pos);
            }
            return Ok(());
        }
        let start = c.pos;
        let g = u16_of(c.bytes()?, be);
        let e = u16_of(c.bytes()?, be);
        let tag = Tag(g, e);
        if after_pixels {
            match element_fits(c, tag, syntax) {
                Ok(true) => {}
                Ok(false) | Err(Stop::Reject(_)) => {
                    scan.trailing_at = Some(start);
                    return Ok(());
                }
                Err(stop) => return Err(stop),
            }
            c.src.seek(SeekFrom::Start(start + 4))?;
            c.pos = start + 4;
            after_pixels = false;
        }
        if g == 0xFFFE {
            let len = u32_of(c.bytes()?, be);
            if e == 0xE000 && !in_fragments {
                spend(ITEM_COST)?;
            }
            match e {
                0xE000 if in_fragments && len != UNDEFINED => c.skip(tag, len)?,
                0xE000 if len == UNDEFINED => {}
                0xE000 => {
                    c.fits(tag, len)?;
                    open_ends.push((c.pos + u64::from(len), false));
                }
                0xE0DD => {
                    if in_fragments {
                        in_fragments = false;
                        after_pixels = top;
                    } else {
                        depth = depth.saturating_sub(1);
                    }
                }
                _ => {}
            }
            continue;
        }
        if !top {
            spend(NESTED_ELEMENT_COST)?;
        }
        if top && tag == PIXEL_DATA {
            scan.pixel_data_at = Some(start);
            if stop_at_pixel_data {
                return Ok(());
            }
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
            Syntax::ExplicitLe | Syntax::ExplicitBe | Syntax::Deflated => {
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
                too_deep(depth as usize + defined_sequences, start)?;
            }
            continue;
        }
        if vr == VR::SQ {
            // Defined-length sequence: its items follow inline.
            c.fits(tag, len)?;
            open_ends.push((c.pos + u64::from(len), true));
            defined_sequences += 1;
            too_deep(depth as usize + defined_sequences, start)?;
            continue;
        }
        c.skip(tag, len)?;
        after_pixels = top && tag == PIXEL_DATA;
    }
}

fn too_deep(nesting: usize, at: u64) -> Result<(), Stop> {
    if nesting > MAX_NESTING {
        return Err(Stop::Malformed(format!(
            "sequences nested deeper than {MAX_NESTING} levels (at byte {at})"
        )));
    }
    Ok(())
}

/// After the pixel data: does the element at the cursor (tag already read) look like a real
/// one — a tag above PixelData and a value that fits? Reads its header; the caller rewinds.
fn element_fits<R: Read + Seek>(
    c: &mut Cursor<'_, R>,
    tag: Tag,
    syntax: Syntax,
) -> Result<bool, Stop> {
    if tag <= PIXEL_DATA {
        return Ok(false);
    }
    let be = syntax == Syntax::ExplicitBe;
    let len = match syntax {
        Syntax::ImplicitLe => u32_of(c.bytes()?, false),
        Syntax::ExplicitLe | Syntax::ExplicitBe | Syntax::Deflated => {
            let Some(vr) = VR::from_binary(c.bytes::<2>()?) else {
                return Ok(false);
            };
            if long_length(vr) {
                c.bytes::<2>()?;
                u32_of(c.bytes()?, be)
            } else {
                u32::from(u16_of(c.bytes()?, be))
            }
        }
    };
    Ok(len == UNDEFINED || c.fits(tag, len).is_ok())
}

#[cfg(test)]
mod tests {
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
}
