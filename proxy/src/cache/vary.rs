//! Variants under Vary (RFC 9111 §4.1): which request header values a stored response answers.

use pingora_cache::key::HashBinary;
use pingora_cache::{CacheMeta, VarianceBuilder};
use pingora_http::RequestHeader;

use super::store::StoredBy;

/// The variance of `req` under the Vary of `meta`: `None` when the response names no header.
/// When `stored_by` is given, it records the names and values (the cache lookup API shows them).
pub fn variance(
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
