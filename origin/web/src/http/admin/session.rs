//! The admin session as an extractor, and the CSRF check every state-changing admin form passes.

use axum::extract::rejection::FormRejection;
use axum::extract::FromRequestParts;
use axum::http::header::LOCATION;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use serde::Deserialize;

use super::LOGIN_PATH;
use crate::http::context::RequestContext;
use crate::http::errors::PageError;
use crate::sessions::{tokens_match, Session};

/// The logged-in admin's session; without one, GET goes to the login page and anything
/// else is refused with 403.
#[derive(Debug, Clone)]
pub struct AdminSession(pub Session);

impl<S: Send + Sync> FromRequestParts<S> for AdminSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        let session = parts
            .extensions
            .get::<RequestContext>()
            .and_then(|context| context.session.clone());
        match session {
            Some(session) => Ok(Self(session)),
            None if parts.method == Method::GET || parts.method == Method::HEAD => {
                Err(see_other(LOGIN_PATH))
            }
            None => Err(PageError::forbidden(
                "You are not logged in, or your session has ended: log in again.",
            )
            .into_response()),
        }
    }
}

/// A posted admin form: the CSRF token plus the form's own fields.
#[derive(Debug, Deserialize)]
pub struct Posted<T> {
    /// Must equal the session's token.
    pub csrf_token: String,
    /// The form's fields.
    #[serde(flatten)]
    pub fields: T,
}

/// A form with nothing but its CSRF token (delete, logout).
#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    /// Must equal the session's token.
    pub csrf_token: String,
}

/// 303 to `location`: after a POST, the browser loads the next page with GET.
pub(crate) fn see_other(location: &str) -> Response {
    let location = HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/admin/"));
    (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response()
}

/// 403 unless `given` is this session's CSRF token.
pub(crate) fn check_csrf(session: &Session, given: &str) -> Result<(), PageError> {
    if tokens_match(&session.csrf_token, given) {
        Ok(())
    } else {
        Err(PageError::forbidden(
            "This form is out of date or did not come from this site (CSRF token mismatch): reload the page and try again.",
        ))
    }
}

/// A form body, or 400 when it cannot be read.
pub(super) fn posted<T>(form: Result<Form<T>, FormRejection>) -> Result<T, PageError> {
    form.map(|Form(value)| value).map_err(PageError::bad_form)
}
