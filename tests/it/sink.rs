//! The ClickHouse sink against the real server: insert deduplication tokens, replays, and
//! synchronous inserts.

use std::time::Duration;

use dicom_pipeline::model::{ImageRecord, StoreRecord};
use dicom_pipeline::pipeline;
use dicom_pipeline::sink::clickhouse::ClickHouseSink;
use dicom_pipeline::sink::{Batch, Sink};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// A batch re-sent after a partial failure (the very same batch) is dropped by every table;
/// the same messages processed again (a replay: other `processed_at`) are written, and
/// `FINAL` collapses them to one logical row each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_dropped_and_a_replay_is_written() {
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
    let batch = |images: Vec<ImageRecord>, stores: Vec<StoreRecord>| {
        Batch {
            images,
            stores,
            ..Batch::default()
        }
        .seal()
    };

    // A first write of these rows, as another version (processed again a second later):
    // they go in. (The rows as read back may be exactly the batch the pipeline wrote, whose
    // tokens the tables already hold.)
    let second_version = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    let mut images = images;
    images
        .iter_mut()
        .for_each(|r| r.processed_at = second_version);
    let mut stores = stores;
    stores
        .iter_mut()
        .for_each(|r| r.processed_at = second_version);
    let first = batch(images.clone(), stores.clone());
    let (img0, store0) = (raw("dicom_image").await, raw("dicom_store").await);
    sink.write(&first).await.unwrap();
    assert_eq!(raw("dicom_image").await, img0 + u64::from(k));
    assert_eq!(raw("dicom_store").await, store0 + u64::from(k));

    // A retry of the same batch (its acknowledgement was lost): dropped by every table.
    sink.write(&first).await.unwrap();
    assert_eq!(raw("dicom_image").await, img0 + u64::from(k));
    assert_eq!(raw("dicom_store").await, store0 + u64::from(k));

    // The same messages processed again (a replay): other rows, written.
    let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(5);
    let mut again_images = images.clone();
    again_images.iter_mut().for_each(|r| r.processed_at = later);
    let mut again_stores = stores.clone();
    again_stores.iter_mut().for_each(|r| r.processed_at = later);
    let again = batch(again_images, again_stores);
    assert_eq!(again.dedup_token, first.dedup_token, "the same messages");
    assert_ne!(again.tokens, first.tokens, "other rows");
    sink.write(&again).await.unwrap();
    assert_eq!(raw("dicom_image").await, img0 + 2 * u64::from(k));
    assert_eq!(raw("dicom_store").await, store0 + 2 * u64::from(k));
    // Logical rows are unchanged: FINAL collapses every copy, the newer version wins.
    assert_eq!(
        count(&cfg, "SELECT count() FROM dicom_image FINAL").await,
        u64::from(k)
    );
    drop_database(&cfg).await;
}

/// The bug report: 5 files on one partition, one missing on the first pass (dead-lettered
/// `file_not_found`), 4 indexed. The file is restored and the input replayed — under a new
/// group, then under the first group after its offsets are reset to the start. Every replay
/// must index all 5. (With a token built from the input offsets alone, the replay's batch —
/// the same 5 offsets — was taken for a retry and dropped by ClickHouse: `run` counted 5
/// indexed while `dicom_image FINAL` held 4.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_a_dead_letter_indexes_the_restored_file() {
    let work = tempfile::tempdir().unwrap();
    let mut cfg = test_config(1, vec![work.path().to_path_buf()]);
    // One batch of all five messages, on every pass: the batching the report saw.
    cfg.sink.max_rows = 5;
    cfg.sink.flush_interval_ms = 2_000;
    let payloads = synth_messages(work.path(), "1.2.826.0.1.3680043.10.969", 5, 1);
    let missing = work.path().join("i3.dcm");
    let kept = std::fs::read(&missing).unwrap();
    std::fs::remove_file(&missing).unwrap();
    pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, Some(0), &payloads).await;

    let first = run_until_idle(&cfg).await;
    assert_eq!(
        (first.workers.indexed, first.workers.dead_lettered),
        (4, 1),
        "{first:?}"
    );
    assert_eq!(
        count(&cfg, "SELECT count() FROM dicom_image FINAL").await,
        4
    );
    assert_eq!(
        count(
            &cfg,
            "SELECT count() FROM dicom_dlq FINAL WHERE reason = 'file_not_found'"
        )
        .await,
        1
    );

    // The share is back: replay under a new group.
    std::fs::write(&missing, &kept).unwrap();
    let mut replay = cfg.clone();
    replay.kafka.group_id = format!("{}-replay", cfg.kafka.group_id);
    let second = run_until_idle(&replay).await;
    assert_eq!(second.workers.indexed, 5, "{second:?}");
    assert_eq!(
        count(&cfg, "SELECT count() FROM dicom_image FINAL").await,
        5,
        "the replay's rows were dropped as if they were a retry"
    );
    assert_eq!(
        count(
            &cfg,
            "SELECT count() FROM dicom_store FINAL WHERE status = 'indexed'"
        )
        .await,
        5,
        "every message's latest outcome is indexed"
    );

    // And under the first group, its offsets reset to the beginning (what an operator does
    // with `kafka-consumer-groups.sh --reset-offsets --to-earliest`, the group stopped).
    reset_to_earliest(&cfg);
    drop_and_recreate_tables(&cfg).await;
    let third = run_until_idle(&cfg).await;
    assert_eq!(third.workers.indexed, 5, "{third:?}");
    assert_eq!(
        count(&cfg, "SELECT count() FROM dicom_image FINAL").await,
        5
    );
    assert_eq!(lag(&cfg).await, 0);
    drop_database(&cfg).await;
}

