//! HTTP API sources: the pages of a JSON API landed as bronze batches, each exactly once, a crash
//! resuming where it stopped.
//!
//! ```text
//! _medallion/http/<source>.json   { cursor, boundary, pending: { next, since, high, … } }
//!
//! page k ─GET (timeout, retries, Retry-After)─▶ records at `records` ─▶ ingest  (one batch, exactly
//!        │                                                                       once per content)
//!        └─ after the batch is durable: pending.next = page k+1, pending.high = largest `field`
//! last page ─▶ cursor = high, pending = none     (the next run asks for `param` = cursor)
//! ```
//!
//! A kill between a batch and the state update fetches page k again: its records are the same, so
//! ingest finds their content landed and writes nothing. APIs that answer "changed since X"
//! inclusively send the records at X again: a record identical to one landed at the cursor's own
//! value (remembered by hash) is not landed twice.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use url::Url;

use super::ingest::{IngestOutcome, ReadOptions, hex, ingest_from};
use crate::error::{Error, Result};
use crate::runtime::Now;
use crate::runtime::clock::later;
use crate::spec::{HttpSpec, SourceFormat, env};
use crate::storage::Lake;

/// A page past this is refused (the fetch fails, naming the page).
pub const MAX_PAGE_BYTES: usize = 256 << 20;

/// The first wait after a failed try; it doubles with each try, up to `max_wait`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// How the next page is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pagination {
    /// One request.
    None,
    /// A token in the response at `path`, sent back in `param`.
    Cursor {
        /// Where the token is.
        path: Vec<String>,
        /// The query parameter.
        param: String,
    },
    /// The next page's URL in the response at `path`.
    Url {
        /// Where the URL is.
        path: Vec<String>,
    },
    /// The `Link: <…>; rel="next"` header.
    Link,
    /// Page numbers in `param`, from `start`, until a page has no records.
    Page {
        /// The query parameter.
        param: String,
        /// The first page's number.
        start: u64,
    },
    /// The number of records read so far in `param`, until a page has no records.
    Offset {
        /// The query parameter.
        param: String,
    },
}

/// Fetch only what changed since the last run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incremental {
    /// A record's change marker (dotted path).
    pub field: Vec<String>,
    /// The query parameter sent the largest marker landed.
    pub param: String,
    /// Sent when nothing was landed yet.
    pub start: Option<String>,
}

/// A checked `[sources.<name>.http]`: `url`, `params` and `headers` as written (`${VAR}` is
/// expanded at each fetch, so secrets never reach the lake or a message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSource {
    /// The endpoint.
    pub url: String,
    /// Path of the records array in a response (empty: the response is the array).
    pub records: Vec<String>,
    /// Query parameters.
    pub params: BTreeMap<String, String>,
    /// Request headers.
    pub headers: BTreeMap<String, String>,
    /// How the next page is found.
    pub pagination: Pagination,
    /// Changed-since fetching.
    pub incremental: Option<Incremental>,
    /// Per request.
    pub timeout: Duration,
    /// Retries of a request.
    pub retries: u32,
    /// The longest wait between tries.
    pub max_wait: Duration,
}

/// Header and parameter names whose values are credentials: they must come from `${VAR}`.
const SECRET_NAMES: [&str; 12] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
    "apikey",
    "api_key",
    "access_token",
    "token",
    "key",
    "client_secret",
    "password",
];

fn dotted(text: &str) -> std::result::Result<Vec<String>, String> {
    let parts: Vec<String> = text.split('.').map(str::to_string).collect();
    if parts.iter().any(|p| p.trim().is_empty()) {
        return Err(format!("`{text}` is not a dotted path of field names (`data`, `result.items`)"));
    }
    Ok(parts)
}

