//! The parse stage: TOML text to the file's structs, reporting every type error at once.
//!
//! serde stops at the first error, so one wrong type would hide the next problem. The text is
//! parsed into a spanned TOML tree first (a syntax error stops there: what follows it has no
//! reliable meaning), `${NAME}`s are expanded, and each section, each pool and each route is
//! deserialized on its own. When one fails, the key at fault is recorded and removed and the
//! part is tried again, so every wrong field in it is reported, each with its place and its
//! path (`routes[1].cache.media_ttl`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::de::{DeArray, DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::env;
use super::error::{ConfigError, Locator};
use super::file::{
    AdminSection, CacheSection, ConfigFile, ListenSection, LogSection, ReloadSection,
    ServerSection, TlsSection,
};

/// The top-level tables, in the order the reference documents them.
const SECTIONS: &[&str] = &[
    "server", "listen", "tls", "cache", "admin", "reload", "log", "pools", "routes",
];

/// A part that keeps failing after this many removed keys is given up on: a bound, not a
/// limit any real file reaches.
const MAX_ERRORS_PER_PART: usize = 64;

/// What the parse stage made of a file.
pub(crate) struct Parsed {
    /// The file's structs, without the keys that had errors.
    pub file: ConfigFile,
    /// Paths of the keys left out for their errors (or whose `${NAME}` failed): validation
    /// errors that are consequences of a left-out key are not reported on top of its own.
    pub removed: Vec<String>,
}

