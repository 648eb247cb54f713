//! The JSON side: the catalog listing, the player's view counter, and the health check.

use std::net::SocketAddr;

use std::collections::HashMap;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::caching::NO_STORE;
use super::views::catalog_views;
use super::AppState;
use crate::catalog::Kind;
use crate::store::StoreError;
use crate::view_limit::Verdict;

/// A JSON answer that no cache keeps.
fn no_store_json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(CACHE_CONTROL, HeaderValue::from_static(NO_STORE))],
        Json(body),
    )
        .into_response()
}

/// The JSON error for a database failure.
fn unavailable(err: StoreError) -> Response {
    tracing::error!(error = %err, "database failure");
    no_store_json(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "error": "the catalog database is not answering", "status": 503 }),
    )
}

/// `GET /api/catalog`: every title and channel with its view count; with `--edges`, also
/// `steering`: this viewer's edges, best first (relative `stream_url`s go under any of them).
pub async fn catalog(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match catalog_views(&state.store, &state.media_base).await {
        Ok((titles, channels)) => {
            let mut body = json!({
                "media_base": state.media_base.to_string(),
                "titles": titles,
                "channels": channels,
            });
            if let Some(fleet) = &state.fleet {
                let client = state.trusted_proxies.client_address(&headers, peer.ip());
                body["steering"] = json!(fleet.steer(client));
            }
            // no-store: with `steering` the answer is this viewer's own.
            no_store_json(StatusCode::OK, body)
        }
        Err(err) => unavailable(err),
    }
}

/// `GET /api/edges`: every edge with what the poller knows (health, load, last error);
/// `GET /api/edges?for=me`: the edges for the asking viewer, best first. 404 without `--edges`.
pub async fn edges(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(fleet) = &state.fleet else {
        return no_store_json(
            StatusCode::NOT_FOUND,
            json!({ "error": "no edge fleet is configured (--edges): streams are served under the media base", "status": 404 }),
        );
    };
    match query.get("for").map(String::as_str) {
        None => no_store_json(StatusCode::OK, json!({ "edges": fleet.status() })),
        Some("me") => {
            let client = state.trusted_proxies.client_address(&headers, peer.ip());
            no_store_json(StatusCode::OK, json!(fleet.steer(client)))
        }
        Some(other) => no_store_json(
            StatusCode::BAD_REQUEST,
            json!({ "error": format!("unknown for=`{other}`: use for=me, or no parameter for every edge"), "status": 400 }),
        ),
    }
}

/// `POST /api/views/{kind}/{slug}`: one playback started; answers the count and whether
/// this one was counted (once per viewer and entry per hour, see [`crate::view_limit`]).
pub async fn count_view(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((kind, slug)): Path<(String, String)>,
) -> Response {
    let Some(entry_kind) = Kind::from_segment(&kind) else {
        return no_store_json(
            StatusCode::NOT_FOUND,
            json!({ "error": format!("unknown kind `{kind}`: use titles or live"), "status": 404 }),
        );
    };
    let client = state.trusted_proxies.client_address(&headers, peer.ip());
    let (views, counted) = match state.view_limiter.admit(entry_kind, &slug, client) {
        Verdict::Count(mark) => match state.store.count_view(entry_kind, &slug).await {
            Ok(None) => {
                state.view_limiter.forget(mark);
                (Ok(None), false)
            }
            views => (views, true),
        },
        Verdict::Seen | Verdict::Full => (state.store.views(entry_kind, &slug).await, false),
    };
    match views {
        Ok(Some(views)) => no_store_json(
            StatusCode::OK,
            json!({ "kind": kind, "slug": slug, "views": views, "counted": counted }),
        ),
        Ok(None) => no_store_json(
            StatusCode::NOT_FOUND,
            json!({ "error": format!("no {kind} entry `{slug}`"), "status": 404 }),
        ),
        Err(err) => unavailable(err),
    }
}

/// `GET /healthz`: 200 when the database answers, 503 otherwise.
pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => (
            [(CACHE_CONTROL, HeaderValue::from_static(NO_STORE))],
            "ok\n",
        )
            .into_response(),
        Err(err) => unavailable(err),
    }
}
