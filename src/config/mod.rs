//! The one configuration struct, loaded and validated once at start.
//!
//! Precedence (later wins): built-in defaults → TOML file (`--config`) → environment
//! (`DICOM_PIPELINE_<SECTION>__<KEY>`, e.g. `DICOM_PIPELINE_SINK__MAX_ROWS=5000` or
//! `DICOM_PIPELINE_DORIS__PASSWORD=…`, plus the conventional `KAFKA_BROKERS` and
//! `CLICKHOUSE_URL`) → command-line flags. Unknown keys in
//! any layer are rejected with the key's name. The result is passed down immutable.
//!
//! - `service.rs`: [`Config`] itself, the checks across sections, `run`'s extra checks, the
//!   redacted printout and the derived values (workers, limits, timeouts).
//! - `load.rs`: [`Config::load`] through the layers, and the flag [`Overrides`].
//! - `error.rs`: [`ConfigError`] and how figment's findings are told to the user.
//! - One file per section, each with its defaults and its own checks: `kafka.rs`,
//!   `clickhouse.rs`, `doris.rs`, `pipeline.rs`, `sink.rs`, `metrics.rs`, `privacy.rs`.

mod clickhouse;
mod doris;
mod error;
mod kafka;
mod load;
mod metrics;
mod pipeline;
mod privacy;
mod service;
mod sink;

pub use clickhouse::ClickHouseConfig;
pub use doris::DorisConfig;
pub use error::ConfigError;
pub use kafka::{GroupProtocol, KafkaConfig};
pub use load::Overrides;
pub use metrics::MetricsConfig;
pub use pipeline::PipelineConfig;
pub use privacy::{PrivacyConfig, MIN_PSEUDONYM_KEY_BYTES};
pub use service::Config;
pub use sink::{SinkBackend, SinkConfig};
