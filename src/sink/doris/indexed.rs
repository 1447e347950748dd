//! `backfill --skip-indexed` on Doris: which of a batch of files `dicom_image` holds, over the
//! FE's MySQL port.
//!
//! The MySQL text protocol has no query parameters, so the tenant and the paths go into the
//! SQL as string literals, escaped by [`literal`] (Doris reads backslash escapes in string
//! literals, as MySQL does without `NO_BACKSLASH_ESCAPES`). The Unique Key table keeps one
//! row per instance version, so no FINAL is needed.

use super::schema::{connect, rows, SchemaError};
use crate::config::DorisConfig;
use crate::sink::IndexedFile;

/// The `dicom_image` rows of `tenant` whose `file_path` is one of `paths` (none: a probe that
/// the query runs at all).
pub async fn indexed_files(
    cfg: &DorisConfig,
    tenant: &str,
    paths: &[&str],
) -> Result<Vec<IndexedFile>, SchemaError> {
    let mut conn = connect(cfg).await?;
    let found: Vec<(String, u64, Option<i64>)> =
        rows(&mut conn, cfg, query(&cfg.database, tenant, paths)).await?;
    Ok(found
        .into_iter()
        .map(|(file_path, file_size, file_mtime)| IndexedFile {
            file_path,
            file_size,
            file_mtime,
        })
        .collect())
}

/// The lookup's SQL. `database` is a checked identifier (the config's validation).
fn query(database: &str, tenant: &str, paths: &[&str]) -> String {
    let mut sql = format!(
        "SELECT file_path, file_size, file_mtime FROM `{database}`.dicom_image \
         WHERE tenant_id = {}",
        literal(tenant)
    );
    if paths.is_empty() {
        sql.push_str(" LIMIT 0");
        return sql;
    }
    sql.push_str(" AND file_path IN (");
    for (i, p) in paths.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&literal(p));
    }
    sql.push(')');
    sql
}

/// `s` as a single-quoted SQL string literal: backslash, quote and NUL escaped.
fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_tenant_are_escaped_literals() {
        assert_eq!(
            query("db", "t'1", &["/a'b\\c", "/d\0e", "/plain"]),
            "SELECT file_path, file_size, file_mtime FROM `db`.dicom_image \
             WHERE tenant_id = 't\\'1' AND file_path IN ('/a\\'b\\\\c', '/d\\0e', '/plain')"
        );
    }

    /// No path can end the literal early: whatever the path, the IN list holds exactly one
    /// literal per path and the text between literals is the separator.
    #[test]
    fn no_path_breaks_out_of_its_literal() {
        let hostile = ["'); DROP TABLE x; --", "\\", "\\'", "'", "a''b", "é\u{1}\n"];
        let sql = query("db", "t", &hostile);
        let list = sql.split_once(" IN (").unwrap().1;
        // Read the literals back the way the server does.
        let mut read = Vec::new();
        let mut chars = list.chars();
        loop {
            match chars.next() {
                Some('\'') => {
                    let mut s = String::new();
                    loop {
                        match chars.next().unwrap() {
                            '\\' => match chars.next().unwrap() {
                                '0' => s.push('\0'),
                                c => s.push(c),
                            },
                            '\'' => break,
                            c => s.push(c),
                        }
                    }
                    read.push(s);
                }
                Some(',') | Some(' ') => {}
                Some(')') => break,
                other => panic!("unexpected {other:?} between literals in {sql}"),
            }
        }
        assert_eq!(read, hostile);
        assert_eq!(chars.as_str(), "");
    }

    #[test]
    fn a_probe_asks_for_no_rows() {
        assert!(query("db", "t", &[]).ends_with("WHERE tenant_id = 't' LIMIT 0"));
    }
}
