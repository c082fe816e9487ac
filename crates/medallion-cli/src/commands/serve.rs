//! `medallion serve`: Prometheus metrics (`GET /metrics`) and pushed records
//! (`POST /ingest/<source>`), over HTTP/1.1 (hyper).
//!
//! A push is acknowledged (200) only once its batch is in bronze: a client that got no answer
//! sends the same body again, and lands it once (bronze is exactly once per content). Memory is
//! bounded: bodies past `--max-body` are refused before they are read whole, and at most
//! `--threads` pushes are checked and landed at once (the others wait). With `--flush-after`,
//! pushes are grouped into one batch per source ([`super::groups`]), the buffer bounded by
//! `--flush-records` and `--flush-bytes`. SIGTERM stops taking connections, lands the open
//! groups and answers every push under way.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use medallion::bronze::ingest::{IngestStatus, ingest, inspect};
use medallion::observability::metrics::gather;
use medallion::project::Project;
use medallion::storage::Lake;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::groups::{Groups, Limits};
use super::open;
use crate::Outcome;
use crate::args::Global;

/// The environment variable holding the bearer token pushes need (unset: none needed).
const TOKEN_VAR: &str = "MEDALLION_PUSH_TOKEN";

/// What every request handler shares.
struct State {
    project: Project,
    lake: Lake,
    /// `Authorization: Bearer <token>` required on pushes.
    token: Option<String>,
    max_body: u64,
    /// Pushes checked and landed at once.
    pushes: Semaphore,
    permits: u32,
    /// Group commit (`--flush-after`), or one batch per push.
    groups: Option<Arc<Groups>>,
    /// Pushes not answered yet.
    waiting: AtomicUsize,
}

/// `serve`'s push settings.
pub struct PushOptions<'a> {
    pub max_body: &'a str,
    pub flush_after: &'a str,
    pub flush_records: u64,
    pub flush_bytes: &'a str,
}

pub async fn serve(g: &Global, addr: &str, push: PushOptions<'_>) -> Result<Outcome> {
    let (project, lake) = open(g).await?;
    let max_body = super::size(push.max_body, "--max-body")?;
    let after = super::span(push.flush_after, "--flush-after")?;
    let groups = (!after.is_zero()).then(|| -> Result<Arc<Groups>> {
        let bytes = usize::try_from(super::size(push.flush_bytes, "--flush-bytes")?).unwrap_or(usize::MAX);
        Ok(Groups::new(lake.clone(), Limits { after, records: push.flush_records.max(1), bytes }))
    });
    let groups = groups.transpose()?;
    let token = std::env::var(TOKEN_VAR).ok().filter(|t| !t.is_empty());
    let permits = u32::try_from(super::threads(g)).unwrap_or(u32::MAX);
    let state = Arc::new(State {
        project,
        lake,
        token,
        max_body,
        pushes: Semaphore::new(permits as usize),
        permits,
        groups,
        waiting: AtomicUsize::new(0),
    });
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let at = listener.local_addr()?;
    eprintln!("serving metrics at http://{at}/metrics and pushes at http://{at}/ingest/<source>");
    if state.token.is_none() {
        eprintln!("note: {TOKEN_VAR} is not set: pushes need no token (anyone who reaches {at} can push)");
    }
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("cannot watch SIGTERM")?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((socket, _)) = accepted else { continue };
                let state = Arc::clone(&state);
                tokio::spawn(connection(socket, state));
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // Stop taking connections; let the pushes under way land (their clients get their answer).
    drop(listener);
    let _all = state.pushes.acquire_many(state.permits).await;
    if let Some(groups) = &state.groups {
        groups.flush_all().await;
    }
    // The answers are written as their handlers return: give them that moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while state.waiting.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    Ok(Outcome::Ok)
}

