//! The listening socket: accepts HTTP/1.1 and HTTP/2 connections, logs, and drains on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::CONTENT_LENGTH;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::body::Body;
use super::handler::Handler;
use super::path::{Root, RootError};
use super::Config;

/// How long a client may take to send a request head, so idle or slow sockets cannot pile up.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause after a failed accept: out of file descriptors, retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why the streamer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The root is unusable.
    #[error(transparent)]
    Root(#[from] RootError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// What the socket layer said.
        source: std::io::Error,
    },
}

/// A bound streamer, ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    handler: Arc<Handler>,
    grace_period: Duration,
}

impl Server {
    /// Checks the root and binds `addr`; port 0 picks a free port, see [`Server::local_addr`].
    pub async fn bind(addr: SocketAddr, config: Config) -> Result<Self, StartError> {
        let root = Root::open(&config.root)?;
        let listen_error = |source| StartError::Listen { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(listen_error)?;
        let local_addr = listener.local_addr().map_err(listen_error)?;
        Ok(Self {
            listener,
            local_addr,
            handler: Arc::new(Handler::new(root, config.cache)),
            grace_period: config.grace_period,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish within the grace
    /// period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tracing::info!(
            root = %self.handler.root().path().display(),
            addr = %self.local_addr,
            "streamer listening"
        );
        // One port for both protocols: the auto builder tells HTTP/2 prior knowledge (h2c, as
        // spoken by edges) from HTTP/1.1, whose connections stay alive between requests.
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Playlists and small segments are latency-bound; do not wait to coalesce writes.
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
            }
            let handler = Arc::clone(&self.handler);
            let service = service_fn(move |request| {
                let handler = Arc::clone(&handler);
                async move { Ok::<_, Infallible>(serve_logged(&handler, peer, request).await) }
            });
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                // Clients vanish mid-response all the time; that is not worth more than debug.
                if let Err(err) = connection.await {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
            });
        }
        // Stop accepting first, so a load balancer sees the port close while requests drain.
        drop(self.listener);
        tracing::info!(
            connections = graceful.count(),
            "shutting down; draining connections"
        );
        if tokio::time::timeout(self.grace_period, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(grace_period = ?self.grace_period, "grace period over; dropping connections");
        }
        tracing::info!("streamer stopped");
    }
}

/// Handles one request and writes its access-log line.
async fn serve_logged(
    handler: &Handler,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let response = handler.handle(&request).await;
    // Logged when the head is ready: the body streams afterwards, so `bytes` is what was
    // promised and `micros` is time to first byte.
    let bytes = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    tracing::info!(
        target: "dime_origin::access",
        %peer,
        method = %request.method(),
        path = request.uri().path(),
        version = ?request.version(),
        status = response.status().as_u16(),
        bytes,
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
    );
    response
}
