//! The `[metrics]` section: where the Prometheus and health endpoint listens.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The HTTP endpoint serving `/metrics`, `/healthz` and `/readyz` while `run` runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// host:port to listen on (port 0: any free port, logged at start); empty disables the
    /// endpoint. The default stays on loopback; set `0.0.0.0:9090` to be scraped from
    /// elsewhere.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9090".into(),
        }
    }
}

impl MetricsConfig {
    /// The `[metrics]` check (see [`Config::validate`](super::Config::validate)).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let listen = &self.listen;
        if !listen.is_empty()
            && !listen
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        {
            return bad(format!(
                "metrics.listen `{listen}` must be host:port (e.g. 127.0.0.1:9090), or empty to disable"
            ));
        }
        Ok(())
    }
}
