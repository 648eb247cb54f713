//! What a proxy owes the next hop: `Forwarded`, `X-Forwarded-*` and `Via` added, hop-by-hop
//! headers and spoofable client claims removed.

use std::net::IpAddr;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};

/// The name this proxy gives itself in `Via` (RFC 9110 §7.6.3).
macro_rules! via_name {
    () => {
        "dime"
    };
}
pub(crate) const VIA_NAME: &str = via_name!();

/// Hop-by-hop fields a response may carry that pingora does not remove itself.
const RESPONSE_HOP_BY_HOP: [HeaderName; 3] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRAILER,
];

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
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
        || name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
}

/// Where a request came from, as the proxy saw it.
pub(crate) struct ClientInfo<'a> {
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
pub(crate) fn upstream_request(req: &mut RequestHeader, client: &ClientInfo<'_>) {
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
    let forwarded = forwarded_value(&req.headers, client);
    let _ = req.insert_header("forwarded", forwarded);
    // X-Real-IP is one address, not a list: a viewer's value would pass for its own address.
    req.remove_header("x-real-ip");
    let via = via_value(
        req.headers.get(header::VIA).and_then(|v| v.to_str().ok()),
        client.version,
    );
    let _ = req.insert_header(header::VIA, via);
}

/// Prepares the origin's response for the viewer.
pub(crate) fn downstream_response(resp: &mut ResponseHeader, version: http::Version) {
    for name in &RESPONSE_HOP_BY_HOP {
        // A lookup first: a stored response has none of them, and a removal costs two.
        if resp.headers.contains_key(name) {
            resp.remove_header(name);
        }
    }
    let via = via_value(
        resp.headers.get(header::VIA).and_then(|v| v.to_str().ok()),
        version,
    );
    let _ = resp.insert_header(header::VIA, via);
}

/// RFC 7239 §4: the viewer's element appended to the `Forwarded` it sent, if that parses; one
/// that does not cannot be extended without producing garbage, so it is replaced.
fn forwarded_value(headers: &HeaderMap, client: &ClientInfo<'_>) -> String {
    // RFC 7239 §6: an IPv6 address is bracketed and, with its `:`, quoted; no address is
    // "unknown" (§6.2).
    let node = match client.ip.as_deref().map(str::parse::<IpAddr>) {
        Some(Ok(IpAddr::V4(v4))) => v4.to_string(),
        Some(Ok(IpAddr::V6(v6))) => format!("\"[{v6}]\""),
        _ => "unknown".to_string(),
    };
    let mut element = format!("for={node};proto={}", client.proto);
    if let Some(host) = forwarded_param_value(client.host) {
        element.push_str(";host=");
        element.push_str(&host);
    }
    let mut previous = Vec::new();
    for v in headers.get_all("forwarded") {
        match v.to_str() {
            Ok(v) if is_valid_forwarded(v) => previous.push(v.trim()),
            _ => return element,
        }
    }
    previous.retain(|v| !v.is_empty());
    previous.push(&element);
    previous.join(", ")
}

/// A `token`, or else a `quoted-string` (RFC 7230 §3.2.6); `None` when empty or unquotable.
fn forwarded_param_value(v: &str) -> Option<String> {
    if v.is_empty() || v.chars().any(|c| c.is_ascii_control() && c != '\t') {
        return None;
    }
    if v.bytes().all(is_tchar) {
        return Some(v.to_string());
    }
    let mut quoted = String::with_capacity(v.len() + 2);
    quoted.push('"');
    for c in v.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Some(quoted)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 7239 §4: `#forwarded-element`, each `[ pair ] *( ";" [ pair ] )`, a pair
/// `token "=" ( token / quoted-string )`, no parameter twice in one element. Whitespace around
/// `,` and `;` is tolerated.
fn is_valid_forwarded(v: &str) -> bool {
    let bytes = v.as_bytes();
    let mut i = 0;
    let mut names: Vec<String> = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && (bytes[*i] == b' ' || bytes[*i] == b'\t') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i == bytes.len() {
            return true;
        }
        match bytes[i] {
            b',' => {
                names.clear();
                i += 1;
                continue;
            }
            b';' => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let start = i;
        while i < bytes.len() && is_tchar(bytes[i]) {
            i += 1;
        }
        if i == start || i == bytes.len() || bytes[i] != b'=' {
            return false;
        }
        let name = v[start..i].to_ascii_lowercase();
        if names.contains(&name) {
            return false;
        }
        names.push(name);
        i += 1;
        if i < bytes.len() && bytes[i] == b'"' {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return false,
                    Some(b'"') => break,
                    Some(b'\\') => i += 2,
                    Some(&b) if (b < 0x20 && b != b'\t') || b == 0x7f => return false,
                    Some(_) => i += 1,
                }
            }
            i += 1;
        } else {
            let value_start = i;
            while i < bytes.len() && is_tchar(bytes[i]) {
                i += 1;
            }
            if i == value_start {
                return false;
            }
        }
        skip_ws(&mut i);
        if i < bytes.len() && bytes[i] != b';' && bytes[i] != b',' {
            return false;
        }
    }
}

