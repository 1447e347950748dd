//! The HTTP endpoint: `/metrics`, `/healthz`, `/readyz`.
//!
//! Plain HTTP/1.1 on the configured address (default 127.0.0.1, so nothing is exposed beyond
//! the host unless the operator says so). At most [`MAX_CONNECTIONS`] connections are served
//! at once and each gets [`CONNECTION_TIMEOUT`]: a stuck scraper cannot pile up tasks.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Metrics;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Longest a connection is kept.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("binding the metrics endpoint to {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the endpoints report on.
#[derive(Clone)]
pub struct Health {
    pub metrics: Metrics,
}

impl Health {
    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let text = |status: StatusCode, body: String| {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
        }
        match req.uri().path() {
            "/metrics" => {
                let mut r = text(StatusCode::OK, self.metrics.encode());
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(OPENMETRICS),
                );
                r
            }
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => {
                let m = &self.metrics;
                let assigned = m.assigned();
                let sink = m.sink_reachable();
                let storage_down = m.storage_roots_down();
                if m.is_ready() {
                    text(
                        StatusCode::OK,
                        format!("ready: {assigned} partitions assigned, sink reachable, storage available\n"),
                    )
                } else {
                    let mut why = Vec::new();
                    if assigned <= 0 {
                        why.push("no partitions assigned".to_string());
                    }
                    if !sink {
                        why.push("sink unreachable".to_string());
                    }
                    if storage_down > 0 {
                        why.push(format!(
                            "{storage_down} storage root(s) unavailable (dicom_pipeline_storage_root_available)"
                        ));
                    }
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {}\n", why.join(", ")),
                    )
                }
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: /metrics, /healthz, /readyz\n".into(),
            ),
        }
    }
}

/// Bind `addr` (host:port, as `Config::validate` checked; port 0 picks a free one). Fails
/// loudly: an operator who asked for metrics on a port that is taken should know at start,
/// not find an empty dashboard.
pub async fn bind(addr: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.into(),
            source,
        })
}

/// Serve until `shutdown`.
pub async fn serve(listener: TcpListener, health: Health, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Over the limit: close it rather than queue it.
            drop(stream);
            continue;
        };
        let health = health.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req: Request<Incoming>| {
                let r = health.respond(&req);
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn) => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}