/// Serves metrics in the background (for `schedule --metrics`): `GET /metrics` only.
pub async fn spawn(addr: &str, project: Project, lake: Lake) -> Result<()> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("serving metrics at http://{}/metrics", listener.local_addr()?);
    // No pushes here: without permits, `route` answers them 404.
    let state = Arc::new(State {
        project,
        lake,
        token: None,
        max_body: 0,
        pushes: Semaphore::new(0),
        permits: 0,
        groups: None,
        waiting: AtomicUsize::new(0),
    });
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(connection(socket, Arc::clone(&state)));
        }
    });
    Ok(())
}

async fn connection(socket: tokio::net::TcpStream, state: Arc<State>) {
    let service = hyper::service::service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(route(req, &state).await) }
    });
    // A client that goes away mid-request is its own business.
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(socket), service).await;
}

async fn route(req: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/metrics") => match gather(&state.lake, &state.project, chrono::Utc::now()).await {
            Ok(text) => text_response(StatusCode::OK, text),
            Err(e) => text_response(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        },
        (method, p) if p.starts_with("/ingest/") && state.permits > 0 => {
            if method != Method::POST {
                return error(StatusCode::METHOD_NOT_ALLOWED, "pushes are POST /ingest/<source>".into());
            }
            state.waiting.fetch_add(1, Ordering::SeqCst);
            let answer = push(req, state, &p["/ingest/".len()..]).await;
            state.waiting.fetch_sub(1, Ordering::SeqCst);
            answer
        }
        _ => text_response(StatusCode::NOT_FOUND, "try GET /metrics or POST /ingest/<source>\n".into()),
    }
}

/// `POST /ingest/<source>`: check, land, answer.
async fn push(req: Request<Incoming>, state: &State, source: &str) -> Response<Full<Bytes>> {
    if let Some(token) = &state.token {
        let given = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !same(given.as_bytes(), format!("Bearer {token}").as_bytes()) {
            return error(StatusCode::UNAUTHORIZED, format!("pushes need `Authorization: Bearer <{TOKEN_VAR}>`"));
        }
    }
    let Some(src) = state.project.sources.get(source) else {
        let known: Vec<&String> = state.project.sources.keys().collect();
        return error(StatusCode::NOT_FOUND, format!("unknown source `{source}`; the project's sources: {known:?}"));
    };
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large =
        || error(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over {} bytes (--max-body)", state.max_body));
    if declared.is_some_and(|n| n > state.max_body) {
        return too_large();
    }
    let Ok(permit) = state.pushes.acquire().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping".into());
    };
    let body =
        match Limited::new(req.into_body(), usize::try_from(state.max_body).unwrap_or(usize::MAX)).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return too_large(),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body could not be read: {e}")),
        };
    let read = src.read.clone();
    let checked = {
        let body = body.clone();
        tokio::task::spawn_blocking(move || inspect(&read, &body)).await
    };
    let records = match checked {
        Ok(Ok((records, _))) => records,
        Ok(Err(why)) => return error(StatusCode::BAD_REQUEST, format!("nothing landed: {why}")),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("checking the body: {e}")),
    };
    let landed = match &state.groups {
        Some(groups) => {
            // Checked: the permit goes back while the push waits for its group.
            drop(permit);
            groups.push(&src.name, &src.read, body, records).await
        }
        None => {
            let input = format!("POST /ingest/{source}");
            let landed =
                ingest(&state.lake, &src.name, src.read.clone(), &input, body.to_vec(), chrono::Utc::now()).await;
            drop(permit);
            landed.map_err(|e| e.to_string())
        }
    };
    match landed {
        Ok(outcome) => json_response(
            StatusCode::OK,
            json!({
                "status": match outcome.status {
                    IngestStatus::AlreadyIngested => "already_ingested",
                    _ => "ingested",
                },
                "batch_id": outcome.batch_id,
                "path": outcome.path,
                "records": outcome.records,
                "corrupt": outcome.corrupt,
            }),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("nothing acknowledged: {e}")),
    }
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    json_response(status, json!({ "error": message }))
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut text = body.to_string();
    text.push('\n');
    respond(status, "application/json", text)
}

fn text_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    respond(status, "text/plain; version=0.0.4", body)
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    response
}
