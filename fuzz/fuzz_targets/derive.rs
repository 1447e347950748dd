//! Any bytes through the whole derivation, both modes: it may fail, never panic, hang or
//! allocate what a header merely claims (the limits below keep a run's memory small). Where
//! both the direct read and the dicom-rs object path accept the input, they must agree.
#![no_main]

use dicom_pipeline::compute::{derive_bytes, derive_bytes_object_path, Limits, Mode};
use libfuzzer_sys::fuzz_target;

/// libfuzzer-sys's panic hook aborts on every panic, including the codec panics the
/// derivation catches and turns into `decode_failed` (dicom-rs's JPEG and JPEG 2000 adapters
/// slice past their buffers on some inputs). Those are handled input, not crashes: print
/// the message and let the derivation's `catch_unwind` take it. A panic nobody catches still
/// unwinds to libfuzzer-sys, which aborts on it and reports the input.
fn report_caught_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}"))));
}

fuzz_target!(|data: &[u8]| {
    report_caught_panics();
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
