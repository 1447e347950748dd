//! The batcher against fake sinks: envelopes, flush triggers, retries, concurrency, the
//! listener and the hard stop.

use super::*;
use crate::model::StateRecord;
use crate::sink::{SinkError, SinkHandle};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Records batches; fails the first `fail_first` writes.
#[derive(Clone, Default)]
struct FakeSink {
    batches: Arc<Mutex<Vec<Batch>>>,
    fail_first: Arc<AtomicUsize>,
}

impl Sink for FakeSink {
    async fn write(&self, batch: &Batch) -> Result<(), SinkError> {
        if self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SinkError::Closed);
        }
        self.batches.lock().unwrap().push(batch.clone());
        Ok(())
    }
    async fn indexed_files(
        &self,
        _: &str,
        _: &[&str],
    ) -> Result<Vec<crate::sink::IndexedFile>, SinkError> {
        Ok(Vec::new())
    }
}

fn item(series: &str, sop: &str) -> SinkItem {
    let (image, state, store) = crate::testing::indexed(series, sop);
    SinkItem::Indexed {
        image: Box::new(image),
        state: Box::new(state),
        store: Box::new(store),
    }
}

/// Submit every item from its own task, as the workers' message tasks do.
fn submit_all(
    handle: &SinkHandle,
    items: impl IntoIterator<Item = SinkItem>,
) -> Vec<tokio::task::JoinHandle<Result<(), SinkError>>> {
    items
        .into_iter()
        .map(|it| {
            let h = handle.clone();
            tokio::spawn(async move { h.submit(it).await })
        })
        .collect()
}

fn cfg(max_rows: usize) -> SinkConfig {
    SinkConfig {
        max_rows,
        flush_interval_ms: 50,
        retry_initial_ms: 1,
        retry_max_ms: 5,
        ..SinkConfig::default()
    }
}

/// Chunks (several messages in one envelope, one acknowledgement) are never split, and
/// one that would take a batch past `max_rows` goes into the next batch: with chunks no
/// larger than `max_rows`, no batch is.
#[tokio::test]
async fn chunks_stay_whole_and_batches_stay_within_max_rows() {
    let sink = FakeSink::default();
    let (handle, rx) = SinkHandle::channel(16);
    let batcher = Batcher::new(sink.clone(), cfg(4), CancellationToken::new());
    let task = tokio::spawn(batcher.run(rx));
    let chunk = |sops: &[&str]| sops.iter().map(|o| item("s", o)).collect::<Vec<_>>();
    // In order: 2, then 3 (2 + 3 > 4: a new batch), then 1 (3 + 1 = 4: full).
    let chunks = [chunk(&["a", "b"]), chunk(&["c", "d", "e"]), chunk(&["f"])];
    let mut acks = Vec::new();
    for c in chunks {
        let h = handle.clone();
        acks.push(tokio::spawn(async move { h.submit_all(c).await }));
        tokio::task::yield_now().await;
    }
    for a in acks {
        a.await.unwrap().unwrap();
    }
    drop(handle);
    let stats = task.await.unwrap();
    assert_eq!(stats.messages, 6);
    let batches = sink.batches.lock().unwrap();
    let sizes: Vec<usize> = batches.iter().map(|b| b.images.len()).collect();
    assert!(sizes.iter().all(|&n| n <= 4), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 6);
    for b in batches.iter() {
        let sops: Vec<&str> = b.images.iter().map(|i| i.sop_uid.as_str()).collect();
        // c, d and e always land together.
        let cde = sops.iter().filter(|s| ["c", "d", "e"].contains(s)).count();
        assert!(cde == 0 || cde == 3, "{sops:?}");
    }
}

#[tokio::test]
async fn coalesces_state_per_series_and_acks_after_write() {
    let sink = FakeSink::default();
    let (handle, rx) = SinkHandle::channel(16);
    let batcher = Batcher::new(sink.clone(), cfg(4), CancellationToken::new());
    let task = tokio::spawn(batcher.run(rx));
    let items = [("s1", "a"), ("s1", "b"), ("s2", "c"), ("s1", "d")].map(|(s, o)| item(s, o));
    for s in submit_all(&handle, items) {
        s.await.unwrap().unwrap();
    }
    drop(handle);
    let stats = task.await.unwrap();
    assert_eq!(stats.messages, 4);
    let batches = sink.batches.lock().unwrap();
    let images: usize = batches.iter().map(|b| b.images.len()).sum();
    assert_eq!(images, 4);
    // one batch of 4: s1 appears once, with the last instance's attributes
    assert_eq!(batches.len(), 1);
    let s1: Vec<_> = batches[0]
        .states
        .iter()
        .filter(|s| s.series_uid == "s1")
        .collect();
    assert_eq!(s1.len(), 1);
    assert_eq!(s1[0].study_description, "d");
    assert_eq!(batches[0].states.len(), 2);
}

/// Records what the batcher tells it; `refuse` plays a hard stop during the publish.
#[derive(Clone, Default)]
struct Listener {
    states: Arc<Mutex<Vec<String>>>,
    summaries: Arc<Mutex<Vec<FlushSummary>>>,
    refuse: bool,
}

impl FlushListener for Listener {
    async fn publish_states(&self, states: &[StateRecord], _: &CancellationToken) -> bool {
        let mut seen = self.states.lock().unwrap();
        seen.extend(states.iter().map(|s| s.series_uid.clone()));
        !self.refuse
    }
    fn flushed(&self, summary: &FlushSummary) {
        self.summaries.lock().unwrap().push(*summary);
    }
}

