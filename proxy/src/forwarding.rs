//! What a proxy owes the next hop: `X-Forwarded-*` and `Via` added, hop-by-hop headers removed.

use http::header::{self, HeaderName};
use http::HeaderMap;
use pingora_http::{RequestHeader, ResponseHeader};

/// The name this proxy gives itself in `Via` (RFC 9110 §7.6.3).
pub const VIA_NAME: &str = "dime";

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
/// `Connection` and `Transfer-Encoding` are left to pingora, which owns message framing.
const HOP_BY_HOP: [&str; 6] = [
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
];

/// Whether `name` is a hop-by-hop header that a route must not set.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
        || name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
}

/// Where a request came from, as the proxy saw it.
pub struct ClientInfo<'a> {
    /// The peer's IP address, if known.
    pub ip: Option<String>,
    /// `http` or `https`.
    pub proto: &'a str,
    /// The host the client asked for, as sent.
    pub host: &'a str,
    /// HTTP version of the downstream request, for `Via`.
    pub version: http::Version,
}

/// Prepares the request for the origin.
pub fn upstream_request(req: &mut RequestHeader, client: &ClientInfo<'_>) {
    let upgrade = is_websocket_upgrade(&req.headers);
    strip_hop_by_hop(req, upgrade);

    // X-Forwarded-For is a list: append, so earlier proxies stay visible.
    if let Some(ip) = &client.ip {
        let xff = match req
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
            _ => ip.clone(),
        };
        let _ = req.insert_header("x-forwarded-for", xff);
    }
    let _ = req.insert_header("x-forwarded-proto", client.proto);
    if !client.host.is_empty() {
        let _ = req.insert_header("x-forwarded-host", client.host);
    }
    let via = via_value(
        req.headers.get(header::VIA).and_then(|v| v.to_str().ok()),
        client.version,
    );
    let _ = req.insert_header(header::VIA, via);
}

/// Prepares the origin's response for the viewer.
pub fn downstream_response(resp: &mut ResponseHeader, version: http::Version) {
    for name in ["keep-alive", "proxy-connection", "trailer"] {
        resp.remove_header(name);
    }
    let via = via_value(
        resp.headers.get(header::VIA).and_then(|v| v.to_str().ok()),
        version,
    );
    let _ = resp.insert_header(header::VIA, via);
}

fn via_value(prev: Option<&str>, version: http::Version) -> String {
    let proto = match version {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    };
    match prev {
        Some(p) if !p.trim().is_empty() => format!("{p}, {proto} {VIA_NAME}"),
        _ => format!("{proto} {VIA_NAME}"),
    }
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Removes hop-by-hop headers and every header the `Connection` header names.
fn strip_hop_by_hop(req: &mut RequestHeader, keep_upgrade: bool) {
    let listed: Vec<String> = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "close" && t != "keep-alive" && t != "upgrade")
        .collect();
    for name in listed {
        req.remove_header(name.as_str());
    }
    // Connection options belong to the viewer's connection; upstream connections are pooled
    // and keep-alive, so a viewer's `Connection: close` must not reach the origin.
    if !keep_upgrade {
        req.remove_header("connection");
    }
    for name in HOP_BY_HOP {
        if keep_upgrade && name == "upgrade" {
            continue;
        }
        req.remove_header(name);
    }
}
