//! What only a real Apache Kafka has: transactional input (commit markers, aborted
//! transactions) and a replicated three-node cluster losing partition leaders mid-run.

use std::collections::BTreeSet;
use std::time::Duration;

use dicom_pipeline::compute::synth::CtSpec;
use dicom_pipeline::pipeline;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use crate::brokers::{broker_kind, BrokerKind};
use crate::common::*;

/// Publish `batches` to the input topic, each batch in a transaction of its own that is
/// committed (`true`) or aborted (`false`), round-robin over the partitions.
fn publish_transactions(brokers: &str, topic: &str, batches: Vec<(Vec<Vec<u8>>, bool)>) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("transactional.id", format!("it-tx-{}", random_suffix()))
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    let t = Duration::from_secs(30);
    producer.init_transactions(t).unwrap();
    let mut n = 0usize;
    for (payloads, commit) in batches {
        producer.begin_transaction().unwrap();
        for p in &payloads {
            let key = format!("k{n}");
            n += 1;
            producer
                .send(BaseRecord::to(topic).key(&key).payload(p))
                .map_err(|(e, _)| e)
                .unwrap();
        }
        if commit {
            producer.commit_transaction(t).unwrap();
        } else {
            producer.flush(t).unwrap();
            producer.abort_transaction(t).unwrap();
        }
    }
}

/// A store topic written by a transactional producer: every partition ends with a commit
/// marker, an offset no consumer ever receives, and an aborted transaction leaves records
/// that a `read_committed` consumer skips. The group's commit must still reach the end
/// offset: lag 0 in the lag reader and in `status`, `--until-idle` ends, and only the
/// committed transactions' messages are indexed. (Before the pipeline committed past what
/// the consumer stepped over, each partition kept a lag of 1 and `--until-idle` never ended.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_input_is_committed_to_the_end() {
    if broker_kind() == BrokerKind::Tansu {
        eprintln!("skipped: tansu 0.6.0 has no transactions");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let cfg = test_config(3, vec![work.path().to_path_buf()]);
    let root = "1.2.826.0.1.3680043.10.970";
    let good = synth_messages(work.path(), root, 24, 4);
    // Messages of the aborted transaction name files that do not exist: read, they would be
    // dead letters.
    let aborted: Vec<Vec<u8>> = (0..6)
        .map(|i| store_message(&work.path().join(format!("ghost{i}.dcm")), &format!("g{i}")))
        .collect();
    pipeline::ensure_schema(&cfg).await.unwrap();
    let (brokers, topic) = (cfg.kafka.brokers.clone(), cfg.kafka.input_topic.clone());
    let batches = vec![
        (good[..10].to_vec(), true),
        (aborted, false),
        (good[10..].to_vec(), true),
    ];
    tokio::task::spawn_blocking(move || publish_transactions(&brokers, &topic, batches))
        .await
        .unwrap();

    let summary = run_until_idle(&cfg).await;
    assert_eq!(summary.workers.indexed, 24, "{summary:?}");
    assert_eq!(summary.workers.dead_lettered, 0, "{summary:?}");
    for l in lags(&cfg).await {
        assert_eq!(l.lag, 0, "partition {l:?}");
        assert_eq!(l.committed, Some(l.high), "partition {l:?}");
    }
    let want: BTreeSet<String> = (1..=24)
        .map(|i| CtSpec::numbered(root, 1, 1, i % 4, i).sop_uid)
        .collect();
    let got: BTreeSet<String> = image_rows(&cfg)
        .await
        .into_iter()
        .map(|r| r.sop_uid)
        .collect();
    assert_eq!(got, want);
    assert_eq!(count(&cfg, "SELECT count() FROM dicom_dlq").await, 0);

    // `status` reads the same from the broker: no stuck 1.
    let mut status = bin();
    kafka_env(&mut status, &cfg)
        .env("CLICKHOUSE_URL", &cfg.clickhouse.url)
        .env(
            "DICOM_PIPELINE_CLICKHOUSE__DATABASE",
            &cfg.clickhouse.database,
        )
        .args(["status", "--json"]);
    let out = succeeded(status).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["input"]["lag"], 0, "{json}");
    drop_database(&cfg).await;
}
