//! An origin that breaks HTTP on purpose: it reads each request's header, answers with bytes
//! given verbatim (at once, or in parts with a pause between), then ends the connection as the
//! test asks (closes it, holds it open, or resets it). Each connection carries one request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the origin does once the response bytes are written.
#[derive(Clone, Copy, Debug)]
pub enum End {
    /// Closes the connection (FIN).
    Close,
    /// Keeps it open, sending nothing more, for a minute.
    Hang,
    /// Resets it (RST): `SO_LINGER` of zero, then close.
    Reset,
}

/// A running origin; stopped when dropped.
pub struct RawOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

/// What the origin writes: `parts`, one write each, `pause` apart.
struct Answer {
    parts: Vec<Vec<u8>>,
    pause: Duration,
    end: End,
}

impl RawOrigin {
    /// Answers every request with `response`, then `end`s the connection.
    pub async fn start(response: Vec<u8>, end: End) -> RawOrigin {
        RawOrigin::start_paced(vec![response], Duration::ZERO, end).await
    }

    /// Answers every request with `parts`, each its own write, `pause` apart, then `end`s the
    /// connection.
    pub async fn start_paced(parts: Vec<Vec<u8>>, pause: Duration, end: End) -> RawOrigin {
        let addr = SocketAddr::from(([127, 0, 0, 1], super::free_port()));
        let listener = TcpListener::bind(addr).await.expect("bind the raw origin");
        let requests = Arc::new(AtomicUsize::new(0));
        let response = Arc::new(Answer { parts, pause, end });
        let accept = {
            let requests = requests.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (requests, response) = (requests.clone(), response.clone());
                    tokio::spawn(answer(stream, requests, response));
                }
            })
        };
        RawOrigin {
            addr,
            requests,
            accept,
        }
    }

    /// Request headers read so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn answer(mut stream: TcpStream, requests: Arc<AtomicUsize>, response: Arc<Answer>) {
    let mut header = Vec::new();
    let mut buf = [0u8; 4096];
    while !header.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => header.extend_from_slice(&buf[..n]),
        }
    }
    requests.fetch_add(1, Ordering::SeqCst);
    for (i, part) in response.parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(response.pause).await;
        }
        if stream.write_all(part).await.is_err() {
            return;
        }
    }
    match response.end {
        End::Close => {
            let _ = stream.shutdown().await;
        }
        End::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
        End::Reset => {
            // Give the bytes a moment to leave, so the reset cuts the body, not the header.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
    }
}
