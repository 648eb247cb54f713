//! `[[routes]]`: which requests go to which pool, with what headers and cache policy.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use http::{HeaderName, HeaderValue};
use toml::Spanned;

use super::super::file::{ConfigFile, RouteSection};
use super::listen::Listeners;
use super::Compiler;
use crate::cache::CacheMode;
use crate::config::error::ConfigError;
use crate::config::types::RouteSpec;
use crate::host::HostMatch;

impl Compiler<'_> {
    pub(super) fn routes(&mut self, file: &ConfigFile, listen: &Listeners) -> Vec<RouteSpec> {
        let pool_names: Vec<&str> = file.pools.keys().map(String::as_str).collect();
        let mut routes: Vec<RouteSpec> = Vec::new();
        let mut seen: HashMap<(HostMatch, String), usize> = HashMap::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, r) in file.routes.iter().enumerate() {
            if let Some(route) = self.route(i, r, &pool_names, !listen.https.is_empty()) {
                let name_span = r.get_ref().name.as_ref().map_or(r.span(), |n| n.span());
                if route.name == "none" {
                    self.err(
                        name_span.clone(),
                        &format!("routes[{i}].name"),
                        "\"none\" is reserved for requests no route matches",
                    );
                }
                if let Some(j) = names.get(&route.name) {
                    self.err(
                        name_span,
                        &format!("routes[{i}].name"),
                        format!(
                            "route name \"{}\" is already used by routes[{j}]; names label metrics and must be unique",
                            route.name
                        ),
                    );
                } else {
                    names.insert(route.name.clone(), i);
                }
                let key = (route.host.clone(), route.prefix.clone());
                if let Some(first) = seen.get(&key) {
                    let span = r.get_ref().path.as_ref().map_or(r.span(), |p| p.span());
                    self.err(
                        span,
                        &format!("routes[{i}]"),
                        format!(
                            "duplicate route: host {} and path \"{}\" are already routed by routes[{first}]",
                            route.host, route.prefix
                        ),
                    );
                } else {
                    seen.insert(key, i);
                }
                routes.push(route);
            }
        }
        if file.routes.is_empty() {
            self.errors.push(
                self.loc
                    .whole("routes", "at least one [[routes]] entry is required"),
            );
        }
        routes
    }
    /// Warnings for a video cache table on a catch-all route while another route has none:
    /// TOML attaches `[routes.cache]` to the `[[routes]]` entry just above it, wherever the
    /// operator meant it, so a table written after the wrong route configures that route.
    pub(super) fn misplaced_cache_tables(
        &self,
        written: &[Spanned<RouteSection>],
        routes: &[RouteSpec],
    ) -> Vec<ConfigError> {
        if routes.len() != written.len() {
            return Vec::new(); // a route failed: its errors come first
        }
        let mut out = Vec::new();
        for (i, (w, r)) in written.iter().zip(routes).enumerate() {
            let Some(table) = &w.get_ref().cache else {
                continue;
            };
            if r.cache.mode != CacheMode::Video || r.prefix != "/" {
                continue;
            }
            // The uncached route nearest above it is the likeliest owner: the table was
            // written after it and one [[routes]] too late.
            let owner = (0..written.len())
                .filter(|&j| j != i && written[j].get_ref().cache.is_none())
                .filter(|&j| r.host == HostMatch::Any || routes[j].host == r.host)
                .min_by_key(|&j| (j > i, i.abs_diff(j)));
            let Some(j) = owner else { continue };
            let span = self.table_header_span(table.span());
            out.push(self.loc.at(
                span,
                &format!("routes[{i}].cache"),
                format!(
                    "a video cache policy on routes[{i}] (path \"/\", a catch-all) while routes[{j}] (path \"{}\") has none; was it meant for routes[{j}]? \
                     In TOML, [routes.cache] belongs to the [[routes]] entry just above it, wherever it is written. \
                     If it is meant for routes[{j}], move the [routes.cache] table up to just after routes[{j}]'s keys \
                     (before the next [[routes]]), or write it inline there: cache = {{ mode = \"video\" }}",
                    routes[j].prefix
                ),
            ));
        }
        out
    }

    /// Where a route's cache table was written: its `[routes.cache]` header line, or the
    /// inline table itself (`cache = { ... }`), so a warning points at what the operator wrote.
    pub(super) fn table_header_span(&self, span: Range<usize>) -> Range<usize> {
        let text = self.loc.text;
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |p| p + 1);
        if text[line_start..start].contains('=') {
            return span; // inline: `cache = { ... }`
        }
        if text[line_start..].trim_start().starts_with('[') {
            return line_start..line_start + 1;
        }
        // The span starts in the table's body: its header is the nearest one above.
        let mut end = line_start;
        while end > 0 {
            let prev = text[..end - 1].rfind('\n').map_or(0, |p| p + 1);
            if text[prev..end].trim_start().starts_with('[') {
                return prev..prev + 1;
            }
            end = prev;
        }
        span
    }

    pub(super) fn route(
        &mut self,
        i: usize,
        r: &Spanned<RouteSection>,
        pools: &[&str],
        has_https: bool,
    ) -> Option<RouteSpec> {
        let field = format!("routes[{i}]");
        let s = r.get_ref();
        let mut ok = true;
        if !pools.contains(&s.pool.get_ref().as_str()) {
            let known = if pools.is_empty() {
                "no pools are defined".to_string()
            } else {
                format!("defined pools: {}", pools.join(", "))
            };
            self.err(
                s.pool.span(),
                &format!("{field}.pool"),
                format!("unknown pool \"{}\" ({known})", s.pool.get_ref()),
            );
            ok = false;
        }
        let host = match &s.host {
            None => HostMatch::Any,
            Some(h) => match HostMatch::parse(h.get_ref()) {
                Ok(m) => m,
                Err(reason) => {
                    self.err(h.span(), &format!("{field}.host"), reason);
                    ok = false;
                    HostMatch::Any
                }
            },
        };
        let prefix = match &s.path {
            None => "/".to_string(),
            Some(p) if p.get_ref().starts_with('/') && !p.get_ref().contains(['?', '#']) => {
                // Requests are matched by their canonical path, which a prefix that is not
                // canonical itself could never start.
                match crate::request_path::canonicalize(p.get_ref()) {
                    Ok(c) if c == *p.get_ref() => {}
                    Ok(c) => {
                        self.err(
                            p.span(),
                            &format!("{field}.path"),
                            format!("requests are routed by their canonical path, which never starts with \"{}\": write \"{c}\"", p.get_ref()),
                        );
                        ok = false;
                    }
                    Err(e) => {
                        self.err(p.span(), &format!("{field}.path"), e.to_string());
                        ok = false;
                    }
                }
                p.get_ref().clone()
            }
            Some(p) => {
                self.err(
                    p.span(),
                    &format!("{field}.path"),
                    "must be a path prefix starting with '/' (no query or fragment)",
                );
                ok = false;
                "/".into()
            }
        };
        let upstream_headers = self.headers(
            &s.upstream_headers,
            &format!("{field}.upstream_headers"),
            r.span(),
        );
        let response_headers = self.headers(
            &s.response_headers,
            &format!("{field}.response_headers"),
            r.span(),
        );
        let name = match &s.name {
            Some(n) if valid_route_name(n.get_ref()) => n.get_ref().clone(),
            Some(n) => {
                self.err(
                    n.span(),
                    &format!("{field}.name"),
                    "route names use letters, digits and '-', '_', '.', '/', '*'",
                );
                n.get_ref().clone()
            }
            None => match &host {
                HostMatch::Any => prefix.clone(),
                h => format!("{h}{prefix}"),
            },
        };
        let cache = self.route_cache(&field, s.cache.as_ref().map(Spanned::get_ref));
        let redirect_https = s.redirect_https.as_ref().is_some_and(|r| *r.get_ref());
        if redirect_https && !has_https {
            let span = s.redirect_https.as_ref().map_or(r.span(), |r| r.span());
            self.err(
                span,
                &format!("{field}.redirect_https"),
                "redirects to HTTPS need an HTTPS listener: add [listen] https = [\"0.0.0.0:443\"]",
            );
        }
        ok.then(|| RouteSpec {
            redirect_https,
            cache,
            name,
            host,
            prefix,
            pool: s.pool.get_ref().clone(),
            strip_prefix: s.strip_prefix,
            upstream_headers,
            response_headers,
        })
    }

    pub(super) fn headers(
        &mut self,
        map: &BTreeMap<String, Spanned<String>>,
        field: &str,
        table_span: Range<usize>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        for (name, value) in map {
            let hname = match HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) => n,
                Err(_) => {
                    self.err(
                        table_span.clone(),
                        &format!("{field}.{name}"),
                        "not a valid header name",
                    );
                    continue;
                }
            };
            if crate::forwarding::is_hop_by_hop(&hname) {
                self.err(
                    value.span(),
                    &format!("{field}.{name}"),
                    "hop-by-hop headers cannot be set by a route",
                );
                continue;
            }
            match HeaderValue::from_str(value.get_ref()) {
                Ok(v) => out.push((hname, v)),
                Err(_) => self.err(
                    value.span(),
                    &format!("{field}.{name}"),
                    "not a valid header value",
                ),
            }
        }
        out
    }
}

fn valid_route_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./*".contains(c))
}
