//! RLE Lossless (PS3.5 Annex G) for every BitsAllocated, including the 32-bit data
//! dicom-rs 0.10 refuses (`BitsAllocated other than 8 or 16 is not supported`).
//!
//! Each frame is one fragment: a 64-byte header (segment count, then up to 15 segment
//! offsets) and PackBits-coded segments, one per byte plane — for each sample, the most
//! significant byte first. The decoder yields raw sample values interleaved per pixel.

use super::ComputeError;

/// Decode one frame into `out` (appending `pixels × samples` values).
pub fn decode_frame(
    fragment: &[u8],
    pixels: usize,
    samples: usize,
    bytes_per_sample: usize,
    out: &mut Vec<u32>,
) -> Result<(), ComputeError> {
    let start = out.len();
    out.resize(start + pixels * samples, 0);
    let out = &mut out[start..];
    decode_planes(fragment, pixels, samples, bytes_per_sample, |i, plane| {
        let (sample, byte) = (i / bytes_per_sample, i % bytes_per_sample);
        let shift = 8 * (bytes_per_sample - 1 - byte);
        for (p, &b) in plane.iter().enumerate() {
            out[p * samples + sample] |= u32::from(b) << shift;
        }
    })
}

/// Decode one frame of 16-bit samples into `out` as the little-endian byte stream of its
/// values, interleaved per pixel (appending `pixels × samples × 2` bytes): what native
/// 16-bit pixel data looks like, so the statistics take the same fast path.
pub fn decode_frame_le16(
    fragment: &[u8],
    pixels: usize,
    samples: usize,
    out: &mut Vec<u8>,
) -> Result<(), ComputeError> {
    let start = out.len();
    out.resize(start + pixels * samples * 2, 0);
    let out = &mut out[start..];
    decode_planes(fragment, pixels, samples, 2, |i, plane| {
        // Segment 2s is sample s's most significant byte, 2s + 1 its least.
        let (sample, msb) = (i / 2, i % 2 == 0);
        let at = sample * 2 + usize::from(msb);
        for (p, &b) in plane.iter().enumerate() {
            out[(p * samples) * 2 + at] = b;
        }
    })
}

/// Check the frame's header and hand each decoded byte plane (segment `i`: sample
/// `i / bytes_per_sample`, most significant byte first) to `plane`.
fn decode_planes(
    fragment: &[u8],
    pixels: usize,
    samples: usize,
    bytes_per_sample: usize,
    mut plane_done: impl FnMut(usize, &[u8]),
) -> Result<(), ComputeError> {
    let fail = |detail: String| ComputeError::DecodeFailed {
        detail: format!("RLE: {detail}"),
    };
    if fragment.len() < 64 {
        return Err(fail(format!(
            "frame of {} bytes has no header",
            fragment.len()
        )));
    }
    let word = |i: usize| {
        u32::from_le_bytes([
            fragment[4 * i],
            fragment[4 * i + 1],
            fragment[4 * i + 2],
            fragment[4 * i + 3],
        ]) as usize
    };
    let segments = word(0);
    let want = samples * bytes_per_sample;
    if segments != want {
        return Err(fail(format!(
            "{segments} segments, expected {want} ({samples} samples × {bytes_per_sample} bytes)"
        )));
    }
    let offsets: Vec<usize> = (1..=segments).map(word).collect();
    let mut plane = vec![0u8; pixels];
    for (i, &from) in offsets.iter().enumerate() {
        let to = offsets.get(i + 1).copied().unwrap_or(fragment.len());
        let coded = fragment
            .get(from..to.max(from))
            .filter(|_| from >= 64)
            .ok_or_else(|| fail(format!("segment {i} offset {from} outside the frame")))?;
        unpack_bits(coded, &mut plane)
            .map_err(|got| fail(format!("segment {i} holds {got} of {pixels} bytes")))?;
        plane_done(i, &plane);
    }
    Ok(())
}

/// PackBits: a header byte `n` ≥ 0 copies the next n+1 bytes, −127..−1 repeats the next byte
/// 1−n times, −128 is a no-op. Fills `plane` exactly; `Err(written)` when the segment is short.
/// Extra decoded bytes (encoders pad segments to even length) are ignored.
fn unpack_bits(mut src: &[u8], plane: &mut [u8]) -> Result<(), usize> {
    let mut at = 0;
    while at < plane.len() {
        let Some((&h, rest)) = src.split_first() else {
            return Err(at);
        };
        src = rest;
        let n = h as i8;
        if n >= 0 {
            let len = n as usize + 1;
            let Some(lit) = src.get(..len) else {
                return Err(at);
            };
            let take = len.min(plane.len() - at);
            plane[at..at + take].copy_from_slice(&lit[..take]);
            at += take;
            src = &src[len..];
        } else if n != -128 {
            let Some((&b, rest)) = src.split_first() else {
                return Err(at);
            };
            src = rest;
            let take = (1 - n as isize) as usize;
            let take = take.min(plane.len() - at);
            plane[at..at + take].fill(b);
            at += take;
        }
    }
    Ok(())
}

