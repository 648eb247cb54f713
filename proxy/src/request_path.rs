//! The canonical request path: one spelling per resource (RFC 3986 §6.2.2), computed once per
//! request and used by routing, the cache key, backend selection and the upstream request.
//!
//! Without it `/v/a.ts`, `//v/a.ts` and `/%76/a.ts` are three cache keys for one object the
//! origin serves alike (it decodes escapes and collapses slashes), so each would cost its own
//! fill and push real objects out of the cache.

use thiserror::Error;

/// Why a request path has no canonical form; the edge answers 400 with this text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum PathError {
    /// The path is not absolute (e.g. the `*` of `OPTIONS *`).
    #[error("the path must start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-escape at byte {at}: '%' must be followed by two hex digits (RFC 3986 §2.1)")]
    BadEscape {
        /// Offset of the `%` in the path as received.
        at: usize,
    },
    /// A NUL, escaped (`%00`) or not: no file name holds one, and C-based origins would cut
    /// the path there.
    #[error("the path holds a NUL at byte {at}")]
    Nul {
        /// Offset of the `%` in the path as received.
        at: usize,
    },
    /// More `..` segments than there are segments before them.
    #[error("the path climbs above the root with '..'")]
    AboveRoot,
    /// A canonical form longer than [`MAX_CANONICAL`]: each byte escaped triples, and the
    /// upstream request's target (with a route's prefix and the query) must stay a URI.
    #[error("the path is {len} bytes once escaped, past the {MAX_CANONICAL}-byte limit")]
    TooLong {
        /// Length of the canonical form.
        len: usize,
    },
}

/// The longest canonical path: half of what `http` takes as a request target (65,534 bytes),
/// which leaves the other half to a route's prefix and the query. nginx refuses request lines
/// past 8 KiB by default.
pub(crate) const MAX_CANONICAL: usize = 32 * 1024;

/// The canonical form of `raw`, the path of a request target (no query).
///
/// - escapes of unreserved characters (ALPHA DIGIT `-` `.` `_` `~`) are decoded (§6.2.2.2);
/// - every other escape stays, its hex uppercased (§6.2.2.1): `%2F` is not `/`, `%3F` not `?`;
/// - bytes outside RFC 3986's path characters are escaped, so `"` and `%22` are one path;
/// - empty segments are dropped (`//` → `/`), as the origin streamer does with them;
/// - `.` and `..` segments are resolved (§5.2.4, §6.2.2.3), after decoding, so `%2E%2E` is
///   `..` here exactly as it is for an origin that decodes; `..` above the root is an error
///   rather than clamped, since no honest client sends it.
pub(crate) fn canonicalize(raw: &str) -> Result<String, PathError> {
    if is_canonical(raw) {
        return Ok(raw.to_string());
    }
    canonicalize_in_full(raw)
}

/// Whether `raw` is already its canonical form, as almost every player's path is: only path
/// characters (no escape), and no empty, `.` or `..` segment but a last empty one (a trailing
/// slash). One pass over the bytes, where [`canonicalize_in_full`] makes two copies.
fn is_canonical(raw: &str) -> bool {
    let Some(rest) = raw.strip_prefix('/') else {
        return false;
    };
    if raw.len() > MAX_CANONICAL || !raw.bytes().all(|b| b == b'/' || is_pchar(b)) {
        return false;
    }
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == "." || segment == ".." {
            return false;
        }
    }
    true
}

