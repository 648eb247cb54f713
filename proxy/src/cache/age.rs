//! A response's age (RFC 9111 §4.2.3, §5.1): what its `Age` field says, how old it was on arrival,
//! and the `Age` a viewer is sent when the edge answers from what it stored.

use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderName};
use pingora_cache::{CachePhase, HttpCache};
use pingora_http::ResponseHeader;

/// An HTTP-date's resolution (RFC 9110 §5.6.7): the fraction of the second is cut off.
const DATE_RESOLUTION: Duration = Duration::from_secs(1);

/// RFC 9111 §1.2.2: a delta-seconds too large to represent counts as 2^31 seconds.
pub(super) const DELTA_SECONDS_CAP: u64 = 1 << 31;

/// RFC 9111 §1.2.2: `delta-seconds = 1*DIGIT`, capped at 2^31; `None` for anything else.
pub(super) fn delta_seconds(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // All digits: only an overflow can fail, and §1.2.2 says what that means.
    let seconds = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or(DELTA_SECONDS_CAP);
    Some(seconds.min(DELTA_SECONDS_CAP))
}

/// The time an HTTP-date field (`Date`, `Expires`, `Last-Modified`) of `resp` holds, if it
/// parses.
pub(super) fn header_date(resp: &ResponseHeader, name: HeaderName) -> Option<SystemTime> {
    resp.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
}

/// What a response's `Age` field says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgeField {
    /// No `Age` field.
    Absent,
    /// The age in seconds (capped at 2^31, §1.2.2).
    Seconds(u64),
    /// A value that is not a non-negative integer (`abc`, `-1`, `1.5`, `+1`, empty): ignored,
    /// as RFC 9111 §4.2.3 takes `age_value` as 0 when it is not available.
    Invalid,
}

impl AgeField {
    /// Reads `resp`'s `Age` field. `Age` is a singleton (`Age = delta-seconds`, §5.1), so a
    /// field sent as a list, on one line (`7200, 0`) or on several, is read from its first
    /// member, as the HTTP cache test suite and the caches it measures do: a sender that
    /// repeats the field has the first value right or none. Parameters (`7200;foo=bar`), which
    /// the Structured Fields retrofit of `Age` allows, do not change the integer.
    pub(crate) fn of(resp: &ResponseHeader) -> Self {
        let Some(line) = resp.headers.get(header::AGE) else {
            return AgeField::Absent;
        };
        let line = line.as_bytes();
        let first = line.split(|&b| b == b',').next().unwrap_or(line);
        let item = first.split(|&b| b == b';').next().unwrap_or(first);
        delta_seconds(item.trim_ascii()).map_or(AgeField::Invalid, AgeField::Seconds)
    }
}

/// When a response arrived, and how long after the request to the origin (RFC 9111 §4.2.3's
/// `response_time` and `response_delay`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival {
    /// The clock when the response header arrived.
    pub(crate) at: SystemTime,
    /// From sending the request upstream to the response header's arrival.
    pub(crate) response_delay: Duration,
}

impl Arrival {
    /// A response arriving now, for a request sent upstream at `sent` (zero delay if unknown).
    pub(crate) fn now(sent: Option<Instant>) -> Self {
        Arrival {
            at: SystemTime::now(),
            response_delay: sent.map_or(Duration::ZERO, |s| s.elapsed()),
        }
    }
}

impl From<SystemTime> for Arrival {
    /// A response that arrived at `at` with no measured delay.
    fn from(at: SystemTime) -> Self {
        Arrival {
            at,
            response_delay: Duration::ZERO,
        }
    }
}

/// RFC 9111 §4.2.3: `corrected_initial_age = max(apparent_age, age_value + response_delay)`.
///
/// The response delay is added only to an `Age` a cache upstream stamped: the time the response
/// went on aging after that stamp. A response without `Age` is as old as its `Date` says: an
/// origin that holds a request until it has something new (an LL-HLS blocking playlist reload)
/// answers with a fresh response, and counting the hold as age would make every short-lived
/// playlist stale on arrival.
pub(crate) fn corrected_initial_age(resp: &ResponseHeader, arrival: Arrival) -> Duration {
    let corrected_age_value = match AgeField::of(resp) {
        AgeField::Absent | AgeField::Invalid => Duration::ZERO,
        AgeField::Seconds(s) => Duration::from_secs(s).saturating_add(arrival.response_delay),
    };
    // `Date` names a whole second: the origin made the response up to a second after it, so
    // the response is at least this old. Counting the whole second would make a response
    // that took a few milliseconds, dated 0.99 s before it left, arrive more than a second
    // old: a live playlist fresh for one second would then be stale on arrival and never
    // stored, and every viewer waiting on its fill would ask the origin. It also absorbs a
    // second of clock skew.
    let apparent = header_date(resp, header::DATE)
        .and_then(|d| arrival.at.duration_since(d).ok())
        .map_or(Duration::ZERO, |a| a.saturating_sub(DATE_RESOLUTION));
    apparent.max(corrected_age_value)
}

