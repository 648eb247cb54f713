//! The shared test harness: real origin servers and a real `dime-edge` process on ephemeral
//! loopback ports.
#![allow(dead_code)]

pub mod edge;
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

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
