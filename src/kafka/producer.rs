//! The process's producer: librdkafka's `BaseProducer` with acknowledgements delivered to
//! futures, and one thread that serves its event queue.
//!
//! rust-rdkafka's `FutureProducer` does the same with a thread that calls `poll(100 ms)` in a
//! loop. Each of those polls spins through its last millisecond (rdkafka 0.39 truncates the
//! remaining time to whole milliseconds and polls again with 0 until the deadline), which cost
//! an idle pipeline 9 ms of CPU per second (docs/BENCHMARKS.md, "Idle cost"). Here the thread
//! blocks for [`POLL_WINDOW`] at a time: an acknowledgement still wakes it at once (the poll
//! returns as soon as an event is queued), and the spin happens once per window.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::FromClientConfig;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, ToBytes};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message};
use tokio::sync::oneshot;

/// How long the serving thread blocks in one poll. It decides how often the thread wakes with
/// nothing to do (and spins for up to a millisecond), and how long it outlives the last handle.
pub const POLL_WINDOW: Duration = Duration::from_secs(1);

/// How long to wait before retrying a record that found librdkafka's local queue full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(50);

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
}

type Ack = Result<Delivery, KafkaError>;

/// Hands each delivery report to the future waiting for it.
pub struct AckContext;

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<oneshot::Sender<Ack>>;

    fn delivery(&self, result: &DeliveryResult<'_>, tx: Self::DeliveryOpaque) {
        let ack = match result {
            Ok(m) => Ok(Delivery {
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err((e, _)) => Err(e.clone()),
        };
        // The sender is gone when its caller stopped waiting (cancelled): nothing to tell.
        let _ = tx.send(ack);
    }
}

/// A cheap-to-clone handle to the process's producer. The serving thread stops within
/// [`POLL_WINDOW`] after the last handle is dropped, and flushes what is still queued as
/// librdkafka's producer is destroyed.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

struct Shared {
    base: Arc<BaseProducer<AckContext>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl FromClientConfig for Producer {
    /// Create the producer and start its serving thread.
    fn from_config(config: &ClientConfig) -> KafkaResult<Self> {
        let base: Arc<BaseProducer<AckContext>> = Arc::new(config.create_with_context(AckContext)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_base, thread_stop) = (base.clone(), stop.clone());
        std::thread::Builder::new()
            .name("dp-producer".into())
            .spawn(move || serve(&thread_base, &thread_stop))
            .map_err(|e| KafkaError::ClientCreation(format!("producer thread: {e}")))?;
        Ok(Self {
            shared: Arc::new(Shared { base, stop }),
        })
    }
}

impl Producer {
    /// Queue one record and wait for the broker's acknowledgement. A full local queue is
    /// retried until `queue_timeout` has passed; librdkafka's own delivery timeout
    /// (`message.timeout.ms`) bounds the wait after that. Dropping the future does not
    /// withdraw a queued record.
    pub async fn send<K, P>(
        &self,
        topic: &str,
        key: Option<&K>,
        payload: &P,
        queue_timeout: Duration,
    ) -> Result<Delivery, KafkaError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(tx)).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match self.shared.base.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if started.elapsed() < queue_timeout =>
                {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
        // The context always answers (delivered, failed, or purged when the producer is
        // destroyed); a dropped sender would mean the report was lost.
        rx.await.unwrap_or(Err(KafkaError::Canceled))
    }

    /// Connect and learn `topic`'s partition leaders now, so the first records are not the
    /// ones that wait for it (blocking, up to `timeout`).
    pub fn warm_up(&self, topic: &str, timeout: Duration) -> KafkaResult<()> {
        self.shared
            .base
            .client()
            .fetch_metadata(Some(topic), timeout)
            .map(|_| ())
    }

    /// Wait up to `timeout` for every queued record to be acknowledged (blocking).
    pub fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        self.shared.base.flush(timeout)
    }
}

/// The serving thread: deliver reports until the last handle is gone.
fn serve(base: &BaseProducer<AckContext>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        base.poll(POLL_WINDOW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;

    fn mock_producer<C: ClientContext>(cluster: &MockCluster<'_, C>) -> Producer {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", cluster.bootstrap_servers())
            .set("linger.ms", "0")
            .set("message.timeout.ms", "2000");
        cfg.create::<Producer>().expect("producer")
    }

    #[tokio::test]
    async fn acknowledgements_arrive_in_order_with_their_offsets() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 1, 1).expect("topic");
        let producer = mock_producer(&cluster);
        let mut offsets = Vec::new();
        for i in 0..5u8 {
            let d = producer
                .send("t", Some("k"), &[i][..], Duration::from_secs(1))
                .await
                .expect("delivered");
            offsets.push(d.offset);
        }
        assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_refused_record_fails_its_own_future() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 1, 1).expect("topic");
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", cluster.bootstrap_servers())
            .set("message.max.bytes", "1000");
        let producer = cfg.create::<Producer>().expect("producer");
        let big = vec![0u8; 5_000];
        let err = producer
            .send::<str, _>("t", None, &big[..], Duration::from_secs(1))
            .await
            .expect_err("too large");
        assert_eq!(
            err,
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
        );
        // The producer still works after a refusal.
        producer
            .send::<str, _>("t", None, &b"ok"[..], Duration::from_secs(1))
            .await
            .expect("delivered");
    }

    #[tokio::test]
    async fn an_unreachable_broker_fails_the_future_after_the_delivery_timeout() {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", "127.0.0.1:1")
            .set("message.timeout.ms", "300")
            .set("log_level", "0");
        let producer = cfg.create::<Producer>().expect("producer");
        let err = producer
            .send::<str, _>("t", None, &b"x"[..], Duration::from_secs(1))
            .await
            .expect_err("times out");
        assert_eq!(
            err,
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)
        );
    }

    #[test]
    fn warming_up_learns_the_topic_or_says_why_not() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 3, 1).expect("topic");
        let producer = mock_producer(&cluster);
        producer
            .warm_up("t", Duration::from_secs(5))
            .expect("metadata of a reachable cluster");

        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", "127.0.0.1:1")
            .set("log_level", "0");
        let unreachable = cfg.create::<Producer>().expect("producer");
        let started = Instant::now();
        assert!(unreachable
            .warm_up("t", Duration::from_millis(300))
            .is_err());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "bounded by its timeout"
        );
    }

    #[test]
    fn the_serving_thread_stops_after_the_last_handle() {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", "127.0.0.1:1")
            .set("log_level", "0");
        let producer = cfg.create::<Producer>().expect("producer");
        let base = Arc::downgrade(&producer.shared.base);
        let clone = producer.clone();
        drop(producer);
        assert!(base.upgrade().is_some(), "a clone still holds it");
        drop(clone);
        let deadline = Instant::now() + POLL_WINDOW * 3;
        while base.upgrade().is_some() {
            assert!(Instant::now() < deadline, "the thread outlived its window");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