impl HttpSource {
    /// Checks a spec: every problem as (key, message).
    pub fn from_spec(spec: &HttpSpec) -> std::result::Result<HttpSource, Vec<(&'static str, String)>> {
        let mut errors: Vec<(&'static str, String)> = Vec::new();
        match env::check(&spec.url) {
            Err(e) => errors.push(("url", format!("`url`: {e}"))),
            Ok(()) => {
                // A variable may stand for a host, a port or a path: any stand-in that parses will do.
                let sample = |v: &str| Url::parse(&env::expand_with(&spec.url, |_| Some(v.into())).unwrap_or_default());
                match sample("1").or_else(|_| sample("x")) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                    Ok(u) => errors.push(("url", format!("`url` must be http:// or https://, not {}://", u.scheme()))),
                    Err(e) => errors.push(("url", format!("`url` is not a URL: {e}"))),
                }
            }
        }
        for (what, key, map) in [("parameter", "params", &spec.params), ("header", "headers", &spec.headers)] {
            for (name, value) in map {
                if let Err(e) = env::check(value) {
                    errors.push((key, format!("{what} `{name}`: {e}")));
                } else if SECRET_NAMES.contains(&name.to_ascii_lowercase().as_str()) && !value.contains("${") {
                    errors.push((
                        key,
                        format!(
                            "{what} `{name}` holds a credential written in the project file: put it in an \
                             environment variable and write `{name} = \"…${{API_TOKEN}}\"`"
                        ),
                    ));
                }
            }
        }
        for name in spec.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errors.push(("headers", format!("`{name}` is not a valid header name")));
            }
        }
        let records = match spec.records.as_deref() {
            None | Some("") => Vec::new(),
            Some(r) => dotted(r).unwrap_or_else(|e| {
                errors.push(("records", format!("`records`: {e}")));
                Vec::new()
            }),
        };
        let pagination = match &spec.pagination {
            None => Pagination::None,
            Some(p) => Self::pagination(p).unwrap_or_else(|e| {
                errors.push(("pagination", e));
                Pagination::None
            }),
        };
        let incremental = spec.incremental.as_ref().and_then(|i| {
            let field = dotted(&i.field).map_err(|e| errors.push(("incremental", format!("`field`: {e}")))).ok()?;
            if i.param.trim().is_empty() {
                errors.push(("incremental", "`param` must name a query parameter".into()));
            }
            let paged = match &pagination {
                Pagination::Cursor { param, .. } | Pagination::Page { param, .. } | Pagination::Offset { param } => {
                    Some(param)
                }
                _ => None,
            };
            if paged == Some(&i.param) || spec.params.contains_key(&i.param) {
                errors.push(("incremental", format!("query parameter `{}` is set twice", i.param)));
            }
            Some(Incremental { field, param: i.param.clone(), start: i.start.clone() })
        });
        let mut duration = |key: &'static str, value: &Option<String>, default: u64| -> Duration {
            match value.as_deref().map(str::parse::<crate::spec::Duration>) {
                None => Duration::from_secs(default),
                Some(Ok(d)) if d.seconds > 0 => Duration::from_secs(d.seconds),
                Some(Ok(_)) => {
                    errors.push((key, format!("`{key}` must be longer than 0s")));
                    Duration::from_secs(default)
                }
                Some(Err(e)) => {
                    errors.push((key, format!("`{key}`: {e}")));
                    Duration::from_secs(default)
                }
            }
        };
        let timeout = duration("timeout", &spec.timeout, 30);
        let max_wait = duration("max_wait", &spec.max_wait, 300);
        let source = HttpSource {
            url: spec.url.clone(),
            records,
            params: spec.params.clone(),
            headers: spec.headers.clone(),
            pagination,
            incremental,
            timeout,
            retries: spec.retries.unwrap_or(5),
            max_wait,
        };
        if errors.is_empty() { Ok(source) } else { Err(errors) }
    }

    fn pagination(p: &crate::spec::PaginationSpec) -> std::result::Result<Pagination, String> {
        let path = || -> std::result::Result<Vec<String>, String> {
            let path = p.path.as_deref().ok_or(format!("pagination `{}` needs `path`", p.style))?;
            dotted(path).map_err(|e| format!("pagination `path`: {e}"))
        };
        let param = || -> std::result::Result<String, String> {
            p.param.clone().filter(|s| !s.trim().is_empty()).ok_or(format!("pagination `{}` needs `param`", p.style))
        };
        let unused = |keys: &[(&str, bool)]| -> std::result::Result<(), String> {
            match keys.iter().find(|(_, given)| *given) {
                Some((key, _)) => Err(format!("pagination `{}` takes no `{key}`", p.style)),
                None => Ok(()),
            }
        };
        let (path_given, param_given, start_given) = (p.path.is_some(), p.param.is_some(), p.start.is_some());
        Ok(match p.style.as_str() {
            "cursor" => {
                unused(&[("start", start_given)])?;
                Pagination::Cursor { path: path()?, param: param()? }
            }
            "url" => {
                unused(&[("param", param_given), ("start", start_given)])?;
                Pagination::Url { path: path()? }
            }
            "link" => {
                unused(&[("path", path_given), ("param", param_given), ("start", start_given)])?;
                Pagination::Link
            }
            "page" => {
                unused(&[("path", path_given)])?;
                Pagination::Page { param: param()?, start: p.start.unwrap_or(1) }
            }
            "offset" => {
                unused(&[("path", path_given), ("start", start_given)])?;
                Pagination::Offset { param: param()? }
            }
            other => {
                return Err(format!("unknown pagination style `{other}`: use cursor, url, link, page or offset"));
            }
        })
    }

    /// What the pages and the cursor depend on: a state kept for another configuration is not
    /// resumed.
    fn fingerprint(&self, whole: bool) -> String {
        let mut h = Sha256::new();
        h.update(self.url.as_bytes());
        if let Some(i) = &self.incremental {
            h.update(i.field.join(".").as_bytes());
        }
        if whole {
            h.update(format!("{:?}{:?}{:?}{:?}", self.records, self.params, self.pagination, self.incremental));
        }
        hex(&h.finalize()[..12])
    }

    /// The URL with its query parameters (`${VAR}` expanded) shown without them: for outcomes and
    /// messages, which must not carry secrets.
    fn shown(&self) -> String {
        self.url.split('?').next().unwrap_or(&self.url).to_string()
    }
}

