//! `status`: where the pipeline stands, read from the broker and the sink (not from a running
//! process, so it works while none runs and sees every process of the group at once).
//!
//! Each half is read independently: with ClickHouse down the partition table still prints,
//! and the command exits non-zero naming what could not be read.

use serde::Serialize;

use crate::config::Config;
use crate::lag::PartitionLag;
use crate::sink::{self, SinkCounts};

/// The input topic's partitions for the configured group.
#[derive(Debug, Clone, Serialize)]
pub struct InputStatus {
    pub topic: String,
    pub group: String,
    pub partitions: Vec<PartitionLag>,
    /// Sum of the partitions' lag.
    pub lag: i64,
}

/// What `status` prints (`--json`: this, serialised).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub input: Option<InputStatus>,
    /// Why the input half is missing.
    pub input_error: Option<String>,
    /// `clickhouse` or `doris`.
    pub backend: String,
    pub database: String,
    pub sink: Option<SinkCounts>,
    /// Why the sink half is missing.
    pub sink_error: Option<String>,
}

/// Read both halves (each failure is kept, not raised).
pub async fn read(cfg: &Config) -> Status {
    let kafka_cfg = cfg.clone();
    let (reached, sink_reached) =
        tokio::join!(crate::kafka::reach_async(&cfg.kafka), sink::reach(cfg));
    let input = match reached {
        // Unreachable: say so once, naming the brokers, rather than a lag read's timeout.
        Err(e) => Ok(Err(e.to_string())),
        Ok(()) => {
            tokio::task::spawn_blocking(move || {
                crate::lag::partition_lags(&kafka_cfg)
                    .map_err(|e| format!("reading offsets from {}: {e}", kafka_cfg.kafka.brokers))
            })
            .await
        }
    };
    let (input, input_error) = match input {
        Ok(Ok(partitions)) => (
            Some(InputStatus {
                topic: cfg.kafka.input_topic.clone(),
                group: cfg.kafka.group_id.clone(),
                lag: partitions.iter().map(|p| p.lag).sum(),
                partitions,
            }),
            None,
        ),
        Ok(Err(e)) => (None, Some(e)),
        Err(e) => (None, Some(format!("reading offsets from the broker: {e}"))),
    };
    let counts = match sink_reached {
        Ok(()) => sink::counts(cfg).await,
        Err(e) => Err(e),
    };
    let (sink, sink_error) = match counts {
        Ok(c) => (Some(c), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let database = cfg.sink_database().to_string();
    Status {
        input,
        input_error,
        backend: cfg.sink.backend.to_string(),
        database,
        sink,
        sink_error,
    }
}

impl Status {
    /// What could not be read, if anything.
    pub fn problem(&self) -> Option<String> {
        let problems: Vec<&str> = [&self.input_error, &self.sink_error]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        (!problems.is_empty()).then(|| problems.join("; "))
    }

    /// Tab-separated tables for a terminal.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        match &self.input {
            Some(i) => {
                let _ = writeln!(out, "input {} (group {})", i.topic, i.group);
                let _ = writeln!(out, "partition\tend\tcommitted\tlag");
                for p in &i.partitions {
                    let committed = p.committed.map_or("-".to_string(), |c| c.to_string());
                    let _ = writeln!(out, "{}\t{}\t{}\t{}", p.partition, p.high, committed, p.lag);
                }
                let _ = writeln!(out, "total\t\t\t{}", i.lag);
            }
            None => {
                let _ = writeln!(
                    out,
                    "input: {}",
                    self.input_error.as_deref().unwrap_or("unknown")
                );
            }
        }
        let _ = writeln!(out);
        match &self.sink {
            Some(s) => {
                let _ = writeln!(out, "{} database {}", self.backend, self.database);
                let _ = writeln!(out, "table\trows");
                for (t, n) in &s.tables {
                    let _ = writeln!(out, "{t}\t{n}");
                }
                let _ = writeln!(out);
                let _ = writeln!(out, "dead letters\tcount");
                if s.dead_letters.is_empty() {
                    let _ = writeln!(out, "(none)\t0");
                }
                for (r, n) in &s.dead_letters {
                    let _ = writeln!(out, "{r}\t{n}");
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "{} database {}: {}",
                    self.backend,
                    self.database,
                    self.sink_error.as_deref().unwrap_or("unknown")
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            input: Some(InputStatus {
                topic: "in".into(),
                group: "g".into(),
                partitions: vec![
                    PartitionLag {
                        partition: 0,
                        low: 0,
                        high: 10,
                        committed: Some(7),
                        lag: 3,
                    },
                    PartitionLag {
                        partition: 1,
                        low: 0,
                        high: 4,
                        committed: None,
                        lag: 4,
                    },
                ],
                lag: 7,
            }),
            input_error: None,
            backend: "clickhouse".into(),
            database: "dicom".into(),
            sink: Some(SinkCounts {
                tables: vec![("dicom_image".into(), 5)],
                dead_letters: vec![("not_dicom".into(), 2)],
            }),
            sink_error: None,
        }
    }

    #[test]
    fn text_shows_partitions_tables_and_reasons() {
        let text = status().to_text();
        for want in [
            "0\t10\t7\t3",
            "1\t4\t-\t4",
            "total\t\t\t7",
            "dicom_image\t5",
            "not_dicom\t2",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
        assert_eq!(status().problem(), None);
    }

    #[test]
    fn a_missing_half_is_named_and_the_other_still_shown() {
        let mut s = status();
        s.sink = None;
        s.sink_error = Some("querying ClickHouse: connection refused".into());
        let text = s.to_text();
        assert!(text.contains("0\t10\t7\t3"), "{text}");
        assert!(text.contains("connection refused"), "{text}");
        assert!(s.problem().unwrap().contains("connection refused"));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["input"]["lag"], 7);
        assert!(json["sink"].is_null());
    }
}
