//! The process-wide sections: `[server]`, `[listen]`, `[admin]`, `[reload]` and `[log]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::super::file::{AdminSection, ConfigFile, LogSection, ReloadSection, ServerSection};
use super::super::loader;
use super::Compiler;
use crate::config::types::{
    AdminSettings, LogSettings, LogTarget, DEFAULT_ADMIN, DEFAULT_DEBOUNCE, DEFAULT_GRACE,
    DEFAULT_HEADER_TIMEOUT, DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS, DEFAULT_KEEPALIVE_REQUESTS,
    DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_REQUEST_HEADER_SIZE,
    DEFAULT_SEND_TIMEOUT, DEFAULT_UPGRADE_SOCK, MAX_DEBOUNCE, MAX_REQUEST_HEADER_SIZE,
};

/// `[server]`, validated: what binds at startup and what applies live.
pub(super) struct Server {
    pub(super) threads: usize,
    pub(super) grace_period: Duration,
    pub(super) upgrade_sock: PathBuf,
    pub(super) send_timeout: Duration,
    pub(super) max_connections: usize,
    pub(super) keepalive_timeout: Duration,
    pub(super) header_timeout: Duration,
    pub(super) keepalive_requests: u32,
    pub(super) max_request_header_size: u64,
    pub(super) http2_max_concurrent_streams: u32,
}

/// The validated listener addresses, in file order.
pub(super) struct Listeners {
    /// `listen.http`.
    pub(super) http: Vec<SocketAddr>,
    /// `listen.https`.
    pub(super) https: Vec<SocketAddr>,
}