/// Where an HTTP source's state lives in the lake.
pub fn state_path(source: &str) -> String {
    format!("_medallion/http/{source}.json")
}

/// The state kept between fetches.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    /// [`HttpSource::fingerprint`] of the URL and field the cursor belongs to.
    #[serde(default)]
    cursor_of: String,
    /// The largest change marker landed (JSON text), sent as the incremental parameter.
    #[serde(default)]
    cursor: Option<String>,
    /// Hashes of the records landed whose marker equals `cursor`.
    #[serde(default)]
    boundary: BTreeSet<String>,
    /// A fetch under way.
    #[serde(default)]
    pending: Option<Pending>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    /// [`HttpSource::fingerprint`] of the whole configuration.
    config: String,
    /// The page to fetch next.
    next: Next,
    /// The incremental parameter of this fetch (the cursor when it started, JSON text).
    since: Option<String>,
    /// The records already landed at `since` (skipped).
    since_boundary: BTreeSet<String>,
    /// The largest marker landed so far, and the hashes of its records.
    high: Option<String>,
    high_boundary: BTreeSet<String>,
    /// Pages landed.
    pages: u64,
}

/// The next request of a fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Next {
    First,
    Token { value: String },
    Url { url: String },
    Page { number: u64 },
    Offset { offset: u64 },
}

fn fetch_error(source: &str, message: impl Into<String>) -> Error {
    Error::Fetch { source_name: source.to_string(), message: message.into() }
}

