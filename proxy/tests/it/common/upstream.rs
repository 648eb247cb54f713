//! A real HTTP/1.1 origin on loopback that records what it receives and can be killed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A scripted answer for one path, for cache scenarios.
#[derive(Debug, Clone)]
pub struct Script {
    /// Status of a full answer.
    pub status: u16,
    /// Headers of a full answer (an `etag` here also drives 304s).
    pub headers: Vec<(String, String)>,
    /// Body of a full answer.
    pub body: Bytes,
    /// Wait before sending the response header.
    pub header_delay: Duration,
    /// Body chunk size.
    pub chunk: usize,
    /// Wait between body chunks.
    pub chunk_delay: Duration,
    /// Drop the connection after this many body bytes.
    pub abort_after: Option<usize>,
    /// Headers of a 304 answer to a matching If-None-Match.
    pub not_modified_headers: Vec<(String, String)>,
}

impl Script {
    /// A 200 with these headers and body, sent at once.
    pub fn ok(headers: &[(&str, &str)], body: impl Into<Bytes>) -> Self {
        Script {
            status: 200,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
            header_delay: Duration::ZERO,
            chunk: 64 * 1024,
            chunk_delay: Duration::ZERO,
            abort_after: None,
            not_modified_headers: Vec::new(),
        }
    }

    /// The same with another status.
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
}

/// One request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Headers.
    pub headers: HeaderMap,
    /// The connection it came on: 1 for the first the origin accepted, and so on.
    pub connection: usize,
}

/// What an origin counts: requests served, and health checks apart.
#[derive(Default)]
struct Counts {
    hits: AtomicUsize,
    health_checks: AtomicUsize,
}

/// A running origin. Paths it understands:
/// `/slow?ms=N`, `/big?bytes=N`, `/gen/ANYTHING?bytes=N` (cacheable for an hour), `/upload` (POST, answers the byte count),
/// `/status?code=N`, `/healthz`; anything else answers `NAME PATH` (all but `/healthz` answer
/// one status after [`Upstream::fail_with`]).
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its name, sent back in `x-upstream`.
    pub name: String,
    counts: Arc<Counts>,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    accept: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<JoinSet<()>>>,
    scripts: Arc<Mutex<HashMap<String, Script>>>,
    fail_with: Arc<AtomicU16>,
}

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

impl Upstream {
    /// Starts an origin on a free loopback port, one no other test is given: so after
    /// [`Upstream::kill`] nothing else listens there, and it can start there again.
    pub async fn start(name: &str) -> Upstream {
        Self::start_on(name, SocketAddr::from(([127, 0, 0, 1], super::free_port()))).await
    }

    /// Starts an origin on `addr` (e.g. the address of one that was killed).
    pub async fn start_on(name: &str, addr: SocketAddr) -> Upstream {
        let listener = TcpListener::bind(addr).await.expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let scripts: Arc<Mutex<HashMap<String, Script>>> = Arc::default();
        let fail_with = Arc::new(AtomicU16::new(0));
        let accept = {
            let (counts, connections, seen, conns) = (
                counts.clone(),
                connections.clone(),
                seen.clone(),
                conns.clone(),
            );
            let (scripts, fail_with) = (scripts.clone(), fail_with.clone());
            let name = name.to_string();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let connection = connections.fetch_add(1, Ordering::SeqCst) + 1;
                    let (counts, seen, name, scripts, fail_with) = (
                        counts.clone(),
                        seen.clone(),
                        name.clone(),
                        scripts.clone(),
                        fail_with.clone(),
                    );
                    let svc = service_fn(move |req| {
                        let (counts, seen, name, scripts) =
                            (counts.clone(), seen.clone(), name.clone(), scripts.clone());
                        let failing = fail_with.load(Ordering::SeqCst);
                        async move {
                            Ok::<_, Infallible>(
                                handle(req, &name, &counts, connection, &seen, &scripts, failing)
                                    .await,
                            )
                        }
                    });
                    conns.lock().unwrap().spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            })
        };
        Upstream {
            addr,
            name: name.to_string(),
            counts,
            connections,
            seen,
            accept,
            conns,
            scripts,
            fail_with,
        }
    }

    /// From now on answers every request but `/healthz` with `status` (0: as before), like an
    /// origin whose health check passes while its application fails.
    pub fn fail_with(&self, status: u16) {
        self.fail_with.store(status, Ordering::SeqCst);
    }

    /// Answers `path` with `script` from now on.
    pub fn script(&self, path: &str, script: Script) {
        self.scripts
            .lock()
            .unwrap()
            .insert(path.to_string(), script);
    }

    /// Requests seen for `path` (any query).
    pub fn hits_for(&self, path: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.uri.split('?').next() == Some(path))
            .count()
    }

    /// Requests served so far (health checks excluded).
    pub fn hits(&self) -> usize {
        self.counts.hits.load(Ordering::SeqCst)
    }

    /// Health checks (`/healthz`) answered so far.
    pub fn health_checks(&self) -> usize {
        self.counts.health_checks.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Every request seen so far (health checks excluded).
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request seen.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the origin saw no request")
    }

    /// Dies like a crashed process: the listener closes and every connection is dropped.
    pub fn kill(&self) {
        self.accept.abort();
        self.conns.lock().unwrap().abort_all();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

fn query(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

async fn handle(
    req: Request<Incoming>,
    name: &str,
    counts: &Counts,
    connection: usize,
    seen: &Mutex<Vec<Seen>>,
    scripts: &Mutex<HashMap<String, Script>>,
    failing: u16,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        counts.health_checks.fetch_add(1, Ordering::SeqCst);
        return reply(StatusCode::OK, name, full(Bytes::from_static(b"ok")));
    }
    counts.hits.fetch_add(1, Ordering::SeqCst);
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        uri: req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string(),
        headers: req.headers().clone(),
        connection,
    });
    if let Ok(status) = StatusCode::from_u16(failing) {
        return reply(status, name, full(Bytes::from(format!("{name} failing"))));
    }
    let script = scripts.lock().unwrap().get(&path).cloned();
    if let Some(script) = script {
        return scripted(&req, name, script).await;
    }
    match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(query(&req, "ms").unwrap_or(1000))).await;
            reply(StatusCode::OK, name, full(Bytes::from("slow done")))
        }
        "/big" => {
            let total = query(&req, "bytes").unwrap_or(1 << 20);
            reply_sized(StatusCode::OK, name, total, pattern_stream(total))
        }
        p if p.starts_with("/gen/") => {
            // Any number of distinct objects: each path its own, `bytes` long.
            let total = query(&req, "bytes").unwrap_or(1 << 20);
            let mut r = reply_sized(StatusCode::OK, name, total, pattern_stream(total));
            r.headers_mut()
                .insert("cache-control", "max-age=3600".parse().unwrap());
            r
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => break,
                }
            }
            reply(StatusCode::OK, name, full(Bytes::from(n.to_string())))
        }
        "/status" => {
            let code = query(&req, "code").unwrap_or(200) as u16;
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
            reply(status, name, full(Bytes::from(format!("status {code}"))))
        }
        _ => reply(
            StatusCode::OK,
            name,
            full(Bytes::from(format!("{name} {}", req.uri()))),
        ),
    }
}

