//! `Range` header parsing for single byte ranges (RFC 9110 §14).

/// An inclusive, satisfiable byte range of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// Offset of the first byte.
    pub start: u64,
    /// Offset of the last byte, inclusive as in `Content-Range`.
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range, never zero.
    pub fn length(&self) -> u64 {
        self.end - self.start + 1
    }

    /// The `Content-Range` value of a 206 for a file of `size` bytes (RFC 9110 §14.4).
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{size}", self.start, self.end)
    }
}

/// What a request's `Range` header asks the server to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// Send the whole file with 200: no usable Range header.
    Full,
    /// Send one range with 206.
    Partial(ByteRange),
    /// Answer 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// The `Content-Range` value of a 416 for a file of `size` bytes (RFC 9110 §14.4).
pub fn unsatisfied_content_range(size: u64) -> String {
    format!("bytes */{size}")
}

/// Interprets a `Range` header value against a file of `size` bytes.
pub fn parse(value: &str, size: u64) -> RangeRequest {
    let Some((unit, set)) = value.split_once('=') else {
        // RFC 9110 §14.2: a server MAY ignore the Range header field; a malformed one is ignored.
        return RangeRequest::Full;
    };
    // RFC 9110 §14.1: range units compare case-insensitively; any unit but bytes is ignored.
    if !unit.eq_ignore_ascii_case("bytes") {
        return RangeRequest::Full;
    }
    // RFC 9110 §5.6.1: recipients accept empty list elements, so `bytes=0-1,` is one range.
    let mut specs = set
        .split(',')
        .map(|spec| spec.trim_matches([' ', '\t']))
        .filter(|spec| !spec.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        // RFC 9110 §14.2 lets a server ignore Range; for several ranges we do and send 200, so
        // players that ask for multipart/byteranges still get the bytes, and we never build
        // multipart bodies.
        return RangeRequest::Full;
    };
    match parse_spec(spec) {
        Some(spec) => spec.resolve(size),
        None => RangeRequest::Full,
    }
}

/// One syntactically valid byte-range-spec, before it meets the file size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-last` or `first-`.
    From { first: u64, last: Option<u64> },
    /// `-length`: the last `length` bytes.
    Suffix(u64),
}

impl Spec {
    /// Applies RFC 9110 §14.1.1 satisfiability to a file of `size` bytes.
    fn resolve(self, size: u64) -> RangeRequest {
        match self {
            // An int-range with last-pos < first-pos is invalid: ignore the header.
            Spec::From {
                first,
                last: Some(last),
            } if last < first => RangeRequest::Full,
            // Satisfiable only if first-pos is inside the file; last-pos is clamped to the end.
            Spec::From { first, last } if first < size => {
                let end = last.map_or(size - 1, |last| last.min(size - 1));
                RangeRequest::Partial(ByteRange { start: first, end })
            }
            Spec::From { .. } => RangeRequest::Unsatisfiable,
            // A suffix is satisfiable if it is non-zero and the file is not empty.
            Spec::Suffix(length) if length > 0 && size > 0 => RangeRequest::Partial(ByteRange {
                start: size.saturating_sub(length),
                end: size - 1,
            }),
            Spec::Suffix(_) => RangeRequest::Unsatisfiable,
        }
    }
}

/// Parses `first-last`, `first-` or `-length`; `None` if malformed.
fn parse_spec(spec: &str) -> Option<Spec> {
    let (first, last) = spec.split_once('-')?;
    if first.is_empty() {
        return Some(Spec::Suffix(parse_digits(last)?));
    }
    let first = parse_digits(first)?;
    let last = if last.is_empty() {
        None
    } else {
        Some(parse_digits(last)?)
    };
    Some(Spec::From { first, last })
}

/// Parses `1*DIGIT`, saturating at `u64::MAX`: a huge position is still a position, so
/// `bytes=99999999999999999999-` is unsatisfiable rather than malformed.
fn parse_digits(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(start: u64, end: u64) -> RangeRequest {
        RangeRequest::Partial(ByteRange { start, end })
    }

    #[test]
    fn single_ranges() {
        assert_eq!(parse("bytes=0-9", 100), partial(0, 9));
        assert_eq!(parse("bytes=90-", 100), partial(90, 99));
        assert_eq!(parse("bytes=-10", 100), partial(90, 99));
        assert_eq!(parse("bytes=-1000", 100), partial(0, 99));
        assert_eq!(parse("bytes=50-1000", 100), partial(50, 99));
        assert_eq!(parse("BYTES=0-0", 100), partial(0, 0));
        assert_eq!(parse("bytes= 0-9 ,", 100), partial(0, 9));
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(parse("bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse("bytes=0-", 0), RangeRequest::Unsatisfiable);
        assert_eq!(
            parse("bytes=99999999999999999999999-", 100),
            RangeRequest::Unsatisfiable
        );
    }

    #[test]
    fn ignored_ranges() {
        for value in [
            "bytes=0-1,5-6",
            "bytes=9-1",
            "bytes=a-b",
            "bytes=",
            "bytes=-",
            "bytes=1",
            "items=0-1",
            "bytes 0-1",
            "bytes=+1-2",
        ] {
            assert_eq!(parse(value, 100), RangeRequest::Full, "{value}");
        }
    }
}
