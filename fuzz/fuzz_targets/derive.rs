//! Any bytes through the whole derivation, both modes: it may fail, never panic, hang or
//! allocate what a header merely claims (the limits below keep a run's memory small). Where
//! both the direct read and the dicom-rs object path accept the input, they must agree.
#![no_main]

use dicom_pipeline::compute::{derive_bytes, derive_bytes_object_path, Limits, Mode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_file_size: 1 << 20,
        max_decoded_size: 64 << 20,
    };
    for mode in [Mode::HeaderOnly, Mode::Full] {
        let direct = derive_bytes(data, mode, limits);
        let object = derive_bytes_object_path(data, mode, limits);
        if let (Ok(a), Ok(b)) = (&direct, &object) {
            assert_eq!(a, b, "direct read and object path disagree ({mode:?})");
        }
    }
});
