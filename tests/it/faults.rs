//! Fault behaviour with real services: a ClickHouse outage mid-run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dicom_pipeline::pipeline;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// A TCP proxy in front of ClickHouse that can be cut: while cut, existing connections are
/// dropped and new ones are closed at once — to the pipeline, the server is down.
struct CuttableProxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl CuttableProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut client, _)) = accepted else { continue };
                        if !up2.load(Ordering::SeqCst) {
                            continue; // dropped: connection closed
                        }
                        let upstream = upstream.clone();
                        conns.spawn(async move {
                            if let Ok(mut server) = TcpStream::connect(&upstream).await {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        });
                    }
                    _ = cut2.notified() => conns.abort_all(),
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        CuttableProxy { addr, up, cut }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.cut.notify_one();
        }
    }
}

/// ClickHouse goes away mid-run: rows wait (retried with backoff), nothing is committed past
/// unsunk rows while it is down, and once it is back everything is indexed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_outage_loses_nothing_and_commits_nothing_unsunk() {
    let work = tempfile::tempdir().unwrap();
    let direct = test_config(2, vec![work.path().to_path_buf()]);
    let proxy = CuttableProxy::start(
        direct
            .clickhouse
            .url
            .trim_start_matches("http://")
            .to_string(),
    )
    .await;
    let mut cfg = direct.clone();
    cfg.clickhouse.url = format!("http://{}", proxy.addr);
    cfg.sink.max_rows = 25;
    cfg.sink.retry_max_ms = 500;
    cfg.pipeline.max_in_flight = 50;

    let n = 300u32;
    let payloads = synth_messages(work.path(), "1.2.826.0.1.3680043.10.994", n, 5);
    pipeline::ensure_schema(&cfg).await.unwrap();
    publish(&cfg, None, &payloads).await;

    let run = tokio::spawn(pipeline::run(
        cfg.clone(),
        Some(Duration::from_millis(1500)),
        CancellationToken::new(),
    ));
    let started = Instant::now();
    while count(&direct, "SELECT count() FROM dicom_store").await < 30 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no progress before the outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.set_up(false);
    let outage = Instant::now();
    let before = count(&direct, "SELECT count() FROM dicom_store FINAL").await;
    while outage.elapsed() < Duration::from_secs(4) {
        assert_commits_backed_by_rows(&direct, &cfg).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Nothing was written while it was down, and the pipeline is still waiting, not done.
    assert!(count(&direct, "SELECT count() FROM dicom_store FINAL").await <= before + 25);
    assert!(!run.is_finished(), "the pipeline gave up during the outage");
    proxy.set_up(true);

    let summary = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("finished after the outage")
        .unwrap()
        .unwrap();
    assert_eq!(summary.workers.abandoned, 0, "{summary:?}");
    assert!(
        summary.sink.write_retries > 0,
        "the outage was not noticed: {summary:?}"
    );
    assert_eq!(
        count(&direct, "SELECT count() FROM dicom_image FINAL").await,
        n as u64
    );
    assert_eq!(count(&direct, "SELECT count() FROM dicom_dlq").await, 0);
    assert_commits_backed_by_rows(&direct, &cfg).await;
    assert_eq!(lag(&cfg).await, 0);
    drop_database(&direct).await;
}