/// Parses `loc.text` into the file's structs, pushing every error found to `errors`. `None`
/// when nothing sensible is left to validate: a syntax error, or a part (a pool, a route)
/// that could not be read at all. `lookup` resolves `${NAME}`.
pub(crate) fn parse(
    loc: &Locator<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<Parsed> {
    let doc = match DeTable::parse(loc.text) {
        Ok(doc) => doc,
        Err(e) => {
            errors.push(loc.toml_error(&e));
            return None;
        }
    };
    let mut p = Parser {
        loc,
        errors,
        dropped: false,
        removed: Vec::new(),
    };
    let mut root = doc.into_inner();
    for (key, value) in root.iter_mut() {
        let mut path = vec![Seg::Key(key.get_ref().to_string())];
        p.expand(value, &mut path, lookup);
    }

    let mut server = None;
    let mut listen = None;
    let mut pools = BTreeMap::new();
    let mut routes = Vec::new();
    let mut cache = None;
    let mut tls = None;
    let mut admin = None;
    let mut reload = None;
    let mut log = None;
    for (key, value) in root {
        let name = key.get_ref().as_ref();
        match name {
            "server" => server = p.part::<ServerSection>(value, name),
            "listen" => listen = p.part::<ListenSection>(value, name),
            "cache" => cache = p.part::<CacheSection>(value, name),
            "tls" => tls = p.part::<TlsSection>(value, name),
            "admin" => admin = p.part::<AdminSection>(value, name),
            "reload" => reload = p.part::<ReloadSection>(value, name),
            "log" => log = p.part::<LogSection>(value, name),
            "pools" => {
                let span = value.span();
                match value.into_inner() {
                    DeValue::Table(t) => {
                        for (pool, v) in t {
                            let field = format!("pools.{}", pool.get_ref());
                            if let Some(section) = p.part(v, &field) {
                                pools.insert(pool.get_ref().to_string(), section);
                            }
                        }
                    }
                    other => p.drop_part(
                        span,
                        "pools",
                        format!(
                            "expected a table of pools, found {}: write [pools.NAME] for each pool",
                            other.type_str()
                        ),
                    ),
                }
            }
            "routes" => {
                let span = value.span();
                match value.into_inner() {
                    DeValue::Array(items) => {
                        for (i, v) in items.into_iter().enumerate() {
                            if let Some(route) = p.part(v, &format!("routes[{i}]")) {
                                routes.push(route);
                            }
                        }
                    }
                    other => p.drop_part(
                        span,
                        "routes",
                        format!(
                            "expected an array of routes, found {}: write [[routes]] (double brackets) above each route",
                            other.type_str()
                        ),
                    ),
                }
            }
            other => p.error(
                key.span(),
                other,
                format!(
                    "unknown section `{other}`, expected one of {}",
                    SECTIONS.join(", ")
                ),
            ),
        }
    }
    let Some(listen) = listen.map(Spanned::into_inner) else {
        if !p.dropped {
            p.errors.push(loc.whole(
                "listen",
                "missing [listen] table: name at least one listener, e.g. [listen] http = [\"0.0.0.0:8080\"]",
            ));
        }
        return None;
    };
    if p.dropped {
        return None;
    }
    let file = ConfigFile {
        server: inner(server),
        listen,
        pools,
        routes,
        cache: inner(cache),
        tls: inner(tls),
        admin: inner(admin),
        reload: inner(reload),
        log: inner(log),
    };
    Some(Parsed {
        file,
        removed: p.removed,
    })
}

/// One step of a field path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `routes[1].cache.media_ttl` from its segments.
fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

struct Parser<'a, 'l> {
    loc: &'a Locator<'l>,
    errors: &'a mut Vec<ConfigError>,
    /// A part was lost entirely: validating the rest would report its absence.
    dropped: bool,
    removed: Vec<String>,
}

impl Parser<'_, '_> {
    fn error(&mut self, span: Range<usize>, field: &str, reason: impl Into<String>) {
        self.errors.push(self.loc.at(span, field, reason));
    }

    fn drop_part(&mut self, span: Range<usize>, field: &str, reason: impl Into<String>) {
        self.dropped = true;
        self.error(span, field, reason);
    }

    /// Expands `${NAME}` in every string value below `value` (keys are never expanded).
    fn expand(
        &mut self,
        value: &mut Spanned<DeValue<'_>>,
        path: &mut Vec<Seg>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) {
        let span = value.span();
        match value.get_mut() {
            DeValue::String(s) => match env::expand(s, lookup) {
                Ok(None) => {}
                Ok(Some(expanded)) => *s = Cow::Owned(expanded),
                Err(e) => {
                    let field = path_string(path);
                    self.error(span, &field, e.to_string());
                    self.removed.push(field);
                }
            },
            DeValue::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    path.push(Seg::Index(i));
                    self.expand(item, path, lookup);
                    path.pop();
                }
            }
            DeValue::Table(t) => {
                for (k, v) in t.iter_mut() {
                    path.push(Seg::Key(k.get_ref().to_string()));
                    self.expand(v, path, lookup);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    /// Deserializes one part of the file (a section, a pool, a route), recording every error
    /// in it: after each one, the key at fault is removed and the part tried again.
    fn part<T: DeserializeOwned>(
        &mut self,
        value: Spanned<DeValue<'_>>,
        field: &str,
    ) -> Option<Spanned<T>> {
        let span = value.span();
        let mut value = value.into_inner();
        let mut removed: Vec<String> = Vec::new();
        for _ in 0..MAX_ERRORS_PER_PART {
            let de = ValueDeserializer::from(Spanned::new(span.clone(), value.clone()));
            let e = match T::deserialize(de) {
                Ok(t) => return Some(Spanned::new(span, t)),
                Err(e) => e,
            };
            let message = e.message().trim();
            // A required key removed after its own error is not missing a second time.
            if missing_field(message).is_some_and(|m| removed.iter().any(|r| r == m)) {
                self.dropped = true;
                return None;
            }
            let at = e.span().unwrap_or(span.clone());
            let mut path = Vec::new();
            locate(&value, &at, &mut path);
            let full = match path_string(&path) {
                sub if sub.is_empty() => field.to_string(),
                sub if sub.starts_with('[') => format!("{field}{sub}"),
                sub => format!("{field}.{sub}"),
            };
            self.error(at, &full, readable(message));
            match remove(&mut value, &path) {
                Some(key) => {
                    removed.push(key);
                    self.removed.push(full);
                }
                None => {
                    self.dropped = true;
                    return None;
                }
            }
        }
        self.dropped = true;
        None
    }
}

/// The field a serde "missing field `x`" message names.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// serde's type names in words an operator knows from the TOML side.
fn readable(message: &str) -> String {
    let mut m = message.to_string();
    for (from, to) in [
        ("expected i64", "expected an integer"),
        ("expected u64", "expected an integer"),
        ("expected usize", "expected an integer"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: map", "invalid type: table"),
        (
            "data did not match any variant of untagged enum BackendEntry",
            "expected \"host:port\" or { addr = \"host:port\", weight = N }",
        ),
    ] {
        m = m.replace(from, to);
    }
    // "expected struct RouteCacheSection": the struct is a table in the file.
    while let Some(i) = m.find("expected struct ") {
        let name_end = m[i + 16..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .map_or(m.len(), |e| i + 16 + e);
        m.replace_range(i..name_end, "expected a table");
    }
    m
}

/// Whether `at` falls in `span`; an empty span counts as its first byte.
fn within(span: &Range<usize>, at: &Range<usize>) -> bool {
    span.start <= at.start && at.end <= span.end.max(span.start + 1)
}

/// Whether `at` falls in `value` or anything below it. A table written as a `[header]` has
/// a span that need not cover its keys, so the children are asked too.
fn holds(value: &Spanned<DeValue<'_>>, at: &Range<usize>) -> bool {
    within(&value.span(), at)
        || match value.get_ref() {
            DeValue::Table(t) => t.iter().any(|(k, v)| within(&k.span(), at) || holds(v, at)),
            DeValue::Array(items) => items.iter().any(|v| holds(v, at)),
            _ => false,
        }
}

/// The path below `value` to the deepest key or element whose key or value holds `at`.
fn locate(value: &DeValue<'_>, at: &Range<usize>, path: &mut Vec<Seg>) {
    match value {
        DeValue::Table(t) => {
            for (k, v) in t.iter() {
                if within(&k.span(), at) {
                    path.push(Seg::Key(k.get_ref().to_string()));
                    return;
                }
                if holds(v, at) {
                    path.push(Seg::Key(k.get_ref().to_string()));
                    locate(v.get_ref(), at, path);
                    return;
                }
            }
        }
        DeValue::Array(items) => locate_in_array(items, at, path),
        _ => {}
    }
}

fn locate_in_array(items: &DeArray<'_>, at: &Range<usize>, path: &mut Vec<Seg>) {
    for (i, v) in items.iter().enumerate() {
        if holds(v, at) {
            path.push(Seg::Index(i));
            locate(v.get_ref(), at, path);
            return;
        }
    }
}

/// Removes the deepest table entry on `path` (an array element is never removed alone: that
/// would renumber the elements after it). Returns the removed key's name.
fn remove(value: &mut DeValue<'_>, path: &[Seg]) -> Option<String> {
    let last_key = path.iter().rposition(|s| matches!(s, Seg::Key(_)))?;
    let mut node = value;
    for seg in &path[..last_key] {
        node = match (node, seg) {
            (DeValue::Table(t), Seg::Key(k)) => t.get_mut(k.as_str())?.get_mut(),
            (DeValue::Array(a), Seg::Index(i)) => a.get_mut(*i)?.get_mut(),
            _ => return None,
        };
    }
    let (DeValue::Table(t), Seg::Key(k)) = (node, &path[last_key]) else {
        return None;
    };
    t.remove(k.as_str()).map(|_| k.clone())
}

/// A section's value, or its default when the file has no such table.
fn inner<T: Default>(s: Option<Spanned<T>>) -> T {
    s.map(Spanned::into_inner).unwrap_or_default()
}

/// Whether validation error `e` follows from a key the parse stage left out (or could not
/// expand): it is on that field or below it, or on a sibling and names it (`sni` "only applies
/// with tls = true" once a wrongly typed `tls` is gone).
pub(crate) fn is_consequence(e: &ConfigError, removed: &[String]) -> bool {
    removed.iter().any(|r| {
        let below = |a: &str, b: &str| {
            a == b
                || a.strip_prefix(b)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        };
        if below(&e.field, r) || below(r, &e.field) {
            return true;
        }
        let (parent, key) = match r.rfind('.') {
            Some(i) => (&r[..i], &r[i + 1..]),
            None => ("", r.as_str()),
        };
        let sibling = e.field.rfind('.').map_or("", |i| &e.field[..i]) == parent;
        sibling
            && e.reason
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .any(|word| word == key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(text: &str, env: &[(&str, &str)]) -> Vec<String> {
        let loc = Locator {
            file: "edge.toml",
            text,
        };
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let mut errors = Vec::new();
        parse(&loc, &lookup, &mut errors);
        errors.sort_by_key(|e| (e.line, e.column));
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_wrong_field_of_one_route_is_reported_and_a_removed_required_key_only_once() {
        let text = "[listen]\nhttp = [\"127.0.0.1:1\"]\n[[routes]]\npool = 3\nstrip_prefix = 1\n[routes.cache]\nmedia_ttl = 5\nkeep_query = \"x\"\n";
        assert_eq!(
            errors_of(text, &[]),
            [
                "edge.toml:4:8: routes[0].pool: invalid type: integer `3`, expected a string",
                "edge.toml:5:16: routes[0].strip_prefix: invalid type: integer `1`, expected a boolean",
                "edge.toml:7:13: routes[0].cache.media_ttl: expected a duration, found the integer 5: write it with a unit, e.g. \"5s\"",
                "edge.toml:8:14: routes[0].cache.keep_query: invalid type: string \"x\", expected an array",
            ]
        );
    }

    #[test]
    fn a_missing_required_key_and_an_unknown_section_are_named() {
        let text = "[listen]\nhttp = []\n[[routes]]\npath = \"/\"\n[extra]\nx = 1\n";
        let errors = errors_of(text, &[]);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].contains("routes[0]: missing field `pool`"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("edge.toml:5:2: extra: unknown section `extra`"),
            "{errors:?}"
        );
        let errors = errors_of("[server]\nthreads = 2\n", &[]);
        assert!(
            errors[0].contains("listen: missing [listen] table"),
            "{errors:?}"
        );
    }

    #[test]
    fn env_errors_carry_the_field_path_and_values_are_expanded() {
        let text = "[listen]\nhttp = [\"${ADDR}\", \"${NOPE}\"]\n[pools.p]\nbackends = [{ addr = \"${MISSING}\" }]\n";
        assert_eq!(
            errors_of(text, &[("ADDR", "127.0.0.1:8080")]),
            [
                "edge.toml:2:20: listen.http[1]: environment variable NOPE is not set (write $${ for a literal ${)",
                "edge.toml:4:22: pools.p.backends[0].addr: environment variable MISSING is not set (write $${ for a literal ${)",
            ]
        );
        let loc = Locator {
            file: "edge.toml",
            text: "[listen]\nhttp = [\"${ADDR}\"]\n",
        };
        let mut errors = Vec::new();
        let lookup = |_: &str| Some("127.0.0.1:8080".to_string());
        let file = parse(&loc, &lookup, &mut errors).unwrap();
        assert_eq!(file.file.listen.http[0].get_ref(), "127.0.0.1:8080");
    }
}