/// A client of the server with nothing set (no database, no settings).
fn ch_server(cfg: &dicom_pipeline::config::Config) -> clickhouse::Client {
    clickhouse::Client::default().with_url(&cfg.clickhouse.url)
}

/// Commit offset 0 of every input partition for `cfg`'s group (the group must be stopped).
fn reset_to_earliest(cfg: &dicom_pipeline::config::Config) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .set("group.id", &cfg.kafka.group_id)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(&cfg.kafka.input_topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(&cfg.kafka.input_topic, p.id(), Offset::Offset(0))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

/// Empty the tables (as after restoring a lost database) so the third pass must write all.
async fn drop_and_recreate_tables(cfg: &dicom_pipeline::config::Config) {
    for table in ["dicom_image", "dicom_state", "dicom_store", "dicom_dlq"] {
        ch(cfg)
            .query(&format!("TRUNCATE TABLE {table}"))
            .execute()
            .await
            .unwrap();
    }
}

/// The sink's inserts are synchronous whatever the server's profile says: the insert
/// queries carry `async_insert=0` and `wait_for_async_insert=1`, so an acknowledged batch is
/// in the table (with async inserts the server answers before the rows are written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_are_pinned_synchronous() {
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(1, vec![work.path().to_path_buf()]);
    pipeline::ensure_schema(&cfg).await.unwrap();
    let (image, state, store) = dicom_pipeline::testing::indexed("s", "sop-sync");
    let batch = Batch {
        images: vec![image],
        states: vec![state],
        stores: vec![store],
        ..Batch::default()
    }
    .seal();
    // What the server would do with a client that sends nothing: ClickHouse 26.9 (chdb)
    // defaults to async_insert=1, async_insert_deduplicate=0 — acknowledged from a buffer,
    // and a deduplication token ignored.
    let sink = ClickHouseSink::new(&cfg.clickhouse);
    let settings =
        "SELECT toUInt8(getSetting('async_insert')), toUInt8(getSetting('wait_for_async_insert'))";
    let server_default = ch_server(&cfg)
        .query(settings)
        .fetch_one::<(u8, u8)>()
        .await
        .unwrap();
    eprintln!("server default (async_insert, wait_for_async_insert) = {server_default:?}");
    assert_eq!(
        sink.client()
            .query(settings)
            .fetch_one::<(u8, u8)>()
            .await
            .unwrap(),
        (0, 1),
        "the sink's client pins synchronous inserts"
    );
    sink.write(&batch).await.unwrap();
    // Written by the time write() returned: no flush of an async-insert buffer needed.
    assert_eq!(count(&cfg, "SELECT count() FROM dicom_image").await, 1);
    drop_database(&cfg).await;
}

/// A database made by an earlier version (dicom_image without protocol_name and the parsed
/// times, with non-null instance numbers) is upgraded in place by `schema`: its rows keep
/// their values, new rows get the new columns, and a second `schema` leaves nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_upgrades_a_database_made_by_an_earlier_version() {
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(1, vec![work.path().to_path_buf()]);
    let db = &cfg.clickhouse.database;
    let client = ch(&cfg);
    client
        .clone()
        .with_database("default")
        .query(&format!("CREATE DATABASE {db}"))
        .execute()
        .await
        .unwrap();
    let old = include_str!("../data/schema/clickhouse-dicom_image-before-attributes.sql")
        .replace("${DATABASE}", db);
    client.query(&old).execute().await.unwrap();
    client
        .query(&format!(
            "INSERT INTO {db}.dicom_image (tenant_id, sop_uid, header_digest, instance_number, \
             series_number, study_date, received_at, processed_at) \
             VALUES ('t', '1.2.3', 'old', 5, 0, '20200101', now64(3), now64(3))"
        ))
        .execute()
        .await
        .unwrap();

    pipeline::ensure_schema(&cfg).await.unwrap();
    let spec =
        dicom_pipeline::compute::synth::CtSpec::numbered("1.2.826.0.1.3680043.10.991", 1, 1, 1, 4);
    let file = work.path().join("new.dcm");
    std::fs::write(&file, dicom_pipeline::compute::synth::ct_file_bytes(&spec)).unwrap();
    publish(&cfg, Some(0), &[store_message(&file, "new")]).await;
    assert_eq!(run_until_idle(&cfg).await.workers.indexed, 1);

    let rows = client
        .query("SELECT ?fields FROM dicom_image FINAL ORDER BY sop_uid")
        .fetch_all::<ImageRecord>()
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let (old, new) = (&rows[0], &rows[1]);
    assert_eq!(old.sop_uid, "1.2.3");
    // An earlier version's value stays what it wrote; the new columns are empty.
    assert_eq!((old.instance_number, old.series_number), (Some(5), Some(0)));
    assert_eq!((old.protocol_name.as_str(), old.study_at), ("", None));
    assert_eq!(new.sop_uid, spec.sop_uid);
    assert_eq!(new.instance_number, Some(4));
    assert_eq!(new.protocol_name, "CHEST ROUTINE");
    assert!(new.study_at.is_some());

    // Applied again (every `schema` and `run` start does): no column rewrite is queued.
    pipeline::ensure_schema(&cfg).await.unwrap();
    let pending = count(
        &cfg,
        &format!("SELECT count() FROM system.mutations WHERE database = '{db}' AND NOT is_done"),
    )
    .await;
    assert_eq!(pending, 0);
    drop_database(&cfg).await;
}
