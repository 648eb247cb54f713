//! `[pools.NAME]`: backends (resolved by the loader), selection, timeouts, health checks
//! and TLS to the backends.

use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::super::file::{BackendEntry, DurationText, HealthCheckSection, PoolSection};
use super::super::loader;
use super::Compiler;
use crate::config::types::{HealthCheckKind, HealthCheckSpec, PoolSpec, Selection, UpstreamTls};
use crate::host::HostMatch;

impl Compiler<'_> {
    pub(super) fn pool(&mut self, name: &str, section: &Spanned<PoolSection>) -> Option<PoolSpec> {
        let field = format!("pools.{name}");
        let p = section.get_ref();
        if !valid_name(name) {
            self.err(
                section.span(),
                &field,
                "pool names use letters, digits, '-' and '_' only",
            );
        }
        let mut backends = Vec::new();
        if p.backends.get_ref().is_empty() {
            self.err(
                p.backends.span(),
                &format!("{field}.backends"),
                "empty pool: list at least one backend",
            );
        }
        for (i, b) in p.backends.get_ref().iter().enumerate() {
            let bfield = format!("{field}.backends[{i}]");
            let (addr, weight) = match b.get_ref() {
                BackendEntry::Addr(a) => (a, None),
                BackendEntry::Weighted(w) => (&w.addr, w.weight),
            };
            let weight = match weight {
                Some(w) if (1..=1000).contains(&w) => Some(w as usize),
                Some(w) => {
                    self.err(
                        b.span(),
                        &format!("{bfield}.weight"),
                        format!("must be between 1 and 1000, got {w}"),
                    );
                    None
                }
                None => Some(1),
            };
            match loader::backend_addr(addr, self.resolve) {
                Ok(a) => {
                    if backends.iter().any(|(b, _)| *b == a) {
                        self.err(b.span(), &bfield, format!("backend {a} is listed twice"));
                    }
                    if let Some(w) = weight {
                        backends.push((a, w));
                    }
                }
                Err(e) => self.err(b.span(), &bfield, e.to_string()),
            }
        }
        let selection = match &p.selection {
            None => Selection::RoundRobin,
            Some(s) => match s.get_ref().as_str() {
                "round_robin" => Selection::RoundRobin,
                "consistent_hash" => Selection::ConsistentHash,
                other => {
                    self.err(
                        s.span(),
                        &format!("{field}.selection"),
                        format!(
                            "unknown selection \"{other}\": use round_robin or consistent_hash"
                        ),
                    );
                    Selection::RoundRobin
                }
            },
        };
        let d = |c: &mut Self, v: &Option<Spanned<DurationText>>, key: &str, default: u64| {
            c.duration(v.as_ref(), &format!("{field}.{key}"))
                .unwrap_or(Duration::from_secs(default))
        };
        let connect_timeout = d(self, &p.connect_timeout, "connect_timeout", 2);
        let read_timeout = d(self, &p.read_timeout, "read_timeout", 30);
        let write_timeout = d(self, &p.write_timeout, "write_timeout", 30);
        let idle_timeout = d(self, &p.idle_timeout, "idle_timeout", 60);
        let total_timeout =
            self.duration(p.total_timeout.as_ref(), &format!("{field}.total_timeout"));
        if let (Some(total), Some(span)) = (total_timeout, p.total_timeout.as_ref()) {
            if total < connect_timeout {
                self.err(
                    span.span(),
                    &format!("{field}.total_timeout"),
                    "must not be shorter than connect_timeout",
                );
            }
        }
        let retries = match &p.retries {
            Some(r) => self
                .count(r, &format!("{field}.retries"), 0, 16)
                .unwrap_or(0),
            None => 2,
        };
        let panic_mode = p.panic_mode.as_ref().is_none_or(|v| *v.get_ref());
        let retry_on_status = self.retry_on_status(&field, p.retry_on_status.as_ref());
        let health_check = self.health_check(&field, p.health_check.as_ref());
        let tls = self.upstream_tls(&field, p);
        Some(PoolSpec {
            name: name.to_string(),
            backends,
            selection,
            connect_timeout,
            read_timeout,
            write_timeout,
            total_timeout,
            idle_timeout,
            retries,
            panic_mode,
            retry_on_status,
            health_check,
            tls,
        })
    }

    /// `retry_on_status`: error statuses, each once (nginx's `proxy_next_upstream http_500 …`).
    fn retry_on_status(
        &mut self,
        field: &str,
        list: Option<&Spanned<Vec<Spanned<i64>>>>,
    ) -> Vec<u16> {
        let mut statuses = Vec::new();
        for (i, v) in list.map_or(&[][..], |l| l.get_ref()).iter().enumerate() {
            let key = format!("{field}.retry_on_status[{i}]");
            let n = *v.get_ref();
            if !(400..=599).contains(&n) {
                self.err(
                    v.span(),
                    &key,
                    format!("{n} is not an error status: give statuses from 400 to 599"),
                );
            } else if statuses.contains(&(n as u16)) {
                self.err(v.span(), &key, format!("{n} is listed twice"));
            } else {
                statuses.push(n as u16);
            }
        }
        statuses
    }

    pub(super) fn upstream_tls(&mut self, field: &str, p: &PoolSection) -> Option<UpstreamTls> {
        let on = p.tls.as_ref().is_some_and(|t| *t.get_ref());
        if !on {
            for (key, span) in [
                ("sni", p.sni.as_ref().map(|s| s.span())),
                ("ca_file", p.ca_file.as_ref().map(|s| s.span())),
                ("verify", p.verify.as_ref().map(|s| s.span())),
            ] {
                if let Some(span) = span {
                    self.err(
                        span,
                        &format!("{field}.{key}"),
                        "only applies with tls = true",
                    );
                }
            }
            return None;
        }
        let verify = p.verify.as_ref().is_none_or(|v| *v.get_ref());
        let sni = match &p.sni {
            Some(s) => match HostMatch::parse(s.get_ref()) {
                Ok(HostMatch::Exact(h)) => h,
                _ => {
                    self.err(s.span(), &format!("{field}.sni"), format!("invalid name \"{}\": write the host name the backends' certificates are issued for, e.g. \"origin.example.com\"", s.get_ref()));
                    String::new()
                }
            },
            None if verify => {
                let span = p.tls.as_ref().map_or(0..0, |t| t.span());
                self.err(span, &format!("{field}.sni"), "tls = true needs sni = \"name\": the host name the backends' certificates are issued for (it is sent in SNI and verified)");
                String::new()
            }
            None => String::new(),
        };
        let (ca, ca_file) = match &p.ca_file {
            None => (None, None),
            Some(f) => {
                let path = self.path(f.get_ref());
                match loader::ca_bundle(&path) {
                    Ok(ders) => (Some(Arc::new(ders)), Some(path)),
                    Err(e) => {
                        self.err(f.span(), &format!("{field}.ca_file"), e.to_string());
                        (None, Some(path))
                    }
                }
            }
        };
        Some(UpstreamTls {
            sni,
            verify,
            ca,
            ca_file,
        })
    }

    pub(super) fn health_check(
        &mut self,
        pool_field: &str,
        h: Option<&HealthCheckSection>,
    ) -> HealthCheckSpec {
        let field = format!("{pool_field}.health_check");
        let Some(h) = h else {
            return HealthCheckSpec {
                kind: HealthCheckKind::Tcp,
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
                rise: 2,
                fall: 2,
            };
        };
        let http = match &h.kind {
            None => h.path.is_some(),
            Some(k) => match k.get_ref().as_str() {
                "http" => true,
                "tcp" => false,
                other => {
                    self.err(
                        k.span(),
                        &format!("{field}.type"),
                        format!("unknown health check type \"{other}\": use tcp or http"),
                    );
                    false
                }
            },
        };
        let kind = if http {
            let path = match &h.path {
                Some(p) if p.get_ref().starts_with('/') => p.get_ref().clone(),
                Some(p) => {
                    self.err(p.span(), &format!("{field}.path"), "must start with '/'");
                    "/".into()
                }
                None => "/".into(),
            };
            let expect_status = match &h.expect_status {
                Some(s) => self
                    .count(s, &format!("{field}.expect_status"), 100, 599)
                    .unwrap_or(200) as u16,
                None => 200,
            };
            HealthCheckKind::Http {
                path,
                host: h.host.as_ref().and_then(|host| {
                    let value = host.get_ref();
                    let valid = !value.is_empty()
                        && value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
                    if valid {
                        Some(value.clone())
                    } else {
                        self.err(
                            host.span(),
                            &format!("{field}.host"),
                            format!(
                                "invalid host \"{}\": write a host name, e.g. \"origin.internal\"",
                                value.escape_debug()
                            ),
                        );
                        None
                    }
                }),
                expect_status,
            }
        } else {
            for (key, present) in [
                ("path", h.path.as_ref().map(|p| p.span())),
                ("host", h.host.as_ref().map(|p| p.span())),
                ("expect_status", h.expect_status.as_ref().map(|p| p.span())),
            ] {
                if let Some(span) = present {
                    self.err(
                        span,
                        &format!("{field}.{key}"),
                        "only applies to type = \"http\"",
                    );
                }
            }
            HealthCheckKind::Tcp
        };
        let interval = self
            .duration(h.interval.as_ref(), &format!("{field}.interval"))
            .unwrap_or(Duration::from_secs(5));
        let timeout = self
            .duration(h.timeout.as_ref(), &format!("{field}.timeout"))
            .unwrap_or(Duration::from_secs(1));
        let rise = h
            .rise
            .as_ref()
            .map_or(Some(2), |r| self.count(r, &format!("{field}.rise"), 1, 100))
            .unwrap_or(2);
        let fall = h
            .fall
            .as_ref()
            .map_or(Some(2), |r| self.count(r, &format!("{field}.fall"), 1, 100))
            .unwrap_or(2);
        HealthCheckSpec {
            kind,
            interval,
            timeout,
            rise,
            fall,
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