/// Fetches every new page of `source`'s API and lands each as a batch; returns one outcome per
/// page that had records to land. Resumes a fetch a crash interrupted.
pub async fn fetch(lake: &Lake, source: &str, http: &HttpSource, now: Now) -> Result<Vec<IngestOutcome>> {
    let failed = |m: String| fetch_error(source, m);
    let path = state_path(source);
    let mut state: State = match lake.get(&path).await? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Internal(format!("corrupt HTTP source state {path}: {e}")))?,
        None => State::default(),
    };
    if state.cursor_of != http.fingerprint(false) {
        // Another URL or change marker: its cursor says nothing about this one.
        state = State { cursor_of: http.fingerprint(false), ..State::default() };
    }
    let config = http.fingerprint(true);
    let mut pending = match state.pending.take() {
        Some(p) if p.config == config => p,
        _ => Pending {
            config,
            next: Next::First,
            since: state.cursor.clone(),
            since_boundary: state.boundary.clone(),
            high: state.cursor.clone(),
            high_boundary: state.boundary.clone(),
            pages: 0,
        },
    };
    let since_param = match (&http.incremental, &pending.since) {
        (Some(_), Some(since)) => Some(param_text(since)),
        (Some(i), None) => i.start.clone(),
        (None, _) => None,
    };
    let client = reqwest::Client::builder()
        .timeout(http.timeout)
        .connect_timeout(http.timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("medallion/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| failed(format!("cannot make an HTTP client: {e}")))?;
    let headers = request_headers(http).map_err(&failed)?;
    let read = ReadOptions::from(SourceFormat::Ndjson);
    let mut out = Vec::new();
    loop {
        let page_no = pending.pages + 1;
        let shown = format!("GET {} page {page_no}", http.shown());
        let url =
            request_url(http, &pending.next, since_param.as_deref()).map_err(|e| failed(format!("{shown}: {e}")))?;
        let (body, response_headers) =
            get(&client, url.clone(), &headers, http).await.map_err(|e| failed(format!("{shown}: {e}")))?;
        let page = Page::read(&body, http, &pending).map_err(|e| failed(format!("{shown}: {e}")))?;
        if !page.ndjson.is_empty() {
            let input = Arc::new(bytes::Bytes::from(page.ndjson));
            let at = later(now, out.len());
            out.push(ingest_from(lake, source, read.clone(), &shown, input, at).await?);
            crate::runtime::faults::check(&format!("bronze/{source}"), "page")?;
        }
        let next = next_page(http, &pending.next, &url, &body, &response_headers, page.records)
            .map_err(|e| failed(format!("{shown}: {e}")))?;
        (pending.high, pending.high_boundary) = (page.high, page.high_boundary);
        pending.pages += 1;
        match next {
            Some(next) if next == pending.next => {
                return Err(failed(format!("{shown}: the API gave this same page as the next one")));
            }
            Some(next) => {
                // The page's batch is durable: only now may the fetch move past it.
                pending.next = next;
                state.pending = Some(pending.clone());
                save(lake, &path, &state).await?;
            }
            None => {
                state.cursor = pending.high.clone();
                state.boundary = std::mem::take(&mut pending.high_boundary);
                state.pending = None;
                save(lake, &path, &state).await?;
                return Ok(out);
            }
        }
    }
}

async fn save(lake: &Lake, path: &str, state: &State) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| Error::Internal(e.to_string()))?;
    lake.put(path, bytes).await
}

fn request_headers(http: &HttpSource) -> std::result::Result<reqwest::header::HeaderMap, String> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::ACCEPT, reqwest::header::HeaderValue::from_static("application/json"));
    for (name, value) in &http.headers {
        let value = env::expand(value).map_err(|e| format!("header `{name}`: {e}"))?;
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a valid header name"))?;
        let mut value = reqwest::header::HeaderValue::from_str(&value)
            .map_err(|_| format!("header `{name}` has a character a header cannot hold"))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(headers)
}

/// A query parameter's text for a marker (JSON text): a string's content, a number as written.
fn param_text(json: &str) -> String {
    match serde_json::from_str::<String>(json) {
        Ok(s) => s,
        Err(_) => json.to_string(),
    }
}

