//! Validators (ETag, Last-Modified) and conditional requests (RFC 9110 §8.8 and §13).

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{
    InvalidHeaderValue, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE,
};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The last second an HTTP-date can spell (9999-12-31T23:59:59Z); `httpdate` panics past it.
const LAST_HTTP_DATE: u64 = 253_402_300_799;

/// The validators of one file, as sent in `ETag` and `Last-Modified`.
#[derive(Debug, Clone)]
pub struct Validators {
    /// The strong entity tag, quoted: `"<inode>-<size>-<mtime ns>"`.
    etag: String,
    /// Seconds since the epoch of the modification time, the resolution of an HTTP-date.
    last_modified: u64,
    /// Whether `Last-Modified` may serve as a strong validator (RFC 9110 §8.8.2.2).
    last_modified_is_strong: bool,
}

impl Validators {
    /// Derives the validators of a regular file from its metadata at time `now`.
    pub fn new(metadata: &Metadata, now: SystemTime) -> Self {
        // Size and mtime alone (nginx's choice) miss a playlist rewritten twice in one second
        // with the same length; packagers replace playlists by rename, which changes the inode.
        let mtime_ns =
            i128::from(metadata.mtime()) * 1_000_000_000 + i128::from(metadata.mtime_nsec());
        let etag = format!(
            "\"{:x}-{:x}-{:x}\"",
            metadata.ino(),
            metadata.len(),
            mtime_ns
        );
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let now_ns = i128::try_from(now.as_nanos()).unwrap_or(i128::MAX);
        let now = now.as_secs();
        // Clamp into what an HTTP-date can express: a file touched to 1960 or to year 10000 must
        // not take the request down.
        let mtime = u64::try_from(metadata.mtime())
            .unwrap_or(0)
            .min(LAST_HTTP_DATE);
        // RFC 9110 §8.8.2.1: never send a Last-Modified later than the response's Date.
        let last_modified = mtime.min(now);
        Self {
            etag,
            last_modified,
            // RFC 9110 §8.8.2.2: a date is strong only if the file was last modified at least
            // one second before the response, since two writes within a second share it.
            last_modified_is_strong: now_ns.saturating_sub(mtime_ns) >= 1_000_000_000,
        }
    }

    /// The `ETag` header value.
    pub fn etag(&self) -> Result<HeaderValue, InvalidHeaderValue> {
        HeaderValue::try_from(self.etag.as_str())
    }

    /// The `Last-Modified` header value.
    pub fn last_modified(&self) -> Result<HeaderValue, InvalidHeaderValue> {
        HeaderValue::try_from(httpdate::fmt_http_date(
            UNIX_EPOCH + Duration::from_secs(self.last_modified),
        ))
    }
}

/// The outcome of evaluating a GET or HEAD request's preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Every condition holds (or none was sent): serve the file.
    Proceed,
    /// Answer 304 Not Modified.
    NotModified,
    /// Answer 412 Precondition Failed.
    Failed,
}

