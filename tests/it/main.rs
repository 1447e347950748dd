//! Integration tests against the real broker (tansu) and ClickHouse started by
//! `scripts/services.sh up`. Hosts come from `KAFKA_BROKERS` / `CLICKHOUSE_URL` (local
//! defaults); every test uses its own random topics, group and database.

mod backfill;
mod cli;
mod common;
mod compute;
mod doris;
mod faults;
mod ops;
mod phi;
mod pipeline;
mod sink;
