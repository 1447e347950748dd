//! Logs and what commands print: the log filter, text or JSON, summary and error lines.
//!
//! With `--log-format json` every line the program writes to stderr is a JSON object, the
//! final summaries and the error at exit included; stdout keeps each command's output
//! (JSON lines already for `derive`, `--json` for `status` and `verify`), and the summaries
//! `run`, `backfill` and `synth` print there are JSON objects too.

use anyhow::Result;
use tracing_subscriber::EnvFilter;

/// Dependencies at warn, this program at info. dicom-rs warns about every recoverable
/// oddity of every file (missing meta elements, odd lengths), and the JPEG 2000 codec logs
/// remarks on every code stream (INFO for each file, WARN for tolerated deviations): at
/// volume they drown the pipeline's own log. Their errors stay: they say why a file was
/// dead-lettered `decode_failed` (the dead letter itself only has the codec's failure), and
/// in `run` they carry the message's span (partition, offset, trace id). `RUST_LOG` brings
/// the rest back.
const QUIET_DEPENDENCIES: &str =
    "dicom_object=error,dicom_parser=error,dicom_encoding=error,jpeg2k=error";

/// The filter: `--log-level` (this program; dependencies at warn) wins over `RUST_LOG` (a
/// whole filter), which wins over the default (info for this program).
pub fn filter(level: Option<&str>, rust_log: Option<&str>) -> Result<EnvFilter> {
    let spec = match (level, rust_log) {
        (Some(level), _) => format!("warn,dicom_pipeline={level},{QUIET_DEPENDENCIES}"),
        (None, Some(env)) if !env.trim().is_empty() => env.to_string(),
        _ => format!("warn,dicom_pipeline=info,{QUIET_DEPENDENCIES}"),
    };
    EnvFilter::try_new(&spec).map_err(|e| anyhow::anyhow!("log filter `{spec}`: {e}"))
}

/// How this process writes: text, or one JSON object per line.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    /// Install the log subscriber for `format` (text or json) at `level`.
    pub fn init(format: &str, level: Option<&str>) -> Result<Output> {
        let rust_log = std::env::var("RUST_LOG").ok();
        let filter = filter(level, rust_log.as_deref())?;
        // Colour only on a terminal (and never with NO_COLOR): a log file or a collector
        // gets plain text, not escape codes.
        use std::io::IsTerminal;
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(crate::backfill::progress::stderr_for_logs);
        let json = format == "json";
        if json {
            builder.json().init();
        } else {
            builder.init();
        }
        Ok(Output { json })
    }

    /// For code paths before logging is set up (and tests).
    pub fn plain() -> Output {
        Output { json: false }
    }

    pub fn json(&self) -> bool {
        self.json
    }

    /// A command's summary on stdout: `text`, or `{"summary": what, ...fields}`.
    pub fn summary(&self, what: &str, text: &str, fields: serde_json::Value) {
        if self.json {
            println!("{}", Self::object(what, fields));
        } else {
            println!("{text}");
        }
    }

    /// The same on stderr (where `derive` reports, stdout being its data).
    pub fn summary_stderr(&self, what: &str, text: &str, fields: serde_json::Value) {
        if self.json {
            eprintln!("{}", Self::object(what, fields));
        } else {
            eprintln!("{text}");
        }
    }

    fn object(what: &str, fields: serde_json::Value) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert("summary".into(), what.into());
        if let serde_json::Value::Object(f) = fields {
            obj.extend(f);
        }
        serde_json::Value::Object(obj)
    }

    /// A message for whoever runs the command (stderr): a note, or the error at exit.
    pub fn message(&self, level: &str, text: &str) {
        if self.json {
            eprintln!(
                "{}",
                serde_json::json!({ "level": level.to_ascii_uppercase(), "message": text })
            );
        } else if level == "error" {
            eprintln!("error: {text}");
        } else {
            eprintln!("{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_over_rust_log_and_dependencies_stay_at_warn() {
        let shown = |level, env| filter(level, env).unwrap().to_string();
        let default = shown(None, None);
        assert!(
            default.starts_with("warn,") || default.contains("warn"),
            "{default}"
        );
        assert!(default.contains("dicom_pipeline=info"), "{default}");
        assert!(shown(Some("debug"), Some("trace")).contains("dicom_pipeline=debug"));
        let env = shown(None, Some("info,rdkafka=debug"));
        assert!(
            env.contains("rdkafka=debug") && env.contains("info"),
            "{env}"
        );
        assert!(!env.contains("dicom_pipeline"), "{env}");
        assert!(filter(None, Some("not a filter=%%")).is_err());
    }
}
