//! Error responses: a status and a message for people; the page is rendered by the
//! request middleware so that every error, ours or the router's, looks the same.

use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

/// The message an error response carries to the middleware that renders it.
#[derive(Debug, Clone)]
pub struct ErrorMessage(pub String);

/// An HTML error page: status and what the viewer can do about it.
#[derive(Debug)]
pub struct PageError {
    /// HTTP status.
    pub status: StatusCode,
    /// One sentence for the viewer.
    pub message: String,
}

impl PageError {
    /// A page error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 404 for a missing catalog entry or admin record.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 403: no session, or a CSRF token that does not match.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 400 for a form body that cannot be read at all.
    pub fn bad_form(rejection: FormRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Malformed form: {}", rejection.body_text()),
        )
    }
}

impl From<StoreError> for PageError {
    fn from(err: StoreError) -> Self {
        tracing::error!(error = %err, "database failure");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The catalog database is not answering; try again in a moment.",
        )
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        // No body and no Content-Type: the middleware renders the page (or JSON under /api).
        let mut response = self.status.into_response();
        response.extensions_mut().insert(ErrorMessage(self.message));
        response
    }
}
