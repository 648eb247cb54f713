//! The streamer's request path decoding: a URL path to a file path under the root.
//!
//! Properties: an accepted path is relative, made only of plain names (no `.`, `..`, root or
//! prefix), none hidden, none holding `\` or NUL, so joined to the root it stays under it; and
//! its names percent-encoded again read back to the same path.

use std::path::{Component, Path};

use dime_streamer::path::RequestPath;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

pub fn check(data: &[u8]) {
    let Some(raw) = crate::text(data) else {
        return;
    };
    let Ok(path) = RequestPath::parse(raw) else {
        return;
    };
    let relative = path.as_path();
    assert!(relative.is_relative(), "{raw:?} -> {relative:?}");
    let mut names = Vec::new();
    for component in relative.components() {
        let Component::Normal(name) = component else {
            panic!("{raw:?} -> {relative:?} has {component:?}");
        };
        let name = name.to_str().expect("decoded as UTF-8");
        assert!(
            !name.starts_with('.') && !name.contains(['\\', '\0']),
            "{raw:?} -> {relative:?} has {name:?}"
        );
        names.push(name);
    }
    assert!(!names.is_empty(), "{raw:?} names the root");
    let root = Path::new("/srv/media");
    assert!(root.join(relative).starts_with(root));

    let encoded: String = names
        .iter()
        .map(|n| format!("/{}", utf8_percent_encode(n, NON_ALPHANUMERIC)))
        .collect();
    match RequestPath::parse(&encoded) {
        Ok(again) => assert_eq!(again, path, "{raw:?} re-encoded as {encoded:?}"),
        Err(e) => panic!("{raw:?} re-encoded as {encoded:?}: {e}"),
    }
}
