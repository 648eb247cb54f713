//! The compiler: turns the file as written into the validated form, one file per section,
//! reporting every error at once. Reading files and resolving names is the loader's
//! (`config::loader`), so this code only validates.

mod cache;
mod listen;
mod pools;
mod routes;
mod tls;

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::{ConfigError, ConfigErrors, Locator};
use super::file::{ConfigFile, DurationText};
pub use super::loader::{load, parse_backend_addr};
pub use super::types::*;

/// What compiling a config looks up outside its text.
pub struct Lookups<'a> {
    /// `${NAME}` in string values: the variable's value, `None` when it is not set.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// A backend's well-formed `name:port`: its addresses (the first one is used).
    pub resolve: &'a dyn Fn(&str) -> std::io::Result<Vec<SocketAddr>>,
}

impl Lookups<'static> {
    /// The process's environment and the system's resolver: what the edge compiles with.
    pub const PROCESS: Lookups<'static> = Lookups {
        env: &super::env::from_process,
        resolve: &super::loader::resolve_system,
    };
}

/// Compiles configuration text; `source` names it in errors. `${NAME}` in string values is
/// replaced by the process's environment variable, and backend names are resolved by the
/// system's resolver.
pub fn compile(source: &str, text: &str) -> Result<EdgeConfig, ConfigErrors> {
    compile_with(source, text, &Lookups::PROCESS)
}

/// [`compile`] with `${NAME}`s and backend names looked up through `lookups` (a fuzzer must
/// not send a DNS query for each name it makes up).
pub fn compile_with(
    source: &str,
    text: &str,
    lookups: &Lookups<'_>,
) -> Result<EdgeConfig, ConfigErrors> {
    let loc = Locator { file: source, text };
    let mut errors = Vec::new();
    let Some(parsed) = super::parse::parse(&loc, lookups.env, &mut errors) else {
        errors.sort_by_key(|e| (e.line, e.column));
        return Err(ConfigErrors(errors));
    };
    let mut c = Compiler {
        loc,
        resolve: lookups.resolve,
        errors: Vec::new(),
    };
    let mut config = c.config(parsed.file);
    // A key with a parse error was left out; what validation says about its absence is
    // noise on top of the error that names it.
    c.errors
        .retain(|e| !super::parse::is_consequence(e, &parsed.removed));
    errors.append(&mut c.errors);
    if errors.is_empty() {
        config.text = text.to_string();
        Ok(config)
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(errors))
    }
}

struct Compiler<'a> {
    loc: Locator<'a>,
    resolve: &'a dyn Fn(&str) -> std::io::Result<Vec<SocketAddr>>,
    errors: Vec<ConfigError>,
}

