//! The task that owns the sink buffer.

use std::collections::hash_map::{Entry, HashMap};
use std::time::{Duration, Instant};

use std::future::Future;

use tokio_util::sync::CancellationToken;

use super::{Batch, Envelope, Sink, SinkItem, SinkReceiver};
use crate::config::SinkConfig;
use crate::metrics::Metrics;
use crate::model::StateRecord;

/// Who hears about each batch besides the sink: the pipeline plugs in the Kafka publisher of
/// the series-state and audit topics (`crate::publish`); tests and tools plug in `()`.
pub trait FlushListener: Send + Sync + 'static {
    /// Publish a written batch's coalesced series states. The batch's messages are
    /// acknowledged only after this returns true (a state record is part of each message's
    /// completion); false only when `stop` (the hard stop) fired first.
    fn publish_states(
        &self,
        states: &[StateRecord],
        stop: &CancellationToken,
    ) -> impl Future<Output = bool> + Send;
    /// A batch was written and its messages acknowledged.
    fn flushed(&self, summary: &FlushSummary);
}

/// No one listens: nothing to publish.
impl FlushListener for () {
    async fn publish_states(&self, _: &[StateRecord], _: &CancellationToken) -> bool {
        true
    }
    fn flushed(&self, _: &FlushSummary) {}
}

/// One written batch, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushSummary {
    pub images: usize,
    pub states: usize,
    pub stores: usize,
    pub dead_letters: usize,
    /// Writes it took (1: no retry).
    pub attempts: u32,
    pub duration_ms: u64,
}

/// Totals over the batcher's life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatcherStats {
    pub flushes: u64,
    pub messages: u64,
    pub write_retries: u64,
    /// Messages left unacknowledged because of a hard stop.
    pub abandoned: u64,
}

pub struct Batcher<S, L = ()> {
    sink: S,
    cfg: SinkConfig,
    listener: L,
    /// Fired only when the drain deadline has passed: stop retrying and give up the buffer.
    hard_stop: CancellationToken,
    metrics: Metrics,
    /// Failed writes so far (every flush's, finished or not).
    write_retries: std::sync::atomic::AtomicU64,
}

struct Buffer {
    envelopes: Vec<Envelope>,
    /// Messages in `envelopes` (an envelope holds a worker's chunk).
    messages: usize,
    bytes: usize,
    first_at: Option<Instant>,
}

impl Buffer {
    /// The buffered envelopes, leaving the buffer empty.
    fn take(&mut self) -> Vec<Envelope> {
        self.messages = 0;
        self.bytes = 0;
        self.first_at = None;
        std::mem::take(&mut self.envelopes)
    }
}

