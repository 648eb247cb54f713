//! Fuzz targets for the edge's and the origins' parsers.
//!
//! A target is a function from bytes to nothing that panics when the input breaks one of its
//! properties: no panic in the product code on any input, and, where it is cheap, what the code
//! promises (a canonical path is its own canonical form, a playlist reads back as written).
//! AFL++ calls a target with mutated inputs (`src/main.rs`, `make fuzz`); `tests/corpus.rs`
//! calls it with every file of its corpus, so `cargo nextest run` replays them without AFL++.

pub mod targets;

/// One fuzz target.
pub struct Target {
    /// Its name: the `make fuzz` argument and its folder under `corpus/`.
    pub name: &'static str,
    /// The product code it drives, in a few words.
    pub about: &'static str,
    /// Runs the input through the product code and checks its properties; panics on a failure.
    pub check: fn(&[u8]),
}

/// Every target, in the order `make fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "config",
        about: "dime-edge config: TOML text compiled, or every error",
        check: targets::config::check,
    },
    Target {
        name: "range",
        about: "streamer: Range header against a file size",
        check: targets::range::check,
    },
    Target {
        name: "streamer_path",
        about: "streamer: request path decoded to a file under the root",
        check: targets::streamer_path::check,
    },
    Target {
        name: "canonical_path",
        about: "edge: the canonical request path",
        check: targets::canonical_path::check,
    },
    Target {
        name: "cache_key",
        about: "edge: the cache key of host, path and query",
        check: targets::cache_key::check,
    },
    Target {
        name: "playlist",
        about: "packager: HLS media playlist parsed, written, parsed again",
        check: targets::playlist::check,
    },
    Target {
        name: "forms",
        about: "web: admin form bodies decoded and validated",
        check: targets::forms::check,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The input as text: the parsers under test all take `&str` (their callers have already
/// refused anything that is not UTF-8), so other bytes are not inputs.
pub(crate) fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
