//! `GET /static/{path}`: the embedded assets, cached for a year (their URLs are versioned).

use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::caching::STATIC_ASSET;
use super::errors::PageError;
use super::AppState;

/// Serves one embedded asset, or 304 when the browser's copy is current.
pub async fn serve(
    State(state): State<AppState>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let asset = state
        .assets
        .get(&path)
        .ok_or_else(|| PageError::not_found(format!("There is no static file `{path}`.")))?;
    let etag = format!("\"{}\"", asset.version);
    let etag_value = HeaderValue::from_str(&etag).expect("hex digits in quotes are a valid header");
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let common = [
        (CACHE_CONTROL, HeaderValue::from_static(STATIC_ASSET)),
        (ETAG, etag_value),
    ];
    if fresh {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    Ok((
        common,
        [(CONTENT_TYPE, HeaderValue::from_static(asset.content_type))],
        asset.body,
    )
        .into_response())
}