/// The URL of the page `next`: the source's URL (or the next URL the API gave) with the
/// configured parameters, the incremental one and the page's own set (replacing any of the same
/// name already in it).
fn request_url(http: &HttpSource, next: &Next, since: Option<&str>) -> std::result::Result<Url, String> {
    let mut url = match next {
        Next::Url { url } => Url::parse(url).map_err(|e| format!("the next page's URL {url:?}: {e}"))?,
        _ => Url::parse(&env::expand(&http.url).map_err(|e| format!("`url`: {e}"))?)
            .map_err(|e| format!("`url`: {e}"))?,
    };
    let mut set = Vec::new();
    for (name, value) in &http.params {
        set.push((name.clone(), env::expand(value).map_err(|e| format!("parameter `{name}`: {e}"))?));
    }
    if let (Some(i), Some(since)) = (&http.incremental, since) {
        set.push((i.param.clone(), since.to_string()));
    }
    let page = match (&http.pagination, next) {
        (Pagination::Cursor { param, .. }, Next::Token { value }) => Some((param, value.clone())),
        (Pagination::Page { param, start }, Next::First) => Some((param, start.to_string())),
        (Pagination::Page { param, .. }, Next::Page { number }) => Some((param, number.to_string())),
        (Pagination::Offset { param }, Next::First) => Some((param, "0".to_string())),
        (Pagination::Offset { param }, Next::Offset { offset }) => Some((param, offset.to_string())),
        _ => None,
    };
    set.extend(page.map(|(p, v)| (p.clone(), v)));
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !set.iter().any(|(s, _)| s == k))
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    url.set_query(None);
    if !kept.is_empty() || !set.is_empty() {
        url.query_pairs_mut().extend_pairs(kept).extend_pairs(set);
    }
    Ok(url)
}

/// GETs `url`, trying again after a timeout, a dropped connection, 408, 429 or 5xx (waiting as
/// `Retry-After` asks, else with doubling backoff); the body, read up to [`MAX_PAGE_BYTES`].
async fn get(
    client: &reqwest::Client,
    url: Url,
    headers: &reqwest::header::HeaderMap,
    http: &HttpSource,
) -> std::result::Result<(bytes::Bytes, reqwest::header::HeaderMap), String> {
    let mut tries = 0u32;
    loop {
        tries += 1;
        let (why, asked) = match client.get(url.clone()).headers(headers.clone()).send().await {
            Err(e) => (describe(&e), None),
            Ok(resp) if resp.status().is_success() => {
                let response_headers = resp.headers().clone();
                match read_body(resp).await {
                    Ok(body) => return Ok((body, response_headers)),
                    Err(BodyError::TooLarge) => {
                        return Err(format!("the response is larger than {} MiB", MAX_PAGE_BYTES >> 20));
                    }
                    Err(BodyError::Broken(e)) => (describe(&e), None),
                }
            }
            Ok(resp) => {
                let status = resp.status();
                let asked = retry_after(resp.headers());
                let text = resp.text().await.unwrap_or_default();
                let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect();
                let why = format!(
                    "HTTP {status}{}",
                    if text.trim().is_empty() { String::new() } else { format!(": {}", text.trim()) }
                );
                let retryable = status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                if !retryable {
                    return Err(why);
                }
                (why, asked)
            }
        };
        if tries > http.retries {
            return Err(format!("{why} (after {tries} tries)"));
        }
        let backoff = FIRST_BACKOFF.saturating_mul(2u32.saturating_pow(tries - 1)).min(http.max_wait);
        let wait = match asked {
            Some(asked) if asked > http.max_wait => {
                return Err(format!(
                    "{why}; the server asks to wait {}s, longer than `max_wait` ({}s): the next run resumes here",
                    asked.as_secs(),
                    http.max_wait.as_secs()
                ));
            }
            Some(asked) => asked,
            None => backoff + jitter(backoff / 4),
        };
        tracing::warn!(url = %url.path(), try_ = tries, error = %why, wait_ms = wait.as_millis() as u64, "HTTP request failed; retrying");
        tokio::time::sleep(wait).await;
    }
}

fn jitter(up_to: Duration) -> Duration {
    let ms = u64::try_from(up_to.as_millis()).unwrap_or(0);
    Duration::from_millis(uuid::Uuid::new_v4().as_u64_pair().0 % (ms + 1))
}

fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "the connection failed"
    };
    // reqwest's message names the URL, query (and so any secret in it) included: not shown.
    let mut cause = std::error::Error::source(e);
    let mut last = None;
    while let Some(c) = cause {
        last = Some(c.to_string());
        cause = c.source();
    }
    match last {
        Some(c) => format!("{what}: {c}"),
        None => what.to_string(),
    }
}

enum BodyError {
    TooLarge,
    Broken(reqwest::Error),
}