/// Evaluates the preconditions of a GET or HEAD request in the order of RFC 9110 §13.2.2.
pub fn evaluate(headers: &HeaderMap, validators: &Validators) -> Precondition {
    // Steps 1 and 2: If-Match, by the strong comparison (§13.1.1); only without it,
    // If-Unmodified-Since (§13.1.4).
    if headers.contains_key(IF_MATCH) {
        if !list_matches(headers, &IF_MATCH, validators, Comparison::Strong) {
            return Precondition::Failed;
        }
    } else if let Some(since) = single_date(headers, &IF_UNMODIFIED_SINCE) {
        if validators.last_modified > since {
            return Precondition::Failed;
        }
    }
    // Steps 3 and 4: If-None-Match, by the weak comparison (§13.1.2); only without it,
    // If-Modified-Since (§13.1.3). For GET and HEAD either one's match means 304.
    if headers.contains_key(IF_NONE_MATCH) {
        if list_matches(headers, &IF_NONE_MATCH, validators, Comparison::Weak) {
            return Precondition::NotModified;
        }
    } else if let Some(since) = single_date(headers, &IF_MODIFIED_SINCE) {
        if validators.last_modified <= since {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// Whether a GET's `If-Range` lets its `Range` apply; true when there is no `If-Range`.
pub fn if_range_allows_range(headers: &HeaderMap, validators: &Validators) -> bool {
    let mut values = headers.get_all(IF_RANGE).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return true,
        (Some(value), None) => value.to_str().unwrap_or_default().trim(),
        // RFC 9110 §13.1.5: anything we cannot evaluate means "send the whole representation".
        (Some(_), Some(_)) => return false,
    };
    if value.starts_with('"') || value.starts_with("W/") {
        // RFC 9110 §13.1.5: an entity-tag matches only by the strong comparison, so a weak
        // tag never does.
        return matches!(
            parse_tags(value).as_deref(),
            Some([tag]) if Comparison::Strong.matches(tag, &validators.etag)
        );
    }
    // RFC 9110 §13.1.5: a date matches only if it equals Last-Modified exactly and that
    // Last-Modified is strong.
    validators.last_modified_is_strong && parse_date(value) == Some(validators.last_modified)
}

/// RFC 9110 §8.8.3.2: how two entity-tags are compared.
#[derive(Debug, Clone, Copy)]
enum Comparison {
    /// Both strong and identical.
    Strong,
    /// Identical once any `W/` is dropped.
    Weak,
}

impl Comparison {
    /// Compares a received tag with our tag, which is always strong.
    fn matches(self, tag: &EntityTag<'_>, ours: &str) -> bool {
        match self {
            Comparison::Strong => !tag.weak && tag.opaque == ours,
            Comparison::Weak => tag.opaque == ours,
        }
    }
}

/// One entity-tag as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntityTag<'a> {
    /// Whether it carried the `W/` prefix.
    weak: bool,
    /// The opaque tag, quotes included, so it compares directly with ours.
    opaque: &'a str,
}

/// Whether an `If-Match` / `If-None-Match` field, possibly spread over several lines, matches.
fn list_matches(
    headers: &HeaderMap,
    name: &HeaderName,
    validators: &Validators,
    comparison: Comparison,
) -> bool {
    headers.get_all(name).iter().any(|value| {
        let Ok(value) = value.to_str() else {
            return false;
        };
        // `*` matches any current representation, and a regular file is one.
        if value.trim() == "*" {
            return true;
        }
        // A malformed list matches nothing: If-None-Match then never yields a 304 and
        // If-Match yields a 412, the conservative side of both.
        parse_tags(value).is_some_and(|tags| {
            tags.iter()
                .any(|tag| comparison.matches(tag, &validators.etag))
        })
    })
}

/// Parses `#entity-tag`; `None` if malformed. Commas may appear inside an opaque tag, so a
/// plain split would be wrong.
fn parse_tags(value: &str) -> Option<Vec<EntityTag<'_>>> {
    let mut tags = Vec::new();
    let mut rest = value;
    loop {
        // RFC 9110 §5.6.1: empty list elements and optional whitespace are allowed.
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Some(tags);
        }
        let (weak, tag) = match rest.strip_prefix("W/") {
            Some(tag) => (true, tag),
            None => (false, rest),
        };
        let inner = tag.strip_prefix('"')?;
        let close = inner.find('"')?;
        // `close` indexes `inner`, which starts one byte into `tag`.
        tags.push(EntityTag {
            weak,
            opaque: &tag[..close + 2],
        });
        rest = inner[close + 1..].trim_start_matches([' ', '\t']);
        if !rest.is_empty() && !rest.starts_with(',') {
            return None;
        }
    }
}

/// The date of a date-valued field, if it is present exactly once and valid; RFC 9110
/// §13.1.3 and §13.1.4 say to ignore it otherwise.
fn single_date(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => parse_date(value.to_str().ok()?),
        _ => None,
    }
}

/// Parses an HTTP-date into seconds since the epoch.
fn parse_date(value: &str) -> Option<u64> {
    let date = httpdate::parse_http_date(value.trim()).ok()?;
    Some(date.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(weak: bool, opaque: &str) -> EntityTag<'_> {
        EntityTag { weak, opaque }
    }

    #[test]
    fn parses_entity_tag_lists() {
        assert_eq!(
            parse_tags(r#""a", W/"b" ,,"c,d""#),
            Some(vec![
                tag(false, "\"a\""),
                tag(true, "\"b\""),
                tag(false, "\"c,d\"")
            ])
        );
        assert_eq!(parse_tags(""), Some(vec![]));
    }

    #[test]
    fn rejects_malformed_entity_tags() {
        for value in [r#"a"#, r#""a"#, r#""a"b"#, r#"w/"a""#, r#""a" "b""#] {
            assert_eq!(parse_tags(value), None, "{value}");
        }
    }

    #[test]
    fn comparisons() {
        let ours = "\"x\"";
        assert!(Comparison::Strong.matches(&tag(false, ours), ours));
        assert!(!Comparison::Strong.matches(&tag(true, ours), ours));
        assert!(Comparison::Weak.matches(&tag(true, ours), ours));
        assert!(!Comparison::Weak.matches(&tag(false, "\"y\""), ours));
    }
}
