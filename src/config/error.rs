//! What can go wrong loading the configuration, and how figment's findings are told to the
//! user: once each, named as the user wrote them (environment variable or file key).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    /// Not a `#[source]`: the message already says everything figment found, once.
    #[error("configuration: {}", describe_load_error(.0))]
    Load(Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(e: Box<figment::Error>) -> Self {
        ConfigError::Load(e)
    }
}

/// Every problem figment found, once each, naming where it came from as the user wrote it:
/// `DICOM_PIPELINE_PIPELINE__WORKERS` for an environment variable, `FILE: key kafka.x` for
/// the TOML file.
fn describe_load_error(e: &figment::Error) -> String {
    let mut lines: Vec<String> = Vec::new();
    for err in e.clone() {
        let line = describe_one(&err);
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    lines.join("; ")
}

fn describe_one(err: &figment::Error) -> String {
    use figment::error::Kind;
    let mut path = err.path.clone();
    let what = match &err.kind {
        Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            format!("unknown key (expected one of: {})", expected.join(", "))
        }
        Kind::UnknownVariant(value, expected) => {
            format!(
                "unknown value `{value}` (expected one of: {})",
                expected.join(", ")
            )
        }
        Kind::InvalidType(actual, expected) => format!("is {actual}, expected {expected}"),
        Kind::InvalidValue(actual, expected) => format!("is {actual}, expected {expected}"),
        other => other.to_string(),
    };
    let key = path.join(".");
    let from_env = err
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"));
    let file = err.metadata.as_ref().and_then(|m| match &m.source {
        Some(figment::Source::File(p)) => Some(p.display().to_string()),
        _ => None,
    });
    match (from_env, file) {
        (true, _) => format!(
            "environment variable DICOM_PIPELINE_{} {what}",
            path.iter()
                .map(|p| p.to_ascii_uppercase())
                .collect::<Vec<_>>()
                .join("__")
        ),
        (false, Some(file)) => format!("{file}: key `{key}` {what}"),
        (false, None) => format!("key `{key}` {what}"),
    }
}
