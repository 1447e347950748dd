//! Criterion benches of the pure parts: DICOM derivation per mode, the watermark tracker and
//! record encoding (JSON for the topics, RowBinary for ClickHouse).
//! Run: `cargo bench --bench core` (HTML report under target/criterion).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dicom_pipeline::compute::synth::{ct_file_bytes, CtSpec, SynthSyntax};
use dicom_pipeline::compute::{
    derive_bytes, derive_bytes_object_path, summarise_via_generic_decode, Limits, Mode,
};
use dicom_pipeline::config::ClickHouseConfig;
use dicom_pipeline::model::{ImageRecord, SourceOffset};
use dicom_pipeline::records::records;
use dicom_pipeline::sink::clickhouse::service::server_client;
use dicom_pipeline::testing::store_meta;
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
    let dir = std::env::var("DP_SAMPLES_DIR").unwrap_or_else(|_| ".var/samples".into());
    let files = [
        ("jpeg_baseline_mr", "pydicom/SC_rgb_jpeg_dcmtk.dcm"),
        ("jpeg_lossless_16bit", "pydicom-data/JPEG-LL.dcm"),
        ("jpeg_ls_mr", "pydicom/MR_small_jpeg_ls_lossless.dcm"),
        ("j2k_lossless_ct512", "pydicom-data/693_J2KR.dcm"),
    ];
    for (name, rel) in files {
        let Ok(bytes) = std::fs::read(std::path::Path::new(&dir).join(rel)) else {
            eprintln!("skipping {name}: {rel} not under {dir} (scripts/dev/fetch-samples.sh)");
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
                for p in 0..8 {
                    t.assign(p);
                }
                let mut tickets: Vec<_> = (0..N)
                    .filter_map(|o| t.dispatch((o % 8) as i32, o / 8))
                    .collect();
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

/// Records as the workers make them from a full-mode 512² CT derivation: the image and state
/// records as JSON (what goes to the topics), and 1,000 `dicom_image` rows through the
/// ClickHouse client (RowBinary, LZ4 as the sink sends them) into an HTTP server on loopback
/// that reads and discards the body: the client side of a flush, without ClickHouse's work.
fn encode(c: &mut Criterion) {
    let bytes = ct_file_bytes(&CtSpec {
        rows: 512,
        columns: 512,
        ..CtSpec::default()
    });
    let derived = derive_bytes(&bytes, Mode::Full, Limits::default()).expect("valid file");
    let now = time::OffsetDateTime::now_utc();
    let meta = store_meta(
        "3f1c2d9e-6a53-4d0b-9a56-0c1f3b2e7d41",
        "tenant-a",
        "/archive/2026/12/01/ct/1.2.826.0.1.3680043.10.7.1.1.dcm",
        bytes.len() as u64,
        now,
    );
    let src = SourceOffset {
        topic: "dicom.store".into(),
        partition: 3,
        offset: 123_456,
    };
    let (image, state) = records(&meta, derived, &src, now);
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("image_record_json", |b| {
        b.iter(|| serde_json::to_vec(&image).expect("plain data"))
    });
    g.bench_function("state_record_json", |b| {
        b.iter(|| serde_json::to_vec(&state).expect("plain data"))
    });

    const ROWS: usize = 1_000;
    let rows: Vec<ImageRecord> = (0..ROWS)
        .map(|i| {
            let mut r = image.clone();
            r.sop_uid = format!("{}.{i}", image.sop_uid);
            r.kafka_offset = i as i64;
            r
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = rt.block_on(discarding_http_server());
    // The sink's own client (TCP_NODELAY, keep-alive, LZ4); validation off, since it would
    // first ask the server for the table's schema.
    let client = server_client(&ClickHouseConfig {
        url,
        ..ClickHouseConfig::default()
    })
    .with_validation(false);
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("dicom_image_rowbinary_1000_rows", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut insert = client
                    .insert::<ImageRecord>("dicom_image")
                    .await
                    .expect("insert");
                for r in &rows {
                    insert.write(r).await.expect("write");
                }
                insert.end().await.expect("end");
            })
        })
    });
    g.finish();
}

/// An HTTP/1.1 server on 127.0.0.1 that reads every request body and answers 200 with an
/// empty body; its URL.
async fn discarding_http_server() -> String {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async {
                        let _ = req.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Empty::<bytes::Bytes>::new(),
                        ))
                    },
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

criterion_group!(
    benches,
    derive,
    pixels,
    derive_compressed,
    digests,
    tracker,
    encode
);
criterion_main!(benches);
