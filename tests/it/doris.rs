//! The Doris sink against a fake Stream Load server (no Doris can be installed here).
//!
//! The fake implements the documented behaviour the sink relies on: an FE port that checks
//! basic auth and answers `307` to a BE port (with credentials in the Location, as Doris
//! FEs have sent), a BE port that checks basic auth and the load headers, loads JSON lines
//! whose keys must be exactly the table's columns in `sql/doris.sql`, remembers labels (a
//! second load under a used label answers `Label Already Exists`), and can be told to answer
//! the next loads with chosen failures. Its state is owned by one task; connections talk to
//! it over a channel.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use dicom_pipeline::config::{Config, DorisConfig, SinkBackend};
use dicom_pipeline::pipeline;
use dicom_pipeline::sink::doris::service::{json_lines, STORE};
use dicom_pipeline::sink::doris::{schema, DorisSink, LoadError, Loaded, StreamLoadClient};
use dicom_pipeline::sink::{Batch, Sink, SinkError};
use dicom_pipeline::testing as test_rows;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::common::*;

const USER: &str = "loader";
const PASSWORD: &str = "pa:ss wörd";

/// What the fake does instead of (or besides) a plain load.
#[derive(Debug, Clone)]
enum Fault {
    /// Answer with this HTTP status and body; load nothing.
    Answer(u16, String),
    /// Load the rows (committed), answer `Publish Timeout`; the label then answers
    /// `Label Already Exists` / `RUNNING` this many times before `FINISHED`.
    PublishTimeout { running: u32 },
}

fn fail(message: &str) -> Fault {
    Fault::Answer(
        200,
        serde_json::json!({"TxnId": -1, "Status": "Fail", "Message": message}).to_string(),
    )
}

/// One load the fake committed.
#[derive(Debug, Clone)]
struct Load {
    table: String,
    label: Option<String>,
    rows: usize,
}

/// What the fake has seen.
#[derive(Debug, Clone, Default)]
struct Seen {
    loads: Vec<Load>,
    rows: BTreeMap<String, Vec<Value>>,
    fe_requests: u64,
    /// FE requests whose Authorization header was right.
    fe_authorized: u64,
    be_requests: u64,
    /// BE requests whose Authorization header was right.
    be_authorized: u64,
    label_exists_answers: u64,
    faults_answered: u64,
}

impl Seen {
    fn rows(&self, table: &str) -> &[Value] {
        self.rows.get(table).map_or(&[], |r| r.as_slice())
    }