/// `total` bytes of a repeating pattern (byte i is `i % 251`), in chunks of about 64 KiB.
pub fn pattern_stream(total: u64) -> Body {
    // A multiple of 251, so every chunk starts the pattern afresh and can be shared.
    const CHUNK: u64 = 251 * 256;
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    let chunk = Bytes::from(chunk);
    let stream = futures_util::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        async move {
            if sent >= total {
                return None;
            }
            let n = CHUNK.min(total - sent);
            let data = chunk.slice(0..n as usize);
            Some((Ok::<_, std::io::Error>(Frame::data(data)), sent + n))
        }
    });
    BodyExt::boxed_unsync(StreamBody::new(stream.boxed()))
}

fn reply(status: StatusCode, name: &str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert("x-upstream", name.parse().unwrap());
    r
}

fn reply_sized(status: StatusCode, name: &str, len: u64, body: Body) -> Response<Body> {
    let mut r = reply(status, name, body);
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, len.into());
    r
}

async fn scripted(req: &Request<Incoming>, name: &str, s: Script) -> Response<Body> {
    tokio::time::sleep(s.header_delay).await;
    let etag = s
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("etag"))
        .map(|(_, v)| v.clone());
    let inm = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok());
    if let (Some(etag), Some(inm)) = (&etag, inm) {
        if inm.split(',').any(|t| t.trim() == etag) {
            let mut r = reply(StatusCode::NOT_MODIFIED, name, full(Bytes::new()));
            r.headers_mut().insert("etag", etag.parse().unwrap());
            for (k, v) in &s.not_modified_headers {
                r.headers_mut().insert(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            return r;
        }
    }
    let len = s.body.len();
    let body = s.body.clone();
    let (chunk, delay, abort) = (s.chunk.max(1), s.chunk_delay, s.abort_after);
    let stream = futures_util::stream::unfold(0usize, move |sent| {
        let body = body.clone();
        async move {
            if sent >= len {
                return None;
            }
            if abort.is_some_and(|a| sent >= a) {
                return Some((Err(std::io::Error::other("scripted abort")), len));
            }
            if sent > 0 {
                tokio::time::sleep(delay).await;
            }
            let mut end = (sent + chunk).min(len);
            if let Some(a) = abort {
                end = end.min(a.max(sent + 1));
            }
            Some((Ok(Frame::data(body.slice(sent..end))), end))
        }
    });
    let mut r = reply(
        StatusCode::from_u16(s.status).unwrap(),
        name,
        BodyExt::boxed_unsync(StreamBody::new(stream.boxed())),
    );
    for (k, v) in &s.headers {
        r.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, len.into());
    r
}
