//! The `[doris]` section: the Apache Doris connection (Stream Load over HTTP, DDL over the
//! MySQL protocol), used when `sink.backend = "doris"`, and its checks.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Apache Doris connection: rows go in by Stream Load over HTTP, DDL (`schema`) goes over the
/// MySQL protocol. Everything here also works for a Doris-compatible server that speaks both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DorisConfig {
    /// FE HTTP endpoint, `http://host:port` (FE `http_port`, 8030 by default). Each Stream
    /// Load goes here and is redirected by the FE to a BE, at the address the BE registered
    /// with: that address must be reachable from this process too.
    pub fe_url: String,
    /// FE MySQL-protocol endpoint, `host:port` (FE `query_port`, 9030 by default), used by
    /// `schema --sink doris` to create the database and tables.
    pub mysql_addr: String,
    /// User for both endpoints; needs LOAD/INSERT on the tables for `run`, CREATE for `schema`.
    pub user: String,
    /// Password (redacted when printed; env `DICOM_PIPELINE_DORIS__PASSWORD`).
    pub password: String,
    /// Database holding the tables; created by `schema --sink doris`.
    pub database: String,
    /// How long one HTTP request (one hop of a Stream Load) or the MySQL connect may take.
    /// Also sent as the load's `timeout` (rounded up to seconds), so Doris cancels a load this
    /// process stopped waiting for and the retry can reuse its label.
    pub request_timeout_ms: u64,
    /// `replication_num` of the created tables (Doris's default of 3 needs three BEs).
    pub replication_num: u16,
    /// First part of every Stream Load label, `[A-Za-z0-9_-]`, at most 32 characters. Doris
    /// refuses a label it has seen in the last `label_keep_max_second` (3 days by default):
    /// that is what makes a retried batch load once. A label also digests the rows it loads,
    /// so processing the same messages again (a replay, an offset reset) loads anew.
    pub label_prefix: String,
}

impl Default for DorisConfig {
    fn default() -> Self {
        DorisConfig {
            fe_url: "http://127.0.0.1:8030".into(),
            mysql_addr: "127.0.0.1:9030".into(),
            user: "root".into(),
            password: String::new(),
            database: "dicom".into(),
            request_timeout_ms: 60_000,
            replication_num: 1,
            label_prefix: "dicom".into(),
        }
    }
}

impl DorisConfig {
    /// The `[doris]` checks (see [`Config::validate`](super::Config::validate)).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        match self.fe_url.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http")
                && u.authority().is_some_and(|a| !a.as_str().contains('@') && !a.host().is_empty())
                && matches!(u.path(), "" | "/")
                && u.query().is_none() => {}
            _ => {
                return bad(format!(
                    "doris.fe_url `{}` must be http://host[:port] (no path, no credentials: set doris.user and doris.password; https is not supported)",
                    self.fe_url
                ))
            }
        }
        let port_ok = self
            .mysql_addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
        if !port_ok {
            return bad(format!(
                "doris.mysql_addr `{}` must be host:port",
                self.mysql_addr
            ));
        }
        if self.user.is_empty() {
            return bad("doris.user is empty".into());
        }
        let mut db = self.database.chars();
        if !(db.next().is_some_and(|c| c.is_ascii_alphabetic())
            && db.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && self.database.len() <= 64)
        {
            return bad(format!(
                "doris.database `{}` must be a letter then [A-Za-z0-9_], at most 64 characters",
                self.database
            ));
        }
        if !(1_000..=259_200_000).contains(&self.request_timeout_ms) {
            return bad(format!(
                "doris.request_timeout_ms ({}) must be between 1000 and 259200000 (Doris load timeouts are 1 s to 3 days)",
                self.request_timeout_ms
            ));
        }
        if self.replication_num == 0 {
            return bad("doris.replication_num must be ≥ 1".into());
        }
        if self.label_prefix.is_empty()
            || self.label_prefix.len() > 32
            || !self
                .label_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return bad(format!(
                "doris.label_prefix `{}` must be 1 to 32 characters of [A-Za-z0-9_-]",
                self.label_prefix
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn invalid_doris_values_are_explained() {
        let check = |change: &dyn Fn(&mut DorisConfig), needle: &str| {
            let mut c = Config::default();
            change(&mut c.doris);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        };
        for url in [
            "127.0.0.1:8030",
            "https://fe:8030",
            "http://root:pw@fe:8030",
            "http://fe:8030/api/dicom",
            "http://",
            "not a url",
        ] {
            check(&|d| d.fe_url = url.into(), "doris.fe_url");
        }
        check(&|d| d.mysql_addr = "fe".into(), "doris.mysql_addr");
        check(&|d| d.mysql_addr = "fe:99999".into(), "doris.mysql_addr");
        check(&|d| d.mysql_addr = ":9030".into(), "doris.mysql_addr");
        check(&|d| d.user = String::new(), "doris.user");
        check(&|d| d.database = String::new(), "doris.database");
        check(&|d| d.database = "1dicom".into(), "doris.database");
        check(&|d| d.database = "x; DROP".into(), "doris.database");
        check(&|d| d.request_timeout_ms = 10, "doris.request_timeout_ms");
        check(&|d| d.replication_num = 0, "doris.replication_num");
        check(&|d| d.label_prefix = String::new(), "doris.label_prefix");
        check(&|d| d.label_prefix = "a.b".into(), "doris.label_prefix");
        check(&|d| d.label_prefix = "x".repeat(33), "doris.label_prefix");
        let mut c = Config::default();
        c.doris.fe_url = "http://[::1]:8030".into();
        c.doris.mysql_addr = "[::1]:9030".into();
        c.validate().unwrap();
    }
}
