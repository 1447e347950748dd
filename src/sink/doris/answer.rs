//! Reading Doris's answer to a Stream Load: the JSON body's `Status` decides, whatever the
//! HTTP status — written, already written (the label is loaded), retryable, or permanent
//! (classified by its message).

use http::StatusCode;
use serde::Deserialize;

use super::stream_load::{LoadError, Loaded};

/// Longest piece of a server's text kept in an error.
const EXCERPT: usize = 512;

/// Doris's answer body: a Stream Load result (`Status` …) or the FE's REST envelope
/// (`code`, `msg`) for errors raised before a load starts (authentication, unknown database).
#[derive(Debug, Default, Deserialize)]
struct Answer {
    #[serde(rename = "Status")]
    status: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
    #[serde(rename = "ExistingJobStatus")]
    existing_job_status: Option<String>,
    #[serde(rename = "NumberTotalRows")]
    total_rows: Option<u64>,
    #[serde(rename = "NumberLoadedRows")]
    loaded_rows: Option<u64>,
    #[serde(rename = "NumberFilteredRows")]
    filtered_rows: Option<u64>,
    #[serde(rename = "ErrorURL")]
    error_url: Option<String>,
    msg: Option<String>,
    code: Option<serde_json::Value>,
    data: Option<serde_json::Value>,
}

/// Turn one final (non-redirect) answer into the load's outcome.
pub fn classify(
    status: StatusCode,
    host: &str,
    label: &str,
    body: &[u8],
) -> Result<Loaded, LoadError> {
    let answer = serde_json::from_slice::<Answer>(body).ok();
    let Some(answer) = answer else {
        return Err(if status.is_success() {
            LoadError::NotJson {
                host: host.into(),
                status: status.as_u16(),
                excerpt: excerpt(&String::from_utf8_lossy(body)),
            }
        } else {
            LoadError::Http {
                host: host.into(),
                status: status.as_u16(),
                message: excerpt(&String::from_utf8_lossy(body)),
            }
        });
    };
    let message = excerpt(answer.message.as_deref().unwrap_or(""));
    let Some(load_status) = answer.status.as_deref() else {
        return Err(fe_error(status, host, &answer, body));
    };
    match load_status {
        "Success" => Ok(Loaded::Written {
            total_rows: answer.total_rows.unwrap_or(0),
            loaded_rows: answer.loaded_rows.unwrap_or(0),
            filtered_rows: answer.filtered_rows.unwrap_or(0),
        }),
        "Label Already Exists" => match answer.existing_job_status.as_deref() {
            Some("FINISHED") => Ok(Loaded::AlreadyLoaded),
            // Some Doris versions leave ExistingJobStatus empty; the message then names
            // the transaction's state. Anything but "visible" is not done yet.
            Some("") | None if message.contains("VISIBLE") => Ok(Loaded::AlreadyLoaded),
            _ => Err(LoadError::LabelRunning {
                label: label.into(),
            }),
        },
        "Publish Timeout" => Err(LoadError::PublishTimeout {
            label: label.into(),
        }),
        other => Err(LoadError::Failed {
            label: label.into(),
            status: other.into(),
            retryable: message_is_transient(&message),
            message,
            error_url: answer.error_url,
        }),
    }
}

/// An error the FE raised itself (its REST envelope, or another JSON body without `Status`).
fn fe_error(status: StatusCode, host: &str, answer: &Answer, body: &[u8]) -> LoadError {
    let text = answer
        .msg
        .iter()
        .chain(answer.message.iter())
        .cloned()
        .chain(
            answer
                .data
                .iter()
                .filter_map(|d| d.as_str().map(String::from)),
        )
        .collect::<Vec<_>>()
        .join(": ");
    let text = if text.is_empty() {
        String::from_utf8_lossy(body).into_owned()
    } else {
        text
    };
    // The envelope's `code` is an HTTP-like status (401, 403, 404…) on an HTTP 200.
    let code = answer.code.as_ref().and_then(|c| {
        c.as_u64()
            .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
    });
    let status = match code {
        Some(c @ 100..=599) if status.is_success() => c as u16,
        _ => status.as_u16(),
    };
    LoadError::Http {
        host: host.into(),
        status,
        message: excerpt(&text),
    }
}

/// Whether a Doris failure message describes a condition that passes by itself. Messages
/// naming bad data, a missing table or database, or missing rights are permanent; so is
/// anything unrecognised (logged as an error: an operator should look).
pub fn message_is_transient(message: &str) -> bool {
    const PERMANENT: [&str; 14] = [
        "data_quality",
        "too many filtered rows",
        "analysis_error",
        "unknown table",
        "unknown database",
        "unknown column",
        "not exist",
        "access denied",
        "authenticat",
        "privilege",
        "invalid_argument",
        "parse json",
        "json parse",
        "not supported",
    ];
    const TRANSIENT: [&str; 20] = [
        "too many versions",
        "-235",
        "timeout",
        "timed out",
        "time out",
        "mem_limit_exceeded",
        "memory limit",
        "exceed memory",
        "cancelled",
        "too_many_tasks",
        "too many tasks",
        "busy",
        "unavailable",
        "not alive",
        "no available backend",
        "network",
        "rpc",
        "connection",
        "try again",
        "quorum",
    ];
    let m = message.to_ascii_lowercase();
    !PERMANENT.iter().any(|p| m.contains(p)) && TRANSIENT.iter().any(|t| m.contains(t))
}