async fn read_body(mut resp: reqwest::Response) -> std::result::Result<bytes::Bytes, BodyError> {
    if resp.content_length().is_some_and(|n| n > MAX_PAGE_BYTES as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Broken)? {
        if body.len() + chunk.len() > MAX_PAGE_BYTES {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    let secs = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds().max(0);
    Some(Duration::from_secs(secs.unsigned_abs()))
}

/// One response read: its records as NDJSON (those already landed at the cursor left out), how
/// many it had, and the largest marker so far.
#[derive(Debug)]
struct Page {
    ndjson: Vec<u8>,
    records: usize,
    high: Option<String>,
    high_boundary: BTreeSet<String>,
}

impl Page {
    fn read(body: &[u8], http: &HttpSource, pending: &Pending) -> std::result::Result<Page, String> {
        let text = std::str::from_utf8(body).map_err(|_| "the response is not UTF-8 text".to_string())?;
        let root: &RawValue = serde_json::from_str(text).map_err(|e| format!("the response is not JSON: {e}"))?;
        let records: Vec<&RawValue> = match at(root, &http.records)? {
            None => Vec::new(),
            Some(raw) => serde_json::from_str(raw.get()).map_err(|_| {
                if http.records.is_empty() {
                    "the response is not an array of records: set `records` to the path of the array".to_string()
                } else {
                    format!("`{}` in the response is not an array", http.records.join("."))
                }
            })?,
        };
        let mut page = Page {
            ndjson: Vec::new(),
            records: records.len(),
            high: pending.high.clone(),
            high_boundary: pending.high_boundary.clone(),
        };
        for record in records {
            let line = compact(record.get());
            let Some(inc) = &http.incremental else {
                page.ndjson.extend_from_slice(line.as_bytes());
                page.ndjson.push(b'\n');
                continue;
            };
            let hash = hex(&Sha256::digest(line.as_bytes())[..16]);
            let marker = match serde_json::from_str::<&RawValue>(&line) {
                Ok(r) => at(r, &inc.field).ok().flatten().map(|m| m.get().to_string()),
                Err(_) => None,
            };
            if let (Some(m), Some(since)) = (&marker, &pending.since)
                && compare(m, since)? == Ordering::Equal
                && pending.since_boundary.contains(&hash)
            {
                continue;
            }
            page.ndjson.extend_from_slice(line.as_bytes());
            page.ndjson.push(b'\n');
            if let Some(m) = marker {
                match page.high.as_deref().map(|h| compare(&m, h)).transpose()? {
                    None | Some(Ordering::Greater) => {
                        page.high = Some(m);
                        page.high_boundary = BTreeSet::from([hash]);
                    }
                    Some(Ordering::Equal) => {
                        page.high_boundary.insert(hash);
                    }
                    Some(Ordering::Less) => {}
                }
            }
        }
        Ok(page)
    }
}

/// The value at `path` in a JSON object (None when a step is absent or the value is null).
fn at<'a>(mut raw: &'a RawValue, path: &[String]) -> std::result::Result<Option<&'a RawValue>, String> {
    for (i, key) in path.iter().enumerate() {
        if raw.get() == "null" {
            return Ok(None);
        }
        let object: BTreeMap<String, &'a RawValue> = serde_json::from_str(raw.get()).map_err(|_| {
            format!("`{}` is not an object", if i == 0 { "the response".into() } else { path[..i].join(".") })
        })?;
        match object.get(key) {
            Some(v) => raw = v,
            None => return Ok(None),
        }
    }
    Ok((raw.get() != "null").then_some(raw))
}

/// Two markers (JSON texts) ordered: numbers by value, text as text.
fn compare(a: &str, b: &str) -> std::result::Result<Ordering, String> {
    use serde_json::Value;
    let parse = |t: &str| serde_json::from_str::<Value>(t).unwrap_or(Value::Null);
    match (parse(a), parse(b)) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Ok(x.cmp(&y)),
            _ => Ok(x.as_f64().unwrap_or(f64::NAN).total_cmp(&y.as_f64().unwrap_or(f64::NAN))),
        },
        (Value::String(x), Value::String(y)) => Ok(x.cmp(&y)),
        _ => Err(format!("the change marker is {a} in one record and {b} in another: they cannot be ordered")),
    }
}

