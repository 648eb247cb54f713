//! The shared test harness: real origin servers and a real `dime-edge` process on loopback
//! ports.
#![allow(dead_code)]

pub mod edge;
pub mod raw_origin;
pub mod reload;
pub mod tls;
pub mod upstream;

pub use edge::EdgeProc;
#[allow(unused_imports)]
pub use upstream::{Seen, Upstream};

/// An HTTP client that never uses a proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}

/// An HTTP client that opens a new connection for every request.
pub fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A loopback port handed out once per machine, below the ephemeral range (see the crate).
pub use dime_test_ports::free_port;

/// Reports a chaos case's figure: printed, and appended as `case<TAB>figure` to the file
/// `DIME_CHAOS_FIGURES` names, if set (`make chaos` sets it and writes the table from it).
pub fn figure(case: &str, figure: &str) {
    use std::io::Write;
    println!("chaos figure: {case}: {figure}");
    if let Some(path) = std::env::var_os("DIME_CHAOS_FIGURES") {
        let line = format!("{case}\t{figure}\n");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.to_string_lossy()));
        // One write of one line with O_APPEND: lines from tests running at once do not mix.
        file.write_all(line.as_bytes()).unwrap();
    }
}

/// A whole response, read.
#[derive(Debug)]
pub struct Fetched {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body.
    pub body: bytes::Bytes,
}

impl Fetched {
    /// The `X-Cache-Status` header.
    pub fn cache(&self) -> &str {
        self.headers
            .get("x-cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// One header as text.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Sends `method url` with `headers` and reads the whole answer.
pub async fn fetch_with(method: &str, url: &str, headers: &[(&str, &str)]) -> Fetched {
    let mut req = client().request(method.parse().unwrap(), url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    Fetched {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap(),
    }
}

/// GET with headers.
pub async fn fetch(url: &str, headers: &[(&str, &str)]) -> Fetched {
    fetch_with("GET", url, headers).await
}

/// The status of a plain GET of `url`, for a spawned task.
pub async fn fetch_owned(url: String) -> u16 {
    fetch(&url, &[]).await.status
}

/// An edge with one pool on `origin`, one route `/`, and the given `[routes.cache]` lines.
pub async fn cached_edge(origin: &Upstream, route_cache: &str, extra_top: &str) -> EdgeProc {
    let config = format!(
        "{extra_top}\n{}[[routes]]\npath = \"/\"\npool = \"p\"\n{}",
        edge::pool("p", &[origin.addr], ""),
        if route_cache.is_empty() {
            String::new()
        } else {
            format!("\n[routes.cache]\n{route_cache}\n")
        }
    );
    EdgeProc::start(&config).await
}