/// [`canonicalize`] without the shortcut for a path that is canonical already.
pub(crate) fn canonicalize_in_full(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let value = match bytes.get(i + 1..i + 3) {
                Some(&[h, l]) => hex(h).zip(hex(l)).map(|(h, l)| (h << 4) | l),
                _ => None,
            };
            match value {
                None => return Err(PathError::BadEscape { at: i }),
                Some(0) => return Err(PathError::Nul { at: i }),
                Some(v) if is_unreserved(v) => decoded.push(char::from(v)),
                Some(v) => push_escape(&mut decoded, v),
            }
            i += 3;
        } else if b == 0 {
            // Escaped below it would read as `%00`, which is refused above.
            return Err(PathError::Nul { at: i });
        } else {
            if b == b'/' || is_pchar(b) {
                decoded.push(char::from(b));
            } else {
                push_escape(&mut decoded, b);
            }
            i += 1;
        }
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/') {
        // A path that ends in "/", "/." or "/.." names a directory: it keeps its final slash.
        trailing_slash = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                if kept.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => kept.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &kept {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    if out.len() > MAX_CANONICAL {
        return Err(PathError::TooLong { len: out.len() });
    }
    Ok(out)
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §3.3 `pchar`, less pct-encoded (handled by the caller).
fn is_pchar(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xF)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shortcut_takes_only_canonical_paths_and_agrees_with_the_full_form() {
        let canonical = [
            "/",
            "/live/index.m3u8",
            "/a/",
            "/.a/..b/c.",
            "/a-b_c~d!$&'()*+,;=:@",
        ];
        let not = [
            "", "a", "//", "/a//b", "/.", "/./a", "/a/.", "/a/..", "/a/../", "/%41", "/a b",
            "/a\"b", "/%2e%2e", "/a/%2F",
        ];
        for raw in canonical {
            assert!(is_canonical(raw), "{raw:?} is canonical");
        }
        for raw in not {
            assert!(!is_canonical(raw), "{raw:?} is not canonical");
        }
        let long = format!("/{}", "a".repeat(MAX_CANONICAL));
        assert!(!is_canonical(&long));
        for raw in canonical.iter().chain(&not).chain([&long.as_str()]) {
            assert_eq!(canonicalize(raw), canonicalize_in_full(raw), "{raw:?}");
        }
    }

    /// Found by fuzzing: 10,000 bytes that are not path characters are escaped to 30,000, and
    /// 22,000 to 66,000, past what `http` takes as a request target, so the upstream request
    /// could not be built. Past `MAX_CANONICAL` the path is refused (414); up to it, it stays a
    /// valid target.
    #[test]
    fn a_path_whose_escaped_form_is_too_long_is_refused() {
        let fits = format!("/{}", "\"".repeat((MAX_CANONICAL - 1) / 3));
        let canonical = canonicalize(&fits).unwrap();
        assert!(canonical.len() <= MAX_CANONICAL);
        assert!(canonical.parse::<http::uri::PathAndQuery>().is_ok());
        for n in [MAX_CANONICAL / 3 + 1, 22_000] {
            let raw = format!("/{}", "\"".repeat(n));
            assert_eq!(
                canonicalize(&raw),
                Err(PathError::TooLong { len: 1 + 3 * n }),
                "{n} quotes"
            );
        }
        // Long in plain characters alone, too.
        let plain = format!("/{}", "a".repeat(MAX_CANONICAL));
        assert_eq!(
            canonicalize(&plain),
            Err(PathError::TooLong {
                len: MAX_CANONICAL + 1
            })
        );
    }

    #[test]
    fn every_spelling_of_one_path_has_one_canonical_form() {
        for raw in [
            "/v/a.ts",
            "//v/a.ts",
            "/v//a.ts",
            "/v/a.ts/../a.ts",
            "/%76/a.ts",
            "/v/%61.ts",
            "/v/a%2ets",
            "/v/a%2Ets",
            "/v/./a.ts",
            "/./v/a.ts",
            "/x/../v/a.ts",
            "/x/y/../../v/a.ts",
            "/%2e/v/a.ts",
            "/x/%2E%2E/v/a.ts",
            "///v///a.ts",
        ] {
            assert_eq!(canonicalize(raw).as_deref(), Ok("/v/a.ts"), "{raw}");
        }
    }

    #[test]
    fn directories_keep_their_final_slash() {
        for (raw, want) in [
            ("/", "/"),
            ("//", "/"),
            ("/.", "/"),
            ("/a/..", "/"),
            ("/a/../", "/"),
            ("/v/", "/v/"),
            ("/v//", "/v/"),
            ("/v/.", "/v/"),
            ("/v/w/..", "/v/"),
            ("/v/w/../", "/v/"),
        ] {
            assert_eq!(canonicalize(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn reserved_escapes_stay_escaped_in_uppercase() {
        for (raw, want) in [
            ("/v/a%2fb.ts", "/v/a%2Fb.ts"),
            ("/v/a%2Fb.ts", "/v/a%2Fb.ts"),
            ("/v/a%3fb", "/v/a%3Fb"),
            ("/v/%c3%a9.ts", "/v/%C3%A9.ts"),
            ("/v/a%20b", "/v/a%20b"),
            ("/v/%25", "/v/%25"),
            // %2F is not a separator, so it neither collapses nor forms a dot-segment.
            ("/v/..%2F..%2Fx", "/v/..%2F..%2Fx"),
        ] {
            assert_eq!(canonicalize(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn sub_delims_stay_as_they_are_and_other_bytes_are_escaped() {
        assert_eq!(
            canonicalize("/v/a;b=c,d!$&'()*+:@~").as_deref(),
            Ok("/v/a;b=c,d!$&'()*+:@~")
        );
        assert_eq!(canonicalize("/v/a\"b").as_deref(), Ok("/v/a%22b"));
        assert_eq!(canonicalize("/v/{x}").as_deref(), Ok("/v/%7Bx%7D"));
        assert_eq!(canonicalize("/v/é").as_deref(), Ok("/v/%C3%A9"));
    }

    #[test]
    fn paths_without_a_canonical_form_are_errors() {
        for (raw, want) in [
            ("", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("v/a.ts", PathError::NotAbsolute),
            ("/..", PathError::AboveRoot),
            ("/../v/a.ts", PathError::AboveRoot),
            ("/v/../../a.ts", PathError::AboveRoot),
            ("/v/%2e%2e/%2E%2E/a.ts", PathError::AboveRoot),
            ("/v/%zz.ts", PathError::BadEscape { at: 3 }),
            ("/v/a.ts%", PathError::BadEscape { at: 7 }),
            ("/v/a.ts%4", PathError::BadEscape { at: 7 }),
            ("/v/%4g", PathError::BadEscape { at: 3 }),
            ("/v/a%00.ts", PathError::Nul { at: 4 }),
            // Found by make fuzz (canonical_path): a raw NUL was escaped to the %00 refused
            // above, so the canonical form was not its own canonical form.
            ("/v/a\0.ts", PathError::Nul { at: 4 }),
        ] {
            assert_eq!(canonicalize(raw), Err(want), "{raw}");
        }
    }

    #[test]
    fn a_canonical_path_is_its_own_canonical_form() {
        for raw in [
            "/v/a.ts",
            "/v/a%2Fb.ts",
            "/",
            "/v/",
            "/a/b/c.m3u8",
            "/v/%C3%A9",
        ] {
            assert_eq!(canonicalize(raw).as_deref(), Ok(raw), "{raw}");
        }
    }
}
