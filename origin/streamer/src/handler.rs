//! One request's life: method → path → file → preconditions → range → response.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{
    ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    LAST_MODIFIED, RANGE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use tokio::fs::{File, OpenOptions};

use super::blocking::{LiveEdge, Waits, Want, WantError};
use super::body::{self, Body};
use super::conditional::{self, Precondition, Validators};
use super::media_type::{self, CachePolicy, Kind};
use super::path::{PathError, RequestPath, Root};
use super::range::{self, RangeRequest};

/// The health-check path. It is answered before the filesystem is consulted, so a file named
/// `healthz` at the top of the root is shadowed; media trees never have one.
pub const HEALTHZ: &str = "/healthz";

/// For error responses that must not be stored (400, 403, 500): RFC 9111 §4.2.2 would otherwise
/// let a cache keep some of them heuristically. A 404 gets the policy's short `max-age` instead.
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// Turns requests into responses for files under one root.
#[derive(Debug, Clone)]
pub struct Handler {
    root: Root,
    cache: CachePolicy,
    waits: Arc<Waits>,
}

impl Handler {
    /// A handler serving `root` with the `Cache-Control` values of `cache`.
    pub fn new(root: Root, cache: CachePolicy) -> Self {
        Self {
            root,
            cache,
            waits: Arc::new(Waits::default()),
        }
    }

    /// The root being served.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Answers one request; never fails, since every failure has its status code.
    pub async fn handle<B>(&self, request: &Request<B>) -> Response<Body> {
        let head = request.method() == Method::HEAD;
        if request.method() != Method::GET && !head {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n", head);
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        if request.uri().path() == HEALTHZ {
            return plain(StatusCode::OK, "ok", head);
        }
        match self.serve_file(request, head).await {
            Ok(response) => response,
            Err(err) => error_response(&err, request, head, &self.cache),
        }
    }

    /// Serves the file a GET or HEAD names.
    async fn serve_file<B>(
        &self,
        request: &Request<B>,
        head: bool,
    ) -> Result<Response<Body>, ServeError> {
        let requested = RequestPath::parse(request.uri().path())?;
        let kind = media_type::of(requested.as_path()).kind;
        // How long a cache may keep the answer to a blocking reload, when this is one.
        let mut blocking_max_age = None;
        let path = match self.root.resolve(&requested).await {
            Ok(path) if kind == Kind::Playlist => {
                if let Some(want) = Want::of_query(request.uri().query())? {
                    blocking_max_age = self.wait_for_playlist(&path, want).await?;
                }
                path
            }
            Err(PathError::NotFound) if kind == Kind::Media => {
                self.wait_for_hinted_part(&requested).await?
            }
            resolved => resolved?,
        };
        let file = open(&path).await?;
        let metadata = file.metadata().await?;
        // Directories are never listed, and devices or sockets are nothing to stream.
        if !metadata.is_file() {
            return Err(PathError::NotFound.into());
        }
        // The requested name, not a symlink's target, carries the extension clients expect.
        let media = media_type::of(requested.as_path());
        let validators = Validators::new(&metadata, SystemTime::now());

        let mut headers = HeaderMap::new();
        headers.insert(ETAG, validators.etag()?);
        headers.insert(LAST_MODIFIED, validators.last_modified()?);
        let cache_control = match blocking_max_age {
            Some(age) => HeaderValue::try_from(format!("public, max-age={}", age.as_secs()))?,
            None => self.cache.cache_control(media.kind),
        };
        headers.insert(CACHE_CONTROL, cache_control);

        match conditional::evaluate(request.headers(), &validators) {
            Precondition::Proceed => {}
            // RFC 9110 §15.4.5: a 304 carries the validators and Cache-Control a 200 would.
            Precondition::NotModified => {
                return Ok(respond(StatusCode::NOT_MODIFIED, headers, body::empty()));
            }
            Precondition::Failed => {
                return Ok(plain(
                    StatusCode::PRECONDITION_FAILED,
                    "precondition failed\n",
                    head,
                ));
            }
        }

        let size = metadata.len();
        let (status, region) = match range_request(request, size, &validators) {
            RangeRequest::Full => (StatusCode::OK, None),
            RangeRequest::Partial(range) => {
                let content_range = HeaderValue::try_from(range.content_range(size))?;
                headers.insert(CONTENT_RANGE, content_range);
                (StatusCode::PARTIAL_CONTENT, Some(range))
            }
            // RFC 9110 §15.5.17: a 416 tells the client the current length.
            RangeRequest::Unsatisfiable => {
                let mut response = plain(StatusCode::RANGE_NOT_SATISFIABLE, "", head);
                let content_range = HeaderValue::try_from(range::unsatisfied_content_range(size))?;
                response.headers_mut().insert(CONTENT_RANGE, content_range);
                return Ok(response);
            }
        };
        let (start, length) = region.map_or((0, size), |range| (range.start, range.length()));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(media.content_type));
        headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
        let body = if head || length == 0 {
            body::empty()
        } else {
            body::file_region(file, start, length).await?
        };
        Ok(respond(status, headers, body))
    }

