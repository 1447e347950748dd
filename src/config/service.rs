//! [`Config`], the whole service's configuration: its sections, the checks every command
//! runs (one per section, in [`Config::validate`]), the extra checks of `run`, the redacted
//! printout, and the values the rest of the crate derives from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    ClickHouseConfig, ConfigError, DorisConfig, KafkaConfig, MetricsConfig, PipelineConfig,
    PrivacyConfig, SinkBackend, SinkConfig,
};
use crate::compute::Limits;

/// Everything the service needs to know.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Kafka-compatible broker and topics.
    pub kafka: KafkaConfig,
    /// ClickHouse connection (used when `sink.backend = "clickhouse"`).
    pub clickhouse: ClickHouseConfig,
    /// Apache Doris connection (used when `sink.backend = "doris"`).
    pub doris: DorisConfig,
    /// Worker behaviour.
    pub pipeline: PipelineConfig,
    /// Batching sink behaviour.
    pub sink: SinkConfig,
    /// The Prometheus / health endpoint.
    pub metrics: MetricsConfig,
    /// Pseudonymization of patient identifiers.
    pub privacy: PrivacyConfig,
}

impl Config {
    /// Checks that hold for every command: each section's own, then the ones across sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kafka.validate()?;
        self.clickhouse.validate()?;
        self.doris.validate()?;
        self.metrics.validate()?;
        self.privacy.validate()?;
        self.pipeline.validate()?;
        // Across sections: the shutdown drain must end before the broker expires the session.
        let (p, k) = (&self.pipeline, &self.kafka);
        if p.drain_timeout_ms >= k.session_timeout_ms {
            return Err(ConfigError::Invalid(format!(
                "pipeline.drain_timeout_ms ({}) must be below kafka.session_timeout_ms ({})",
                p.drain_timeout_ms, k.session_timeout_ms
            )));
        }
        self.sink.validate()
    }

    /// Extra checks for `run`: at least one storage root, each an existing directory. Roots
    /// are made absolute, not canonical: the storage layer records each root's real path and
    /// identity itself, and accepts file paths under the configured path too (a root reached
    /// through a symlink).
    pub fn validate_for_run(&mut self) -> Result<(), ConfigError> {
        if self.pipeline.storage_roots.is_empty() {
            return Err(ConfigError::Invalid(
                "run needs at least one --storage-root (or pipeline.storage_roots)".into(),
            ));
        }
        let existing_dir = |what: &str, dir: &Path| -> Result<PathBuf, ConfigError> {
            let absolute = std::path::absolute(dir)
                .map_err(|e| ConfigError::Invalid(format!("{what} {}: {e}", dir.display())))?;
            match std::fs::metadata(&absolute) {
                Ok(m) if m.is_dir() => Ok(absolute),
                Ok(_) => Err(ConfigError::Invalid(format!(
                    "{what} {} is not a directory",
                    dir.display()
                ))),
                Err(e) => Err(ConfigError::Invalid(format!(
                    "{what} {}: {e}",
                    dir.display()
                ))),
            }
        };
        self.pipeline.storage_roots = self
            .pipeline
            .storage_roots
            .iter()
            .map(|r| existing_dir("storage root", r))
            .collect::<Result<_, _>>()?;
        let secondary = &self.pipeline.secondary_storage_root;
        if !secondary.as_os_str().is_empty() {
            self.pipeline.secondary_storage_root =
                existing_dir("pipeline.secondary_storage_root", secondary)?;
        }
        Ok(())
    }

    /// The configuration as TOML with secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut c = self.clone();
        for password in [
            &mut c.clickhouse.password,
            &mut c.doris.password,
            &mut c.privacy.key,
        ] {
            if !password.is_empty() {
                *password = "<redacted>".into();
            }
        }
        for (k, v) in c.kafka.extra.iter_mut() {
            if k.contains("password") || k.contains("secret") || k.contains("key") {
                *v = "<redacted>".into();
            }
        }
        toml::to_string_pretty(&c).unwrap_or_else(|e| format!("# cannot render config: {e}"))
    }

    /// The database of the selected sink backend.
    pub fn sink_database(&self) -> &str {
        match self.sink.backend {
            SinkBackend::ClickHouse => &self.clickhouse.database,
            SinkBackend::Doris => &self.doris.database,
        }
    }

    /// Consumer workers to start (`pipeline.workers`, 0 = number of CPUs).
    pub fn workers(&self) -> usize {
        auto(self.pipeline.workers)
    }

    /// Files parsed at once (`pipeline.compute_threads`, 0 = number of CPUs).
    pub fn compute_threads(&self) -> usize {
        auto(self.pipeline.compute_threads)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_file_size: self.pipeline.max_file_size,
            max_decoded_size: self.pipeline.max_decoded_size,
        }
    }

    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.pipeline.commit_interval_ms)
    }

    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.kafka.session_timeout_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.pipeline.drain_timeout_ms)
    }
}

