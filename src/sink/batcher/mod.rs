//! The task that owns the sink buffer.

use std::collections::hash_map::{Entry, HashMap};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

mod listener;

pub use listener::{FlushListener, FlushSummary};

use super::{Batch, Envelope, Sink, SinkItem, SinkReceiver};
use crate::config::SinkConfig;
use crate::metrics::Metrics;

/// Totals over the batcher's life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatcherStats {
    pub flushes: u64,
    pub messages: u64,
    pub write_retries: u64,
    /// Messages left unacknowledged because of a hard stop.
    pub abandoned: u64,
}

impl BatcherStats {
    fn count(&mut self, done: &FlushDone) {
        if done.acknowledged {
            self.flushes += 1;
            self.messages += done.messages as u64;
        } else {
            self.abandoned += done.messages as u64;
        }
    }
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

#[derive(Default)]
struct Buffer {
    envelopes: Vec<Envelope>,
    /// Messages in `envelopes` (an envelope holds a worker's chunk).
    messages: usize,
    bytes: usize,
    first_at: Option<Instant>,
}

impl Buffer {
    /// Whether the buffer is to be written now: full by rows or by bytes.
    fn full(&self, cfg: &SinkConfig) -> bool {
        self.messages >= cfg.max_rows || self.bytes >= cfg.max_bytes
    }

    /// Add an envelope. An envelope (a worker's chunk) is never split: its messages share one
    /// acknowledgement. One that would take the buffer past `max_rows` starts a new buffer;
    /// the old one's envelopes and message count come back, to be written now.
    fn push(&mut self, env: Envelope, max_rows: usize) -> Option<(Vec<Envelope>, usize)> {
        let old = (self.messages > 0 && self.messages + env.items.len() > max_rows).then(|| {
            let messages = self.messages;
            (self.take(), messages)
        });
        self.bytes += env.items.iter().map(SinkItem::approx_bytes).sum::<usize>();
        self.messages += env.items.len();
        self.first_at.get_or_insert_with(Instant::now);
        self.envelopes.push(env);
        old
    }

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
        let mut buf = Buffer::default();
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
            if free && buf.full(&self.cfg) {
                flushing_messages += buf.messages;
                flushing.push(self.flush(buf.take()));
                continue;
            }
            let deadline = buf.first_at.map(|t| t + interval);
            let mut start = false;
            tokio::select! {
                item = rx.rx.recv(), if open && free => match item {
                    Some(env) => {
                        if let Some((old, messages)) = buf.push(env, self.cfg.max_rows) {
                            flushing_messages += messages;
                            flushing.push(self.flush(old));
                        }
                        start = flushing.len() < slots && buf.full(&self.cfg);
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
                    stats.count(&done);
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
        self.finish(rx, buf.messages + flushing_messages, stats)
    }

    /// The totals, once the loop is over. Whatever is still buffered (`unwritten`), being
    /// written (hard stop) or queued is abandoned: its senders see the ack dropped and leave
    /// those offsets uncommitted.
    fn finish(
        &self,
        mut rx: SinkReceiver,
        unwritten: usize,
        mut stats: BatcherStats,
    ) -> BatcherStats {
        rx.rx.close();
        let mut queued = 0;
        while let Ok(env) = rx.rx.try_recv() {
            queued += env.items.len();
        }
        stats.abandoned += (unwritten + queued) as u64;
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
mod tests;
