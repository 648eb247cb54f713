//! The admin listener: `/metrics`, `/healthz` and `/readyz` for operators and orchestrators.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::active::Active;
use crate::metrics::Metrics;

/// The admin HTTP application.
pub struct Admin {
    /// The configuration in force.
    pub active: Arc<ArcSwap<Active>>,
    /// The metrics to expose.
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let is_read = req.method == http::Method::GET || req.method == http::Method::HEAD;
        match (is_read, req.uri.path()) {
            (true, "/metrics") => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            (true, "/healthz") => text(StatusCode::OK, "ok\n"),
            (true, "/readyz") => match self.active.load().not_ready() {
                None => text(StatusCode::OK, "ready\n"),
                Some(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("not ready:\n{why}\n"),
                ),
            },
            (false, "/metrics" | "/healthz" | "/readyz") => {
                let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
                r.headers_mut().insert(
                    http::header::ALLOW,
                    http::HeaderValue::from_static("GET, HEAD"),
                );
                r
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: the admin listener serves /metrics, /healthz and /readyz\n",
            ),
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    reply(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    if let Ok(len) = http::HeaderValue::from_str(&r.body().len().to_string()) {
        r.headers_mut().insert(http::header::CONTENT_LENGTH, len);
    }
    r
}