/// At most [`EXCERPT`] bytes of a server's text, cut at a character boundary.
fn excerpt(text: &str) -> String {
    let text = text.trim();
    if text.len() <= EXCERPT {
        return text.to_string();
    }
    let mut end = EXCERPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Result<Loaded, LoadError> {
        classify(
            StatusCode::from_u16(status).unwrap(),
            "be:8040",
            "l1",
            body.as_bytes(),
        )
    }

    #[test]
    fn success_and_finished_labels_are_written() {
        let ok = answer(
            200,
            r#"{"TxnId":3,"Label":"l1","Status":"Success","Message":"OK","NumberTotalRows":10,"NumberLoadedRows":10,"NumberFilteredRows":0}"#,
        );
        assert_eq!(
            ok.unwrap(),
            Loaded::Written {
                total_rows: 10,
                loaded_rows: 10,
                filtered_rows: 0
            }
        );
        let again = answer(
            200,
            r#"{"Status":"Label Already Exists","ExistingJobStatus":"FINISHED","Message":"Label [l1] has already been used"}"#,
        );
        assert_eq!(again.unwrap(), Loaded::AlreadyLoaded);
        // The empty ExistingJobStatus some versions send: the message names the state.
        let visible = answer(
            200,
            r#"{"Status":"Label Already Exists","ExistingJobStatus":"","Message":"[LABEL_ALREADY_EXISTS]Label [l1] has already been used, relate to txn [6], status=[TXN_STATUS_VISIBLE]"}"#,
        );
        assert_eq!(visible.unwrap(), Loaded::AlreadyLoaded);
    }

    #[test]
    fn unsettled_loads_are_retryable() {
        let running = answer(
            200,
            r#"{"Status":"Label Already Exists","ExistingJobStatus":"RUNNING","Message":"x"}"#,
        )
        .unwrap_err();
        assert!(matches!(running, LoadError::LabelRunning { .. }) && running.is_retryable());
        let committed = answer(
            200,
            r#"{"Status":"Label Already Exists","ExistingJobStatus":"","Message":"status=[TXN_STATUS_COMMITTED]"}"#,
        )
        .unwrap_err();
        assert!(committed.is_retryable(), "{committed}");
        let publish = answer(200, r#"{"Status":"Publish Timeout","Message":"x"}"#).unwrap_err();
        assert!(matches!(publish, LoadError::PublishTimeout { .. }) && publish.is_retryable());
    }

    #[test]
    fn failures_are_classified_by_message() {
        let fail = |m: &str| {
            answer(
                200,
                &serde_json::json!({"Status": "Fail", "Message": m}).to_string(),
            )
            .unwrap_err()
        };
        for transient in [
            "[E-235]too many versions, tablet_id=1",
            "[TIMEOUT]load timeout",
            "MEM_LIMIT_EXCEEDED: process memory used",
            "[CANCELLED]cancelled",
            "[NETWORK_ERROR]rpc failed",
        ] {
            assert!(fail(transient).is_retryable(), "{transient}");
        }
        for permanent in [
            "[DATA_QUALITY_ERROR]too many filtered rows",
            "[ANALYSIS_ERROR]errCode = 2, detailMessage = Unknown table 'dicom_image'",
            "errCode = 2, detailMessage = Database [x] does not exist",
            "something nobody has seen before",
        ] {
            assert!(!fail(permanent).is_retryable(), "{permanent}");
        }
        let with_url = answer(
            200,
            r#"{"Status":"Fail","Message":"[DATA_QUALITY_ERROR]too many filtered rows","ErrorURL":"http://be:8040/api/_load_error_log?file=x"}"#,
        )
        .unwrap_err();
        assert!(
            with_url.to_string().contains("_load_error_log"),
            "{with_url}"
        );
    }

    #[test]
    fn http_errors_and_foreign_bodies_get_a_class() {
        let unauthorized = answer(401, "Unauthorized").unwrap_err();
        assert!(!unauthorized.is_retryable() && unauthorized.to_string().contains("401"));
        // The FE's REST envelope on an HTTP 200.
        let envelope = answer(
            200,
            r#"{"msg":"Unauthorized","code":401,"data":"Access denied for user"}"#,
        )
        .unwrap_err();
        assert!(
            matches!(envelope, LoadError::Http { status: 401, .. }) && !envelope.is_retryable(),
            "{envelope:?}"
        );
        assert!(!answer(404, "not found").unwrap_err().is_retryable());
        assert!(answer(500, "<html>oops</html>").unwrap_err().is_retryable());
        assert!(answer(503, "").unwrap_err().is_retryable());
        let html = answer(200, "<html>proxy page</html>").unwrap_err();
        assert!(matches!(html, LoadError::NotJson { .. }) && html.is_retryable());
        let long = answer(502, &"x".repeat(10_000)).unwrap_err().to_string();
        assert!(long.len() < 700, "{}", long.len());
    }
}
