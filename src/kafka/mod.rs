//! Kafka: client construction and topic administration (`client`), and the process's producer
//! (`producer`).
//!
//! Every client is built by [`client_config`] (brokers + the `kafka.extra` passthrough), so TLS
//! and SASL settings apply everywhere. Producers and consumers are created once per process or
//! worker and cloned where needed — never per message or per batch.

mod client;
mod producer;

pub use client::*;
pub use producer::{Delivery, Producer, POLL_WINDOW};
