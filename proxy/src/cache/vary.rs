//! Variants under Vary (RFC 9111 §4.1): which request header values a stored response answers.

use pingora_cache::key::HashBinary;
use pingora_cache::{CacheMeta, VarianceBuilder};
use pingora_http::RequestHeader;

use super::store::StoredBy;

/// The variance of `req` under the Vary of `meta`: `None` when the response names no header.
/// When `stored_by` is given, it records the names and values (the cache lookup API shows them).
pub(crate) fn variance(
    meta: &CacheMeta,
    req: &RequestHeader,
    stored_by: Option<&StoredBy>,
) -> Option<HashBinary> {
    // RFC 9111 §4.1: a stored response answers only requests with the same values for the
    // headers its Vary names.
    let mut names: Vec<String> = meta
        .headers()
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return None;
    }
    names.sort();
    names.dedup();
    let mut variance = VarianceBuilder::new();
    let mut shown = Vec::new();
    for name in &names {
        let value: Vec<u8> = req
            .headers
            .get_all(name.as_str())
            .iter()
            .flat_map(|v| v.as_bytes().iter().copied().chain([b',']))
            .collect();
        shown.push((
            name.clone(),
            String::from_utf8_lossy(value.strip_suffix(b",").unwrap_or(&value)).into_owned(),
        ));
        variance.add_owned_name_value(name.clone(), value);
    }
    if let Some(stored_by) = stored_by {
        // The last call is the one for the response being stored: a lookup may have
        // called this first for another variant's Vary.
        *stored_by.vary.lock().unwrap_or_else(|p| p.into_inner()) = shown;
    }
    variance.finalize()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use pingora_http::ResponseHeader;

    use super::*;
    use crate::cache::CacheMode;

    fn meta(vary: &[&str]) -> CacheMeta {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for v in vary {
            resp.append_header(http::header::VARY, *v).unwrap();
        }
        let now = SystemTime::now();
        CacheMeta::new(now, now, 0, 0, resp)
    }

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/a", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    #[test]
    fn only_the_fields_vary_names_split_the_variants() {
        assert_eq!(variance(&meta(&[]), &request(&[]), None), None);
        let m = meta(&["Accept-Encoding, origin", "ORIGIN"]);
        let gzip = request(&[("accept-encoding", "gzip"), ("user-agent", "a")]);
        let gzip_other_agent = request(&[("accept-encoding", "gzip"), ("user-agent", "b")]);
        let br = request(&[("accept-encoding", "br")]);
        let a = variance(&m, &gzip, None);
        assert!(a.is_some());
        assert_eq!(a, variance(&m, &gzip_other_agent, None));
        assert_ne!(a, variance(&m, &br, None));
    }

    #[test]
    fn the_stored_variant_records_its_fields_sorted_once_each() {
        let stored_by = StoredBy::new("r", CacheMode::Rfc);
        let m = meta(&["origin, Accept-Encoding", "origin"]);
        let req = request(&[("accept-encoding", "gzip"), ("accept-encoding", "br")]);
        variance(&m, &req, Some(&stored_by));
        let shown = stored_by.vary.lock().unwrap().clone();
        assert_eq!(
            shown,
            [
                ("accept-encoding".to_string(), "gzip,br".to_string()),
                ("origin".to_string(), String::new()),
            ]
        );
    }
}
