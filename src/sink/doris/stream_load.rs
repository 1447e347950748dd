//! The Stream Load client: `PUT /api/{db}/{table}/_stream_load` to the FE with the rows as
//! JSON lines, following the FE's redirect to a BE by hand, and reading Doris's answer.
//!
//! Redirects are followed here, not by an HTTP client's policy, because clients drop the
//! `Authorization` header when a redirect changes host (FE → BE always does): each hop is
//! sent with the same headers and the same body. The body goes to the FE too, with
//! `Expect: 100-continue` as Doris documents; a body-less probe would be cheaper but, sent
//! to an endpoint that loads instead of redirecting (a BE, a proxy), it would load zero rows
//! under the batch's label and make the real load look done.
//!
//! Doris answers with a JSON body whose `Status` decides, whatever the HTTP status:
//! `Success`; `Label Already Exists` with `ExistingJobStatus` `FINISHED` (this batch is
//! already in: success) or `RUNNING` (retry); `Publish Timeout` (committed, not yet visible:
//! retry, which then meets the label); `Fail` (classified by its message).

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::uri::Scheme;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use thiserror::Error;

pub use super::answer::{classify, message_is_transient};
use crate::config::DorisConfig;

/// Redirects followed per load (FE → BE is one).
pub const MAX_REDIRECTS: usize = 3;

/// A Stream Load that did not end in "these rows are in".
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("building the Stream Load request for {url}: {reason}")]
    BuildRequest { url: String, reason: String },
    #[error("encoding {table} rows as JSON lines: {reason}")]
    Encode { table: &'static str, reason: String },
    #[error("sending to {host}: {source}")]
    Send {
        host: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("reading the answer from {host}: {source}")]
    ReadBody {
        host: String,
        #[source]
        source: hyper::Error,
    },
    #[error("no complete answer from {host} within {timeout_ms} ms")]
    TimedOut { host: String, timeout_ms: u64 },
    #[error("HTTP {status} redirect from {host} without a usable http:// Location")]
    BadRedirect { host: String, status: u16 },
    #[error("more than {MAX_REDIRECTS} redirects (the last from {host})")]
    TooManyRedirects { host: String },
    #[error("HTTP {status} from {host}: {message}")]
    Http {
        host: String,
        status: u16,
        message: String,
    },
    #[error("HTTP {status} from {host} with a body that is not a Stream Load result: {excerpt}")]
    NotJson {
        host: String,
        status: u16,
        excerpt: String,
    },
    #[error("Doris refused the load (label {label}, Status `{status}`): {message}{}", error_url.as_deref().map(|u| format!(" (rejected rows: {u})")).unwrap_or_default())]
    Failed {
        label: String,
        status: String,
        message: String,
        error_url: Option<String>,
        retryable: bool,
    },
    #[error("load committed but not yet visible (Publish Timeout, label {label}); the retry confirms it")]
    PublishTimeout { label: String },
    #[error("label {label} belongs to a load that is still running; the retry waits for it")]
    LabelRunning { label: String },
}

impl LoadError {
    /// Whether the same load may succeed later without an operator: connection trouble,
    /// timeouts, overload (HTTP 5xx/408/429, Doris's "too many versions", memory limits),
    /// loads still settling. Permanent: bad credentials (401/403), wrong database or table
    /// (404, unknown table), rows Doris rejects (data quality), unrecognised failures.
    pub fn is_retryable(&self) -> bool {
        match self {
            LoadError::Send { .. }
            | LoadError::ReadBody { .. }
            | LoadError::TimedOut { .. }
            | LoadError::NotJson { .. }
            | LoadError::PublishTimeout { .. }
            | LoadError::LabelRunning { .. } => true,
            LoadError::BuildRequest { .. }
            | LoadError::Encode { .. }
            | LoadError::BadRedirect { .. }
            | LoadError::TooManyRedirects { .. } => false,
            LoadError::Http {
                status, message, ..
            } => match status {
                401 | 403 | 404 | 405 => false,
                408 | 429 | 500..=599 => true,
                _ => message_is_transient(message),
            },
            LoadError::Failed { retryable, .. } => *retryable,
        }
    }
}

/// A load Doris accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// Loaded now; the row counts Doris reported.
    Written {
        total_rows: u64,
        loaded_rows: u64,
        filtered_rows: u64,
    },
    /// The label was already used by a finished load: these rows went in before (a retry).
    AlreadyLoaded,
}

/// The client, created once per sink; clones share the connection pool.
#[derive(Clone)]
pub struct StreamLoadClient {
    http: Client<HttpConnector, Full<Bytes>>,
    fe_url: String,
    database: String,
    authorization: HeaderValue,
    timeout: Duration,
}

impl StreamLoadClient {
    pub fn new(cfg: &DorisConfig) -> StreamLoadClient {
        let timeout = Duration::from_millis(cfg.request_timeout_ms);
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", cfg.user, cfg.password));
        let mut authorization = HeaderValue::from_str(&format!("Basic {credentials}"))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        authorization.set_sensitive(true);
        StreamLoadClient {
            http,
            fe_url: cfg.fe_url.trim_end_matches('/').to_string(),
            database: cfg.database.clone(),
            authorization,
            timeout,
        }
    }

