//! The edge's own answers: short plain-text bodies for a bad request, no route, a redirect
//! to HTTPS, and a request that failed at the origin (or, when its header was already sent, the
//! log line for the cut).

use bytes::Bytes;
use futures_util::future::BoxFuture;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::ctx::RequestCtx;
use crate::forwarding;
use crate::pool::attempts::{explain, is_timeout};
use crate::route::HttpsRedirect;

/// Answers with a short plain-text body that never gets cached.
///
/// The answer's future is boxed: it is over a kilobyte, and a hook that awaits it unboxed
/// (`request_filter`) would be as large, and copied whole into its own box on every request,
/// also on the many that never answer here.
pub(super) fn text<'a>(
    session: &'a mut Session,
    status: u16,
    body: &'a str,
    extra: &'a [(http::HeaderName, http::HeaderValue)],
) -> BoxFuture<'a, Result<()>> {
    Box::pin(write_text(session, status, body, extra))
}

async fn write_text(
    session: &mut Session,
    status: u16,
    body: &str,
    extra: &[(http::HeaderName, http::HeaderValue)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    // The edge's own answers are text: a browser must not sniff them into HTML.
    resp.insert_header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")?;
    for (name, value) in extra {
        resp.insert_header(name.clone(), value.clone())?;
    }
    forwarding::downstream_response(&mut resp, session.req_header().version);
    let head = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head).await?;
    if !head {
        session
            .write_response_body(Some(Bytes::copy_from_slice(body.as_bytes())), true)
            .await?;
    }
    Ok(())
}

/// Answers a plain-HTTP request on a route that redirects to HTTPS.
pub(super) async fn redirect(session: &mut Session, redirect: HttpsRedirect) -> Result<()> {
    match redirect {
        HttpsRedirect::NoPlainHost => {
            let body = "dime: a redirect to HTTPS needs a Host header with a plain host name\n";
            text(session, 400, body, &[]).await
        }
        HttpsRedirect::To(location) => {
            let value = http::HeaderValue::from_str(&location).map_err(|_| {
                Error::explain(
                    ErrorType::InvalidHTTPHeader,
                    "unrepresentable redirect target",
                )
            })?;
            // 308, not 301: the method and body are kept (RFC 9110 §15.4.9).
            let body = format!("dime: moved to {location}\n");
            text(session, 308, &body, &[(http::header::LOCATION, value)]).await
        }
    }
}

/// The status the edge answers a failed request with; 0 when the viewer's own connection
/// failed and there is no one left to answer.
pub(super) fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ if is_timeout(e) && e.esource() != &ErrorSource::Downstream => 504,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                // An HTTP/2 viewer's error is its stream reset: no one to answer either.
                ErrorType::WriteError
                | ErrorType::ReadError
                | ErrorType::ConnectionClosed
                | ErrorType::H2Error => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// The status a failed request is answered with (see [`error_status`]). RFC 9111 §5.2.2.2: an
/// origin that cannot be reached, behind a stored response it forbade serving stale, makes a
/// 504, never the stale copy.
pub(super) fn failure_status(e: &Error, ctx: &RequestCtx) -> u16 {
    match error_status(e) {
        502 if ctx.stale_forbidden => 504,
        code => code,
    }
}

/// Logs why a response whose header (`status`) already went out was cut: the viewer sees its
/// connection end before the body does, the one honest signal left.
pub(super) fn cut(status: u16, e: &Error, ctx: &RequestCtx) {
    let (id, route, reason) = (ctx.request_id.as_str(), ctx.route_name(), reason(e, ctx));
    tracing::warn!(request_id = %id, route, status, "cut the response after its header: {reason}");
}

/// Logs why a background fill failed. Its viewers see it on their own requests: a cut
/// connection once the fill's header reached them, otherwise their own try at the origin.
pub(super) fn fill_failed(e: &Error, ctx: &RequestCtx) {
    let (id, route, reason) = (ctx.request_id.as_str(), ctx.route_name(), reason(e, ctx));
    tracing::warn!(request_id = %id, route, "background fill failed: {reason}");
}

/// Why a request failed once its response had started: the backend's failure as the attempts
/// recorded it, or else the error explained.
fn reason(e: &Error, ctx: &RequestCtx) -> String {
    ctx.attempts
        .failure()
        .map_or_else(|| explain(e), str::to_string)
}

/// Answers a failed request with `code`, and logs why.
pub(super) async fn error(session: &mut Session, code: u16, e: &Error, ctx: &RequestCtx) {
    // Backends and pools are the operator's business: the log gets the whole reason
    // under the request id, the viewer a short reason and the id to quote.
    let reason = ctx
        .attempts
        .failure()
        .map_or_else(|| e.to_string(), str::to_string);
    let id = ctx.request_id.as_str();
    let route = ctx.route_name();
    if code >= 500 {
        tracing::warn!(request_id = %id, route, status = code, "answered {code}: {reason}");
    } else {
        // A viewer's malformed request is not the operator's problem.
        tracing::info!(request_id = %id, route, status = code, "answered {code}: {reason}");
    }
    let what = match code {
        502 => "bad gateway: the origin could not be reached or failed",
        504 if ctx.stale_forbidden => {
            "gateway timeout: the origin could not be reached, and the stored copy may not be \
             served stale"
        }
        504 => "gateway timeout: the origin did not answer in time",
        400 => "bad request",
        _ => "internal error",
    };
    // The route's response headers (CORS, for one) belong on its error pages too, or a
    // player cannot even read why its request failed.
    let mut extra = ctx
        .route
        .as_ref()
        .map_or_else(Vec::new, |r| r.spec.response_headers.clone());
    if let Ok(id) = http::HeaderValue::from_str(&ctx.request_id) {
        extra.push((http::HeaderName::from_static("x-request-id"), id));
    }
    let body = format!("dime: {what} (request id {})\n", ctx.request_id);
    let _ = text(session, code, &body, &extra).await;
}