    /// Holds a blocking playlist reload until the playlist at `path` holds what `want` asks
    /// for, for at most three target durations. Gives how long a cache may keep the answer:
    /// it lists the part asked for, which is what every later request for that part wants,
    /// for as long as the playlist lists parts (three target durations). `None` for a playlist
    /// that is not a live media playlist (nothing to wait for).
    async fn wait_for_playlist(
        &self,
        path: &Path,
        want: Want,
    ) -> Result<Option<Duration>, ServeError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|t| LiveEdge::of(&t))
        };
        // Not a live media playlist (a multivariant one, say): nothing to wait for.
        let Some(edge) = read(path) else {
            return Ok(None);
        };
        edge.within_reach(want)?;
        let dir = path.parent().unwrap_or(path);
        // The playlist is a few kilobytes in the page cache: read in place, not on a thread.
        let ready = || read(path).filter(|edge| edge.holds(want)).map(|_| ());
        match self.waits.until(dir, edge.longest_wait(), ready).await? {
            Some(()) => Ok(Some(edge.longest_wait())),
            None => Err(ServeError::NotYet(edge.longest_wait().as_secs())),
        }
    }

    /// Holds a request for a missing media file that a playlist in its directory names as
    /// its preload hint until the packager writes it, for at most three target durations;
    /// anything else missing is a 404.
    async fn wait_for_hinted_part(&self, requested: &RequestPath) -> Result<PathBuf, ServeError> {
        let (dir, name) = requested.split();
        let dir = self.root.resolve(&dir).await?;
        let Some(edge) = hinting(&dir, &name) else {
            return Err(PathError::NotFound.into());
        };
        let file = dir.join(&name);
        let ready = || file.is_file().then_some(());
        match self.waits.until(&dir, edge.longest_wait(), ready).await? {
            Some(()) => Ok(self.root.resolve(requested).await?),
            // It was hinted and never came: the packager moved on or stopped.
            None => Err(PathError::NotFound.into()),
        }
    }
}

/// The live edge of the playlist in `dir` whose preload hint names `name`, if one does.
fn hinting(dir: &Path, name: &str) -> Option<LiveEdge> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            let file = e.file_name();
            let file = file.to_string_lossy();
            file.ends_with(".m3u8") && !file.starts_with('.')
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| LiveEdge::of(&text))
        .find(|edge| edge.hint.as_deref() == Some(name))
}

