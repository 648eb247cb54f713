//! Static assets compiled into the binary (CSS, the player script, vendored hls.js), each
//! addressed by a fingerprinted URL so that it can be cached for a year and still change.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

/// One embedded file.
#[derive(Debug, Clone)]
pub struct Asset {
    /// Path under `/static/`, e.g. `vendor/hls.min.js`.
    pub path: &'static str,
    /// `Content-Type` to send.
    pub content_type: &'static str,
    /// The file's bytes.
    pub body: &'static [u8],
    /// Short content hash: the `?v=` of every URL pages emit, and the strong ETag.
    pub version: String,
}

/// Every file under `static/` that pages use.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../static/style.css"),
    ),
    (
        "player.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../static/player.js"),
    ),
    (
        "vendor/hls.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../static/vendor/hls.min.js"),
    ),
    (
        "vendor/hls.js-LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../static/vendor/hls.js-LICENSE"),
    ),
];

/// The embedded files by path.
#[derive(Debug, Clone)]
pub struct Assets {
    by_path: BTreeMap<&'static str, Asset>,
}

impl Assets {
    /// Indexes the embedded files and computes their fingerprints.
    pub fn embedded() -> Self {
        let by_path = FILES
            .iter()
            .map(|&(path, content_type, body)| {
                let asset = Asset {
                    path,
                    content_type,
                    body,
                    version: fingerprint(body),
                };
                (path, asset)
            })
            .collect();
        Self { by_path }
    }

    /// The file at `path` under `/static/`.
    pub fn get(&self, path: &str) -> Option<&Asset> {
        self.by_path.get(path)
    }

    /// Path → versioned URL (`/static/player.js?v=…`), for templates.
    pub fn urls(&self) -> BTreeMap<&'static str, String> {
        self.by_path
            .values()
            .map(|asset| {
                let url = format!("/static/{}?v={}", asset.path, asset.version);
                (asset.path, url)
            })
            .collect()
    }
}

/// 16 hex digits of a content hash. SipHash with fixed keys: the same bytes give the same
/// fingerprint in every process, so every replica emits the same URLs.
fn fingerprint(body: &[u8]) -> String {
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new();
    body.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_versioned_url() {
        let assets = Assets::embedded();
        let urls = assets.urls();
        let hls = &urls["vendor/hls.min.js"];
        assert!(hls.starts_with("/static/vendor/hls.min.js?v="), "{hls}");
        assert_eq!(fingerprint(b"a"), fingerprint(b"a"));
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
    }
}
