//! `Cache-Control` values, one per kind of response, so the edge knows what it may keep.

/// Fingerprinted static assets: a changed file gets a new URL, so the old one never changes.
pub const STATIC_ASSET: &str = "public, max-age=31536000, immutable";
/// Public catalog and player pages: short, so new titles and view counts show up quickly.
pub const PUBLIC_PAGE: &str = "public, max-age=10";
/// Player pages that carry the viewer's own edge list (`--edges`): the list depends on the
/// client's address, which no request header carries for a cache to `Vary` on (the edge
/// appends `X-Forwarded-For` itself, after its cache lookup), so a shared cache would hand one
/// viewer's edges to everyone under the page's one key. `private` keeps the edge's cache out
/// (RFC 9111 §5.2.2.7) while the viewer's browser may still reuse the page briefly.
pub const PER_VIEWER_PAGE: &str = "private, max-age=10";
/// Admin pages and anything tied to a session or setting a cookie: never stored anywhere.
pub const PRIVATE: &str = "private, no-store";
/// Live data (view counters, health, errors): not stored, but not personal either.
pub const NO_STORE: &str = "no-store";
