//! Admin login and logout: the double-submit login form, the throttle on failed attempts
//! (per client address and per username, then the password check), and the session cookie.

use std::net::SocketAddr;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::header::{RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::{Extension, Form};
use minijinja::context;
use serde::Deserialize;

use super::session::{check_csrf, posted, see_other, AdminSession, CsrfOnly};
use super::{COOKIE_PATH, LOGIN_PATH};
use crate::accounts::{MAX_PASSWORD_BYTES, MAX_USERNAME_BYTES};
use crate::http::caching::PRIVATE;
use crate::http::context::RequestContext;
use crate::http::cookies::{clear_cookie, cookie, set_cookie, LOGIN_COOKIE, SESSION_COOKIE};
use crate::http::errors::PageError;
use crate::http::AppState;
use crate::login_throttle::{Busy, Refused};
use crate::sessions::{random_token, tokens_match, SESSION_LIFETIME};

/// How long a login form stays usable.
const LOGIN_FORM_LIFETIME_SECS: u64 = 60 * 60;

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// Must equal the login cookie.
    pub csrf_token: String,
    /// Who logs in.
    pub username: String,
    /// Their password.
    pub password: String,
}

/// The login page with a fresh double-submit token, and `status` (401 after a failure).
fn login_page(
    state: &AppState,
    context: &RequestContext,
    status: StatusCode,
    error: Option<&str>,
    username: &str,
) -> Response {
    let token = random_token();
    let mut response = state.html(
        status,
        "admin/login.html",
        context! { page_title => "Admin login", login_token => &token, error, username_value => username },
        PRIVATE,
    );
    let cookie = set_cookie(
        LOGIN_COOKIE,
        &token,
        LOGIN_PATH,
        LOGIN_FORM_LIFETIME_SECS,
        context.https,
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

/// The login page with 429 and `Retry-After` for a refused attempt. The same words whether
/// the username or the address hit its limit: no probing for usernames this way either.
fn throttled(
    state: &AppState,
    context: &RequestContext,
    username: &str,
    refused: Refused,
) -> Response {
    let secs = refused.retry_after.as_secs().max(1);
    let minutes = secs.div_ceil(60);
    let message = format!(
        "Too many failed logins. Try again in {minutes} minute{}.",
        if minutes == 1 { "" } else { "s" }
    );
    let mut response = login_page(
        state,
        context,
        StatusCode::TOO_MANY_REQUESTS,
        Some(&message),
        username,
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// `GET /admin/login`: the form, or the list when already logged in.
pub async fn login_form(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
) -> Response {
    if context.session.is_some() {
        return see_other("/admin/");
    }
    login_page(&state, &context, StatusCode::OK, None, "")
}

/// `POST /admin/login`: checks the form token and the credentials, then starts a session.
/// Oversized fields are refused (400) before anything else; clients and usernames with too
/// many recent attempts get 429 without a password check, and so does a login that finds
/// every verification slot taken.
pub async fn login(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, PageError> {
    let form = posted(form)?;
    if form.username.len() > MAX_USERNAME_BYTES || form.password.len() > MAX_PASSWORD_BYTES {
        // Not counted, not looked up, not hashed, and not echoed back into the form.
        return Ok(login_page(
            &state,
            &context,
            StatusCode::BAD_REQUEST,
            Some(&format!(
                "Usernames have at most {MAX_USERNAME_BYTES} characters and passwords at most {MAX_PASSWORD_BYTES}."
            )),
            "",
        ));
    }
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !tokens_match(&expected, &form.csrf_token) {
        return Err(PageError::forbidden(
            "This login form is out of date or did not come from this site: reload the login page and try again.",
        ));
    }
    let address = state.trusted_proxies.client_address(&headers, peer.ip());
    let attempt = match state.login_throttle.attempt(address, &form.username) {
        Ok(attempt) => attempt,
        Err(refused) => {
            tracing::warn!(
                %address,
                username = %form.username,
                retry_after_secs = refused.retry_after.as_secs(),
                limit = if refused.username_limit { "username" } else { "address" },
                "admin login refused: too many failed logins"
            );
            return Ok(throttled(&state, &context, &form.username, refused));
        }
    };
    let slot = match state.login_throttle.verification().await {
        Ok(slot) => slot,
        Err(Busy) => {
            state.login_throttle.withdraw(attempt);
            tracing::warn!(%address, username = %form.username, "admin login refused: too many logins at once");
            let mut response = login_page(
                &state,
                &context,
                StatusCode::TOO_MANY_REQUESTS,
                Some("Too many logins at once. Try again in a few seconds."),
                &form.username,
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("5"));
            return Ok(response);
        }
    };
    let Some(admin) = state
        .store
        .check_login_holding(&form.username, &form.password, slot)
        .await?
    else {
        // The attempt stays counted.
        tracing::warn!(%address, username = %form.username, "admin login failed");
        // One message whichever of the two was wrong: no probing for usernames.
        return Ok(login_page(
            &state,
            &context,
            StatusCode::UNAUTHORIZED,
            Some("Invalid username or password."),
            &form.username,
        ));
    };
    state.login_throttle.succeeded(attempt);
    let session = state.store.create_session(&admin).await?;
    tracing::info!(username = %admin.username, "admin logged in");
    let mut response = see_other("/admin/");
    let cookies = [
        set_cookie(
            SESSION_COOKIE,
            &session.id,
            COOKIE_PATH,
            SESSION_LIFETIME.as_secs(),
            context.https,
        ),
        clear_cookie(LOGIN_COOKIE, LOGIN_PATH, context.https),
    ];
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    Ok(response)
}

/// `POST /admin/logout`: ends the session and clears its cookie.
pub async fn logout(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    AdminSession(session): AdminSession,
    form: Result<Form<CsrfOnly>, FormRejection>,
) -> Result<Response, PageError> {
    check_csrf(&session, &posted(form)?.csrf_token)?;
    state.store.delete_session(&session.id).await?;
    let mut response = see_other(LOGIN_PATH);
    if let Ok(value) =
        HeaderValue::from_str(&clear_cookie(SESSION_COOKIE, COOKIE_PATH, context.https))
    {
        response.headers_mut().append(SET_COOKIE, value);
    }
    Ok(response)
}