    /// Load `body` (JSON lines) into `table` under `label` (None: Doris picks one, and a
    /// retry is not recognised). Ok when the rows are in, now or by an earlier load.
    pub async fn load(
        &self,
        table: &str,
        label: Option<&str>,
        body: Bytes,
    ) -> Result<Loaded, LoadError> {
        let url = format!("{}/api/{}/{table}/_stream_load", self.fe_url, self.database);
        let mut uri: Uri =
            url.parse()
                .map_err(|e: http::uri::InvalidUri| LoadError::BuildRequest {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
        for _ in 0..=MAX_REDIRECTS {
            let host = host_of(&uri);
            let request = self.request(&uri, label, body.clone())?;
            let timeout_ms = self.timeout.as_millis() as u64;
            let hop = async {
                let response =
                    self.http
                        .request(request)
                        .await
                        .map_err(|source| LoadError::Send {
                            host: host.clone(),
                            source,
                        })?;
                let status = response.status();
                if is_redirect(status) {
                    let next = response
                        .headers()
                        .get(header::LOCATION)
                        .map(|v| String::from_utf8_lossy(v.as_bytes()))
                        .and_then(|location| resolve(&uri, &location))
                        .ok_or_else(|| LoadError::BadRedirect {
                            host: host.clone(),
                            status: status.as_u16(),
                        })?;
                    return Ok(Hop::Redirect(next));
                }
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|source| LoadError::ReadBody {
                        host: host.clone(),
                        source,
                    })?
                    .to_bytes();
                Ok(Hop::Answer(status, bytes))
            };
            let hop = tokio::time::timeout(self.timeout, hop)
                .await
                .map_err(|_| LoadError::TimedOut {
                    host: host.clone(),
                    timeout_ms,
                })??;
            match hop {
                Hop::Redirect(next) => {
                    tracing::debug!(table, from = %host, to = %host_of(&next), "stream load redirected");
                    uri = next;
                }
                Hop::Answer(status, bytes) => {
                    return classify(status, &host, label.unwrap_or("-"), &bytes);
                }
            }
        }
        Err(LoadError::TooManyRedirects {
            host: host_of(&uri),
        })
    }

    fn request(
        &self,
        uri: &Uri,
        label: Option<&str>,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, LoadError> {
        // Doris's load timeout (whole seconds): it cancels a load this process stopped
        // waiting for, which frees the label for the retry.
        let load_timeout_s = self.timeout.as_millis().div_ceil(1000).to_string();
        let mut builder = Request::builder()
            .method(Method::PUT)
            .uri(uri.clone())
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::EXPECT, "100-continue")
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header("format", "json")
            .header("read_json_by_line", "true")
            .header("strip_outer_array", "false")
            // A row that does not fit its column fails the whole load (never nulled or
            // dropped): the batch is retried and an operator sees the error.
            .header("strict_mode", "true")
            .header("max_filter_ratio", "0")
            .header("timeout", load_timeout_s);
        if let Some(label) = label {
            builder = builder.header("label", label);
        }
        builder
            .body(Full::new(body))
            .map_err(|e| LoadError::BuildRequest {
                url: host_of(uri),
                reason: e.to_string(),
            })
    }
}

enum Hop {
    Redirect(Uri),
    Answer(StatusCode, Bytes),
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 307 | 308)
}

/// `host:port` of a URI, never its credentials (safe to log).
pub fn host_of(uri: &Uri) -> String {
    uri.authority()
        .and_then(|a| a.as_str().rsplit('@').next())
        .unwrap_or("?")
        .to_string()
}

/// The next hop from a `Location` header, absolute or relative to `base`. Credentials in it
/// (Doris FEs have put `user:password@` there, not always URI-encoded) are cut off before
/// parsing: the `Authorization` header carries them, and a URI holding them must not end
/// up in a log. http only.
pub fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    let location = location.trim();
    let without_credentials;
    let location = match location.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let host_port = rest[..end].rsplit('@').next()?;
            without_credentials = format!("{scheme}://{host_port}{}", &rest[end..]);
            without_credentials.as_str()
        }
        None => location,
    };
    let loc: Uri = location.parse().ok()?;
    let (scheme, authority) = match (loc.scheme(), loc.authority()) {
        (Some(s), Some(a)) => (s.clone(), a.clone()),
        (None, None) => (base.scheme()?.clone(), base.authority()?.clone()),
        _ => return None,
    };
    if scheme != Scheme::HTTP || authority.host().is_empty() {
        return None;
    }
    let path_and_query = loc.path_and_query().map_or("/", |pq| pq.as_str());
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_without_credentials() {
        let base: Uri = "http://fe:8030/api/db/t/_stream_load".parse().unwrap();
        let abs = resolve(
            &base,
            "http://root:secret@10.0.0.2:8040/api/db/t/_stream_load?",
        )
        .unwrap();
        assert_eq!(
            abs.to_string(),
            "http://10.0.0.2:8040/api/db/t/_stream_load?"
        );
        assert_eq!(host_of(&abs), "10.0.0.2:8040");
        let rel = resolve(&base, "/api/db/t/_stream_load").unwrap();
        assert_eq!(rel.to_string(), "http://fe:8030/api/db/t/_stream_load");
        assert!(resolve(&base, "https://be:8040/x").is_none());
        assert!(resolve(&base, "not a uri at all").is_none());
        let with_user: Uri = "http://u:p@fe:8030/x".parse().unwrap();
        assert_eq!(host_of(&with_user), "fe:8030");
    }
}
