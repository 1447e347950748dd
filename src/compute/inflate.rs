//! Inflating a deflated data set only as far as it is needed.
//!
//! miniz_oxide's core decompressor writes straight into one growing buffer (a non-wrapping
//! output: back-references reach into what is already there), and stops when the buffer is
//! full. A reader-style decoder (flate2's) inflates a whole 32 KiB window per call, which for
//! a 2 KB header is most of the work: 68 µs against 18 µs here (criterion
//! `derive/ct512_deflate/header_only`).

use std::io::BufRead;

use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

use super::ComputeError;

/// A raw deflate stream (no zlib header, PS3.5 A.5) being inflated from `input`.
pub struct Inflater<R> {
    input: R,
    state: Box<DecompressorOxide>,
    out: Vec<u8>,
    /// Bytes of `out` inflated so far.
    len: usize,
    done: bool,
}

impl<R: BufRead> Inflater<R> {
    pub fn new(input: R) -> Self {
        Inflater {
            input,
            state: Box::default(),
            out: Vec::new(),
            len: 0,
            done: false,
        }
    }

    /// Inflate until `upto` bytes are out or the stream has ended; the bytes so far.
    pub fn fill(&mut self, upto: usize) -> Result<&[u8], ComputeError> {
        if self.out.len() < upto {
            self.out.resize(upto, 0);
        }
        while !self.done && self.len < upto {
            let input = self
                .input
                .fill_buf()
                .map_err(|source| ComputeError::Read { source })?;
            let last = input.is_empty();
            let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF
                | if last {
                    0
                } else {
                    inflate_flags::TINFL_FLAG_HAS_MORE_INPUT
                };
            let (status, read, written) = decompress(
                &mut self.state,
                input,
                &mut self.out[..upto],
                self.len,
                flags,
            );
            self.input.consume(read);
            self.len += written;
            match status {
                TINFLStatus::Done => self.done = true,
                // Output full: the loop ends; more input: the next round reads it.
                TINFLStatus::HasMoreOutput | TINFLStatus::NeedsMoreInput
                    if !last && (read > 0 || written > 0) => {}
                TINFLStatus::HasMoreOutput if self.len == upto => {}
                TINFLStatus::NeedsMoreInput | TINFLStatus::FailedCannotMakeProgress => {
                    return Err(ComputeError::Truncated {
                        detail: "the deflated data set ends before its last block".into(),
                    })
                }
                other => {
                    return Err(ComputeError::Malformed {
                        detail: format!("inflating the deflated data set: {other:?}"),
                    })
                }
            }
        }
        Ok(self.bytes())
    }

    /// The bytes inflated so far.
    pub fn bytes(&self) -> &[u8] {
        &self.out[..self.len]
    }

    /// Whether the stream's last block has been inflated.
    pub fn finished(&self) -> bool {
        self.done
    }

    /// The bytes inflated so far.
    pub fn into_bytes(mut self) -> Vec<u8> {
        self.out.truncate(self.len);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(data).unwrap();
        z.finish().unwrap()
    }

    /// Bytes that compress, with back-references far apart.
    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 7) ^ (i >> 9)) as u8).collect()
    }

    #[test]
    fn stops_where_asked_and_resumes_to_the_end() {
        let data = sample(300_000);
        let z = deflate(&data);
        // A reader that hands out 1 KiB at a time, as a file read through a small buffer.
        let mut inf = Inflater::new(std::io::BufReader::with_capacity(1024, &z[..]));
        assert_eq!(inf.fill(100).unwrap(), &data[..100]);
        assert!(!inf.finished());
        assert_eq!(inf.fill(70_000).unwrap(), &data[..70_000]);
        assert_eq!(inf.fill(1 << 20).unwrap(), &data[..]);
        assert!(inf.finished());
        assert_eq!(inf.into_bytes(), data);
    }

    #[test]
    fn reads_only_what_the_prefix_needs() {
        let data = sample(1 << 20);
        let z = deflate(&data);
        let mut input = &z[..];
        let mut inf = Inflater::new(&mut input);
        inf.fill(4096).unwrap();
        drop(inf);
        assert!(
            input.len() > z.len() / 2,
            "{} of {} left",
            input.len(),
            z.len()
        );
    }

    #[test]
    fn a_cut_stream_is_truncated_and_a_corrupt_one_malformed() {
        let z = deflate(&sample(100_000));
        let cut = &z[..z.len() / 2];
        let err = Inflater::new(cut).fill(1 << 20).unwrap_err();
        assert!(
            matches!(&err, ComputeError::Truncated { detail } if detail.contains("ends before")),
            "{err:?}"
        );
        // Block type 3 is reserved.
        let err = Inflater::new(&[0b111u8, 0, 0][..]).fill(16).unwrap_err();
        assert!(matches!(err, ComputeError::Malformed { .. }), "{err:?}");
        // Empty input is a stream that never ends.
        assert!(Inflater::new(&[][..]).fill(16).is_err());
    }
}
