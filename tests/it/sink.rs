//! The ClickHouse sink against the real server: insert deduplication tokens.

use std::time::Duration;

use dicom_pipeline::model::{ImageRecord, StoreRecord};
use dicom_pipeline::pipeline;
use dicom_pipeline::sink::clickhouse::ClickHouseSink;
use dicom_pipeline::sink::{dedup_token, Batch, Sink};
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// A batch re-sent after a partial failure carries the same token and is dropped by every
/// table, even when its rows differ in `processed_at`; a batch of other messages (another
/// token) with the same rows is written — the token names the messages, not the content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_batch_is_dropped_by_its_token_and_other_messages_are_not() {
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(2, vec![work.path().to_path_buf()]);
    let k = 12u32;
    let payloads = synth_messages(work.path(), "1.2.826.0.1.3680043.10.992", k, 3);
    pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, None, &payloads).await;
    pipeline::run(
        cfg.clone(),
        Some(Duration::from_millis(1500)),
        CancellationToken::new(),
    )
    .await
    .unwrap();

    let client = ch(&cfg);
    let images: Vec<ImageRecord> = client
        .query("SELECT ?fields FROM dicom_image FINAL")
        .fetch_all()
        .await
        .unwrap();
    let stores: Vec<StoreRecord> = client
        .query("SELECT ?fields FROM dicom_store FINAL")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!((images.len(), stores.len()), (k as usize, k as usize));
    let raw = |table: &'static str| {
        let cfg = cfg.clone();
        async move { count(&cfg, &format!("SELECT count() FROM {table}")).await }
    };
    let sink = ClickHouseSink::new(&cfg.clickhouse);
    let batch = |images: Vec<ImageRecord>, stores: Vec<StoreRecord>| Batch {
        dedup_token: dedup_token(&stores),
        images,
        stores,
        ..Batch::default()
    };

    // As if these rows came from other messages: the pipeline may have written them in one
    // batch of the same offsets, i.e. under the very token this test would otherwise use.
    let mut stores = stores;
    stores.iter_mut().for_each(|r| r.kafka_offset += 2_000_000);
    // First write under this token: rows go in.
    let first = batch(images.clone(), stores.clone());
    let (img0, store0) = (raw("dicom_image").await, raw("dicom_store").await);
    sink.write(&first).await.unwrap();
    assert_eq!(raw("dicom_image").await, img0 + u64::from(k));
    assert_eq!(raw("dicom_store").await, store0 + u64::from(k));

    // The same messages again, re-derived (other processed_at): dropped by the token.
    let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(5);
    let mut again_images = images.clone();
    again_images.iter_mut().for_each(|r| r.processed_at = later);
    let mut again_stores = stores.clone();
    again_stores.iter_mut().for_each(|r| r.processed_at = later);
    let again = batch(again_images.clone(), again_stores.clone());
    assert_eq!(again.dedup_token, first.dedup_token);
    sink.write(&again).await.unwrap();
    assert_eq!(raw("dicom_image").await, img0 + u64::from(k));
    assert_eq!(raw("dicom_store").await, store0 + u64::from(k));

    // The same rows as other messages (one offset differs): a new token, written.
    again_stores[0].kafka_offset += 1_000_000;
    let other = batch(again_images, again_stores);
    assert_ne!(other.dedup_token, first.dedup_token);
    sink.write(&other).await.unwrap();
    assert_eq!(raw("dicom_image").await, img0 + 2 * u64::from(k));
    // Logical rows are unchanged: FINAL collapses every copy.
    assert_eq!(
        count(&cfg, "SELECT count() FROM dicom_image FINAL").await,
        u64::from(k)
    );
    drop_database(&cfg).await;
}
