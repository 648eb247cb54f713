//! Doors into the edge's parsers for `proxy/fuzz` (`make fuzz`, and the corpus replay in its
//! tests): each function calls the edge's own code once and adds none of its own, so the
//! fuzzer tests what a request runs, not a copy.
//!
//! Not an API: nothing else may use it, and it changes whenever those parsers do. The config
//! needs no door: [`crate::config::compile_with`] and [`crate::config::dump`] are public.

use crate::cache::key;
use crate::{host, request_path};

/// `request_filter`'s canonical path, or the reason the edge answers 400.
pub fn canonicalize(raw: &str) -> Result<String, String> {
    request_path::canonicalize(raw).map_err(|e| e.to_string())
}

/// [`canonicalize`] the long way, for every path: what the shortcut for a path that is
/// canonical already must agree with.
pub fn canonicalize_in_full(raw: &str) -> Result<String, String> {
    request_path::canonicalize_in_full(raw).map_err(|e| e.to_string())
}

/// The host as routing and the cache key see it.
pub fn normalize_host(raw: &str) -> String {
    host::normalize_host(raw).into_owned()
}

/// `cache_key_callback`'s key text: normalised host, canonical path and the query parameters
/// kept (`None`: the whole query).
pub fn key_text(host: &str, path: &str, query: Option<&str>, keep: Option<&[String]>) -> String {
    key::key_text(host, path, query, keep)
}
