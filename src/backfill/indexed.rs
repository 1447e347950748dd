//! `--skip-indexed`: which files `dicom_image` already has, one query per batch of files.
//!
//! A file counts as indexed when a row of the same tenant has its `file_path` and
//! `file_size`, and — when both the row and the file know it — its `file_mtime`. The query
//! goes through the sink seam ([`Sink::indexed_files`]), so it asks whichever backend
//! `sink.backend` selects (ClickHouse or Doris), at most [`MAX_BATCH`] paths and about
//! [`MAX_BATCH_BYTES`] of them per query. Only indexed instances are skipped: a file that was dead-lettered before is
//! published again (and dead-lettered again unless it was fixed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::sink::{Backend, IndexedFile, Sink, SinkError};

/// Most paths in one query.
pub const MAX_BATCH: usize = 1000;
/// About the most (escaped) path bytes in one query: ClickHouse refuses a query parameter
/// larger than the server's `http_max_field_value_size` (128 KiB by default; it cannot be
/// raised per query), so a batch stops here, leaving room for one more path of up to 4 KiB.
/// With 130-byte paths that is about 770 paths per query.
pub const MAX_BATCH_BYTES: usize = 100 * 1024;
/// Attempts per batch when ClickHouse is briefly unreachable, before the backfill fails.
const ATTEMPTS: u32 = 5;

/// A file the walk found: what is compared against `dicom_image`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub file_path: String,
    pub size: u64,
    pub mtime: Option<i64>,
}

/// Whether `row` describes the same file as `c`.
fn same_file(c: &Candidate, row_size: u64, row_mtime: Option<i64>) -> bool {
    c.size == row_size
        && match (c.mtime, row_mtime) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
}

/// The sink's `dicom_image` lookups for one tenant.
#[derive(Clone)]
pub struct IndexLookup {
    backend: Backend,
    tenant: String,
    /// Address and database, for error messages.
    pub target: String,
    /// Lookup queries sent (attempts included).
    queries: Arc<AtomicU64>,
}

impl IndexLookup {
    pub fn new(cfg: &Config) -> IndexLookup {
        IndexLookup {
            backend: Backend::new(cfg),
            tenant: cfg.pipeline.tenant_id.clone(),
            target: Backend::target(cfg),
            queries: Arc::default(),
        }
    }

    /// Lookup queries sent so far, the probe included.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Check once, before anything is published, that the query can run at all.
    pub async fn probe(&self) -> Result<(), SinkError> {
        self.query(&[]).await.map(|_| ())
    }

    async fn query(&self, paths: &[&str]) -> Result<Vec<IndexedFile>, SinkError> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.backend.indexed_files(&self.tenant, paths).await
    }

    /// For each candidate, whether it is indexed: one query (retried a few times on network
    /// trouble; any other failure, or trouble that lasts, is returned).
    pub async fn indexed(&self, files: &[&Candidate]) -> Result<Vec<bool>, SinkError> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let paths: Vec<&str> = files.iter().map(|c| c.file_path.as_str()).collect();
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        let rows = loop {
            match self.query(&paths).await {
                Ok(rows) => break rows,
                Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, retry_in_ms = delay.as_millis() as u64, "indexed-files query failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let mut by_path: HashMap<&str, Vec<(u64, Option<i64>)>> = HashMap::new();
        for r in &rows {
            by_path
                .entry(r.file_path.as_str())
                .or_default()
                .push((r.file_size, r.file_mtime));
        }
        Ok(files
            .iter()
            .map(|c| {
                by_path.get(c.file_path.as_str()).is_some_and(|rows| {
                    rows.iter().any(|(size, mtime)| same_file(c, *size, *mtime))
                })
            })
            .collect())
    }
}

/// Bytes a path adds to a query batch (the path, quotes, a comma, room for escapes).
pub fn batch_cost(path: &str) -> usize {
    path.len()
        + path
            .bytes()
            .filter(|b| matches!(b, b'\\' | b'\'' | b'`' | b'\t' | b'\n'))
            .count()
        + 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_matches_on_size_and_on_mtime_when_both_know_it() {
        let c = |mtime| Candidate {
            file_path: "/a".into(),
            size: 10,
            mtime,
        };
        assert!(same_file(&c(Some(5)), 10, Some(5)));
        assert!(!same_file(&c(Some(5)), 10, Some(6)));
        assert!(!same_file(&c(Some(5)), 11, Some(5)));
        // Rows indexed before file_mtime existed, or messages without it: size alone.
        assert!(same_file(&c(Some(5)), 10, None));
        assert!(same_file(&c(None), 10, Some(5)));
        assert!(!same_file(&c(None), 9, None));
        assert_eq!(batch_cost("/a'b"), 4 + 1 + 3);
    }
}