/// JSON text without the whitespace between tokens (a pretty-printed record becomes one line;
/// numbers and strings stay exactly as written).
fn compact(raw: &str) -> std::borrow::Cow<'_, str> {
    if !raw.bytes().any(|b| b.is_ascii_whitespace()) {
        return raw.into();
    }
    let mut out = String::with_capacity(raw.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in raw.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    out.into()
}

/// The page after `current`, or None when this was the last.
fn next_page(
    http: &HttpSource,
    current: &Next,
    url: &Url,
    body: &[u8],
    headers: &reqwest::header::HeaderMap,
    records: usize,
) -> std::result::Result<Option<Next>, String> {
    let link = |target: &str| -> std::result::Result<Next, String> {
        let next = url.join(target).map_err(|e| format!("the next page's URL {target:?}: {e}"))?;
        Ok(Next::Url { url: without_configured(http, next).to_string() })
    };
    let found = |path: &[String]| -> std::result::Result<Option<String>, String> {
        let root: &RawValue = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        Ok(at(root, path)?.map(|raw| param_text(raw.get())).filter(|s| !s.is_empty()))
    };
    Ok(match &http.pagination {
        Pagination::None => None,
        _ if records == 0 => None,
        Pagination::Cursor { path, .. } => found(path)?.map(|value| Next::Token { value }),
        Pagination::Url { path } => found(path)?.map(|u| link(&u)).transpose()?,
        Pagination::Link => next_link(headers).map(|u| link(&u)).transpose()?,
        Pagination::Page { start, .. } => Some(Next::Page {
            number: match current {
                Next::Page { number } => number + 1,
                _ => start + 1,
            },
        }),
        Pagination::Offset { .. } => Some(Next::Offset {
            offset: match current {
                Next::Offset { offset } => offset + records as u64,
                _ => records as u64,
            },
        }),
    })
}

/// A next-page URL as kept in the lake: the configured parameters (which may hold secrets) are
/// dropped, and set again from the project when it is fetched.
fn without_configured(http: &HttpSource, mut url: Url) -> Url {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !http.params.contains_key(k.as_ref()))
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    url.set_query(None);
    if !kept.is_empty() {
        url.query_pairs_mut().extend_pairs(kept);
    }
    url
}