/// Why a file could not be served.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    /// The path names nothing servable.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A header could not be encoded; unreachable with the values we build, but not worth a panic.
    #[error("invalid header value")]
    Header(#[from] http::header::InvalidHeaderValue),
    /// A blocking playlist reload that cannot be answered.
    #[error(transparent)]
    Blocking(#[from] WantError),
    /// What a blocking playlist reload asks for did not come within this many seconds.
    #[error("not in the playlist after {0} s")]
    NotYet(u64),
}

impl From<io::Error> for ServeError {
    /// Filesystem errors are path errors: they say whether the file is there to serve.
    fn from(err: io::Error) -> Self {
        ServeError::Path(err.into())
    }
}

/// Opens a file for reading without blocking on FIFOs.
async fn open(path: &std::path::Path) -> Result<File, PathError> {
    // O_NONBLOCK: opening a FIFO would otherwise wait for a writer and pin a blocking thread;
    // it has no effect on regular files, and the metadata check then refuses the FIFO.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .await?;
    Ok(file)
}

/// The range a GET asks for; HEAD and everything else get the full representation.
fn range_request<B>(request: &Request<B>, size: u64, validators: &Validators) -> RangeRequest {
    // RFC 9110 §14.2: Range is defined only for GET; a server MUST ignore it otherwise.
    if request.method() != Method::GET {
        return RangeRequest::Full;
    }
    let Some(value) = single_value(request.headers()) else {
        return RangeRequest::Full;
    };
    // RFC 9110 §13.1.5: if the If-Range validator does not match, send the whole file.
    if !conditional::if_range_allows_range(request.headers(), validators) {
        return RangeRequest::Full;
    }
    range::parse(value, size)
}

/// The `Range` value if sent exactly once as valid text; anything else is ignored like a
/// malformed Range (RFC 9110 §14.2).
fn single_value(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(RANGE).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value.to_str().ok(),
        _ => None,
    }
}

/// Assembles a response from its parts.
fn respond(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// A short plain-text response that caches must not store; HEAD gets the headers only.
fn plain(status: StatusCode, text: &'static str, head: bool) -> Response<Body> {
    let mut response = Response::new(if head {
        body::empty()
    } else {
        body::text(text)
    });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
    headers.insert(CACHE_CONTROL, NO_STORE);
    response
}

/// Like [`plain`], with a text made at run time.
fn said(status: StatusCode, text: String, head: bool) -> Response<Body> {
    let length = text.len();
    let mut response = plain(status, "", head);
    if !head {
        *response.body_mut() = body::owned_text(text);
    }
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// Maps a failure to its status, logging what the client is not told.
fn error_response<B>(
    err: &ServeError,
    request: &Request<B>,
    head: bool,
    cache: &CachePolicy,
) -> Response<Body> {
    let path = request.uri().path();
    match err {
        ServeError::Path(PathError::Malformed(reason)) => {
            tracing::debug!(path, reason, "refused request path");
            plain(StatusCode::BAD_REQUEST, "bad request\n", head)
        }
        ServeError::Path(PathError::NotFound) => {
            let mut response = plain(StatusCode::NOT_FOUND, "not found\n", head);
            response
                .headers_mut()
                .insert(CACHE_CONTROL, cache.not_found());
            response
        }
        ServeError::Path(PathError::Forbidden) => {
            tracing::warn!(path, "file is not readable by the streamer");
            plain(StatusCode::FORBIDDEN, "forbidden\n", head)
        }
        ServeError::Path(PathError::Io(err)) => {
            tracing::error!(path, error = %err, "cannot read file");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n", head)
        }
        ServeError::Header(err) => {
            tracing::error!(path, error = %err, "cannot encode header");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n", head)
        }
        // RFC 8216bis §6.2.5.2: a bad or too-far blocking request is a 400 at once; one whose
        // segment or part does not come within three target durations a 503.
        ServeError::Blocking(err) => {
            tracing::debug!(path, error = %err, "refused blocking reload");
            said(StatusCode::BAD_REQUEST, format!("{err}\n"), head)
        }
        ServeError::NotYet(_) => {
            tracing::info!(path, query = request.uri().query(), error = %err, "blocking reload timed out");
            said(StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n"), head)
        }
    }
}
