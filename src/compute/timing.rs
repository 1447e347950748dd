//! Where one derivation's time goes: reading the file, parsing the header, decoding pixels.
//!
//! The derivation runs synchronously on one thread, so the two measured stages accumulate in
//! thread-locals that [`derive_open_timed`] resets before and reads after; parse is the rest.
//! An `Instant::now()` pair per stage: tens of nanoseconds on a derivation of microseconds.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::{derive_open, ComputeError, Derived, Limits, Mode};

thread_local! {
    static READ: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    static DECODE: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// Time spent per stage while deriving one file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimes {
    /// Reading the file's bytes (open and stat included in parse).
    pub read: Duration,
    /// Walking and parsing the header, digests of the header: everything else.
    pub parse: Duration,
    /// Decoding the pixel data and its statistics and digest (zero in header-only mode).
    pub decode: Duration,
}

fn timed<T>(cell: &'static std::thread::LocalKey<Cell<Duration>>, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    let took = started.elapsed();
    cell.with(|c| c.set(c.get() + took));
    out
}

pub(super) fn reading<T>(f: impl FnOnce() -> T) -> T {
    timed(&READ, f)
}

pub(super) fn decoding<T>(f: impl FnOnce() -> T) -> T {
    timed(&DECODE, f)
}

/// A reader whose reads count as reading time: the rest of a deflated file, read while it
/// is inflated.
pub(super) struct Reading<R>(R);

impl<R> Reading<R> {
    pub(super) fn new(inner: R) -> Self {
        Reading(inner)
    }
}

impl<R: std::io::Read> std::io::Read for Reading<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        reading(|| self.0.read(buf))
    }
}

/// [`derive_open`] and the time each stage took.
pub fn derive_open_timed(
    file: std::fs::File,
    mode: Mode,
    limits: Limits,
) -> (Result<Derived, ComputeError>, StageTimes) {
    READ.with(|c| c.set(Duration::ZERO));
    DECODE.with(|c| c.set(Duration::ZERO));
    let started = Instant::now();
    let derived = derive_open(file, mode, limits);
    let total = started.elapsed();
    let read = READ.with(Cell::get);
    let decode = DECODE.with(Cell::get);
    let times = StageTimes {
        read,
        parse: total.saturating_sub(read + decode),
        decode,
    };
    (derived, times)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::synth::{ct_file_bytes, CtSpec};

    #[test]
    fn stages_add_up_and_header_only_decodes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ct.dcm");
        std::fs::write(&path, ct_file_bytes(&CtSpec::numbered("1.2.3", 1, 1, 1, 1))).unwrap();
        let limits = Limits {
            max_file_size: 1 << 30,
            max_decoded_size: 1 << 30,
        };
        let open = || std::fs::File::open(&path).unwrap();
        let (d, t) = derive_open_timed(open(), Mode::Full, limits);
        assert!(d.unwrap().pixels.is_some());
        assert!(
            t.read > Duration::ZERO && t.decode > Duration::ZERO,
            "{t:?}"
        );
        let (d, t) = derive_open_timed(open(), Mode::HeaderOnly, limits);
        assert!(d.unwrap().pixels.is_none());
        assert!(t.read > Duration::ZERO, "{t:?}");
        assert_eq!(t.decode, Duration::ZERO, "{t:?}");
        // A failing file is timed too (and the next call starts from zero).
        std::fs::write(dir.path().join("empty.dcm"), b"").unwrap();
        let empty = std::fs::File::open(dir.path().join("empty.dcm")).unwrap();
        let (d, t) = derive_open_timed(empty, Mode::Full, limits);
        assert!(d.is_err());
        assert_eq!(t.decode, Duration::ZERO);
    }
}