impl Compiler<'_> {
    pub(super) fn server(&mut self, s: &ServerSection) -> Server {
        Server {
            threads: match &s.threads {
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
                Some(t) => self.count(t, "server.threads", 1, 1024).unwrap_or(1),
            },
            grace_period: self
                .duration(s.grace_period.as_ref(), "server.grace_period")
                .unwrap_or(DEFAULT_GRACE),
            upgrade_sock: match &s.upgrade_sock {
                Some(p) if p.get_ref().trim().is_empty() => {
                    self.err(
                        p.span(),
                        "server.upgrade_sock",
                        "must not be empty: write a path, e.g. \"/run/dime-edge/upgrade.sock\"",
                    );
                    PathBuf::from(DEFAULT_UPGRADE_SOCK)
                }
                Some(p) => self.path(p.get_ref()),
                None => PathBuf::from(DEFAULT_UPGRADE_SOCK),
            },
            send_timeout: self
                .duration(s.send_timeout.as_ref(), "server.send_timeout")
                .unwrap_or(DEFAULT_SEND_TIMEOUT),
            max_connections: s
                .max_connections
                .as_ref()
                .map_or(DEFAULT_MAX_CONNECTIONS, |n| {
                    self.count(n, "server.max_connections", 1, 10_000_000)
                        .unwrap_or(DEFAULT_MAX_CONNECTIONS)
                }),
            keepalive_timeout: self.keepalive_timeout(s),
            header_timeout: self.header_timeout(s),
            keepalive_requests: s.keepalive_requests.as_ref().map_or(
                DEFAULT_KEEPALIVE_REQUESTS,
                |n| {
                    self.count(n, "server.keepalive_requests", 1, 1_000_000_000)
                        .map_or(DEFAULT_KEEPALIVE_REQUESTS, |n| n as u32)
                },
            ),
            max_request_header_size: self.max_request_header_size(s),
            http2_max_concurrent_streams: s.http2_max_concurrent_streams.as_ref().map_or(
                DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
                |n| {
                    self.count(n, "server.http2_max_concurrent_streams", 1, 1_000_000)
                        .map_or(DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS, |n| n as u32)
                },
            ),
        }
    }

    /// `server.keepalive_timeout`: pingora keeps it in whole seconds, and 0 would mean never.
    fn keepalive_timeout(&mut self, s: &ServerSection) -> Duration {
        let field = "server.keepalive_timeout";
        let Some(written) = &s.keepalive_timeout else {
            return DEFAULT_KEEPALIVE_TIMEOUT;
        };
        match self.duration(Some(written), field) {
            Some(d) if d.subsec_nanos() == 0 => d,
            Some(_) => {
                self.err(
                    written.span(),
                    field,
                    "must be whole seconds (pingora counts this timeout in seconds), e.g. \"75s\"",
                );
                DEFAULT_KEEPALIVE_TIMEOUT
            }
            None => DEFAULT_KEEPALIVE_TIMEOUT,
        }
    }

    /// `server.max_request_header_size`: from 1 KiB (a request line and a few fields) up to
    /// what pingora reads of a header at all.
    fn max_request_header_size(&mut self, s: &ServerSection) -> u64 {
        let field = "server.max_request_header_size";
        let Some(written) = &s.max_request_header_size else {
            return DEFAULT_MAX_REQUEST_HEADER_SIZE;
        };
        match self.size(written, field) {
            Some(n) if (1 << 10..=MAX_REQUEST_HEADER_SIZE).contains(&n) => n,
            Some(n) => {
                self.err(
                    written.span(),
                    field,
                    format!(
                        "must be between 1KiB and 1MiB (pingora reads at most 1 MiB of header), got {n} bytes"
                    ),
                );
                DEFAULT_MAX_REQUEST_HEADER_SIZE
            }
            None => DEFAULT_MAX_REQUEST_HEADER_SIZE,
        }
    }

    /// `server.header_timeout`: at most pingora's own bound on a first request's reads.
    fn header_timeout(&mut self, s: &ServerSection) -> Duration {
        let field = "server.header_timeout";
        let Some(written) = &s.header_timeout else {
            return DEFAULT_HEADER_TIMEOUT;
        };
        match self.duration(Some(written), field) {
            Some(d) if d <= DEFAULT_HEADER_TIMEOUT => d,
            Some(_) => {
                self.err(
                    written.span(),
                    field,
                    "must be at most 60s (pingora closes a connection whose first request stalls for 60 s)",
                );
                DEFAULT_HEADER_TIMEOUT
            }
            None => DEFAULT_HEADER_TIMEOUT,
        }
    }

    pub(super) fn listeners(&mut self, file: &ConfigFile) -> Listeners {
        let mut http = Vec::new();
        for (i, l) in file.listen.http.iter().enumerate() {
            if let Some(addr) = self.listen_addr(l, &format!("listen.http[{i}]")) {
                if http.contains(&addr) {
                    self.err(l.span(), &format!("listen.http[{i}]"), "listed twice");
                }
                http.push(addr);
            }
        }
        let mut https = Vec::new();
        for (i, l) in file.listen.https.iter().enumerate() {
            let field = format!("listen.https[{i}]");
            if let Some(addr) = self.listen_addr(l, &field) {
                if https.contains(&addr) {
                    self.err(l.span(), &field, "listed twice");
                } else if http.contains(&addr) {
                    self.err(
                        l.span(),
                        &field,
                        format!(
                            "{addr} is also a plain HTTP listener; one address serves one protocol"
                        ),
                    );
                }
                https.push(addr);
            }
        }
        if file.listen.http.is_empty() && file.listen.https.is_empty() {
            self.errors.push(self.loc.whole(
                "listen.http",
                "at least one HTTP or HTTPS listener is required",
            ));
        }
        Listeners { http, https }
    }

    pub(super) fn admin_listener(&mut self, file: &ConfigFile, listen: &Listeners) -> SocketAddr {
        let admin_listener = match &file.listen.admin {
            Some(a) => self
                .listen_addr(a, "listen.admin")
                .unwrap_or_else(|| DEFAULT_ADMIN.parse().expect("constant address")),
            None => DEFAULT_ADMIN.parse().expect("constant address"),
        };
        if listen.http.contains(&admin_listener) || listen.https.contains(&admin_listener) {
            let span = file.listen.admin.as_ref().map_or(0..0, |a| a.span());
            self.err(
                span,
                "listen.admin",
                "the admin listener cannot share an HTTP or HTTPS listener's address",
            );
        }
        admin_listener
    }

    pub(super) fn debounce(&mut self, r: &ReloadSection) -> std::time::Duration {
        match &r.debounce {
            Some(d) => match self.duration(Some(d), "reload.debounce") {
                Some(x) if x <= MAX_DEBOUNCE => x,
                Some(_) => {
                    self.err(d.span(), "reload.debounce", "must be at most 10s");
                    DEFAULT_DEBOUNCE
                }
                None => DEFAULT_DEBOUNCE,
            },
            None => DEFAULT_DEBOUNCE,
        }
    }

    pub(super) fn log_settings(&mut self, l: &LogSection) -> LogSettings {
        LogSettings {
            access: self.log_target(l.access_log.as_ref(), "log.access_log"),
            error: self.log_target(l.error_log.as_ref(), "log.error_log"),
        }
    }

    /// A log destination: `stdout`, `stderr` or a file whose directory exists (the edge creates
    /// the file, not directories, as nginx does).
    pub(super) fn log_target(
        &mut self,
        written: Option<&Spanned<String>>,
        field: &str,
    ) -> LogTarget {
        let Some(w) = written else {
            return LogTarget::Stdout;
        };
        match w.get_ref().as_str() {
            "stdout" => return LogTarget::Stdout,
            "stderr" => return LogTarget::Stderr,
            "" => {
                self.err(
                    w.span(),
                    field,
                    "must not be empty: write a path, e.g. \"/var/log/dime/access.log\", or leave it out for stdout",
                );
                return LogTarget::Stdout;
            }
            _ => {}
        }
        let path = self.path(w.get_ref());
        if let Some(problem) = loader::log_file_problem(&path) {
            self.err(w.span(), field, problem);
        }
        LogTarget::File(path)
    }

    pub(super) fn admin_settings(&mut self, a: &AdminSection) -> AdminSettings {
        let (token, token_file) =
            self.secret(a.token.as_ref(), a.token_file.as_ref(), "admin", "token");
        AdminSettings { token, token_file }
    }

    pub(super) fn listen_addr(&mut self, v: &Spanned<String>, field: &str) -> Option<SocketAddr> {
        match v.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    v.span(),
                    field,
                    format!(
                        "unparsable address \"{}\": write IP:port, e.g. \"0.0.0.0:8080\" or \"[::]:8080\"",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }
}
