//! A streamer on an ephemeral loopback port over a temporary media root.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use dime_streamer::{Config, Server};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running streamer and the directory it serves.
pub struct Origin {
    /// The bound address.
    pub addr: SocketAddr,
    /// An HTTP/1.1 client.
    pub client: reqwest::Client,
    root: TempDir,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Origin {
    /// Starts a streamer over an empty root with the default configuration.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a streamer over an empty root after `configure` adjusts the configuration.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let root = tempfile::tempdir().expect("create temporary root");
        let mut config = Config::new(root.path());
        configure(&mut config);
        let server = Server::bind("127.0.0.1:0".parse().expect("loopback address"), config)
            .await
            .expect("start streamer");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            client: reqwest::Client::new(),
            root,
            stop,
            task,
        }
    }

    /// The root directory on disk.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Writes `contents` at `relative` under the root, creating directories as needed.
    pub fn write(&self, relative: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.root.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent directories");
        }
        std::fs::write(&path, contents).expect("write fixture");
        path
    }

    /// Writes a file whose modification time lies `age` in the past.
    pub fn write_aged(&self, relative: &str, contents: impl AsRef<[u8]>, age: Duration) -> PathBuf {
        let path = self.write(relative, contents);
        let file = std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open fixture");
        file.set_modified(SystemTime::now() - age)
            .expect("set modification time");
        path
    }

    /// The URL of `path` on this origin.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Starts a GET for `path`.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    /// Sends `request` verbatim on a fresh connection and reads the response until close.
    pub async fn raw(&self, request: &str) -> RawResponse {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.expect("read response");
        RawResponse::parse(&bytes)
    }

    /// Sends `GET target` verbatim, bypassing any client-side path normalization.
    pub async fn raw_get(&self, target: &str) -> RawResponse {
        self.raw(&format!(
            "GET {target} HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n"
        ))
        .await
    }

    /// Asks the server to shut down and waits until it has drained.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("server task");
    }
}

/// A response read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Header lines as (lower-case name, value).
    pub headers: Vec<(String, String)>,
    /// Everything after the head.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// Splits a whole HTTP/1.1 response into status, headers and body.
    pub fn parse(bytes: &[u8]) -> Self {
        let split = bytes
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(bytes)));
        let head = String::from_utf8_lossy(&bytes[..split]);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .expect("status line");
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Self {
            status,
            headers,
            body: bytes[split + 4..].to_vec(),
        }
    }

    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A header of a reqwest response as text, or "" when absent.
pub fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}
