//! The ClickHouse tables: `sql/clickhouse.sql`, compiled in. Every statement is idempotent
//! (`IF NOT EXISTS`), so `schema` and `run` apply all of them every time.

use crate::sink::sql::{render, split};

/// The DDL file.
pub const DDL: &str = include_str!("../../../sql/clickhouse.sql");

/// Statements creating (or upgrading) the database and tables, in order.
pub fn statements(db: &str) -> Vec<String> {
    // The file's only placeholder is given, so rendering cannot fail (a test holds it).
    match render(DDL, &[("DATABASE", db)]) {
        Ok(text) => split(&text),
        Err(e) => unreachable!("sql/clickhouse.sql: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::sql::table_columns;
    use crate::sink::TABLE_COLUMNS;

    /// Every table's columns in sql/clickhouse.sql are exactly its record's fields: a field
    /// added to a record (or an attribute to the table in attributes.rs) without its column,
    /// or the reverse, fails here. The types are checked by the server on every insert (the
    /// client validates rows against the table's schema).
    #[test]
    fn tables_have_exactly_the_record_columns() {
        for (table, fields) in TABLE_COLUMNS {
            let mut columns = table_columns(DDL, table);
            let mut fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            columns.sort();
            fields.sort();
            assert_eq!(columns, fields, "{table}");
        }
    }

    #[test]
    fn the_file_renders_and_every_statement_names_the_database() {
        let statements = statements("db_x");
        assert!(statements.len() >= 10, "{statements:?}");
        for s in &statements {
            assert!(s.contains("db_x"), "{s}");
            assert!(!s.contains("${"), "{s}");
        }
        assert!(statements[0].starts_with("CREATE DATABASE IF NOT EXISTS db_x"));
    }
}
