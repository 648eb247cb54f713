//! The admin side: login and logout, the catalog list, and create/edit/delete forms for
//! titles and channels. Every state-changing form carries the session's CSRF token.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::header::{LOCATION, RETRY_AFTER, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use minijinja::context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::caching::PRIVATE;
use super::context::RequestContext;
use super::cookies::{clear_cookie, cookie, set_cookie, LOGIN_COOKIE, SESSION_COOKIE};
use super::errors::PageError;
use super::views::catalog_views;
use super::AppState;
use crate::accounts::{MAX_PASSWORD_BYTES, MAX_USERNAME_BYTES};
use crate::catalog::{Channel, ChannelFields, Title, TitleFields};
use crate::forms::{ChannelForm, FieldError, TitleForm};
use crate::login_throttle::{Busy, Refused};
use crate::sessions::{random_token, tokens_match, Session, SESSION_LIFETIME};
use crate::store::{Store, StoreError};

/// Where the session cookie is sent: only the admin side, so public pages stay cacheable for
/// admins too.
const COOKIE_PATH: &str = "/admin";
/// Where the login form's CSRF cookie is sent.
const LOGIN_PATH: &str = "/admin/login";
/// How long a login form stays usable.
const LOGIN_FORM_LIFETIME_SECS: u64 = 60 * 60;

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

/// `?notice=` after a redirect: which confirmation the list shows.
#[derive(Debug, Deserialize)]
pub struct NoticeQuery {
    /// `created`, `updated` or `deleted`.
    pub notice: Option<String>,
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
fn posted<T>(form: Result<Form<T>, FormRejection>) -> Result<T, PageError> {
    form.map(|Form(value)| value).map_err(PageError::bad_form)
}

/// An admin record id from the URL; anything that is not a number is simply not found.
fn record_id(raw: &str) -> Result<i64, PageError> {
    raw.parse()
        .map_err(|_| PageError::not_found(format!("There is no record `{raw}`.")))
}

/// Field errors as the form templates look them up: field name → message.
fn by_field(errors: &[FieldError]) -> BTreeMap<&'static str, &str> {
    errors
        .iter()
        .map(|error| (error.field, error.message.as_str()))
        .collect()
}

/// A duration in the form's own syntax (`h:mm:ss`, `m:ss`), milliseconds kept when present.
fn duration_field(ms: i64) -> String {
    let (seconds, millis) = (ms / 1000, ms % 1000);
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let fraction = if millis == 0 {
        String::new()
    } else {
        format!(".{millis:03}")
    };
    if hours > 0 {
        format!("{hours}:{minutes:02}:{seconds:02}{fraction}")
    } else {
        format!("{minutes}:{seconds:02}{fraction}")
    }
}

impl From<&Title> for TitleForm {
    fn from(title: &Title) -> Self {
        Self {
            title: title.title.clone(),
            slug: title.slug.clone(),
            description: title.description.clone(),
            poster: title.poster.clone().unwrap_or_default(),
            duration: title.duration_ms.map(duration_field).unwrap_or_default(),
            stream_url: title.stream_url.clone(),
        }
    }
}

impl From<&Channel> for ChannelForm {
    fn from(channel: &Channel) -> Self {
        Self {
            name: channel.name.clone(),
            slug: channel.slug.clone(),
            description: channel.description.clone(),
            poster: channel.poster.clone().unwrap_or_default(),
            stream_url: channel.stream_url.clone(),
        }
    }
}

