//! Loading: built-in defaults, then the TOML file, then the environment (secrets verbatim,
//! the conventional `KAFKA_BROKERS` and `CLICKHOUSE_URL` last), then the command-line
//! [`Overrides`]; the result is validated once.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;

use super::{Config, ConfigError, SinkBackend};
use crate::compute::Mode;

/// Values from command-line flags (highest precedence). `None` leaves the lower layers alone.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub brokers: Option<String>,
    pub clickhouse_url: Option<String>,
    /// The database of the selected sink backend.
    pub database: Option<String>,
    pub sink_backend: Option<SinkBackend>,
    pub group_id: Option<String>,
    pub input_topic: Option<String>,
    pub workers: Option<usize>,
    pub partitions: Option<i32>,
    pub mode: Option<Mode>,
    pub storage_roots: Vec<PathBuf>,
    pub secondary_storage_root: Option<PathBuf>,
    pub metrics_listen: Option<String>,
}

impl Config {
    /// Load defaults → file → environment → overrides. Does not validate; see
    /// [`Config::validate_for_run`] and [`Config::validate`].
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        // Passwords are taken from the environment verbatim, below: figment would read
        // `12345` as a number (refused for a string) and `0123` as 123.
        fig = fig.merge(
            Env::prefixed("DICOM_PIPELINE_")
                .split("__")
                // `DICOM_PIPELINE_CONFIG` names the file (the `--config` flag), not a key.
                .ignore(&[
                    "config",
                    "clickhouse.password",
                    "doris.password",
                    "privacy.key",
                ]),
        );
        let mut cfg: Config = fig.extract().map_err(Box::new)?;
        if let Ok(v) = std::env::var("DICOM_PIPELINE_CLICKHOUSE__PASSWORD") {
            cfg.clickhouse.password = v;
        }
        if let Ok(v) = std::env::var("DICOM_PIPELINE_DORIS__PASSWORD") {
            cfg.doris.password = v;
        }
        if !cfg.privacy.key.is_empty() {
            return Err(ConfigError::Invalid(
                "privacy.key is taken from the environment only (DICOM_PIPELINE_PRIVACY__KEY), never from a file".into(),
            ));
        }
        if let Ok(v) = std::env::var("DICOM_PIPELINE_PRIVACY__KEY") {
            cfg.privacy.key = v;
        }
        // The conventional variables win over the prefixed ones.
        if let Ok(v) = std::env::var("KAFKA_BROKERS") {
            cfg.kafka.brokers = v;
        }
        if let Ok(v) = std::env::var("CLICKHOUSE_URL") {
            cfg.clickhouse.url = v;
        }
        cfg.apply(overrides);
        cfg.validate()?;
        Ok(cfg)
    }

    fn apply(&mut self, o: &Overrides) {
        if let Some(v) = &o.brokers {
            self.kafka.brokers = v.clone();
        }
        if let Some(v) = &o.clickhouse_url {
            self.clickhouse.url = v.clone();
        }
        if let Some(v) = o.sink_backend {
            self.sink.backend = v;
        }
        if let Some(v) = &o.database {
            match self.sink.backend {
                SinkBackend::ClickHouse => self.clickhouse.database = v.clone(),
                SinkBackend::Doris => self.doris.database = v.clone(),
            }
        }
        if let Some(v) = &o.group_id {
            self.kafka.group_id = v.clone();
        }
        if let Some(v) = &o.input_topic {
            self.kafka.input_topic = v.clone();
        }
        if let Some(v) = o.workers {
            self.pipeline.workers = v;
        }
        if let Some(v) = o.partitions {
            self.kafka.partitions = v;
        }
        if let Some(v) = o.mode {
            self.pipeline.mode = v;
        }
        if !o.storage_roots.is_empty() {
            self.pipeline.storage_roots = o.storage_roots.clone();
        }
        if let Some(v) = &o.secondary_storage_root {
            self.pipeline.secondary_storage_root = v.clone();
        }
        if let Some(v) = &o.metrics_listen {
            self.metrics.listen = v.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_in_a_file_are_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[sink]\nmax_rowz = 3\n").unwrap();
        let err = Config::load(Some(&path), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("max_rowz"), "{err}");
    }

    #[test]
    fn file_values_and_overrides_layer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[sink]\nmax_rows = 7\n[kafka]\ngroup_id = \"from-file\"\n",
        )
        .unwrap();
        let o = Overrides {
            group_id: Some("from-flag".into()),
            workers: Some(3),
            ..Overrides::default()
        };
        let c = Config::load(Some(&path), &o).unwrap();
        assert_eq!(c.sink.max_rows, 7);
        assert_eq!(c.kafka.group_id, "from-flag");
        assert_eq!(c.workers(), 3);
        assert_eq!(Config::default().compute_threads(), num_cpus::get().max(1));
    }

    #[test]
    fn the_sink_backend_is_chosen_by_config_or_flag() {
        let c = Config::default();
        assert_eq!(c.sink.backend, SinkBackend::ClickHouse);
        assert_eq!(c.doris.fe_url, "http://127.0.0.1:8030");
        assert_eq!(c.doris.mysql_addr, "127.0.0.1:9030");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[sink]\nbackend = \"doris\"\n[doris]\ndatabase = \"lake\"\nfe_url = \"http://fe.example:8030/\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(c.sink.backend, SinkBackend::Doris);
        assert_eq!(c.doris.database, "lake");
        // --database goes to the selected backend.
        let o = Overrides {
            database: Some("other".into()),
            ..Overrides::default()
        };
        let c = Config::load(Some(&path), &o).unwrap();
        assert_eq!(
            (c.doris.database.as_str(), c.clickhouse.database.as_str()),
            ("other", "dicom")
        );
        let o = Overrides {
            sink_backend: Some(SinkBackend::ClickHouse),
            database: Some("other".into()),
            ..Overrides::default()
        };
        let c = Config::load(Some(&path), &o).unwrap();
        assert_eq!(
            (c.doris.database.as_str(), c.clickhouse.database.as_str()),
            ("lake", "other")
        );
        std::fs::write(&path, "[sink]\nbackend = \"starrocks\"\n").unwrap();
        let err = Config::load(Some(&path), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("starrocks"), "{err}");
        assert_eq!("doris".parse::<SinkBackend>(), Ok(SinkBackend::Doris));
        assert!("mysql"
            .parse::<SinkBackend>()
            .unwrap_err()
            .contains("clickhouse or doris"));
    }

    #[test]
    fn example_file_documents_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let mut loaded = Config::load(Some(&path), &Overrides::default()).unwrap();
        let want = Config::default();
        // The conventional env variables (set by scripts/test.sh) win over the file.
        loaded.kafka.brokers = want.kafka.brokers.clone();
        loaded.clickhouse.url = want.clickhouse.url.clone();
        assert_eq!(loaded, want);
    }
}