/// The listener gets each written batch's coalesced states, then its summary; a publish
/// that ends by the hard stop leaves the batch's messages unacknowledged.
#[tokio::test]
async fn the_listener_hears_each_batch_and_holds_its_acknowledgement() {
    for refuse in [false, true] {
        let listener = Listener {
            refuse,
            ..Listener::default()
        };
        let (handle, rx) = SinkHandle::channel(16);
        let batcher = Batcher::new(FakeSink::default(), cfg(3), CancellationToken::new())
            .with_listener(listener.clone());
        let task = tokio::spawn(batcher.run(rx));
        let items = [("s1", "a"), ("s1", "b"), ("s2", "c")].map(|(s, o)| item(s, o));
        let acks: Vec<_> = submit_all(&handle, items);
        drop(handle);
        let stats = task.await.unwrap();
        let acked = futures::future::join_all(acks).await;
        let mut states = listener.states.lock().unwrap().clone();
        states.sort();
        assert_eq!(states, ["s1", "s2"]);
        let summaries = listener.summaries.lock().unwrap().clone();
        if refuse {
            assert!(acked.iter().all(|r| r.as_ref().unwrap().is_err()));
            assert_eq!(stats.abandoned, 3);
            assert!(summaries.is_empty());
        } else {
            assert!(acked.iter().all(|r| r.as_ref().unwrap().is_ok()));
            assert_eq!(summaries.len(), 1);
            assert_eq!((summaries[0].images, summaries[0].states), (3, 2));
            assert_eq!((summaries[0].stores, summaries[0].attempts), (3, 1));
        }
    }
}

#[tokio::test]
async fn flushes_on_time_and_retries_failed_writes() {
    let sink = FakeSink::default();
    sink.fail_first.store(3, Ordering::SeqCst);
    let (handle, rx) = SinkHandle::channel(16);
    let task =
        tokio::spawn(Batcher::new(sink.clone(), cfg(1000), CancellationToken::new()).run(rx));
    // a single message, far below max_rows: only the timer can flush it
    handle.submit(item("s", "a")).await.unwrap();
    drop(handle);
    let stats = task.await.unwrap();
    assert_eq!(stats.write_retries, 3);
    assert_eq!(sink.batches.lock().unwrap().len(), 1);
}

/// Counts the writes in progress at once; each takes 50 ms.
#[derive(Clone, Default)]
struct SlowSink {
    active: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    written: Arc<AtomicUsize>,
}

impl Sink for SlowSink {
    async fn write(&self, batch: &Batch) -> Result<(), SinkError> {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.active.fetch_sub(1, Ordering::SeqCst);
        self.written.fetch_add(batch.stores.len(), Ordering::SeqCst);
        Ok(())
    }
    async fn indexed_files(
        &self,
        _: &str,
        _: &[&str],
    ) -> Result<Vec<crate::sink::IndexedFile>, SinkError> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn writes_at_most_max_concurrent_flushes_batches_at_once() {
    for slots in [1, 2, 3] {
        let sink = SlowSink::default();
        let (handle, rx) = SinkHandle::channel(64);
        let cfg = SinkConfig {
            max_concurrent_flushes: slots,
            ..cfg(1)
        };
        let task = tokio::spawn(Batcher::new(sink.clone(), cfg, CancellationToken::new()).run(rx));
        let items = (0..8).map(|i| item("s", &format!("sop{i}")));
        for s in submit_all(&handle, items) {
            s.await.unwrap().unwrap();
        }
        drop(handle);
        let stats = task.await.unwrap();
        assert_eq!((stats.flushes, stats.messages), (8, 8), "{slots} slots");
        assert_eq!(sink.written.load(Ordering::SeqCst), 8);
        // Every message is its own batch (max_rows 1) and they arrive together: the
        // slots are all used, and never exceeded.
        assert_eq!(sink.most.load(Ordering::SeqCst), slots, "{slots} slots");
    }
}

#[tokio::test]
async fn hard_stop_abandons_the_batches_being_written() {
    let sink = FakeSink::default();
    sink.fail_first.store(usize::MAX, Ordering::SeqCst);
    let (handle, rx) = SinkHandle::channel(16);
    let stop = CancellationToken::new();
    let cfg = SinkConfig {
        max_concurrent_flushes: 2,
        ..cfg(1)
    };
    let task = tokio::spawn(Batcher::new(sink.clone(), cfg, stop.clone()).run(rx));
    // Two batches retrying in their slots, a third waiting in the channel.
    let pending = submit_all(&handle, ["a", "b", "c"].map(|sop| item("s", sop)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.cancel();
    for p in pending {
        let res = p.await.unwrap();
        assert!(matches!(res, Err(SinkError::Abandoned)), "{res:?}");
    }
    let stats = task.await.unwrap();
    assert_eq!((stats.abandoned, stats.flushes), (3, 0));
    // The failed attempts of flushes the hard stop cut off still count.
    assert!(stats.write_retries >= 2, "{stats:?}");
}

#[tokio::test]
async fn hard_stop_abandons_instead_of_acknowledging() {
    let sink = FakeSink::default();
    sink.fail_first.store(usize::MAX, Ordering::SeqCst);
    let (handle, rx) = SinkHandle::channel(16);
    let stop = CancellationToken::new();
    let task = tokio::spawn(Batcher::new(sink.clone(), cfg(1), stop.clone()).run(rx));
    let h = handle.clone();
    let pending = tokio::spawn(async move { h.submit(item("s", "a")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.cancel();
    let res = pending.await.unwrap();
    assert!(matches!(res, Err(SinkError::Abandoned)), "{res:?}");
    let stats = task.await.unwrap();
    assert_eq!(stats.abandoned, 1);
    assert!(sink.batches.lock().unwrap().is_empty());
    // and a closed sink refuses new work
    assert!(matches!(
        handle.submit(item("s", "b")).await,
        Err(SinkError::Closed)
    ));
}
