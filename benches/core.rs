//! Criterion benches of the pure parts: DICOM derivation per mode and the watermark tracker.
//! Run: `cargo bench --bench core` (HTML report under target/criterion).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dicom_pipeline::compute::synth::{ct_file_bytes, CtSpec};
use dicom_pipeline::compute::{derive_bytes, Limits, Mode};
use dicom_pipeline::workers::offsets::OffsetTracker;
use rand::seq::SliceRandom;
use rand::SeedableRng;

fn derive(c: &mut Criterion) {
    let spec = CtSpec {
        rows: 512,
        columns: 512,
        ..CtSpec::default()
    };
    let bytes = ct_file_bytes(&spec);
    let mut g = c.benchmark_group("derive/ct512_explicit_le");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    for (name, mode) in [("header_only", Mode::HeaderOnly), ("full", Mode::Full)] {
        g.bench_function(name, |b| {
            b.iter(|| derive_bytes(&bytes, mode, Limits::default()).expect("valid file"))
        });
    }
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

criterion_group!(benches, derive, tracker);
criterion_main!(benches);