/// `Via` with this hop added to `prev`; without `prev`, a value made once, not per message.
fn via_value(prev: Option<&str>, version: http::Version) -> HeaderValue {
    let (proto, alone) = match version {
        http::Version::HTTP_10 => ("1.0", concat!("1.0 ", via_name!())),
        http::Version::HTTP_2 => ("2", concat!("2 ", via_name!())),
        http::Version::HTTP_3 => ("3", concat!("3 ", via_name!())),
        _ => ("1.1", concat!("1.1 ", via_name!())),
    };
    match prev {
        Some(p) if !p.trim().is_empty() => {
            HeaderValue::from_str(&format!("{p}, {proto} {VIA_NAME}"))
                // `prev` was a valid value and the rest is ASCII.
                .unwrap_or(HeaderValue::from_static(alone))
        }
        _ => HeaderValue::from_static(alone),
    }
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The field names a `Connection` header lists as options of this connection, lowercased,
/// without `close`, `keep-alive` and `upgrade`, which the framing layer handles.
fn connection_options(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "close" && t != "keep-alive" && t != "upgrade")
        .collect()
}

/// Removes from an origin's response every field its `Connection` header names (RFC 9110
/// §7.6.1), before the response is stored or sent on (RFC 9111 §3.1). The framing fields stay:
/// pingora frames the body by them, and no honest origin lists them.
pub(crate) fn strip_connection_options(resp: &mut ResponseHeader) {
    for name in connection_options(&resp.headers) {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            resp.remove_header(name.as_str());
        }
    }
}

/// Removes hop-by-hop headers and every header the `Connection` header names.
fn strip_hop_by_hop(req: &mut RequestHeader, keep_upgrade: bool) {
    for name in connection_options(&req.headers) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_an_origin_names_in_connection_are_removed_but_framing_stays() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (n, v) in [
            ("connection", "X-Hop, close"),
            ("connection", "keep-alive, content-length"),
            ("x-hop", "1"),
            ("content-length", "5"),
            ("x-end", "2"),
        ] {
            resp.append_header(n, v).unwrap();
        }
        strip_connection_options(&mut resp);
        assert!(resp.headers.get("x-hop").is_none());
        assert_eq!(resp.headers.get("content-length").unwrap(), "5");
        assert_eq!(resp.headers.get("x-end").unwrap(), "2");
    }

    fn element(ip: Option<&str>, proto: &str, host: &str, previous: &[&str]) -> String {
        let mut headers = HeaderMap::new();
        for p in previous {
            headers.append("forwarded", p.parse().unwrap());
        }
        let client = ClientInfo {
            ip: ip.map(str::to_string),
            proto,
            host,
            version: http::Version::HTTP_11,
        };
        forwarded_value(&headers, &client)
    }

    #[test]
    fn the_viewer_is_described_as_rfc_7239_asks() {
        let cases = [
            (
                Some("192.0.2.60"),
                "http",
                "example.com",
                "for=192.0.2.60;proto=http;host=example.com",
            ),
            (
                Some("2001:db8:cafe::17"),
                "https",
                "example.com:8443",
                "for=\"[2001:db8:cafe::17]\";proto=https;host=\"example.com:8443\"",
            ),
            (
                Some("::1"),
                "http",
                "[::1]:80",
                "for=\"[::1]\";proto=http;host=\"[::1]:80\"",
            ),
            (None, "http", "", "for=unknown;proto=http"),
            (
                Some("192.0.2.60"),
                "http",
                "a\"b",
                "for=192.0.2.60;proto=http;host=\"a\\\"b\"",
            ),
        ];
        for (ip, proto, host, want) in cases {
            assert_eq!(element(ip, proto, host, &[]), want, "{ip:?} {host}");
        }
    }

    #[test]
    fn a_valid_forwarded_is_extended_and_an_invalid_one_replaced() {
        let ours = "for=192.0.2.60;proto=http;host=a.org";
        let cases: &[(&[&str], String)] = &[
            (&["for=192.0.2.43"], format!("for=192.0.2.43, {ours}")),
            (
                &[
                    "for=192.0.2.43, for=\"[2001:db8::1]:4711\";by=unknown",
                    "proto=https",
                ],
                format!(
                    "for=192.0.2.43, for=\"[2001:db8::1]:4711\";by=unknown, proto=https, {ours}"
                ),
            ),
            (
                &["for=a; proto=https ,for=b"],
                format!("for=a; proto=https ,for=b, {ours}"),
            ),
            (&["for=\"x,y;z\\\"\""], format!("for=\"x,y;z\\\"\", {ours}")),
            (&[""], ours.to_string()),
            (&["for=\"unterminated"], ours.to_string()),
            (&["for=1.2.3.4;for=5.6.7.8"], ours.to_string()),
            (&["for=[::1]"], ours.to_string()),
            (&["just-a-token"], ours.to_string()),
            (&["for="], ours.to_string()),
            (&["for=a", "garbage here"], ours.to_string()),
        ];
        for (previous, want) in cases {
            assert_eq!(
                &element(Some("192.0.2.60"), "http", "a.org", previous),
                want,
                "{previous:?}"
            );
        }
    }
}
