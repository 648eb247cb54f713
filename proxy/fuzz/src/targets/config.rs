//! `dime-edge`'s config: TOML text compiled into the running form, or every error found.
//!
//! Properties: an error list is never empty, is in file order, and each error's line lies in
//! the text; a compiled config's dump (`dime-edge check --dump`) is TOML, and when it holds no
//! redacted value it compiles again to a config with the same dump.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use dime_edge::config::{compile_with, dump::dump, redact::REDACTED, ConfigErrors, Lookups};

/// Files the config names are looked for under here, where there are none; an absolute
/// path is read as written (certificates, CA bundles, token files, log directories).
const SOURCE: &str = "/nonexistent/dime-fuzz/edge.toml";

/// `${FUZZ}` is set; every other variable is not.
fn env(name: &str) -> Option<String> {
    (name == "FUZZ").then(|| "fuzz".to_string())
}

/// `localhost:PORT` is 127.0.0.1; no other name resolves, and nothing asks a DNS server.
fn resolve(name_port: &str) -> io::Result<Vec<SocketAddr>> {
    match name_port.rsplit_once(':') {
        Some(("localhost", port)) => {
            let port = port.parse().map_err(io::Error::other)?;
            Ok(vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)])
        }
        _ => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "not resolved while fuzzing",
        )),
    }
}

const LOOKUPS: Lookups<'static> = Lookups {
    env: &env,
    resolve: &resolve,
};

/// The dump without its two header lines, which name the source.
fn body(dump: &str) -> &str {
    dump.splitn(3, '\n').nth(2).unwrap_or_default()
}

pub fn check(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    match compile_with(SOURCE, text, &LOOKUPS) {
        Err(errors) => check_errors(text, &errors),
        Ok(config) => {
            let out = dump(&config);
            if let Err(e) = out.parse::<toml::Table>() {
                panic!("the dump is not TOML: {e}\n{out}");
            }
            if out.contains(REDACTED) {
                return;
            }
            let again = match compile_with(SOURCE, &out, &LOOKUPS) {
                Ok(again) => again,
                Err(e) => panic!("the dump does not compile: {e}\n{out}"),
            };
            assert_eq!(
                body(&out),
                body(&dump(&again)),
                "the dump's config dumps differently"
            );
        }
    }
}

fn check_errors(text: &str, errors: &ConfigErrors) {
    assert!(!errors.0.is_empty(), "a refused config with no error");
    let lines = text.lines().count() + 1;
    for e in &errors.0 {
        assert!(e.line <= lines, "line {} of {lines}: {e}", e.line);
        assert!(!e.reason.is_empty(), "an error without a reason: {e:?}");
    }
    let places: Vec<_> = errors.0.iter().map(|e| (e.line, e.column)).collect();
    assert!(places.is_sorted(), "errors out of file order: {places:?}");
}
