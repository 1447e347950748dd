//! The memory bound, checked with a counting allocator: deriving a file allocates at most
//! a parsed copy of it (object path only) plus what `max_decoded_size` is checked against
//! before decoding (`Layout::working_bytes`), for every pixel format — 32-bit stored values,
//! planar colour, YBR_FULL_422, RLE — and header-only reading of a large file that is not
//! DICOM allocates next to nothing.
//!
//! The allocator counts per thread, so tests running beside each other do not disturb the
//! figures. It is the unit-test binary's allocator only.

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use super::synth::{ct_file_bytes, CtSpec, SynthSyntax};
use super::{derive_bytes, derive_bytes_object_path, Limits, Mode};
use crate::model::Reason;

struct Counting;

thread_local! {
    static NOW: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

fn grew(n: usize) {
    // `try_with`: no accounting while a thread's locals are being torn down.
    let _ = NOW.try_with(|now| {
        let v = now.get() + n;
        now.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

fn shrank(n: usize) {
    let _ = NOW.try_with(|now| now.set(now.get().saturating_sub(n)));
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most this thread had allocated at once while `f` ran, above what it held before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = NOW.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, PEAK.with(Cell::get) - base)
}

/// A native explicit-VR-LE image of the given layout, filled with a ramp.
struct Image {
    bits_allocated: u16,
    bits_stored: u16,
    samples: u16,
    photometric: &'static str,
    planar: bool,
    rows: u16,
    columns: u16,
    frames: u32,
}

impl Image {
    /// Values stored per frame: YBR_FULL_422 keeps two per pixel.
    fn stored_values(&self) -> usize {
        let per_pixel = if self.photometric == "YBR_FULL_422" {
            2
        } else {
            usize::from(self.samples)
        };
        usize::from(self.rows) * usize::from(self.columns) * per_pixel * self.frames as usize
    }

    fn bytes(&self) -> Vec<u8> {
        let width = usize::from(self.bits_allocated / 8);
        let n = self.stored_values();
        let mut data = Vec::with_capacity(n * width);
        for i in 0..n {
            let v = (i as u64).wrapping_mul(2_654_435_761) >> 7;
            data.extend(&v.to_le_bytes()[..width]);
        }
        let text = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
        let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
        let mut obj = InMemDicomObject::from_element_iter([
            text(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.7"),
            text(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.4.5"),
            text(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3"),
            text(tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.4"),
            us(tags::SAMPLES_PER_PIXEL, self.samples),
            text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, self.photometric),
            text(tags::NUMBER_OF_FRAMES, VR::IS, &self.frames.to_string()),
            us(tags::ROWS, self.rows),
            us(tags::COLUMNS, self.columns),
            us(tags::BITS_ALLOCATED, self.bits_allocated),
            us(tags::BITS_STORED, self.bits_stored),
            us(tags::HIGH_BIT, self.bits_stored - 1),
            us(tags::PIXEL_REPRESENTATION, 0),
            DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(data)),
        ]);
        if self.samples > 1 {
            obj.put(us(tags::PLANAR_CONFIGURATION, u16::from(self.planar)));
        }
        let file = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax("1.2.840.10008.1.2.1")
                    .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
                    .media_storage_sop_instance_uid("1.2.3.4.5"),
            )
            .unwrap();
        let mut out = Vec::new();
        file.write_all(&mut out).unwrap();
        out
    }

    /// What the summary may allocate, computed here from the layout (not by the code under
    /// test): a decoded copy of every value, 4 bytes per value reordered (planar, YBR), 4
    /// per value kept when more than 16 bits are stored, and the largest histogram.
    fn working_bytes(&self) -> usize {
        let values = usize::from(self.rows)
            * usize::from(self.columns)
            * usize::from(self.samples)
            * self.frames as usize;
        let mut per_value = usize::from(self.bits_allocated / 8);
        if self.planar || self.photometric == "YBR_FULL_422" {
            per_value += 4;
        }
        if self.bits_stored > 16 {
            per_value += 4;
        }
        values * per_value + (1 << 16) * 4
    }
}

fn image(bits: u16, stored: u16, samples: u16, photometric: &'static str, planar: bool) -> Image {
    Image {
        bits_allocated: bits,
        bits_stored: stored,
        samples,
        photometric,
        planar,
        rows: 256,
        columns: 256,
        frames: 4,
    }
}

/// Slack for what is not per value: the header's elements, the digest, small buffers.
const SLACK: usize = 1 << 20;

#[test]
fn every_pixel_format_stays_within_its_checked_working_memory() {
    let cases = [
        ("16-bit grey", image(16, 12, 1, "MONOCHROME2", false)),
        ("8-bit grey", image(8, 8, 1, "MONOCHROME2", false)),
        (
            "32-bit stored values",
            image(32, 32, 1, "MONOCHROME2", false),
        ),
        (
            "24-bit stored values",
            image(32, 24, 1, "MONOCHROME2", false),
        ),
        ("RGB by pixel", image(8, 8, 3, "RGB", false)),
        ("RGB planar", image(8, 8, 3, "RGB", true)),
        ("16-bit RGB planar", image(16, 16, 3, "RGB", true)),
        ("YBR_FULL_422", image(8, 8, 3, "YBR_FULL_422", false)),
        (
            "16-bit YBR_FULL_422",
            image(16, 16, 3, "YBR_FULL_422", false),
        ),
    ];
    for (name, img) in cases {
        let file = img.bytes();
        let limits = Limits {
            max_file_size: 1 << 30,
            max_decoded_size: img.working_bytes() as u64,
        };
        for object_path in [false, true] {
            let (derived, peak) = peak_during(|| {
                if object_path {
                    derive_bytes_object_path(&file, Mode::Full, limits)
                } else {
                    derive_bytes(&file, Mode::Full, limits)
                }
            });
            let derived = derived.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(derived.pixels.is_some(), "{name}");
            // The object path holds a parsed copy of the file.
            let copy = if object_path { file.len() } else { 0 };
            let bound = copy + img.working_bytes() + SLACK;
            assert!(
                peak <= bound,
                "{name} (object path {object_path}): peak {peak} bytes over the bound {bound} ({} of pixel data)",
                file.len()
            );
        }
        // One byte less of budget: refused before decoding.
        let tight = Limits {
            max_decoded_size: img.working_bytes() as u64 - 1,
            ..limits
        };
        let err = derive_bytes(&file, Mode::Full, tight).unwrap_err();
        assert_eq!(err.reason(), Reason::TooLarge, "{name}: {err}");
    }
}

#[test]
fn rle_and_deflate_stay_within_their_checked_working_memory() {
    for syntax in [SynthSyntax::Rle, SynthSyntax::Deflate] {
        let spec = CtSpec {
            rows: 512,
            columns: 512,
            transfer_syntax: syntax,
            ..CtSpec::default()
        };
        let file = ct_file_bytes(&spec);
        let values = 512 * 512;
        // 16-bit grey: a decoded copy of 2 bytes per value, and the histogram.
        let working = values * 2 + (1 << 16) * 4;
        let limits = Limits {
            max_file_size: 1 << 30,
            max_decoded_size: working as u64 * 4,
        };
        let (derived, peak) = peak_during(|| derive_bytes(&file, Mode::Full, limits));
        derived.unwrap();
        // A parsed (or inflated) copy of the file, the decoded copy, slack.
        let bound = 2 * file.len() + working + SLACK;
        assert!(peak <= bound, "{syntax:?}: peak {peak} over {bound}");
    }
}

/// Header-only mode over a large file that is not DICOM reads its first bytes, not the
/// file: 64 MiB of zeros (sparse on disk) cost a few kilobytes. (It used to read the whole
/// file into memory before dicom-rs refused it.)
#[test]
fn header_only_reads_little_of_a_large_file_that_is_not_dicom() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(64 << 20).unwrap();
    std::fs::write(
        dir.path().join("text.bin"),
        "not a DICOM file\n".repeat(1 << 20),
    )
    .unwrap();
    for name in ["big.bin", "text.bin"] {
        let file = std::fs::File::open(dir.path().join(name)).unwrap();
        let (derived, peak) =
            peak_during(|| super::derive_open(file, Mode::HeaderOnly, Limits::default()));
        let err = derived.unwrap_err();
        assert_eq!(err.reason(), Reason::NotDicom, "{name}: {err}");
        assert!(peak < 512 * 1024, "{name}: {peak} bytes allocated");
    }
}