/// Encode one frame of interleaved values (the inverse of [`decode_frame`]; used by `synth`).
pub fn encode_frame(values: &[u32], samples: usize, bytes_per_sample: usize) -> Vec<u8> {
    let segments = samples * bytes_per_sample;
    let pixels = values.len() / samples.max(1);
    let mut out = vec![0u8; 64];
    out[..4].copy_from_slice(&(segments as u32).to_le_bytes());
    let mut plane = Vec::with_capacity(pixels);
    for i in 0..segments {
        let (sample, byte) = (i / bytes_per_sample, i % bytes_per_sample);
        let shift = 8 * (bytes_per_sample - 1 - byte);
        plane.clear();
        plane.extend((0..pixels).map(|p| (values[p * samples + sample] >> shift) as u8));
        let offset = out.len() as u32;
        out[4 + 4 * i..8 + 4 * i].copy_from_slice(&offset.to_le_bytes());
        pack_bits(&plane, &mut out);
        if out.len() % 2 == 1 {
            out.push(0x80); // no-op pad to even length
        }
    }
    out
}

fn pack_bits(src: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < src.len() {
        let run = src[i..]
            .iter()
            .take(128)
            .take_while(|&&b| b == src[i])
            .count();
        if run >= 2 {
            out.push((1 - run as isize) as i8 as u8);
            out.push(src[i]);
            i += run;
        } else {
            // Literal up to the next run of 3 or 128 bytes.
            let mut j = i;
            while j < src.len() && j - i < 128 {
                if j + 2 < src.len() && src[j] == src[j + 1] && src[j] == src[j + 2] {
                    break;
                }
                j += 1;
            }
            let j = j.max(i + 1);
            out.push((j - i - 1) as u8);
            out.extend_from_slice(&src[i..j]);
            i = j;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_the_packbits_example() {
        // From the PackBits description: literal, run, literal.
        let mut plane = [0u8; 8];
        unpack_bits(&[2, 1, 2, 3, 0xFD, 9, 0x80, 1, 4, 5], &mut plane).unwrap();
        assert_eq!(plane, [1, 2, 3, 9, 9, 9, 9, 4]);
        assert_eq!(unpack_bits(&[0xFD], &mut plane), Err(0));
    }

    #[test]
    fn le16_decoding_matches_the_value_decoding() {
        let values: Vec<u32> = (0..600u32)
            .map(|i| ((i * 37) % 4096) | ((i % 3) << 14))
            .collect();
        for samples in [1usize, 3] {
            let pixels = values.len() / samples;
            let frame = encode_frame(&values[..pixels * samples], samples, 2);
            let mut as_values = Vec::new();
            decode_frame(&frame, pixels, samples, 2, &mut as_values).unwrap();
            let mut bytes = Vec::new();
            decode_frame_le16(&frame, pixels, samples, &mut bytes).unwrap();
            let from_bytes: Vec<u32> = bytes
                .chunks_exact(2)
                .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                .collect();
            assert_eq!(from_bytes, as_values);
            assert_eq!(as_values, values[..pixels * samples]);
        }
    }

    #[test]
    fn rejects_bad_headers() {
        let mut out = Vec::new();
        assert!(decode_frame(&[0; 10], 4, 1, 1, &mut out).is_err());
        let mut frame = vec![0u8; 64];
        frame[0] = 2;
        assert!(decode_frame(&frame, 4, 1, 1, &mut out).is_err());
        frame[0] = 1;
        frame[4] = 200; // offset beyond the frame
        assert!(decode_frame(&frame, 4, 1, 1, &mut out).is_err());
        // The 16-bit byte-stream decoder checks the same header: two segments per sample.
        let mut bytes = Vec::new();
        assert!(decode_frame_le16(&[0; 10], 4, 1, &mut bytes).is_err());
        let mut frame = vec![0u8; 64];
        frame[0] = 1; // one segment for a 16-bit sample
        let err = decode_frame_le16(&frame, 4, 1, &mut bytes).unwrap_err();
        assert!(err.to_string().contains("expected 2"), "{err}");
        frame[0] = 2;
        frame[4] = 64;
        frame[8] = 66; // the first segment holds 1 of the 4 bytes it must
        frame.extend_from_slice(&[0, 7, 3, 1, 2, 3, 4]);
        let err = decode_frame_le16(&frame, 4, 1, &mut bytes).unwrap_err();
        assert!(err.to_string().contains("segment 0 holds"), "{err}");
    }

    proptest! {
        #[test]
        fn round_trips(values in proptest::collection::vec(0u32..6, 3..300), width in 1usize..=4) {
            let samples = 3;
            let n = values.len() / samples * samples;
            let mask = if width == 4 { u32::MAX } else { (1u32 << (8 * width)) - 1 };
            // Spread small values over all bytes so every plane carries data.
            let values: Vec<u32> = values[..n].iter().map(|&v| v.wrapping_mul(0x0101_0101) & mask).collect();
            let coded = encode_frame(&values, samples, width);
            let mut out = Vec::new();
            decode_frame(&coded, n / samples, samples, width, &mut out).unwrap();
            prop_assert_eq!(out, values);
        }
    }
}