impl<S: Sink> Batcher<S> {
    pub fn new(sink: S, cfg: SinkConfig, hard_stop: CancellationToken) -> Self {
        Batcher {
            sink,
            cfg,
            listener: (),
            hard_stop,
            metrics: Metrics::new(""),
            write_retries: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Tell `listener` about each written batch (and wait for its state records).
    pub fn with_listener<L: FlushListener>(self, listener: L) -> Batcher<S, L> {
        Batcher {
            sink: self.sink,
            cfg: self.cfg,
            listener,
            hard_stop: self.hard_stop,
            metrics: self.metrics,
            write_retries: self.write_retries,
        }
    }
}

impl<S: Sink, L: FlushListener> Batcher<S, L> {
    /// Count rows, write errors and state records in `metrics` (the pipeline's).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Run until every [`super::SinkHandle`] is dropped and the buffer is flushed, or until
    /// the hard stop fires.
    ///
    /// Up to `max_concurrent_flushes` batches are written at once, each owning its messages
    /// until it acknowledges them (in any order: the offset tracker commits only what is
    /// complete below). While every slot is taken, nothing new is taken in: the channel, and
    /// behind it the workers' in-flight windows, hold the back-pressure.
    pub async fn run(self, mut rx: SinkReceiver) -> BatcherStats {
        let mut stats = BatcherStats::default();
        let mut buf = Buffer {
            envelopes: Vec::new(),
            messages: 0,
            bytes: 0,
            first_at: None,
        };
        let interval = Duration::from_millis(self.cfg.flush_interval_ms);
        let slots = self.cfg.max_concurrent_flushes.max(1);
        let mut flushing = futures::stream::FuturesUnordered::new();
        // Messages inside unfinished flushes (abandoned if the hard stop cuts them off).
        let mut flushing_messages = 0usize;
        let mut open = true;
        while open || !flushing.is_empty() {
            let free = flushing.len() < slots;
            // A full buffer (an envelope that would not fit went into a fresh one) is
            // written as soon as a slot is free.
            if free && (buf.messages >= self.cfg.max_rows || buf.bytes >= self.cfg.max_bytes) {
                flushing_messages += buf.messages;
                flushing.push(self.flush(buf.take()));
                continue;
            }
            let deadline = buf.first_at.map(|t| t + interval);
            let mut start = false;
            tokio::select! {
                item = rx.rx.recv(), if open && free => match item {
                    Some(env) => {
                        // An envelope (a worker's chunk) is never split: its messages share
                        // one acknowledgement. One that would take the buffer past
                        // `max_rows` starts a new buffer, the old one is written now.
                        if buf.messages > 0 && buf.messages + env.items.len() > self.cfg.max_rows {
                            flushing_messages += buf.messages;
                            flushing.push(self.flush(buf.take()));
                        }
                        buf.bytes += env.items.iter().map(SinkItem::approx_bytes).sum::<usize>();
                        buf.messages += env.items.len();
                        buf.first_at.get_or_insert_with(Instant::now);
                        buf.envelopes.push(env);
                        start = flushing.len() < slots
                            && (buf.messages >= self.cfg.max_rows
                                || buf.bytes >= self.cfg.max_bytes);
                    }
                    None => {
                        open = false;
                        start = true;
                    }
                },
                _ = sleep_until_opt(deadline), if free => start = true,
                Some(done) = futures::StreamExt::next(&mut flushing), if !flushing.is_empty() => {
                    let done: FlushDone = done;
                    flushing_messages -= done.messages;
                    if done.acknowledged {
                        stats.flushes += 1;
                        stats.messages += done.messages as u64;
                    } else {
                        stats.abandoned += done.messages as u64;
                    }
                }
                _ = self.hard_stop.cancelled() => break,
            }
            if self.hard_stop.is_cancelled() {
                break;
            }
            if start && !buf.envelopes.is_empty() {
                flushing_messages += buf.messages;
                flushing.push(self.flush(buf.take()));
            }
        }
        drop(flushing);
        // Whatever is still buffered, being written (hard stop) or queued is abandoned: its
        // senders see the ack dropped and leave those offsets uncommitted.
        rx.rx.close();
        while let Ok(env) = rx.rx.try_recv() {
            buf.messages += env.items.len();
        }
        stats.abandoned += (buf.messages + flushing_messages) as u64;
        stats.write_retries = self
            .write_retries
            .load(std::sync::atomic::Ordering::Relaxed);
        if stats.abandoned > 0 {
            tracing::warn!(
                abandoned = stats.abandoned,
                "sink stopped with unwritten messages; they will be redelivered"
            );
        }
        stats
    }

    /// Write one batch (retrying until it is written or the hard stop fires), publish its
    /// state records, then acknowledge its messages.
    async fn flush(&self, envelopes: Vec<Envelope>) -> FlushDone {
        let started = Instant::now();
        let messages = envelopes.iter().map(|e| e.items.len()).sum();
        let mut acks = Vec::with_capacity(envelopes.len());
        let mut items = Vec::with_capacity(messages);
        for e in envelopes {
            acks.push(e.ack);
            items.extend(e.items);
        }
        let batch = build_batch(items);
        let mut done = FlushDone {
            messages,
            acknowledged: false,
        };
        // The state records go out while the rows are written (a resend after a failed
        // write is a duplicate state record, which consumers coalesce anyway).
        let (written, published) = tokio::join!(
            self.write_retrying(&batch),
            self.listener.publish_states(&batch.states, &self.hard_stop)
        );
        let Some(attempts) = written.filter(|_| published) else {
            return done; // hard stop: leave the batch unacknowledged
        };
        for ack in acks {
            // A dropped receiver means the worker gave up on that message; nothing to do.
            let _ = ack.send(());
        }
        done.acknowledged = true;
        let summary = FlushSummary {
            images: batch.images.len(),
            states: batch.states.len(),
            stores: batch.stores.len(),
            dead_letters: batch.dead_letters.len(),
            attempts,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        tracing::debug!(
            messages = done.messages,
            images = summary.images,
            states = summary.states,
            dead_letters = summary.dead_letters,
            attempts,
            duration_ms = summary.duration_ms,
            "sink batch flushed"
        );
        self.listener.flushed(&summary);
        done
    }
}

/// How one flush ended.
struct FlushDone {
    messages: usize,
    /// False: the hard stop fired first and the messages were left unacknowledged.
    acknowledged: bool,
}

impl<S: Sink, L: FlushListener> Batcher<S, L> {
    /// Write `batch`, retrying failed writes with a doubling delay; the attempts it took, or
    /// `None` when the hard stop fired first.
    async fn write_retrying(&self, batch: &Batch) -> Option<u32> {
        let mut attempts = 0u32;
        let mut delay = Duration::from_millis(self.cfg.retry_initial_ms);
        loop {
            attempts += 1;
            match self.sink.write(batch).await {
                Ok(()) => {
                    self.metrics.sink_rows([
                        batch.images.len(),
                        batch.states.len(),
                        batch.stores.len(),
                        batch.dead_letters.len(),
                    ]);
                    return Some(attempts);
                }
                Err(e) => {
                    // Counted here, not in the flush's result: a flush cut off by the hard
                    // stop never returns one.
                    self.write_retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.metrics.sink_error(e.is_retryable());
                    if e.is_retryable() {
                        tracing::warn!(error = %e, attempt = attempts, retry_in_ms = delay.as_millis() as u64, "sink write failed, retrying");
                    } else {
                        tracing::error!(error = %e, attempt = attempts, retry_in_ms = delay.as_millis() as u64, "sink write failed permanently; retrying until an operator fixes it");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.hard_stop.cancelled() => return None,
                    }
                    delay = (delay * 2).min(Duration::from_millis(self.cfg.retry_max_ms));
                }
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Split items into tables (moved, not copied), keeping one state record per series (the
/// last one's attributes, every SOP UID, the widest seen-interval).
fn build_batch(items: Vec<SinkItem>) -> Batch {
    let mut batch = Batch::default();
    let mut series: HashMap<(String, String, String, String), usize> = HashMap::new();
    for item in items {
        match item {
            SinkItem::Indexed {
                image,
                state,
                store,
            } => {
                batch.images.push(*image);
                batch.stores.push(*store);
                match series.entry(state.series_identity()) {
                    Entry::Occupied(at) => batch.states[*at.get()].absorb(&state),
                    Entry::Vacant(slot) => {
                        slot.insert(batch.states.len());
                        batch.states.push(*state);
                    }
                }
            }
            SinkItem::DeadLetter { dlq, store } => {
                batch.dead_letters.push(*dlq);
                batch.stores.push(*store);
            }
        }
    }
    batch.seal()
}

#[cfg(test)]
mod tests {
    use super::*;
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
            let task =
                tokio::spawn(Batcher::new(sink.clone(), cfg, CancellationToken::new()).run(rx));
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
}
