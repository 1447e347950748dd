//! The walk of a whole file, as dicom-rs reads one: the preamble and its `DICM` magic if
//! present, the file meta group (always explicit VR little endian), then the data set in the
//! transfer syntax the meta group names — or, with no meta group, a bare data set when its
//! first bytes plainly are one.

use std::io::{Read, Seek, SeekFrom};

use dicom_core::{Tag, VR};

use super::cursor::{long_length, Cursor};
use super::dataset::walk_dataset;
use super::{
    bare_dataset_syntax, Scan, Stop, Syntax, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE,
    IMPLICIT_VR_LE, UNDEFINED,
};

/// Walk the file `src` (`size` bytes long) into `scan`.
pub(super) fn walk<R: Read + Seek>(
    src: &mut R,
    size: u64,
    stop_at_pixel_data: bool,
    budget: u64,
    scan: &mut Scan,
) -> Result<(), Stop> {
    let mut c = Cursor { src, pos: 0, size };
    skip_preamble(&mut c)?;
    let named = match walk_meta_group(&mut c)? {
        MetaGroup::Ended => return Ok(()),
        MetaGroup::Read(named) => named,
    };
    let syntax = match named {
        Some(Syntax::Deflated) => {
            scan.dataset_start = c.pos;
            scan.deflated = true;
            return Ok(());
        }
        Some(syntax) => syntax,
        None => bare_syntax(&mut c)?,
    };
    scan.dataset_start = c.pos;
    walk_dataset(&mut c, syntax, stop_at_pixel_data, budget, scan)
}

/// Step over the preamble and its magic, if present; otherwise stay at the first byte.
fn skip_preamble<R: Read + Seek>(c: &mut Cursor<'_, R>) -> Result<(), Stop> {
    if c.size >= 132 {
        c.src.seek(SeekFrom::Start(128))?;
        c.pos = 128;
        let magic: [u8; 4] = c.bytes()?;
        if &magic != b"DICM" {
            c.src.seek(SeekFrom::Start(0))?;
            c.pos = 0;
        }
    }
    Ok(())
}

/// How the walk of the file meta group ended.
enum MetaGroup {
    /// The data ended before another element header: there is nothing more to walk.
    Ended,
    /// The meta group was walked (or there was none): the syntax it names, if any.
    Read(Option<Syntax>),
}

/// Walk the file meta group: always explicit VR little endian. dicom-rs reads the group
/// length (0002,0000) first and then elements of any group until that many bytes are
/// consumed; without a group length (which dicom-rs refuses), this walk reads group 0002.
/// Leaves the cursor at the first byte of the data set.
fn walk_meta_group<R: Read + Seek>(c: &mut Cursor<'_, R>) -> Result<MetaGroup, Stop> {
    let mut syntax = None;
    let mut group_end: Option<u64> = None;
    let mut first = true;
    loop {
        if group_end.is_some_and(|end| c.pos >= end) {
            break;
        }
        if c.remaining() < 8 {
            return Ok(MetaGroup::Ended);
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
        let len = meta_value_length(c, tag, start)?;
        if first && tag == Tag(0x0002, 0x0000) && len == 4 {
            let group_length = u32::from_le_bytes(c.bytes()?);
            group_end = Some(c.pos + u64::from(group_length));
        } else if tag == Tag(0x0002, 0x0010) {
            syntax = Some(read_transfer_syntax(c, tag, len)?);
        } else {
            c.skip(tag, len)?;
        }
        first = false;
    }
    Ok(MetaGroup::Read(syntax))
}

/// The value length of the meta element whose tag (at byte `start`) was just read.
fn meta_value_length<R: Read + Seek>(
    c: &mut Cursor<'_, R>,
    tag: Tag,
    start: u64,
) -> Result<u32, Stop> {
    let len = if tag.group() == 0xFFFE {
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
    Ok(len)
}

/// Read the TransferSyntaxUID value (`len` bytes) into the syntax the data set is walked in.
fn read_transfer_syntax<R: Read + Seek>(
    c: &mut Cursor<'_, R>,
    tag: Tag,
    len: u32,
) -> Result<Syntax, Stop> {
    c.fits(tag, len)?;
    let mut uid = vec![0u8; len as usize];
    c.src.read_exact(&mut uid)?;
    c.pos += u64::from(len);
    let uid = String::from_utf8_lossy(&uid);
    Ok(match uid.trim_end_matches(['\0', ' ']) {
        "1.2.840.10008.1.2" => Syntax::ImplicitLe,
        "1.2.840.10008.1.2.2" => Syntax::ExplicitBe,
        // Walked after inflating (`check_inflated`).
        DEFLATED_EXPLICIT_VR_LE => Syntax::Deflated,
        _ => Syntax::ExplicitLe,
    })
}

/// No meta group: a bare data set is accepted when it plainly is one. Its first bytes are
/// looked at, not consumed.
fn bare_syntax<R: Read + Seek>(c: &mut Cursor<'_, R>) -> Result<Syntax, Stop> {
    let mut head = [0u8; 6];
    c.src.read_exact(&mut head)?;
    c.src.seek(SeekFrom::Start(c.pos))?;
    match bare_dataset_syntax(&head) {
        Some(IMPLICIT_VR_LE) => Ok(Syntax::ImplicitLe),
        Some(EXPLICIT_VR_BE) => Ok(Syntax::ExplicitBe),
        Some(_) => Ok(Syntax::ExplicitLe),
        None => Err(Stop::NotDicom),
    }
}