impl Compiler<'_> {
    fn err(&mut self, span: Range<usize>, field: &str, reason: impl Into<String>) {
        let e = self.loc.at(span, field, reason);
        self.errors.push(e);
    }

    fn config(&mut self, file: ConfigFile) -> EdgeConfig {
        let server = self.server(&file.server);
        let listen = self.listeners(&file);
        let certificates = self.certificates(&file.tls);
        self.tls_needs_https(&file, &listen, &certificates);
        let admin_listener = self.admin_listener(&file, &listen);
        let pools: Vec<PoolSpec> = file
            .pools
            .iter()
            .filter_map(|(name, p)| self.pool(name, p))
            .collect();
        let routes = self.routes(&file, &listen);
        let warnings = self.misplaced_cache_tables(&file.routes, &routes);
        let cache = self.cache_settings(&file.cache);
        let admin = self.admin_settings(&file.admin);
        let log = self.log_settings(&file.log);
        let debounce = self.debounce(&file.reload);
        EdgeConfig {
            source: self.loc.file.to_string(),
            file: None,
            text: String::new(),
            restart: RestartSettings {
                http_listeners: listen.http,
                https_listeners: listen.https,
                upgrade_sock: server.upgrade_sock,
                admin_listener,
                threads: server.threads,
                grace_period: server.grace_period,
                cache_memory: cache.memory,
                cache_fill_memory: cache.fill_memory,
                cache_lock_timeout: cache.lock_timeout,
                http2_max_concurrent_streams: server.http2_max_concurrent_streams,
                http2_idle_timeout: server.keepalive_timeout,
            },
            admin,
            watch: file.reload.watch.unwrap_or(true),
            debounce,
            server: ServerSettings {
                send_timeout: server.send_timeout,
                max_connections: server.max_connections,
                keepalive_timeout: server.keepalive_timeout,
                header_timeout: server.header_timeout,
                keepalive_requests: server.keepalive_requests,
                max_request_header_size: server.max_request_header_size,
            },
            certificates,
            pools,
            routes,
            cache: cache.live,
            warnings,
            log,
        }
    }

    /// A path from the file (certificates, CA bundles), relative to the file's directory, so
    /// the config means the same whatever directory the edge starts in.
    fn path(&self, p: &str) -> PathBuf {
        resolve_path(Some(Path::new(self.loc.file)), p)
    }

    /// A token written inline (`KEY`) or read from a file (`KEY_file`, by the loader), at
    /// least 16 characters.
    fn secret(
        &mut self,
        inline: Option<&Spanned<String>>,
        file: Option<&Spanned<String>>,
        section: &str,
        key: &str,
    ) -> (Option<String>, Option<PathBuf>) {
        let file_field = format!("{section}.{key}_file");
        let (token, span, field, path) = match (inline, file) {
            (Some(_), Some(f)) => {
                self.err(
                    f.span(),
                    &file_field,
                    format!("set {key} or {key}_file, not both"),
                );
                return (None, None);
            }
            (Some(t), None) => (
                t.get_ref().clone(),
                t.span(),
                format!("{section}.{key}"),
                None,
            ),
            (None, Some(f)) => {
                let path = self.path(f.get_ref());
                let token = match super::loader::secret(&path) {
                    Ok(token) => token,
                    Err(e) => {
                        self.err(f.span(), &file_field, e.to_string());
                        return (None, Some(path));
                    }
                };
                (token, f.span(), file_field, Some(path))
            }
            (None, None) => return (None, None),
        };
        if token.len() < 16 {
            self.err(span, &field, "too short: use at least 16 characters");
            return (None, path);
        }
        (Some(token), path)
    }

    fn duration(&mut self, v: Option<&Spanned<DurationText>>, field: &str) -> Option<Duration> {
        let v = v?;
        let text = v.get_ref().as_str();
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.err(
                    v.span(),
                    field,
                    "invalid duration: must be greater than zero",
                );
                None
            }
            Ok(d) if d > MAX_DURATION => {
                self.err(v.span(), field, "invalid duration: must be at most 24h");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(
                    v.span(),
                    field,
                    format!("invalid duration \"{text}\" ({e}): write a number and a unit, e.g. \"500ms\", \"2s\", \"1m\""),
                );
                None
            }
        }
    }

    fn count(&mut self, v: &Spanned<i64>, field: &str, min: i64, max: i64) -> Option<usize> {
        let n = *v.get_ref();
        if (min..=max).contains(&n) {
            Some(n as usize)
        } else {
            self.err(
                v.span(),
                field,
                format!("must be between {min} and {max}, got {n}"),
            );
            None
        }
    }
}

/// Parses a byte size: `"4GiB"`, `"512MiB"`, `"100MB"`, `"64KiB"` or plain bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "[listen]\nhttp = [\"127.0.0.1:8080\"]\n[pools.p]\nbackends = [\"127.0.0.1:8081\"]\n";

    fn warnings(routes: &str) -> Vec<String> {
        let c = compile("edge.toml", &format!("{HEAD}{routes}")).unwrap();
        c.warnings.iter().map(ConfigError::as_warning).collect()
    }

    #[test]
    fn a_video_table_on_the_catch_all_is_flagged_only_when_another_route_lacks_one() {
        let misplaced = "[[routes]]\npath = \"/stream/\"\npool = \"p\"\n[[routes]]\npath = \"/\"\npool = \"p\"\n[routes.cache]\nmode = \"video\"\n";
        let w = warnings(misplaced);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("edge.toml:11:1: warning: routes[1].cache: "),
            "{w:?}"
        );
        // Inline on the catch-all: the warning points at the inline table.
        let inline = "[[routes]]\npath = \"/stream/\"\npool = \"p\"\n[[routes]]\npath = \"/\"\npool = \"p\"\ncache = { mode = \"video\" }\n";
        let w = warnings(inline);
        assert!(
            w[0].starts_with("edge.toml:11:9: warning: routes[1].cache: "),
            "{w:?}"
        );
        for fine in [
            // The other route has its own table: the catch-all's video mode is deliberate.
            "[[routes]]\npath = \"/stream/\"\npool = \"p\"\n[routes.cache]\nmode = \"rfc\"\n[[routes]]\npath = \"/\"\npool = \"p\"\n[routes.cache]\nmode = \"video\"\n",
            // A video table on a specific route.
            "[[routes]]\npath = \"/stream/\"\npool = \"p\"\n[routes.cache]\nmode = \"video\"\n[[routes]]\npath = \"/\"\npool = \"p\"\n",
            // The catch-all alone.
            "[[routes]]\npath = \"/\"\npool = \"p\"\n[routes.cache]\nmode = \"video\"\n",
        ] {
            assert_eq!(warnings(fine), Vec::<String>::new(), "{fine}");
        }
    }
}