/// RFC 9111 §5.1, §4.2.3: a response the edge serves as it stores it carries its current age.
///
/// pingora stamps `Age` on hits and stale answers. A miss that is being stored (and an expired
/// object fetched again) goes out with the header the policy stored, which has no `Age`, or with
/// the origin's header, whose `Age` leaves out the response delay: both get the stored object's
/// age. Nothing else is touched, and the hit path not at all.
pub(crate) fn stamp_stored_miss(resp: &mut ResponseHeader, cache: &HttpCache) {
    if !matches!(cache.phase(), CachePhase::Miss | CachePhase::Expired) {
        return;
    }
    let Some(meta) = cache.maybe_cache_meta() else {
        return;
    };
    let age = meta.age().as_secs();
    if age == 0 {
        resp.remove_header(&header::AGE);
    } else {
        let _ = resp.insert_header(header::AGE, age);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(age: &[&str], date: Option<SystemTime>) -> ResponseHeader {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for a in age {
            resp.append_header("age", *a).unwrap();
        }
        if let Some(d) = date {
            resp.append_header("date", httpdate::fmt_http_date(d))
                .unwrap();
        }
        resp
    }

    #[test]
    fn the_age_field_is_the_first_members_integer_or_invalid() {
        use AgeField::{Absent, Invalid, Seconds};
        let cases: &[(&[&str], AgeField)] = &[
            (&[], Absent),
            (&["0"], Seconds(0)),
            (&["30"], Seconds(30)),
            (&[" 30 "], Seconds(30)),
            // §1.2.2: too big to represent is 2^31.
            (&["99999999999999999999999"], Seconds(1 << 31)),
            (&["4294967296"], Seconds(1 << 31)),
            (&["abc"], Invalid),
            (&["-1"], Invalid),
            (&["1.5"], Invalid),
            (&["7200.0"], Invalid),
            (&["+1"], Invalid),
            (&[""], Invalid),
            (&[", 0"], Invalid),
            // A list: its first member, on one line or several.
            (&["7200, 0"], Seconds(7200)),
            (&["0, 7200"], Seconds(0)),
            (&["0, 0"], Seconds(0)),
            (&["7200", "0"], Seconds(7200)),
            (&["0", "7200"], Seconds(0)),
            (&["3600", "3600"], Seconds(3600)),
            (&["abc", "0"], Invalid),
            // Parameters do not change the integer.
            (&["7200;foo=bar"], Seconds(7200)),
            (&["7200;foo=111"], Seconds(7200)),
            (&["1;2"], Seconds(1)),
        ];
        for (lines, want) in cases {
            assert_eq!(AgeField::of(&response(lines, None)), *want, "{lines:?}");
        }
    }

    #[test]
    fn the_initial_age_is_the_larger_of_apparent_age_and_age_plus_delay() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let s = Duration::from_secs;
        let arrival = |delay: u64| Arrival {
            at,
            response_delay: s(delay),
        };
        /// Age lines, Date seconds before arrival, response delay, initial age.
        type Case = (&'static [&'static str], Option<u64>, u64, u64);
        let cases: &[Case] = &[
            (&[], None, 0, 0),
            (&[], Some(0), 0, 0),
            (&["30"], Some(0), 0, 30),
            (&["30"], Some(0), 2, 32),
            // A Date names a whole second: the response is at least a second younger.
            (&["30"], Some(100), 2, 99),
            (&[], Some(100), 5, 99),
            // No Age: the origin's own hold is not age (see corrected_initial_age).
            (&[], Some(0), 5, 0),
            (&["0"], Some(0), 3, 3),
            // A Date a second before arrival: made within that second, so not aged.
            (&[], Some(1), 0, 0),
            (&[], Some(2), 0, 1),
            // An invalid Age is no Age (§4.2.3: 0 when not available); Date still counts.
            (&["abc"], Some(0), 3, 0),
            (&["abc"], Some(100), 0, 99),
            (&["0", "0"], Some(100), 0, 99),
        ];
        for (age, date_before, delay, want) in cases {
            let date = date_before.map(|b| at - s(b));
            let got = corrected_initial_age(&response(age, date), arrival(*delay));
            assert_eq!(
                got,
                s(*want),
                "Age {age:?}, Date -{date_before:?}, delay {delay}"
            );
        }
    }
}
