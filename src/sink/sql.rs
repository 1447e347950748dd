//! SQL files shipped with the sink (`sql/clickhouse.sql`, `sql/doris.sql`): `${NAME}`
//! placeholders, statements split at `;` (quotes and comments respected), and the column
//! list of a `CREATE TABLE` — which the tests hold against the records' fields.

use thiserror::Error;

/// A placeholder the file uses that was not given, or one that is not closed.
#[derive(Debug, Error)]
#[error("{problem}")]
pub struct TemplateError {
    pub problem: String,
}

/// Replace every `${NAME}` by its value; an unknown or unterminated placeholder is an error.
pub fn render(text: &str, vars: &[(&str, &str)]) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| TemplateError {
            problem: "unterminated `${` placeholder".into(),
        })?;
        let name = &after[..end];
        let value = vars
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| TemplateError {
                problem: format!(
                    "unknown placeholder `${{{name}}}` (known: {})",
                    vars.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            })?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Split SQL text into statements at `;`, except inside quotes (`'…'`, `"…"`, `` `…` ``,
/// with backslash escapes) and comments (`-- …` to the end of the line, `/* … */`), which
/// are dropped. Blank statements are skipped; each statement is trimmed.
pub fn split(sql: &str) -> Vec<String> {
    #[derive(PartialEq)]
    enum State {
        Code,
        Quoted(char),
        LineComment,
        BlockComment,
    }
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut state = State::Code;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match state {
            State::Code => match c {
                ';' => {
                    push_statement(&mut statements, &mut current);
                    continue;
                }
                '-' if chars.peek() == Some(&'-') => {
                    chars.next();
                    state = State::LineComment;
                    continue;
                }
                '/' if chars.peek() == Some(&'*') => {
                    chars.next();
                    state = State::BlockComment;
                    current.push(' ');
                    continue;
                }
                '\'' | '"' | '`' => state = State::Quoted(c),
                _ => {}
            },
            State::Quoted(q) => {
                if c == '\\' {
                    current.push(c);
                    if let Some(escaped) = chars.next() {
                        current.push(escaped);
                    }
                    continue;
                }
                if c == q {
                    state = State::Code;
                }
            }
            State::LineComment => {
                if c == '\n' {
                    state = State::Code;
                    current.push('\n');
                }
                continue;
            }
            State::BlockComment => {
                if c == '*' && chars.peek() == Some(&'/') {
                    chars.next();
                    state = State::Code;
                }
                continue;
            }
        }
        current.push(c);
    }
    push_statement(&mut statements, &mut current);
    statements
}

fn push_statement(statements: &mut Vec<String>, current: &mut String) {
    let statement = current.trim();
    if !statement.is_empty() {
        statements.push(statement.to_string());
    }
    current.clear();
}

/// Column names of `table` in a `CREATE TABLE … {table} (` block of `ddl`; empty if the
/// table is not there. Used to check that the sink's rows match the DDL.
pub fn table_columns(ddl: &str, table: &str) -> Vec<String> {
    table_column_types(ddl, table)
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

/// (name, type) of each column of `table` in a `CREATE TABLE … {table} (` block of `ddl`:
/// the first word of each column line (backticks removed) and the rest up to the trailing
/// comma. Blank and `--` comment lines are skipped; empty if the table is not there.
pub fn table_column_types(ddl: &str, table: &str) -> Vec<(String, String)> {
    let mut columns = Vec::new();
    let mut inside = false;
    for line in ddl.lines() {
        let trimmed = line.trim();
        if !inside {
            inside =
                trimmed.starts_with("CREATE TABLE") && trimmed.ends_with(&format!(".{table} ("));
            continue;
        }
        if trimmed.starts_with(')') {
            break;
        }
        if trimmed.is_empty() || trimmed.starts_with("--") {
            continue;
        }
        let (name, ty) = trimmed
            .split_once(char::is_whitespace)
            .unwrap_or((trimmed, ""));
        columns.push((
            name.trim_matches('`').to_string(),
            ty.trim().trim_end_matches(',').to_string(),
        ));
    }
    columns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_of_the_shipped_ddl_has_a_name_and_a_type() {
        let ddls = [
            include_str!("../../sql/clickhouse.sql"),
            include_str!("../../sql/doris.sql"),
        ];
        for ddl in ddls {
            for table in crate::model::TABLES {
                let columns = table_column_types(ddl, table);
                assert!(columns.len() > 3, "{table}: {columns:?}");
                for (name, ty) in &columns {
                    assert!(!name.is_empty() && !name.contains('`'), "{table}: {name}");
                    assert!(!ty.is_empty() && !ty.ends_with(','), "{table}.{name}: {ty}");
                }
            }
        }
        let image = table_column_types(ddls[0], "dicom_image");
        assert!(image.contains(&("file_mtime".into(), "Nullable(Int64)".into())));
    }
}
