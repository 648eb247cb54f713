//! The streamer's `Range` header parser (RFC 9110 §14), against a file size.
//!
//! Input: the file size in decimal on the first line, the header value after it. Properties:
//! a range lies inside the file and is never empty; the unit is case-insensitive; a value
//! without `=` is ignored; an empty file has no satisfiable range.

use dime_streamer::range::{parse, RangeRequest};

pub fn check(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let (size, value) = match text.split_once('\n') {
        Some((size, value)) => match size.trim().parse::<u64>() {
            Ok(size) => (size, value),
            Err(_) => (text.len() as u64, text),
        },
        None => (text.len() as u64, text),
    };
    let got = parse(value, size);
    match got {
        RangeRequest::Partial(r) => {
            assert!(
                r.start <= r.end && r.end < size,
                "{r:?} outside a file of {size} bytes"
            );
            assert_eq!(r.length(), r.end - r.start + 1);
            assert_eq!(
                r.content_range(size),
                format!("bytes {}-{}/{size}", r.start, r.end)
            );
        }
        RangeRequest::Full | RangeRequest::Unsatisfiable => {}
    }
    if !value.contains('=') {
        assert_eq!(got, RangeRequest::Full, "{value:?} has no unit");
    }
    if let Some((unit, set)) = value.split_once('=') {
        if unit.eq_ignore_ascii_case("bytes") {
            let other = format!("{}={set}", unit.to_ascii_uppercase());
            assert_eq!(
                parse(&other, size),
                got,
                "the unit's case matters: {value:?}"
            );
        }
    }
    if size == 0 {
        assert!(
            !matches!(got, RangeRequest::Partial(_)),
            "a range of an empty file"
        );
    }
}
