//! Criterion benches of the pure parts: DICOM derivation per mode and the watermark tracker.
//! Run: `cargo bench --bench core` (HTML report under target/criterion).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dicom_pipeline::compute::synth::{ct_file_bytes, CtSpec, SynthSyntax};
use dicom_pipeline::compute::{
    derive_bytes, derive_bytes_object_path, summarise_via_generic_decode, Limits, Mode,
};
use dicom_pipeline::workers::offsets::OffsetTracker;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// 512² CT in every transfer syntax `synth` writes, both modes.
fn derive(c: &mut Criterion) {
    for ts in SynthSyntax::ALL {
        let spec = CtSpec {
            rows: 512,
            columns: 512,
            transfer_syntax: ts,
            ..CtSpec::default()
        };
        let bytes = ct_file_bytes(&spec);
        let mut g = c.benchmark_group(format!("derive/ct512_{}", ts.name()));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        for (name, mode) in [("header_only", Mode::HeaderOnly), ("full", Mode::Full)] {
            g.bench_function(name, |b| {
                b.iter(|| derive_bytes(&bytes, mode, Limits::default()).expect("valid file"))
            });
            // The same through the dicom-rs object path (what the direct read replaces).
            g.bench_function(format!("{name}_object_path"), |b| {
                b.iter(|| {
                    derive_bytes_object_path(&bytes, mode, Limits::default()).expect("valid file")
                })
            });
        }
        g.finish();
    }
}

/// Native 512² CT pixel statistics + digest: read in place from the file buffer (the direct
/// read), from the parsed object's buffer, and through dicom-pixeldata's generic decode.
fn pixels(c: &mut Criterion) {
    let spec = CtSpec {
        rows: 512,
        columns: 512,
        ..CtSpec::default()
    };
    let bytes = ct_file_bytes(&spec);
    let mut g = c.benchmark_group("pixels/ct512_explicit-le");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("in_place_direct", |b| {
        b.iter(|| derive_bytes(&bytes, Mode::Full, Limits::default()).expect("valid"))
    });
    g.bench_function("in_place_object", |b| {
        b.iter(|| derive_bytes_object_path(&bytes, Mode::Full, Limits::default()).expect("valid"))
    });
    g.bench_function("generic_decode", |b| {
        b.iter(|| summarise_via_generic_decode(&bytes, Limits::default()).expect("valid"))
    });
    g.finish();
}

/// Compressed real files (pydicom's samples, when fetched): JPEG, JPEG-LS, JPEG 2000.
fn derive_compressed(c: &mut Criterion) {
    let dir = std::env::var("DICOM_SAMPLES_DIR").unwrap_or_else(|_| ".var/samples".into());
    let files = [
        ("jpeg_baseline_mr", "pydicom/SC_rgb_jpeg_dcmtk.dcm"),
        ("jpeg_lossless_16bit", "pydicom-data/JPEG-LL.dcm"),
        ("jpeg_ls_mr", "pydicom/MR_small_jpeg_ls_lossless.dcm"),
        ("j2k_lossless_ct512", "pydicom-data/693_J2KR.dcm"),
    ];
    for (name, rel) in files {
        let Ok(bytes) = std::fs::read(std::path::Path::new(&dir).join(rel)) else {
            eprintln!("skipping {name}: {rel} not under {dir} (scripts/fetch-samples.sh)");
            continue;
        };
        let mut g = c.benchmark_group(format!("derive/{name}"));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function("full", |b| {
            b.iter(|| derive_bytes(&bytes, Mode::Full, Limits::default()).expect("decodes"))
        });
        g.finish();
    }
}

/// Candidate pixel digests over a 512² 16-bit image (512 KiB): why BLAKE3.
fn digests(c: &mut Criterion) {
    let data: Vec<u8> = (0..512 * 512 * 2u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    let mut g = c.benchmark_group("digest/512KiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("blake3", |b| b.iter(|| blake3::hash(&data)));
    g.bench_function("md5", |b| b.iter(|| md5::compute(&data)));
    g.finish();
}

fn tracker(c: &mut Criterion) {
    const N: i64 = 10_000;
    let mut g = c.benchmark_group("offset_tracker");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("dispatch_complete_random_order_8_partitions", |b| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        b.iter_batched(
            || {
                let mut t = OffsetTracker::new();
                let mut tickets: Vec<_> =
                    (0..N).map(|o| t.dispatch((o % 8) as i32, o / 8)).collect();
                tickets.shuffle(&mut rng);
                (t, tickets)
            },
            |(mut t, tickets)| {
                for (i, ticket) in tickets.into_iter().enumerate() {
                    t.complete(ticket);
                    if i % 256 == 0 {
                        for (p, o) in t.commit_points() {
                            t.mark_committed(p, o);
                        }
                    }
                }
                t
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, derive, pixels, derive_compressed, digests, tracker);
criterion_main!(benches);
