//! Reading a file from disk, as little of it as the mode needs: full mode reads the whole
//! file into a buffer its thread keeps; header-only mode reads a small head, grows it while
//! the guard walk runs past it, and past a limit walks the file itself and reads just the
//! bytes before PixelData.

use std::io::{Read, Seek, SeekFrom};

use super::deflated::derive_deflated;
use super::derive::derive_scanned;
use super::finish::parse_end;
use super::{check_size, derive_bytes, guard, timing, ComputeError, Derived, Limits, Mode};

thread_local! {
    /// Full-mode read buffer, reused by the files one thread derives: a fresh half-megabyte
    /// vector per file is a fresh mapping that the kernel page-faults in and zeroes each time.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Read buffers above this size are not kept between files.
const KEEP_READ_BUFFER: usize = 16 << 20;

/// Bytes read first in header-only mode: enough for the header of most images.
const HEAD: u64 = 4 * 1024;
/// Header-only reads grow up to this before the walk seeks through the file instead.
const MAX_HEAD: u64 = 256 * 1024;

/// Read and derive one DICOM file that is already open (the pipeline opens it inside its
/// storage root, see `storage`).
pub fn derive_open(
    mut file: std::fs::File,
    mode: Mode,
    limits: Limits,
) -> Result<Derived, ComputeError> {
    let read_err = |source| ComputeError::Read { source };
    let file_size = file.metadata().map_err(read_err)?.len();
    check_size(file_size, limits)?;
    if mode == Mode::Full {
        // One read of the whole file into this thread's buffer, then parse from memory.
        // derive_bytes checks the size again: the file may have grown since the metadata call.
        return READ_BUFFER.with_borrow_mut(|buf| {
            buf.clear();
            buf.reserve(file_size as usize);
            timing::reading(|| {
                file.take(limits.max_file_size.saturating_add(1))
                    .read_to_end(buf)
            })
            .map_err(read_err)?;
            let derived = derive_bytes(buf, mode, limits);
            if buf.capacity() > KEEP_READ_BUFFER {
                *buf = Vec::new();
            }
            derived
        });
    }
    // Header only: read the first HEAD bytes, then 4× more while the walk runs past what
    // has been read, up to MAX_HEAD; nearly every header takes one small read.
    let mut head = Vec::with_capacity(HEAD.min(file_size) as usize);
    let mut want = HEAD;
    loop {
        let have = head.len() as u64;
        timing::reading(|| (&mut file).take(want - have).read_to_end(&mut head))
            .map_err(read_err)?;
        // A walk that runs past `head` stops (Ok(None)); a length refused against the file
        // size is final either way.
        let cursor = &mut std::io::Cursor::new(&head);
        if let Some(scan) = guard::check_lengths(cursor, file_size, true, limits.max_decoded_size)?
        {
            if scan.deflated && (head.len() as u64) < file_size {
                // Inflate from what has been read, then from the file as the walk needs it.
                let (meta, compressed) =
                    head.split_at((scan.dataset_start as usize).min(head.len()));
                let rest = (&mut file).take(limits.max_file_size);
                let compressed = std::io::BufReader::with_capacity(
                    16 * 1024,
                    timing::Reading::new(compressed.chain(rest)),
                );
                return derive_deflated(meta, compressed, mode, limits, file_size, true);
            }
            let end = parse_end(scan, mode, file_size);
            if end <= head.len() as u64 {
                let bytes = &head[..end as usize];
                return derive_scanned(bytes, Some(scan), mode, limits, file_size, true);
            }
        }
        if (head.len() as u64) < want || want >= MAX_HEAD {
            break;
        }
        want *= 4;
    }
    // A longer header: walk the headers (seeking over large values), then read just the
    // bytes before PixelData.
    let mut reader = std::io::BufReader::with_capacity(16 * 1024, file);
    reader.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let scan = guard::check_lengths(&mut reader, file_size, true, limits.max_decoded_size)?;
    let end = scan.map_or(file_size, |s| parse_end(s, mode, file_size));
    let mut file = reader.into_inner();
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let mut bytes = Vec::with_capacity(end as usize);
    timing::reading(|| file.take(end).read_to_end(&mut bytes)).map_err(read_err)?;
    if (bytes.len() as u64) < end {
        return Err(ComputeError::Truncated {
            detail: format!("file shrank to {} bytes while being read", bytes.len()),
        });
    }
    derive_scanned(&bytes, scan, mode, limits, file_size, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::derive_file;
    use crate::compute::synth::{ct_file_bytes, CtSpec};
    use dicom_dictionary_std::tags;

    #[test]
    fn derive_file_reads_from_disk_and_reports_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.dcm");
        let bytes = ct_file_bytes(&CtSpec::default());
        std::fs::write(&path, &bytes).unwrap();
        let d = derive_file(&path, Mode::HeaderOnly, Limits::default()).unwrap();
        assert_eq!(d.file_size, bytes.len() as u64);
    }

    /// Header-only reading takes one read of the first 4 KiB when the header fits in it,
    /// reads 4× more while it does not (up to 256 KiB), and walks on through the file beyond;
    /// all give what the bytes give.
    #[test]
    fn header_only_reads_short_long_and_huge_headers_alike() {
        use dicom_core::{value::PrimitiveValue, DataElement, VR};
        let dir = tempfile::tempdir().unwrap();
        let short = ct_file_bytes(&CtSpec::default());
        let with_text = |sizes: &[(dicom_core::Tag, usize)]| {
            let mut obj = dicom_object::from_reader(&short[..]).unwrap();
            for &(tag, len) in sizes {
                obj.put(DataElement::new(
                    tag,
                    VR::UT,
                    PrimitiveValue::from("x".repeat(len)),
                ));
            }
            let mut out = Vec::new();
            obj.write_all(&mut out).unwrap();
            out
        };
        let long = with_text(&[(tags::TEXT_VALUE, 40_000), (tags::IMAGE_COMMENTS, 9_000)]);
        let huge = with_text(&[(tags::TEXT_VALUE, 300_000)]);
        for (name, bytes) in [("short", short.clone()), ("long", long), ("huge", huge)] {
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes).unwrap();
            let from_file = derive_file(&path, Mode::HeaderOnly, Limits::default()).unwrap();
            let from_bytes = derive_bytes(&bytes, Mode::HeaderOnly, Limits::default()).unwrap();
            assert_eq!(from_file, from_bytes, "{name}");
            assert_eq!(from_file.file_size, bytes.len() as u64);
        }
    }
}