    fn column(&self, table: &str, column: &str) -> Vec<String> {
        self.rows(table)
            .iter()
            .map(|r| r[column].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

enum Cmd {
    Fe {
        authorized: bool,
    },
    Load {
        authorized: bool,
        table: String,
        label: Option<String>,
        headers_ok: Result<(), String>,
        body: Vec<u8>,
        reply: oneshot::Sender<(u16, String)>,
    },
    /// Answer the next `n` loads (of `table` only, if given) with the fault.
    Inject(Option<String>, Fault, usize),
    Clear,
    Snapshot(oneshot::Sender<Seen>),
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Fe,
    Be,
}

struct FakeDoris {
    fe: SocketAddr,
    cmd: mpsc::Sender<Cmd>,
    stop: CancellationToken,
}

impl Drop for FakeDoris {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeDoris {
    /// FE and BE on free local ports; the BE accepts `be_password` (normally the same as
    /// the FE's, [`PASSWORD`]).
    async fn start(be_password: &str) -> FakeDoris {
        let fe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let be = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (fe_addr, be_addr) = (fe.local_addr().unwrap(), be.local_addr().unwrap());
        let (cmd, rx) = mpsc::channel(64);
        let stop = CancellationToken::new();
        tokio::spawn(state_task(rx, stop.clone()));
        let fe_auth = basic(USER, PASSWORD);
        let be_auth = basic(USER, be_password);
        tokio::spawn(accept(
            fe,
            Role::Fe,
            fe_auth,
            be_addr,
            cmd.clone(),
            stop.clone(),
        ));
        tokio::spawn(accept(
            be,
            Role::Be,
            be_auth,
            be_addr,
            cmd.clone(),
            stop.clone(),
        ));
        FakeDoris {
            fe: fe_addr,
            cmd,
            stop,
        }
    }

    fn config(&self) -> DorisConfig {
        DorisConfig {
            fe_url: format!("http://{}", self.fe),
            user: USER.into(),
            password: PASSWORD.into(),
            database: format!("it_{}", random_suffix()),
            request_timeout_ms: 5_000,
            ..DorisConfig::default()
        }
    }

    async fn inject(&self, fault: Fault, times: usize) {
        self.cmd
            .send(Cmd::Inject(None, fault, times))
            .await
            .unwrap();
    }

    async fn inject_for(&self, table: &str, fault: Fault, times: usize) {
        let table = Some(table.to_string());
        self.cmd
            .send(Cmd::Inject(table, fault, times))
            .await
            .unwrap();
    }

    async fn clear(&self) {
        self.cmd.send(Cmd::Clear).await.unwrap();
    }

    async fn seen(&self) -> Seen {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::Snapshot(tx)).await.unwrap();
        rx.await.unwrap()
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

async fn accept(
    listener: TcpListener,
    role: Role,
    auth: String,
    be: SocketAddr,
    cmd: mpsc::Sender<Cmd>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let (auth, cmd, stop) = (auth.clone(), cmd.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = connection(stream, role, &auth, be, &cmd) => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

struct HttpRequest {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Read one HTTP/1.1 request (Content-Length bodies only, as the sink sends). None at EOF.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<HttpRequest> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = req.parse(buf) {
            let headers: HashMap<String, String> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let (method, path) = (
                req.method.unwrap_or("").to_string(),
                req.path.unwrap_or("").to_string(),
            );
            while buf.len() < head + len {
                let mut chunk = [0u8; 64 * 1024];
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[head..head + len].to_vec();
            buf.drain(..head + len);
            return Some(HttpRequest {
                method,
                path,
                headers,
                body,
            });
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn connection(
    mut stream: TcpStream,
    role: Role,
    auth: &str,
    be: SocketAddr,
    cmd: &mpsc::Sender<Cmd>,
) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut stream, &mut buf).await {
        let authorized = req.headers.get("authorization").map(String::as_str) == Some(auth);
        let (status, extra, body, close) = match role {
            Role::Fe => {
                let _ = cmd.send(Cmd::Fe { authorized }).await;
                if !authorized {
                    (401, String::new(), "Unauthorized".to_string(), false)
                } else {
                    // As Doris FEs have done: the BE address with the caller's credentials.
                    let location = format!("http://{USER}:{PASSWORD}@{be}{}", req.path);
                    (
                        307,
                        format!("Location: {location}\r\n"),
                        String::new(),
                        true,
                    )
                }
            }
            Role::Be => {
                let (tx, rx) = oneshot::channel();
                let table = req
                    .path
                    .strip_prefix("/api/")
                    .and_then(|p| p.split('/').nth(1))
                    .unwrap_or("")
                    .to_string();
                let _ = cmd
                    .send(Cmd::Load {
                        authorized,
                        table,
                        label: req.headers.get("label").cloned(),
                        headers_ok: check_load_headers(&req),
                        body: req.body,
                        reply: tx,
                    })
                    .await;
                let (status, body) = rx.await.unwrap_or((500, "fake stopped".into()));
                (status, String::new(), body, false)
            }
        };
        let reason = match status {
            200 => "OK",
            307 => "Temporary Redirect",
            401 => "Unauthorized",
            404 => "Not Found",
            _ => "Whatever",
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: {}\r\nContent-Type: text/plain; charset=UTF-8\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if stream.write_all(head.as_bytes()).await.is_err()
            || stream.write_all(body.as_bytes()).await.is_err()
            || close
        {
            return;
        }
    }
}

fn check_load_headers(req: &HttpRequest) -> Result<(), String> {
    if req.method != "PUT" || !req.path.ends_with("/_stream_load") {
        return Err(format!("{} {}", req.method, req.path));
    }
    for (name, want) in [
        ("expect", "100-continue"),
        ("format", "json"),
        ("read_json_by_line", "true"),
        ("strict_mode", "true"),
        ("max_filter_ratio", "0"),
    ] {
        if req.headers.get(name).map(String::as_str) != Some(want) {
            return Err(format!("header {name} is not {want}"));
        }
    }
    Ok(())
}

enum LabelState {
    Finished,
    Running(u32),
}

async fn state_task(mut rx: mpsc::Receiver<Cmd>, stop: CancellationToken) {
    let mut seen = Seen::default();
    let mut faults: VecDeque<(Option<String>, Fault)> = VecDeque::new();
    let mut labels: HashMap<String, LabelState> = HashMap::new();
    let columns: HashMap<&str, BTreeSet<String>> =
        ["dicom_image", "dicom_state", "dicom_store", "dicom_dlq"]
            .into_iter()
            .map(|t| {
                (
                    t,
                    dicom_pipeline::sink::sql::table_columns(schema::DDL, t)
                        .into_iter()
                        .collect(),
                )
            })
            .collect();
    loop {
        let c = tokio::select! {
            c = rx.recv() => c,
            _ = stop.cancelled() => return,
        };
        let Some(c) = c else { return };
        match c {
            Cmd::Fe { authorized } => {
                seen.fe_requests += 1;
                seen.fe_authorized += u64::from(authorized);
            }
            Cmd::Inject(table, f, n) => faults.extend(std::iter::repeat_n((table, f), n)),
            Cmd::Clear => faults.clear(),
            Cmd::Snapshot(tx) => {
                let _ = tx.send(seen.clone());
            }
            Cmd::Load {
                authorized,
                table,
                label,
                headers_ok,
                body,
                reply,
            } => {
                seen.be_requests += 1;
                let answer = if !authorized {
                    (401, "Unauthorized".to_string())
                } else {
                    seen.be_authorized += 1;
                    let fault = faults
                        .iter()
                        .position(|(t, _)| t.as_ref().is_none_or(|t| *t == table))
                        .and_then(|i| faults.remove(i))
                        .map(|(_, f)| f);
                    if matches!(fault, Some(Fault::Answer(..))) {
                        seen.faults_answered += 1;
                    }
                    load(
                        &mut seen,
                        &mut labels,
                        &columns,
                        fault,
                        &table,
                        label,
                        headers_ok,
                        &body,
                    )
                };
                let _ = reply.send(answer);
            }
        }
    }
}

fn result(status: &str, label: &str, message: &str, rows: usize) -> String {
    serde_json::json!({
        "TxnId": 7, "Label": label, "Comment": "", "TwoPhaseCommit": "false",
        "Status": status, "Message": message,
        "NumberTotalRows": rows, "NumberLoadedRows": rows, "NumberFilteredRows": 0,
        "NumberUnselectedRows": 0, "LoadBytes": 1, "LoadTimeMs": 1,
    })
    .to_string()
}

#[allow(clippy::too_many_arguments)]
fn load(
    seen: &mut Seen,
    labels: &mut HashMap<String, LabelState>,
    columns: &HashMap<&str, BTreeSet<String>>,
    fault: Option<Fault>,
    table: &str,
    label: Option<String>,
    headers_ok: Result<(), String>,
    body: &[u8],
) -> (u16, String) {
    if let Some(Fault::Answer(status, body)) = fault {
        return (status, body);
    }
    let label_text = label.clone().unwrap_or_default();
    if let Err(problem) = headers_ok {
        return (
            200,
            result(
                "Fail",
                &label_text,
                &format!("[INVALID_ARGUMENT]{problem}"),
                0,
            ),
        );
    }
    if let Some(state) = label.as_ref().and_then(|l| labels.get_mut(l)) {
        seen.label_exists_answers += 1;
        let existing = match state {
            LabelState::Running(n) if *n > 0 => {
                *n -= 1;
                "RUNNING"
            }
            _ => {
                *state = LabelState::Finished;
                "FINISHED"
            }
        };
        let mut answer: Value = serde_json::from_str(&result(
            "Label Already Exists",
            &label_text,
            &format!("Label [{label_text}] has already been used"),
            0,
        ))
        .unwrap();
        answer["ExistingJobStatus"] = existing.into();
        return (200, answer.to_string());
    }
    let Some(want) = columns.get(table) else {
        let m = format!("[ANALYSIS_ERROR]errCode = 2, detailMessage = Unknown table '{table}'");
        return (200, result("Fail", &label_text, &m, 0));
    };
    let mut rows = Vec::new();
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let row: Option<Value> = serde_json::from_slice(line).ok();
        let keys: Option<BTreeSet<String>> = row
            .as_ref()
            .and_then(Value::as_object)
            .map(|o| o.keys().cloned().collect());
        if keys.as_ref() != Some(want) {
            let m = "[DATA_QUALITY_ERROR]too many filtered rows";
            return (200, result("Fail", &label_text, m, 0));
        }
        rows.extend(row);
    }
    let n = rows.len();
    seen.rows.entry(table.to_string()).or_default().extend(rows);
    seen.loads.push(Load {
        table: table.to_string(),
        label: label.clone(),
        rows: n,
    });
    let publish_timeout = match fault {
        Some(Fault::PublishTimeout { running }) => Some(running),
        _ => None,
    };
    if let Some(l) = label {
        labels.insert(
            l,
            publish_timeout.map_or(LabelState::Finished, LabelState::Running),
        );
    }
    let status = if publish_timeout.is_some() {
        "Publish Timeout"
    } else {
        "Success"
    };
    (200, result(status, &label_text, "OK", n))
}

/// A batch as the batcher builds it: `n` instances of one series, token from the offsets.
fn batch(n: usize, first_offset: i64) -> Batch {
    let mut b = Batch::default();
    for i in 0..n {
        let offset = first_offset + i as i64;
        let sop = format!("1.2.826.0.1.3680043.10.990.{offset}");
        let (image, state, mut store) = test_rows::indexed("1.2.826.0.1.3680043.10.990.1", &sop);
        store.kafka_offset = offset;
        b.images.push(image);
        if b.states.is_empty() {
            b.states.push(state);
        }
        b.stores.push(store);
    }
    b.seal()
}

fn load_error(e: SinkError) -> LoadError {
    match e {
        SinkError::Write {
            backend: "Doris",
            source,
            ..
        } => match source.downcast::<LoadError>() {
            Ok(e) => e,
            Err(other) => panic!("not a Doris load error: {other}"),
        },
        other => panic!("not a Doris write error: {other}"),
    }
}

/// A batch written twice (a retry after its acknowledgement was lost) reaches each table
/// once: the second time every label is refused as already loaded, which counts as written.
#[tokio::test]
async fn a_retried_batch_is_loaded_once() {
    let fake = FakeDoris::start(PASSWORD).await;
    let sink = DorisSink::new(&fake.config());
    let b = batch(5, 100);
    sink.write(&b).await.unwrap();
    sink.write(&b).await.unwrap();
    let seen = fake.seen().await;
    assert_eq!(seen.rows("dicom_image").len(), 5);
    assert_eq!(seen.rows("dicom_state").len(), 1);
    assert_eq!(seen.rows("dicom_store").len(), 5);
    let tables: Vec<(&str, usize)> = seen
        .loads
        .iter()
        .map(|l| (l.table.as_str(), l.rows))
        .collect();
    assert_eq!(
        tables,
        [("dicom_image", 5), ("dicom_state", 1), ("dicom_store", 5)],
        "one load per table, store last"
    );
    assert_eq!(seen.label_exists_answers, 3);
    let labels: BTreeSet<_> = seen.loads.iter().map(|l| l.label.clone()).collect();
    assert_eq!(labels.len(), 3, "one label per table: {labels:?}");
    assert!(labels
        .iter()
        .all(|l| l.as_deref().is_some_and(|l| l.starts_with("dicom_dicom_"))));
    // Another batch of other offsets is new data: loaded.
    sink.write(&batch(2, 105)).await.unwrap();
    assert_eq!(fake.seen().await.rows("dicom_image").len(), 7);
    // The same messages processed again (a replay: other processed_at, other rows) are not
    // a retry: loaded under new labels, and the Unique Key tables keep the newer version.
    let mut replay = batch(5, 100);
    let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(5);
    replay
        .images
        .iter_mut()
        .for_each(|r| r.processed_at = later);
    replay
        .stores
        .iter_mut()
        .for_each(|r| r.processed_at = later);
    replay.states = b.states.clone(); // the series' state came out the same
    let replay = replay.seal();
    assert_eq!(replay.dedup_token, b.dedup_token);
    sink.write(&replay).await.unwrap();
    let seen = fake.seen().await;
    assert_eq!(seen.rows("dicom_image").len(), 12);
    assert_eq!(seen.rows("dicom_store").len(), 12);
    assert_eq!(
        seen.label_exists_answers, 4,
        "only the unchanged state rows were refused"
    );
}

/// A retry after a partial failure: the tables already loaded answer Label Already Exists,
/// the missing ones load; every row is in once.
#[tokio::test]
async fn a_batch_retried_after_a_partial_failure_fills_only_the_gaps() {
    let fake = FakeDoris::start(PASSWORD).await;
    let sink = DorisSink::new(&fake.config());
    let b = batch(4, 300);
    // As if an earlier attempt had loaded dicom_image and then failed.
    let image_only = Batch {
        images: b.images.clone(),
        dedup_token: b.dedup_token.clone(),
        tokens: b.tokens.clone(),
        ..Batch::default()
    };
    sink.write(&image_only).await.unwrap();
    // This attempt: image already there, state refused (retryable), store not reached.
    fake.inject_for(
        "dicom_state",
        fail("[E-235]too many versions, tablet_id=10086"),
        1,
    )
    .await;
    let err = load_error(sink.write(&b).await.unwrap_err());
    assert!(err.is_retryable(), "{err}");
    assert!(fake.seen().await.rows("dicom_store").is_empty());
    sink.write(&b).await.unwrap();
    let seen = fake.seen().await;
    assert_eq!(seen.rows("dicom_image").len(), 4, "image loaded once");
    assert_eq!(seen.rows("dicom_state").len(), 1);
    assert_eq!(seen.rows("dicom_store").len(), 4);
    assert_eq!(seen.label_exists_answers, 2);
    assert_eq!(seen.faults_answered, 1);
}

/// Every load goes FE → 307 → BE, and the BE sees the credentials: both check them, so a
/// client that dropped the Authorization header on the redirect would get 401 and fail
/// this test. A BE that does not accept the credentials is a permanent error naming the BE.
#[tokio::test]
async fn auth_survives_the_redirect() {
    let fake = FakeDoris::start(PASSWORD).await;
    let sink = DorisSink::new(&fake.config());
    sink.write(&batch(3, 0)).await.unwrap();
    let seen = fake.seen().await;
    assert_eq!((seen.fe_requests, seen.be_requests), (3, 3));
    assert_eq!((seen.fe_authorized, seen.be_authorized), (3, 3));

    // Wrong password: the FE refuses at once, permanently.
    let mut cfg = fake.config();
    cfg.password = "wrong".into();
    let err = load_error(DorisSink::new(&cfg).write(&batch(1, 9)).await.unwrap_err());
    assert!(
        matches!(err, LoadError::Http { status: 401, .. }) && !err.is_retryable(),
        "{err:?}"
    );

    // The negative control: a BE that does not see the right credentials answers 401,
    // which the sink reports (with the BE's address, never the credentials in Location).
    let picky = FakeDoris::start("another password").await;
    let err = load_error(
        DorisSink::new(&picky.config())
            .write(&batch(1, 9))
            .await
            .unwrap_err(),
    );
    let text = err.to_string();
    assert!(
        matches!(err, LoadError::Http { status: 401, .. }) && !err.is_retryable(),
        "{text}"
    );
    assert!(!text.contains(PASSWORD) && !text.contains(USER), "{text}");
    assert_eq!(picky.seen().await.be_authorized, 0);
}

/// Each documented failure answer gets its class; retryable ones succeed on the retry and
/// load the rows once.
#[tokio::test]
async fn failure_answers_are_classified() {
    let fake = FakeDoris::start(PASSWORD).await;
    let client = StreamLoadClient::new(&fake.config());
    let body = json_lines(STORE, &batch(2, 0).stores).unwrap();
    let cases: Vec<(Fault, bool, &str)> = vec![
        (
            fail("[E-235]too many versions, tablet_id=1"),
            true,
            "too many versions",
        ),
        (fail("[TIMEOUT]load timeout"), true, "TIMEOUT"),
        (
            fail("[DATA_QUALITY_ERROR]too many filtered rows"),
            false,
            "DATA_QUALITY",
        ),
        (
            fail("[ANALYSIS_ERROR]errCode = 2, detailMessage = Unknown table 'x'"),
            false,
            "Unknown table",
        ),
        (
            Fault::Answer(500, "<html>Internal Server Error</html>".into()),
            true,
            "HTTP 500",
        ),
        (Fault::Answer(503, String::new()), true, "HTTP 503"),
        (
            Fault::Answer(200, "<html>a proxy page</html>".into()),
            true,
            "not a Stream Load result",
        ),
        (Fault::Answer(404, "Not Found".into()), false, "HTTP 404"),
        (
            Fault::Answer(403, r#"{"msg":"Access denied","code":403}"#.into()),
            false,
            "Access denied",
        ),
    ];
    for (i, (fault, retryable, needle)) in cases.into_iter().enumerate() {
        let label = format!("it_case_{i}");
        fake.inject(fault, 1).await;
        let err = client
            .load("dicom_store", Some(&label), body.clone())
            .await
            .unwrap_err();
        assert_eq!(err.is_retryable(), retryable, "{err}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
        // The failure loaded nothing; the retry (same label) loads.
        let ok = client
            .load("dicom_store", Some(&label), body.clone())
            .await
            .unwrap();
        assert!(
            matches!(
                ok,
                Loaded::Written {
                    total_rows: 2,
                    loaded_rows: 2,
                    ..
                }
            ),
            "{ok:?}"
        );
    }

    // Publish Timeout: committed, not yet visible. Retryable; the retries meet the label
    // (RUNNING, then FINISHED) and the rows are in once.
    fake.inject(Fault::PublishTimeout { running: 1 }, 1).await;
    let err = client
        .load("dicom_store", Some("it_pt"), body.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, LoadError::PublishTimeout { .. }) && err.is_retryable(),
        "{err}"
    );
    let err = client
        .load("dicom_store", Some("it_pt"), body.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, LoadError::LabelRunning { .. }) && err.is_retryable(),
        "{err}"
    );
    let ok = client
        .load("dicom_store", Some("it_pt"), body.clone())
        .await
        .unwrap();
    assert_eq!(ok, Loaded::AlreadyLoaded);
    let seen = fake.seen().await;
    let loads_pt = seen
        .loads
        .iter()
        .filter(|l| l.label.as_deref() == Some("it_pt"))
        .count();
    assert_eq!(loads_pt, 1);
    // Nine cases plus the publish timeout, each loaded once.
    assert_eq!(seen.rows("dicom_store").len(), 2 * 10);

    // Rows that do not fit the table fail the whole load, permanently.
    let bad = client
        .load(
            "dicom_store",
            Some("it_bad"),
            Bytes::from_static(b"{\"kafka_topic\":\"x\"}\n"),
        )
        .await
        .unwrap_err();
    assert!(
        !bad.is_retryable() && bad.to_string().contains("DATA_QUALITY"),
        "{bad}"
    );

    // Nobody listening: a retryable connection error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = StreamLoadClient::new(&DorisConfig {
        fe_url: format!("http://127.0.0.1:{port}"),
        ..fake.config()
    });
    let err = gone.load("dicom_store", Some("x"), body).await.unwrap_err();
    assert!(
        matches!(err, LoadError::Send { .. }) && err.is_retryable(),
        "{err:?}"
    );
}

/// The pipeline end to end with `sink.backend = "doris"`: store messages on the real broker,
/// rows at the fake Doris. Injected retryable failures (HTTP 500, too many versions, a
/// publish timeout) are retried by the shared batcher; every instance reaches the fake
/// exactly once, no label is loaded twice, and every offset is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_loads_every_instance_once_into_doris() {
    let fake = FakeDoris::start(PASSWORD).await;
    let work = tempfile::tempdir().unwrap();
    let mut cfg = doris_pipeline_config(&fake, work.path());
    cfg.sink.max_rows = 8; // several batches, so several labels per table
    let n = 40u32;
    let payloads = synth_messages(work.path(), "1.2.826.0.1.3680043.10.989", n, 4);
    dicom_pipeline::kafka::ensure_topics(&cfg.kafka)
        .await
        .unwrap();
    publish(&cfg, None, &payloads).await;
    fake.inject(Fault::Answer(500, "<html>busy</html>".into()), 1)
        .await;
    fake.inject(fail("[E-235]too many versions"), 1).await;
    fake.inject(Fault::PublishTimeout { running: 1 }, 1).await;

    let started = std::time::Instant::now();
    let summary = run_until_idle(&cfg).await;
    eprintln!(
        "doris e2e: {n} instances in {:.1}s, {summary:?}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(summary.workers.indexed, u64::from(n), "{summary:?}");
    assert!(summary.sink.write_retries >= 3, "{summary:?}");

    let seen = fake.seen().await;
    let sops = seen.column("dicom_image", "sop_uid");
    let distinct: BTreeSet<&String> = sops.iter().collect();
    assert_eq!(distinct.len(), n as usize);
    assert_eq!(sops.len(), n as usize, "an instance was loaded twice");
    assert_eq!(seen.rows("dicom_store").len(), n as usize);
    let mut labels = BTreeMap::new();
    for l in &seen.loads {
        *labels
            .entry(l.label.clone().expect("every load is labelled"))
            .or_insert(0) += 1;
    }
    assert!(
        labels.values().all(|&c| c == 1),
        "a label loaded twice: {labels:?}"
    );
    assert!(summary.sink.flushes >= 5, "{summary:?}");
    let image_loads = seen
        .loads
        .iter()
        .filter(|l| l.table == "dicom_image")
        .count();
    assert_eq!(image_loads as u64, summary.sink.flushes);
    // Series state: 4 series, every row carrying DATETIME(3) text.
    let series: BTreeSet<String> = seen
        .column("dicom_state", "series_uid")
        .into_iter()
        .collect();
    assert_eq!(series.len(), 4);
    assert!(seen
        .column("dicom_state", "first_seen")
        .iter()
        .all(|t| t.len() == 23));
    assert_eq!(lag(&cfg).await, 0);
    for l in lags(&cfg).await {
        let committed = l.committed.unwrap_or(l.low);
        let stored = seen
            .rows("dicom_store")
            .iter()
            .filter(|r| {
                r["kafka_partition"] == l.partition && r["kafka_offset"].as_i64() < Some(committed)
            })
            .count() as i64;
        assert_eq!(
            stored,
            committed - l.low,
            "partition {} committed past its rows",
            l.partition
        );
    }
}

/// A permanent failure (Doris refusing the rows) loses nothing silently: the batch is
/// retried, never acknowledged, the offsets stay uncommitted, and once the cause is fixed a
/// restart loads everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_holds_the_offsets_until_fixed() {
    let fake = FakeDoris::start(PASSWORD).await;
    let work = tempfile::tempdir().unwrap();
    let mut cfg = doris_pipeline_config(&fake, work.path());
    cfg.pipeline.drain_timeout_ms = 1_000;
    let n = 10u32;
    let payloads = synth_messages(work.path(), "1.2.826.0.1.3680043.10.988", n, 1);
    dicom_pipeline::kafka::ensure_topics(&cfg.kafka)
        .await
        .unwrap();
    publish(&cfg, None, &payloads).await;
    fake.inject(
        fail("[DATA_QUALITY_ERROR]too many filtered rows"),
        1_000_000,
    )
    .await;

    let shutdown = CancellationToken::new();
    let run = tokio::spawn(pipeline::run(cfg.clone(), None, shutdown.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // A write attempt loads up to three tables at once (image, state, dead letters) and each
    // refused load is one fault answered: nine of them are at least three attempts.
    while fake.seen().await.faults_answered < 9 {
        assert!(std::time::Instant::now() < deadline, "no load attempts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.workers.indexed, 0, "{summary:?}");
    assert!(
        summary.sink.abandoned > 0 && summary.sink.write_retries >= 3,
        "{summary:?}"
    );
    let seen = fake.seen().await;
    assert!(seen.loads.is_empty(), "{:?}", seen.loads);
    assert_eq!(
        lag(&cfg).await,
        i64::from(n),
        "offsets committed past unwritten rows"
    );

    // The operator fixes the cause: the next run loads everything and commits.
    fake.clear().await;
    cfg.pipeline.drain_timeout_ms = 5_000;
    let summary = run_until_idle(&cfg).await;
    assert_eq!(summary.workers.indexed, u64::from(n), "{summary:?}");
    assert_eq!(fake.seen().await.rows("dicom_image").len(), n as usize);
    assert_eq!(lag(&cfg).await, 0);
}

fn doris_pipeline_config(fake: &FakeDoris, root: &std::path::Path) -> Config {
    let mut cfg = test_config(2, vec![root.to_path_buf()]);
    cfg.sink.backend = SinkBackend::Doris;
    cfg.sink.retry_initial_ms = 20;
    cfg.sink.retry_max_ms = 200;
    cfg.doris = fake.config();
    cfg.validate().unwrap();
    cfg
}

/// The CLI: `schema --sink doris` against an unreachable MySQL endpoint fails with a clear
/// message; `--print-config` shows the backend and redacts a password from the environment.
#[test]
fn the_cli_selects_doris_and_keeps_its_password_secret() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = printed_config(
        bin()
            .args(["--sink", "doris", "--print-config", "schema"])
            .env("DICOM_PIPELINE_DORIS__PASSWORD", "012345"),
    );
    assert!(
        text.contains("backend = \"doris\"") && text.contains("<redacted>"),
        "{text}"
    );
    assert!(!text.contains("12345"), "{text}");
    // (A numeric-looking password from the environment loads: figment would have parsed
    // it as a number and refused it.)

    let root = tempfile::tempdir().unwrap();
    let cfg = test_config(1, vec![root.path().to_path_buf()]);
    let mut schema = bin();
    let out = kafka_env(schema.args(["schema", "--sink", "doris"]), &cfg)
        .env(
            "DICOM_PIPELINE_DORIS__MYSQL_ADDR",
            format!("127.0.0.1:{port}"),
        )
        .env("DICOM_PIPELINE_DORIS__REQUEST_TIMEOUT_MS", "3000")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("applying the Doris schema at 127.0.0.1:{port}: connecting to Doris at 127.0.0.1:{port} over the MySQL protocol")),
        "{err}"
    );
}