/// The `rel="next"` target of the `Link` headers.
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    for value in headers.get_all(reqwest::header::LINK) {
        let Ok(value) = value.to_str() else { continue };
        for part in value.split(',') {
            let mut pieces = part.split(';');
            let target = pieces.next()?.trim();
            let Some(target) = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) else { continue };
            let is_next = pieces.any(|p| {
                let p = p.trim();
                p.strip_prefix("rel=")
                    .map(|r| r.trim_matches('"').split_ascii_whitespace().any(|r| r.eq_ignore_ascii_case("next")))
                    .unwrap_or(false)
            });
            if is_next {
                return Some(target.to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(toml_text: &str) -> std::result::Result<HttpSource, Vec<(&'static str, String)>> {
        let spec: HttpSpec = toml::from_str(toml_text).expect("spec");
        HttpSource::from_spec(&spec)
    }

    #[test]
    fn specs_are_checked_whole_and_credentials_must_come_from_the_environment() {
        let errors = source(
            r#"url = "ftp://x"
records = "a..b"
headers = { Authorization = "Bearer abc" }
params = { api_key = "${KEY}", q = "${" }
pagination = { style = "cursor", param = "c", start = 2 }
timeout = "0s"
"#,
        )
        .expect_err("bad");
        let keys: Vec<_> = errors.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["url", "params", "headers", "records", "pagination", "timeout"], "{errors:?}");
        assert!(errors[2].1.contains("environment variable"), "{errors:?}");
        assert!(errors[4].1.contains("takes no `start`"), "{errors:?}");
        let ok = source(
            r#"url = "https://api.example.com/v1/items?fixed=1"
records = "data.items"
headers = { Authorization = "Bearer ${TOKEN}" }
pagination = { style = "page", param = "p" }
incremental = { field = "meta.updated_at", param = "since" }
"#,
        )
        .expect("ok");
        assert_eq!(ok.pagination, Pagination::Page { param: "p".into(), start: 1 });
        assert_eq!(ok.records, ["data", "items"]);
        assert_eq!(ok.shown(), "https://api.example.com/v1/items");
        let twice = source(
            "url = \"http://x\"\npagination = { style = \"offset\", param = \"since\" }\nincremental = { field = \"u\", param = \"since\" }\n",
        );
        assert!(twice.expect_err("twice")[0].1.contains("set twice"));
    }

    #[test]
    fn request_urls_replace_parameters_of_the_same_name() {
        let http = source(
            "url = \"http://h/items?per_page=5&x=1\"\nparams = { per_page = \"10\" }\n\
             pagination = { style = \"cursor\", path = \"next\", param = \"after\" }\n\
             incremental = { field = \"u\", param = \"since\" }\n",
        )
        .expect("ok");
        let first = request_url(&http, &Next::First, Some("2026-01-01")).expect("url");
        assert_eq!(first.as_str(), "http://h/items?x=1&per_page=10&since=2026-01-01");
        let next = request_url(&http, &Next::Token { value: "a b".into() }, None).expect("url");
        assert_eq!(next.as_str(), "http://h/items?x=1&per_page=10&after=a+b");
        let link = without_configured(&http, Url::parse("http://h/items?per_page=10&page=2").expect("url"));
        assert_eq!(link.as_str(), "http://h/items?page=2");
    }

    #[test]
    fn records_are_found_compacted_and_boundary_repeats_left_out() {
        let http = source("url = \"http://h\"\nrecords = \"data\"\nincremental = { field = \"u\", param = \"s\" }\n")
            .expect("ok");
        let body = br#"{"data": [ {"id": 1, "u": 5, "s": "a b\" c"}, {"id": 2,
            "u": 7, "n": 1.50}, {"id": 3, "u": 7} ], "meta": {}}"#;
        let fresh = Pending {
            config: String::new(),
            next: Next::First,
            since: None,
            since_boundary: BTreeSet::new(),
            high: None,
            high_boundary: BTreeSet::new(),
            pages: 0,
        };
        let page = Page::read(body, &http, &fresh).expect("page");
        assert_eq!(
            String::from_utf8(page.ndjson).expect("utf8"),
            "{\"id\":1,\"u\":5,\"s\":\"a b\\\" c\"}\n{\"id\":2,\"u\":7,\"n\":1.50}\n{\"id\":3,\"u\":7}\n"
        );
        assert_eq!((page.records, page.high.as_deref(), page.high_boundary.len()), (3, Some("7"), 2));
        // The next run, asking since 7, gets records 2 and 3 again and a new one at 7.
        let again = Pending {
            since: page.high.clone(),
            since_boundary: page.high_boundary.clone(),
            high: page.high.clone(),
            high_boundary: page.high_boundary.clone(),
            ..fresh
        };
        let body = br#"{"data": [{"id": 2, "u": 7, "n": 1.50}, {"id": 3, "u": 7}, {"id": 4, "u": 7}]}"#;
        let page = Page::read(body, &http, &again).expect("page");
        assert_eq!(String::from_utf8(page.ndjson).expect("utf8"), "{\"id\":4,\"u\":7}\n");
        assert_eq!(page.high_boundary.len(), 3, "every record landed at 7 is remembered");
        let absent = Page::read(br#"{"meta": {}}"#, &http, &again).expect("no data is no records");
        assert_eq!(absent.records, 0);
        let not_array = Page::read(br#"{"data": {"id": 1}}"#, &http, &again).expect_err("object");
        assert!(not_array.contains("not an array"), "{not_array}");
        assert!(compare("\"2026\"", "5").is_err());
        assert_eq!(compare("10", "9"), Ok(Ordering::Greater));
        assert_eq!(compare("\"10\"", "\"9\""), Ok(Ordering::Less));
    }

    #[test]
    fn link_headers_and_retry_after_are_read() {
        let mut h = reqwest::header::HeaderMap::new();
        h.append(
            reqwest::header::LINK,
            "<https://h/i?page=1>; rel=\"prev\", <https://h/i?page=3>; rel=\"next\"".parse().expect("v"),
        );
        assert_eq!(next_link(&h).as_deref(), Some("https://h/i?page=3"));
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().expect("v"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(reqwest::header::RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("v"));
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }
}
