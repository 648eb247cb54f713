//! The active configuration as `GET /config` shows it: the file's settings with every secret
//! replaced by `"[redacted]"`.

use toml::{Table, Value};

/// What a redacted value reads.
pub const REDACTED: &str = "[redacted]";

/// Dotted fields whose values are secrets. Paths to secret files (a TLS key) may be shown;
/// the contents of such files never are, since only the config text is rendered.
pub const SECRET_FIELDS: &[&str] = &["admin.token", "cache.purge_token"];

/// Header names whose values a route may set towards the origin and that carry credentials.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
];

/// The config `text` as TOML with secrets redacted. Comments are dropped on purpose: they are
/// free text and may hold anything.
pub fn redacted_toml(text: &str) -> Result<String, toml::de::Error> {
    let mut table: Table = toml::from_str(text)?;
    for field in SECRET_FIELDS {
        let mut parts = field.split('.').peekable();
        let mut here = &mut table;
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                if let Some(v) = here.get_mut(part) {
                    *v = Value::String(REDACTED.into());
                }
                break;
            }
            match here.get_mut(part) {
                Some(Value::Table(t)) => here = t,
                _ => break,
            }
        }
    }
    if let Some(Value::Array(routes)) = table.get_mut("routes") {
        for route in routes.iter_mut() {
            let Some(Value::Table(headers)) = route.get_mut("upstream_headers") else {
                continue;
            };
            for (name, value) in headers.iter_mut() {
                if SECRET_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                    *value = Value::String(REDACTED.into());
                }
            }
        }
    }
    Ok(table.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_credential_headers_are_replaced_and_the_rest_kept() {
        let text = r#"
# a comment with a secret: hunter2hunter2hunter2
[admin]
token = "admin-secret-0123456789"
[cache]
purge_token = "purge-secret-0123456789"
memory = "1GiB"
[[routes]]
path = "/"
pool = "p"
upstream_headers = { Authorization = "Bearer origin-secret", X-Tenant = "blue" }
"#;
        let out = redacted_toml(text).unwrap();
        for secret in ["admin-secret", "purge-secret", "origin-secret", "hunter2"] {
            assert!(!out.contains(secret), "{secret} leaked:\n{out}");
        }
        assert!(out.contains("memory = \"1GiB\""), "{out}");
        assert!(out.contains("X-Tenant = \"blue\""), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 3, "{out}");
    }
}
