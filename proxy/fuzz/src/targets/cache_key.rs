//! The edge's cache key: normalised host, canonical path and the query parameters a route keeps.
//!
//! Input lines: the host, the path, the query, then the parameter names the route keeps (no
//! such line: the route keeps the whole query). Properties: two spellings of one path (escaped
//! unreserved bytes, lower-case hex, empty and dot segments) get one key; so do the spellings
//! of one host (case, a port, a trailing dot); kept parameters in another order, or with a
//! parameter the route does not keep, get the same key; the key is host and path, then `?`
//! and the kept query only when one is kept.

use dime_edge::fuzzing::{canonicalize, key_text, normalize_host};

pub fn check(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let raw_host = lines.next().unwrap_or_default();
    let raw_path = lines.next().unwrap_or("/");
    let query = lines.next();
    let keep: Option<Vec<String>> = {
        let rest: Vec<String> = lines.map(str::to_string).collect();
        (!rest.is_empty()).then_some(rest)
    };
    let keep = keep.as_deref();
    let Ok(path) = canonicalize(raw_path) else {
        return;
    };
    let key = key_text(raw_host, &path, query, keep);

    let prefix = format!("{}{path}", normalize_host(raw_host));
    match key.strip_prefix(&prefix) {
        Some("") => {}
        Some(rest) => {
            let kept = rest.strip_prefix('?').unwrap_or_else(|| panic!("{key:?}"));
            assert!(!kept.is_empty(), "{key:?} ends in an empty query");
            if keep.is_none() {
                assert_eq!(Some(kept), query, "the whole query is kept");
            }
        }
        None => panic!("{key:?} does not start with {prefix:?}"),
    }

    let spelled = respell(&path);
    assert_eq!(
        canonicalize(&spelled).as_deref(),
        Ok(path.as_str()),
        "{raw_path:?} -> {path:?}, respelled {spelled:?}"
    );

    let host = normalize_host(raw_host);
    if normalize_host(&host) == host && host.parse::<http::uri::Authority>().is_ok() {
        for other in [
            host.to_ascii_uppercase(),
            format!("{host}."),
            format!("{host}:8443"),
        ] {
            assert_eq!(
                key_text(&other, &path, query, keep),
                key,
                "host {other:?} is not {host:?}"
            );
        }
    }

    if let (Some(q), Some(keep)) = (query, keep) {
        let reversed: Vec<&str> = q.split('&').rev().collect();
        assert_eq!(
            key_text(raw_host, &path, Some(&reversed.join("&")), Some(keep)),
            key,
            "parameter order splits the key"
        );
        let unkept = "dime_fuzz_unkept";
        if !keep.iter().any(|k| k == unkept) {
            assert_eq!(
                key_text(
                    raw_host,
                    &path,
                    Some(&format!("{q}&{unkept}=1")),
                    Some(keep)
                ),
                key,
                "a parameter the route does not keep changes the key"
            );
        }
    }
}

/// Another spelling of the canonical `path`: a climb into and out of a segment first, every
/// `/` doubled, every other letter or digit escaped, escapes in lower-case hex.
fn respell(path: &str) -> String {
    let mut out = String::from("/dime-fuzz/..");
    let mut chars = path.chars();
    let mut n = 0;
    while let Some(c) = chars.next() {
        match c {
            '/' => out.push_str("//"),
            '%' => {
                out.push('%');
                out.extend(chars.by_ref().take(2).map(|h| h.to_ascii_lowercase()));
            }
            c if c.is_ascii_alphanumeric() => {
                n += 1;
                if n % 2 == 0 {
                    out.push_str(&format!("%{:02x}", c as u32));
                } else {
                    out.push(c);
                }
            }
            c => out.push(c),
        }
    }
    out
}
