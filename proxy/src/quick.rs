//! Quick mode (`dime-edge proxy --listen --to`): one route, `/` to one pool, no file.

use std::net::SocketAddr;
use std::path::Path;

use crate::config::compile::{compile, parse_backend_addr};
use crate::config::{ConfigErrors, EdgeConfig};

/// A token given on the command line, or the file that holds it.
#[derive(Clone, Copy)]
pub enum Token<'a> {
    /// `--purge-token TOKEN`: visible to anyone who can list processes.
    Value(&'a str),
    /// `--purge-token-file FILE`: its first line (a Kubernetes Secret, a systemd credential).
    File(&'a Path),
}

/// What the quick-mode flags asked for.
pub struct QuickMode<'a> {
    /// The HTTP listener.
    pub listen: &'a str,
    /// Backend addresses.
    pub to: &'a [String],
    /// The admin listener.
    pub admin: &'a str,
    /// The config API's token (`--admin-token`, `--admin-token-file`).
    pub admin_token: Option<Token<'a>>,
    /// The purge API's token (`--purge-token`, `--purge-token-file`).
    pub purge_token: Option<Token<'a>>,
}

/// The config fields quick mode sets from token flags: `(field, flag, file flag, token)`.
fn token_flags<'a>(q: &QuickMode<'a>) -> [(&'static str, &'static str, Option<Token<'a>>); 2] {
    [
        ("admin.token", "--admin-token", q.admin_token),
        ("cache.purge_token", "--purge-token", q.purge_token),
    ]
}

/// The flag as the operator gave it, to name it in an error: `--purge-token` or
/// `--purge-token-file FILE`.
fn given(flag: &str, token: Option<Token<'_>>) -> String {
    match token {
        Some(Token::File(p)) => format!("{flag}-file {}", p.display()),
        _ => flag.to_string(),
    }
}

/// The token itself: the flag's value, or the file's first line (without its newline).
fn read_token(flag: &str, token: Option<Token<'_>>) -> Result<Option<String>, String> {
    let path = match token {
        None => return Ok(None),
        Some(Token::Value(v)) => return Ok(Some(v.to_string())),
        Some(Token::File(p)) => p,
    };
    let bad = |why: String| format!("<command line>: {}: {why}", given(flag, token));
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let line = text.lines().next().unwrap_or("").trim_end();
    if line.is_empty() {
        return Err(bad(
            "the file's first line is empty: write the token there".into()
        ));
    }
    Ok(Some(line.to_string()))
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
        let a = parse_backend_addr(t).map_err(|why| bad("--to", t, why.to_string()))?;
        backends.push(format!("\"{a}\""));
    }
    let mut tables = String::new();
    for (field, flag, token) in token_flags(q) {
        if let Some(t) = read_token(flag, token)? {
            let (table, key) = field.split_once('.').unwrap_or(("", field));
            // A TOML string with the escapes the token needs.
            let value = toml::Value::String(t);
            tables.push_str(&format!("\n[{table}]\n{key} = {value}\n"));
        }
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
{tables}"#,
        listen = q.listen,
        admin = q.admin,
        backends = backends.join(", "),
    );
    compile("<command line>", &text).map_err(|e| flag_errors(q, &e))
}

/// The config's errors as the flags that caused them: quick mode has no file whose line and
/// field would help.
fn flag_errors(q: &QuickMode<'_>, errors: &ConfigErrors) -> String {
    let lines: Vec<String> = errors
        .0
        .iter()
        .map(|e| {
            match token_flags(q)
                .into_iter()
                .find(|(field, _, _)| *field == e.field)
            {
                Some((_, flag, token)) => {
                    format!("<command line>: {}: {}", given(flag, token), e.reason)
                }
                None => e.to_string(),
            }
        })
        .collect();
    lines.join("\n")
}