/// One kind of catalog entry as the admin forms edit it, named by its form type: the same
/// new/create/edit/update/delete handlers serve titles and channels.
pub trait EntryForm:
    Default + Serialize + DeserializeOwned + for<'a> From<&'a Self::Record> + Send + Sync + 'static
{
    /// The stored entry.
    type Record;
    /// The validated, editable fields.
    type Fields: Send + Sync;
    /// What logs call it: `title`, `channel`.
    const NOUN: &'static str;
    /// What a 404 calls it: `video`, `channel`.
    const MISSING: &'static str;
    /// Where the form posts a new entry; an existing one is at `{PATH}/{id}`.
    const PATH: &'static str;
    /// The form's template.
    const TEMPLATE: &'static str;
    /// The heading of the empty form.
    const NEW_HEADING: &'static str;
    /// The heading of the filled-in form.
    const EDIT_HEADING: &'static str;

    /// The fields this form describes, or every problem found.
    fn validate(&self) -> Result<Self::Fields, Vec<FieldError>>;
    /// The URL name in `fields`.
    fn slug(fields: &Self::Fields) -> &str;
    /// The entry with this id.
    fn find(
        store: &Store,
        id: i64,
    ) -> impl Future<Output = Result<Option<Self::Record>, StoreError>> + Send;
    /// Adds an entry and returns its id.
    fn create(
        store: &Store,
        fields: &Self::Fields,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;
    /// Replaces an entry's fields; false if there is no such entry.
    fn update(
        store: &Store,
        id: i64,
        fields: &Self::Fields,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Removes an entry; false if there was no such entry.
    fn delete(store: &Store, id: i64) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

impl EntryForm for TitleForm {
    type Record = Title;
    type Fields = TitleFields;
    const NOUN: &'static str = "title";
    const MISSING: &'static str = "video";
    const PATH: &'static str = "/admin/titles";
    const TEMPLATE: &'static str = "admin/title_form.html";
    const NEW_HEADING: &'static str = "Add a video";
    const EDIT_HEADING: &'static str = "Edit video";

    fn validate(&self) -> Result<TitleFields, Vec<FieldError>> {
        TitleForm::validate(self)
    }
    fn slug(fields: &TitleFields) -> &str {
        &fields.slug
    }
    async fn find(store: &Store, id: i64) -> Result<Option<Title>, StoreError> {
        store.title_by_id(id).await
    }
    async fn create(store: &Store, fields: &TitleFields) -> Result<i64, StoreError> {
        store.create_title(fields).await
    }
    async fn update(store: &Store, id: i64, fields: &TitleFields) -> Result<bool, StoreError> {
        store.update_title(id, fields).await
    }
    async fn delete(store: &Store, id: i64) -> Result<bool, StoreError> {
        store.delete_title(id).await
    }
}

impl EntryForm for ChannelForm {
    type Record = Channel;
    type Fields = ChannelFields;
    const NOUN: &'static str = "channel";
    const MISSING: &'static str = "channel";
    const PATH: &'static str = "/admin/channels";
    const TEMPLATE: &'static str = "admin/channel_form.html";
    const NEW_HEADING: &'static str = "Add a live channel";
    const EDIT_HEADING: &'static str = "Edit channel";

    fn validate(&self) -> Result<ChannelFields, Vec<FieldError>> {
        ChannelForm::validate(self)
    }
    fn slug(fields: &ChannelFields) -> &str {
        &fields.slug
    }
    async fn find(store: &Store, id: i64) -> Result<Option<Channel>, StoreError> {
        store.channel_by_id(id).await
    }
    async fn create(store: &Store, fields: &ChannelFields) -> Result<i64, StoreError> {
        store.create_channel(fields).await
    }
    async fn update(store: &Store, id: i64, fields: &ChannelFields) -> Result<bool, StoreError> {
        store.update_channel(id, fields).await
    }
    async fn delete(store: &Store, id: i64) -> Result<bool, StoreError> {
        store.delete_channel(id).await
    }
}

/// `GET /admin`: to the list.
pub async fn to_index() -> Response {
    see_other("/admin/")
}

/// `GET /admin/`: the catalog with edit and delete buttons.
pub async fn index(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Query(query): Query<NoticeQuery>,
) -> Result<Response, PageError> {
    let (titles, channels) = catalog_views(&state.store, &state.media_base).await?;
    let notice = match query.notice.as_deref() {
        Some("created") => Some("Saved: the new entry is in the catalog."),
        Some("updated") => Some("Saved."),
        Some("deleted") => Some("Deleted."),
        _ => None,
    };
    Ok(state.html(
        StatusCode::OK,
        "admin/index.html",
        context! {
            page_title => "Admin",
            username => session.admin.username,
            csrf_token => session.csrf_token,
            titles, channels, notice,
            uploads => state.media_root.is_some(),
            upload_jobs => state.store.recent_jobs().await?,
        },
        PRIVATE,
    ))
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

/// An entry's form page; `status` is 400 or 409 when re-shown with errors.
fn form_page<F: EntryForm>(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    target: Option<i64>,
    form: &F,
    errors: &[FieldError],
) -> Response {
    let (heading, action) = match target {
        Some(id) => (F::EDIT_HEADING, format!("{}/{id}", F::PATH)),
        None => (F::NEW_HEADING, F::PATH.to_owned()),
    };
    state.html(
        status,
        F::TEMPLATE,
        context! {
            page_title => heading, heading, action, form,
            errors => by_field(errors),
            username => &session.admin.username,
            csrf_token => &session.csrf_token,
            media_base => state.media_base.to_string(),
        },
        PRIVATE,
    )
}

/// 404 for an entry id that is not in the catalog.
fn missing<F: EntryForm>(id: i64) -> PageError {
    PageError::not_found(format!("There is no {} with id {id}.", F::MISSING))
}

/// A slug conflict as a field error, or any other store failure as it is.
fn slug_conflict(err: StoreError) -> Result<FieldError, PageError> {
    match err {
        StoreError::Conflict { what, slug } => Ok(FieldError {
            field: "slug",
            message: format!("another {what} uses `{slug}` already: choose another slug"),
        }),
        other => Err(other.into()),
    }
}

/// `GET /admin/titles/new`, `GET /admin/channels/new`: the empty form.
pub async fn new_entry<F: EntryForm>(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
) -> Response {
    form_page(&state, &session, StatusCode::OK, None, &F::default(), &[])
}

/// `POST /admin/titles`, `POST /admin/channels`: adds an entry.
pub async fn create_entry<F: EntryForm>(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    form: Result<Form<Posted<F>>, FormRejection>,
) -> Result<Response, PageError> {
    let posted = posted(form)?;
    check_csrf(&session, &posted.csrf_token)?;
    let form = posted.fields;
    let fields = match form.validate() {
        Ok(fields) => fields,
        Err(errors) => {
            return Ok(form_page(
                &state,
                &session,
                StatusCode::BAD_REQUEST,
                None,
                &form,
                &errors,
            ))
        }
    };
    match F::create(&state.store, &fields).await {
        Ok(id) => {
            tracing::info!(id, slug = %F::slug(&fields), admin = %session.admin.username, "{} created", F::NOUN);
            Ok(see_other("/admin/?notice=created"))
        }
        Err(err) => {
            let error = slug_conflict(err)?;
            Ok(form_page(
                &state,
                &session,
                StatusCode::CONFLICT,
                None,
                &form,
                &[error],
            ))
        }
    }
}

/// `GET /admin/titles/{id}/edit`, `GET /admin/channels/{id}/edit`: the form, filled in.
pub async fn edit_entry<F: EntryForm>(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = record_id(&id)?;
    let record = F::find(&state.store, id)
        .await?
        .ok_or_else(|| missing::<F>(id))?;
    Ok(form_page(
        &state,
        &session,
        StatusCode::OK,
        Some(id),
        &F::from(&record),
        &[],
    ))
}

/// `POST /admin/titles/{id}`, `POST /admin/channels/{id}`: saves an entry's new fields.
pub async fn update_entry<F: EntryForm>(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(id): Path<String>,
    form: Result<Form<Posted<F>>, FormRejection>,
) -> Result<Response, PageError> {
    let id = record_id(&id)?;
    let posted = posted(form)?;
    check_csrf(&session, &posted.csrf_token)?;
    let form = posted.fields;
    let fields = match form.validate() {
        Ok(fields) => fields,
        Err(errors) => {
            return Ok(form_page(
                &state,
                &session,
                StatusCode::BAD_REQUEST,
                Some(id),
                &form,
                &errors,
            ))
        }
    };
    match F::update(&state.store, id, &fields).await {
        Ok(true) => {
            tracing::info!(id, slug = %F::slug(&fields), admin = %session.admin.username, "{} updated", F::NOUN);
            Ok(see_other("/admin/?notice=updated"))
        }
        Ok(false) => Err(missing::<F>(id)),
        Err(err) => {
            let error = slug_conflict(err)?;
            Ok(form_page(
                &state,
                &session,
                StatusCode::CONFLICT,
                Some(id),
                &form,
                &[error],
            ))
        }
    }
}

/// `POST /admin/titles/{id}/delete`, `POST /admin/channels/{id}/delete`: removes an entry.
pub async fn delete_entry<F: EntryForm>(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(id): Path<String>,
    form: Result<Form<CsrfOnly>, FormRejection>,
) -> Result<Response, PageError> {
    let id = record_id(&id)?;
    check_csrf(&session, &posted(form)?.csrf_token)?;
    if !F::delete(&state.store, id).await? {
        return Err(missing::<F>(id));
    }
    tracing::info!(id, admin = %session.admin.username, "{} deleted", F::NOUN);
    Ok(see_other("/admin/?notice=deleted"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forms::parse_duration;

    #[test]
    fn durations_round_trip_through_the_form() {
        for ms in [0, 42_000, 90_500, 3_723_000] {
            assert_eq!(parse_duration(&duration_field(ms)), Ok(Some(ms)), "{ms}");
        }
    }
}
