//! The edge's canonical request path (RFC 3986 §6.2.2), which routing, the cache key and the
//! upstream request share.
//!
//! Properties: the shortcut for paths that are canonical already gives what the full
//! canonicalization gives; a canonical path is its own canonical form; it starts with `/`, has no empty,
//! `.` or `..` segment, only path characters and upper-case escapes of reserved bytes, and is a
//! valid request target; and the origin streamer serves the same file for it as for the path
//! the viewer sent (when the streamer serves one at all).

use dime_edge::fuzzing::{canonicalize, canonicalize_in_full};
use dime_streamer::path::RequestPath;

pub fn check(data: &[u8]) {
    let Some(raw) = crate::text(data) else {
        return;
    };
    let result = canonicalize(raw);
    assert_eq!(
        result,
        canonicalize_in_full(raw),
        "the shortcut for canonical paths disagrees on {raw:?}"
    );
    let Ok(canonical) = result else {
        return;
    };
    assert_eq!(
        canonicalize(&canonical).as_deref(),
        Ok(canonical.as_str()),
        "not idempotent: {raw:?} -> {canonical:?}"
    );
    well_formed(raw, &canonical);
    if let Err(e) = canonical.parse::<http::uri::PathAndQuery>() {
        panic!("{raw:?} -> {canonical:?} is not a request target: {e}");
    }
    if let Ok(served) = RequestPath::parse(raw) {
        match RequestPath::parse(&canonical) {
            Ok(again) => assert_eq!(again, served, "{raw:?} -> {canonical:?}"),
            Err(e) => {
                panic!("the streamer serves {raw:?} but not its canonical {canonical:?}: {e}")
            }
        }
    }
}

/// What a canonical path looks like, byte by byte and segment by segment.
fn well_formed(raw: &str, canonical: &str) {
    let bytes = canonical.as_bytes();
    assert_eq!(bytes.first(), Some(&b'/'), "{raw:?} -> {canonical:?}");
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = &bytes[i + 1..i + 3];
            assert!(
                hex.iter()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
                "{raw:?} -> {canonical:?}: escape {:?}",
                String::from_utf8_lossy(hex)
            );
            let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
            assert!(
                !(value.is_ascii_alphanumeric() || b"-._~".contains(&value)),
                "{raw:?} -> {canonical:?}: an unreserved byte stays escaped"
            );
            i += 3;
        } else {
            assert!(
                b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b),
                "{raw:?} -> {canonical:?}: byte {b:#04x}"
            );
            i += 1;
        }
    }
    let inner = canonical.strip_suffix('/').unwrap_or(canonical);
    for segment in inner.split('/').skip(1) {
        assert!(
            !matches!(segment, "" | "." | ".."),
            "{raw:?} -> {canonical:?}: segment {segment:?}"
        );
    }
}
