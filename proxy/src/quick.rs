//! Quick mode (`dime-edge proxy --listen --to`): one route, `/` to one pool, no file.

use std::net::SocketAddr;

use crate::config::compile::{compile, parse_backend_addr};
use crate::config::{ConfigErrors, EdgeConfig};

/// What the quick-mode flags asked for.
pub struct QuickMode<'a> {
    /// The HTTP listener.
    pub listen: &'a str,
    /// Backend addresses.
    pub to: &'a [String],
    /// The admin listener.
    pub admin: &'a str,
}

/// Builds the same validated config a file would give, so quick mode is a full edge.
pub fn config(q: &QuickMode<'_>) -> Result<EdgeConfig, String> {
    let bad = |flag: &str, v: &str, why: String| format!("<command line>: {flag} {v}: {why}");
    q.listen.parse::<SocketAddr>().map_err(|_| {
        bad(
            "--listen",
            q.listen,
            "unparsable address: write IP:port, e.g. 0.0.0.0:8080".into(),
        )
    })?;
    q.admin.parse::<SocketAddr>().map_err(|_| {
        bad(
            "--admin",
            q.admin,
            "unparsable address: write IP:port, e.g. 127.0.0.1:9090".into(),
        )
    })?;
    if q.to.is_empty() {
        return Err("<command line>: --to: at least one backend is required".into());
    }
    let mut backends = Vec::new();
    for t in q.to {
        let a = parse_backend_addr(t).map_err(|why| bad("--to", t, why))?;
        backends.push(format!("\"{a}\""));
    }
    let text = format!(
        r#"
[listen]
http = ["{listen}"]
admin = "{admin}"

[pools.upstream]
backends = [{backends}]

[pools.upstream.health_check]
type = "tcp"
interval = "2s"

[[routes]]
name = "default"
path = "/"
pool = "upstream"
"#,
        listen = q.listen,
        admin = q.admin,
        backends = backends.join(", "),
    );
    compile("<command line>", &text).map_err(|e: ConfigErrors| e.to_string())
}
