//! The `[clickhouse]` section: the ClickHouse connection, used when
//! `sink.backend = "clickhouse"`.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// ClickHouse connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP endpoint (env `CLICKHOUSE_URL`).
    pub url: String,
    /// Database holding the tables; created by `schema`.
    pub database: String,
    /// User name.
    pub user: String,
    /// Password (redacted when printed).
    pub password: String,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "dicom".into(),
            user: "default".into(),
            password: String::new(),
        }
    }
}

impl ClickHouseConfig {
    /// The `[clickhouse]` checks (see [`Config::validate`](super::Config::validate)).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return bad(format!(
                "clickhouse.url `{}` must start with http:// or https://",
                self.url
            ));
        }
        if self.database.is_empty()
            || !self
                .database
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        {
            return bad(format!(
                "clickhouse.database `{}` must be non-empty [A-Za-z0-9_]",
                self.database
            ));
        }
        Ok(())
    }
}
