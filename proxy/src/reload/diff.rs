//! What a reload changes: the lines its outcome reports, and the settings only a restart can
//! change (held at their running values and reported, never silently ignored).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::active::PoolChanges;
use crate::config::EdgeConfig;

/// The settings bound when the process started: listening sockets, worker threads, the
/// shutdown grace period and the cache's memory and lock table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartSettings {
    http_listeners: Vec<SocketAddr>,
    https_listeners: Vec<SocketAddr>,
    upgrade_sock: PathBuf,
    admin_listener: SocketAddr,
    threads: usize,
    grace_period: Duration,
    cache_memory: u64,
    cache_fill_memory: u64,
    cache_lock_timeout: Duration,
}

impl RestartSettings {
    /// The restart-only settings of `config`.
    pub fn of(config: &EdgeConfig) -> Self {
        RestartSettings {
            http_listeners: config.http_listeners.clone(),
            https_listeners: config.https_listeners.clone(),
            upgrade_sock: config.server.upgrade_sock.clone(),
            admin_listener: config.admin_listener,
            threads: config.server.threads,
            grace_period: config.server.grace_period,
            cache_memory: config.cache.memory,
            cache_fill_memory: config.cache.fill_memory,
            cache_lock_timeout: config.cache.lock_timeout,
        }
    }

    /// Puts the running values back into `next` wherever it differs, and says what differed:
    /// `listen.http changed from [a] to [b]`.
    pub fn hold(&self, next: &mut EdgeConfig) -> Vec<String> {
        let mut held = Vec::new();
        let mut note = |field: &str, running: String, wanted: String| {
            held.push(format!("{field} changed from {running} to {wanted}"));
        };
        if next.http_listeners != self.http_listeners {
            note(
                "listen.http",
                list(&self.http_listeners),
                list(&next.http_listeners),
            );
            next.http_listeners = self.http_listeners.clone();
        }
        if next.https_listeners != self.https_listeners {
            note(
                "listen.https",
                list(&self.https_listeners),
                list(&next.https_listeners),
            );
            next.https_listeners = self.https_listeners.clone();
        }
        if next.server.upgrade_sock != self.upgrade_sock {
            note(
                "server.upgrade_sock",
                self.upgrade_sock.display().to_string(),
                next.server.upgrade_sock.display().to_string(),
            );
            next.server.upgrade_sock = self.upgrade_sock.clone();
        }
        if next.admin_listener != self.admin_listener {
            note(
                "listen.admin",
                self.admin_listener.to_string(),
                next.admin_listener.to_string(),
            );
            next.admin_listener = self.admin_listener;
        }
        if next.server.threads != self.threads {
            note(
                "server.threads",
                self.threads.to_string(),
                next.server.threads.to_string(),
            );
            next.server.threads = self.threads;
        }
        if next.server.grace_period != self.grace_period {
            note(
                "server.grace_period",
                format!("{:?}", self.grace_period),
                format!("{:?}", next.server.grace_period),
            );
            next.server.grace_period = self.grace_period;
        }
        if next.cache.memory != self.cache_memory {
            note(
                "cache.memory",
                format!("{} bytes", self.cache_memory),
                format!("{} bytes", next.cache.memory),
            );
            next.cache.memory = self.cache_memory;
        }
        if next.cache.fill_memory != self.cache_fill_memory {
            note(
                "cache.fill_memory",
                format!("{} bytes", self.cache_fill_memory),
                format!("{} bytes", next.cache.fill_memory),
            );
            next.cache.fill_memory = self.cache_fill_memory;
        }
        if next.cache.lock_timeout != self.cache_lock_timeout {
            note(
                "cache.lock_timeout",
                format!("{:?}", self.cache_lock_timeout),
                format!("{:?}", next.cache.lock_timeout),
            );
            next.cache.lock_timeout = self.cache_lock_timeout;
        }
        held
    }
}

fn list(addrs: &[SocketAddr]) -> String {
    let items: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// One line per route added, removed or changed, per pool created, dropped or given new
/// backends, and per live setting changed; empty when nothing that applies live changed.
pub fn describe(old: &EdgeConfig, new: &EdgeConfig, pools: &PoolChanges) -> Vec<String> {
    let mut out = Vec::new();
    for r in &new.routes {
        match old.routes.iter().find(|o| o.name == r.name) {
            None => out.push(format!("route {} added (pool {})", r.name, r.pool)),
            Some(o) if format!("{o:?}") != format!("{r:?}") => {
                if o.pool != r.pool {
                    out.push(format!(
                        "route {} changed (pool {} -> {})",
                        r.name, o.pool, r.pool
                    ));
                } else {
                    out.push(format!("route {} changed", r.name));
                }
            }
            Some(_) => {}
        }
    }
    for o in &old.routes {
        if !new.routes.iter().any(|r| r.name == o.name) {
            out.push(format!("route {} removed", o.name));
        }
    }
    for name in &pools.created {
        let how = if old.pool(name).is_some() {
            "rebuilt (selection or health check changed; backends checked before traffic)"
        } else {
            "added"
        };
        out.push(format!("pool {name} {how}"));
    }
    for (name, change) in &pools.kept {
        let mut parts = Vec::new();
        let join = |v: &[SocketAddr]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        if !change.added.is_empty() {
            parts.push(format!("+{}", join(&change.added).join(" +")));
        }
        if !change.removed.is_empty() {
            parts.push(format!("-{}", join(&change.removed).join(" -")));
        }
        if !change.reweighted.is_empty() {
            parts.push(format!("reweighted {}", join(&change.reweighted).join(" ")));
        }
        let settings_changed = match (old.pool(name), new.pool(name)) {
            (Some(o), Some(n)) => {
                let strip = |p: &crate::config::PoolSpec| {
                    let mut p = p.clone();
                    p.backends.clear();
                    format!("{p:?}")
                };
                strip(o) != strip(n)
            }
            _ => false,
        };
        if settings_changed {
            parts.push("settings changed".into());
        }
        if !parts.is_empty() {
            out.push(format!("pool {name}: {}", parts.join(", ")));
        }
    }
    for name in &pools.dropped {
        out.push(format!("pool {name} removed (requests in flight finish)"));
    }
    if old.cache.purge_token != new.cache.purge_token {
        out.push("cache.purge_token changed".into());
    }
    if old.admin.token != new.admin.token {
        out.push("admin.token changed".into());
    }
    if old.debounce != new.debounce {
        out.push(format!("reload.debounce changed to {:?}", new.debounce));
    }
    if old.watch != new.watch {
        out.push(format!("reload.watch changed to {}", new.watch));
    }
    out
}
