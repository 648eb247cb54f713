//! The admin side: login and logout, the catalog list, and create/edit/delete forms for
//! titles and channels. Every state-changing form carries the session's CSRF token.

use std::collections::BTreeMap;

use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use minijinja::context;
use serde::Deserialize;

use super::caching::PRIVATE;
use super::context::RequestContext;
use super::cookies::{clear_cookie, cookie, set_cookie, LOGIN_COOKIE, SESSION_COOKIE};
use super::errors::PageError;
use super::views::{ChannelView, TitleView};
use super::AppState;
use crate::catalog::{Channel, Title};
use crate::forms::{ChannelForm, FieldError, TitleForm};
use crate::sessions::{random_token, tokens_match, Session, SESSION_LIFETIME};
use crate::store::StoreError;

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
    let titles: Vec<_> = state
        .store
        .titles()
        .await?
        .iter()
        .map(|title| TitleView::new(title, &state.media_base))
        .collect();
    let channels: Vec<_> = state
        .store
        .channels()
        .await?
        .iter()
        .map(|channel| ChannelView::new(channel, &state.media_base))
        .collect();
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
pub async fn login(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    headers: axum::http::HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, PageError> {
    let form = posted(form)?;
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !tokens_match(&expected, &form.csrf_token) {
        return Err(PageError::forbidden(
            "This login form is out of date or did not come from this site: reload the login page and try again.",
        ));
    }
    let Some(admin) = state
        .store
        .check_login(&form.username, &form.password)
        .await?
    else {
        tracing::warn!(username = %form.username, "admin login failed");
        // One message whichever of the two was wrong: no probing for usernames.
        return Ok(login_page(
            &state,
            &context,
            StatusCode::UNAUTHORIZED,
            Some("Invalid username or password."),
            &form.username,
        ));
    };
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

/// The title form page; `status` is 400 or 409 when re-shown with errors.
fn title_form_page(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    target: Option<i64>,
    form: &TitleForm,
    errors: &[FieldError],
) -> Response {
    let (heading, action) = match target {
        Some(id) => ("Edit video", format!("/admin/titles/{id}")),
        None => ("Add a video", "/admin/titles".to_owned()),
    };
    state.html(
        status,
        "admin/title_form.html",
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

/// The channel form page; `status` is 400 or 409 when re-shown with errors.
fn channel_form_page(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    target: Option<i64>,
    form: &ChannelForm,
    errors: &[FieldError],
) -> Response {
    let (heading, action) = match target {
        Some(id) => ("Edit channel", format!("/admin/channels/{id}")),
        None => ("Add a live channel", "/admin/channels".to_owned()),
    };
    state.html(
        status,
        "admin/channel_form.html",
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

/// `GET /admin/titles/new`: the empty title form.
pub async fn new_title(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
) -> Response {
    title_form_page(
        &state,
        &session,
        StatusCode::OK,
        None,
        &TitleForm::default(),
        &[],
    )
}

/// `POST /admin/titles`: adds a title.
pub async fn create_title(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    form: Result<Form<Posted<TitleForm>>, FormRejection>,
) -> Result<Response, PageError> {
    let posted = posted(form)?;
    check_csrf(&session, &posted.csrf_token)?;
    let form = posted.fields;
    let fields = match form.validate() {
        Ok(fields) => fields,
        Err(errors) => {
            return Ok(title_form_page(
                &state,
                &session,
                StatusCode::BAD_REQUEST,
                None,
                &form,
                &errors,
            ))
        }
    };
    match state.store.create_title(&fields).await {
        Ok(id) => {
            tracing::info!(id, slug = %fields.slug, admin = %session.admin.username, "title created");
            Ok(see_other("/admin/?notice=created"))
        }
        Err(err) => {
            let error = slug_conflict(err)?;
            Ok(title_form_page(
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

/// `GET /admin/titles/{id}/edit`: the title form, filled in.
pub async fn edit_title(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = record_id(&id)?;
    let title = state
        .store
        .title_by_id(id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("There is no video with id {id}.")))?;
    Ok(title_form_page(
        &state,
        &session,
        StatusCode::OK,
        Some(id),
        &TitleForm::from(&title),
        &[],
    ))
}

/// `POST /admin/titles/{id}`: saves a title's new fields.
pub async fn update_title(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(id): Path<String>,
    form: Result<Form<Posted<TitleForm>>, FormRejection>,
) -> Result<Response, PageError> {
    let id = record_id(&id)?;
    let posted = posted(form)?;
    check_csrf(&session, &posted.csrf_token)?;
    let form = posted.fields;
    let fields = match form.validate() {
        Ok(fields) => fields,
        Err(errors) => {
            return Ok(title_form_page(
                &state,
                &session,
                StatusCode::BAD_REQUEST,
                Some(id),
                &form,
                &errors,
            ))
        }
    };
    match state.store.update_title(id, &fields).await {
        Ok(true) => {
            tracing::info!(id, slug = %fields.slug, admin = %session.admin.username, "title updated");
            Ok(see_other("/admin/?notice=updated"))
        }
        Ok(false) => Err(PageError::not_found(format!(
            "There is no video with id {id}."
        ))),
        Err(err) => {
            let error = slug_conflict(err)?;
            Ok(title_form_page(
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

/// `POST /admin/titles/{id}/delete`: removes a title.
pub async fn delete_title(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(id): Path<String>,
    form: Result<Form<CsrfOnly>, FormRejection>,
) -> Result<Response, PageError> {
    let id = record_id(&id)?;
    check_csrf(&session, &posted(form)?.csrf_token)?;
    if !state.store.delete_title(id).await? {
        return Err(PageError::not_found(format!(
            "There is no video with id {id}."
        )));
    }
    tracing::info!(id, admin = %session.admin.username, "title deleted");
    Ok(see_other("/admin/?notice=deleted"))
}

/// `GET /admin/channels/new`: the empty channel form.
pub async fn new_channel(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
) -> Response {
    channel_form_page(
        &state,
        &session,
        StatusCode::OK,
        None,
        &ChannelForm::default(),
        &[],
    )
}

/// `POST /admin/channels`: adds a channel.
pub async fn create_channel(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    form: Result<Form<Posted<ChannelForm>>, FormRejection>,
) -> Result<Response, PageError> {
    let posted = posted(form)?;
    check_csrf(&session, &posted.csrf_token)?;
    let form = posted.fields;
    let fields = match form.validate() {
        Ok(fields) => fields,
        Err(errors) => {
            return Ok(channel_form_page(
                &state,
                &session,
                StatusCode::BAD_REQUEST,
                None,
                &form,
                &errors,
            ))
        }
    };
    match state.store.create_channel(&fields).await {
        Ok(id) => {
            tracing::info!(id, slug = %fields.slug, admin = %session.admin.username, "channel created");
            Ok(see_other("/admin/?notice=created"))
        }
        Err(err) => {
            let error = slug_conflict(err)?;
            Ok(channel_form_page(
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

/// `GET /admin/channels/{id}/edit`: the channel form, filled in.
pub async fn edit_channel(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = record_id(&id)?;
    let channel = state
        .store
        .channel_by_id(id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("There is no channel with id {id}.")))?;
    Ok(channel_form_page(
        &state,
        &session,
        StatusCode::OK,
        Some(id),
        &ChannelForm::from(&channel),
        &[],
    ))
}

/// `POST /admin/channels/{id}`: saves a channel's new fields.
pub async fn update_channel(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(id): Path<String>,
    form: Result<Form<Posted<ChannelForm>>, FormRejection>,
) -> Result<Response, PageError> {
    let id = record_id(&id)?;
    let posted = posted(form)?;
    check_csrf(&session, &posted.csrf_token)?;
    let form = posted.fields;
    let fields = match form.validate() {
        Ok(fields) => fields,
        Err(errors) => {
            return Ok(channel_form_page(
                &state,
                &session,
                StatusCode::BAD_REQUEST,
                Some(id),
                &form,
                &errors,
            ))
        }
    };
    match state.store.update_channel(id, &fields).await {
        Ok(true) => {
            tracing::info!(id, slug = %fields.slug, admin = %session.admin.username, "channel updated");
            Ok(see_other("/admin/?notice=updated"))
        }
        Ok(false) => Err(PageError::not_found(format!(
            "There is no channel with id {id}."
        ))),
        Err(err) => {
            let error = slug_conflict(err)?;
            Ok(channel_form_page(
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

/// `POST /admin/channels/{id}/delete`: removes a channel.
pub async fn delete_channel(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(id): Path<String>,
    form: Result<Form<CsrfOnly>, FormRejection>,
) -> Result<Response, PageError> {
    let id = record_id(&id)?;
    check_csrf(&session, &posted(form)?.csrf_token)?;
    if !state.store.delete_channel(id).await? {
        return Err(PageError::not_found(format!(
            "There is no channel with id {id}."
        )));
    }
    tracing::info!(id, admin = %session.admin.username, "channel deleted");
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