/// 0 means "one per CPU".
fn auto(n: usize) -> usize {
    if n == 0 {
        num_cpus::get().max(1)
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    #[test]
    fn defaults_are_valid_and_match_the_contract() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(c.kafka.input_topic, "dicom.store");
        assert_eq!(c.kafka.group_id, "dicom-pipeline");
        assert_eq!(c.clickhouse.url, "http://127.0.0.1:8123");
        assert_eq!(c.clickhouse.database, "dicom");
    }

    #[test]
    fn invalid_values_are_explained() {
        // The default configuration changed by `change` is refused, naming `what`.
        let refused = |change: fn(&mut Config), what: &str| {
            let mut c = Config::default();
            change(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(what), "{what}: {err}");
        };
        refused(
            |c| c.kafka.image_topic = "dicom.store".into(),
            "input_topic",
        );
        refused(
            |c| c.pipeline.drain_timeout_ms = c.kafka.session_timeout_ms,
            "drain_timeout_ms",
        );
        let mut c = Config::default();
        c.clickhouse.database = "x; DROP".into();
        assert!(c.validate().is_err());
        refused(
            |c| c.kafka.assignment_strategy = "sticky".into(),
            "cooperative-sticky",
        );
        refused(|c| c.pipeline.max_partition_gap = 1, "max_partition_gap");
        refused(
            |c| c.sink.max_concurrent_flushes = 0,
            "max_concurrent_flushes",
        );
    }

    #[test]
    fn run_requires_an_existing_storage_root() {
        let mut c = Config::default();
        assert!(c
            .validate_for_run()
            .unwrap_err()
            .to_string()
            .contains("storage-root"));
        c.pipeline.storage_roots = vec!["/definitely/not/here".into()];
        assert!(c.validate_for_run().is_err());
        let dir = tempfile::tempdir().unwrap();
        c.pipeline.storage_roots = vec![dir.path().to_path_buf()];
        c.validate_for_run().unwrap();
    }

    #[test]
    fn printing_redacts_secrets() {
        let mut c = Config::default();
        c.clickhouse.password = "hunter2".into();
        c.doris.password = "d0ris-pw".into();
        c.privacy.key = "k".repeat(40);
        c.kafka
            .extra
            .insert("sasl.password".into(), "s3cret".into());
        let out = c.to_redacted_toml();
        assert!(
            !out.contains("hunter2")
                && !out.contains("s3cret")
                && !out.contains("d0ris-pw")
                && !out.contains("kkkk"),
            "{out}"
        );
        assert_eq!(out.matches("<redacted>").count(), 4, "{out}");
    }

    #[test]
    fn metrics_privacy_and_secondary_root_are_checked() {
        let check = |change: &dyn Fn(&mut Config), needle: &str| {
            let mut c = Config::default();
            change(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        };
        for listen in ["9090", ":9090", "localhost:http", "127.0.0.1:70000"] {
            check(&|c| c.metrics.listen = listen.into(), "metrics.listen");
        }
        let mut c = Config::default();
        for listen in ["", "0.0.0.0:9090", "[::1]:0", "localhost:9100"] {
            c.metrics.listen = listen.into();
            c.validate().unwrap();
        }
        check(&|c| c.privacy.pseudonymize = true, "at least 32 bytes");
        check(
            &|c| {
                c.privacy.pseudonymize = true;
                c.privacy.key = "short".into();
            },
            "it has 5",
        );
        let mut c = Config::default();
        c.privacy.pseudonymize = true;
        c.privacy.key = "k".repeat(32);
        c.validate().unwrap();

        // The key never comes from a file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[privacy]\nkey = \"0123456789abcdef0123456789abcdef\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("environment only"), "{err}");

        let mut c = Config::default();
        c.pipeline.storage_roots = vec![dir.path().to_path_buf()];
        c.pipeline.secondary_storage_root = dir.path().join("missing");
        let err = c.validate_for_run().unwrap_err().to_string();
        assert!(err.contains("secondary_storage_root"), "{err}");
        c.pipeline.secondary_storage_root = dir.path().to_path_buf();
        c.validate_for_run().unwrap();
        assert_eq!(
            c.pipeline.secondary_storage_root,
            std::path::absolute(dir.path()).unwrap()
        );
    }
}
