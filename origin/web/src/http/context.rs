//! The request middleware: resolves the admin session once, then fixes the response's cache
//! headers (anything personal is `private, no-store`) and renders bare error responses.

use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::caching::{NO_STORE, PRIVATE};
use super::cookies::{cookie, SESSION_COOKIE};
use super::errors::ErrorMessage;
use super::AppState;
use crate::sessions::Session;

/// What the middleware learned about a request, for the handlers.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The admin session the request's cookie names, if valid and unexpired.
    pub session: Option<Session>,
    /// Whether the viewer reached us over https (`X-Forwarded-Proto` from the edge): cookies
    /// then get `Secure`.
    pub https: bool,
}

/// Whether the proxy in front says the viewer used https.
fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// Runs around every handler; see the module doc.
pub async fn middleware(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let session = match cookie(request.headers(), SESSION_COOKIE) {
        None => None,
        Some(id) => match state.store.session(&id).await {
            Ok(session) => session,
            Err(err) => {
                tracing::error!(error = %err, "session lookup failed");
                let mut response = StatusCode::SERVICE_UNAVAILABLE.into_response();
                response.extensions_mut().insert(ErrorMessage(
                    "The database is not answering; try again in a moment.".to_owned(),
                ));
                return finish(&state, &path, true, response);
            }
        },
    };
    let personal = session.is_some();
    let https = forwarded_https(request.headers());
    request
        .extensions_mut()
        .insert(RequestContext { session, https });
    let response = next.run(request).await;
    finish(&state, &path, personal, response)
}

/// Renders a bare error and sets the final `Cache-Control`.
fn finish(state: &AppState, path: &str, personal: bool, mut response: Response) -> Response {
    let status = response.status();
    if (status.is_client_error() || status.is_server_error())
        && !response.headers().contains_key(CONTENT_TYPE)
    {
        response = render_error(state, path, response);
    }
    let headers = response.headers_mut();
    // A session or a cookie makes a response personal, and the admin side always is: the
    // edge and the browser's back button must never serve it to anyone else.
    if personal || path.starts_with("/admin") || headers.contains_key(SET_COOKIE) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(PRIVATE));
    } else if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
    }
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Gives a bodiless error response (ours or the router's 404/405) a small page, or a JSON
/// object under `/api/`, keeping its status and headers (`Allow` on 405).
fn render_error(state: &AppState, path: &str, response: Response) -> Response {
    let (mut parts, _body) = response.into_parts();
    let status = parts.status;
    let message = match parts.extensions.get::<ErrorMessage>() {
        Some(ErrorMessage(message)) => message.clone(),
        None if status == StatusCode::METHOD_NOT_ALLOWED => {
            let allow = parts
                .headers
                .get("allow")
                .and_then(|value| value.to_str().ok())
                .unwrap_or("another method");
            format!("This address does not answer that method; use {allow}.")
        }
        None if status == StatusCode::NOT_FOUND => "There is nothing at this address.".to_owned(),
        None => status.canonical_reason().unwrap_or("Error").to_owned(),
    };
    let rendered = if path.starts_with("/api/") || path == "/healthz" {
        Json(serde_json::json!({ "error": message, "status": status.as_u16() })).into_response()
    } else {
        let title = status.canonical_reason().unwrap_or("Error");
        state.html(
            status,
            "error.html",
            minijinja::context! { page_title => title, status => status.as_u16(), message => message },
            NO_STORE,
        )
    };
    let (rendered_parts, body) = rendered.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    for (name, value) in rendered_parts.headers.iter() {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_is_read_from_the_first_forwarded_proto() {
        let mut headers = HeaderMap::new();
        assert!(!forwarded_https(&headers));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS, http"));
        assert!(forwarded_https(&headers));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        assert!(!forwarded_https(&headers));
    }
}
