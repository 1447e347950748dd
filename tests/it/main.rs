//! Integration tests against the real broker (Apache Kafka 4.4, or tansu with
//! `DP_BROKER=tansu`) and ClickHouse started by `scripts/dev/services.sh up`. Hosts come from `KAFKA_BROKERS` / `CLICKHOUSE_URL` (local
//! defaults); every test uses its own random topics, group and database.

mod backfill;
mod brokers;
mod cli;
mod common;
mod compute;
mod doris;
mod faults;
mod first_hour;
mod hostile;
mod kafka;
mod layout;
mod ops;
mod phi;
mod pipeline;
mod sink;
mod verify;
