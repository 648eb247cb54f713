//! `${NAME}` in string values: replaced by the environment variable, so secrets and per-host
//! values need not sit in the file.

/// Why a string's `${...}` could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvError {
    /// `${NAME}` names a variable that is not set.
    Unset(String),
    /// `${` without a valid name and a closing `}`.
    Malformed(String),
}

impl std::fmt::Display for EnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvError::Unset(name) => write!(
                f,
                "environment variable {name} is not set (write $${{ for a literal ${{)"
            ),
            EnvError::Malformed(at) => write!(
                f,
                "malformed \"{at}\": write ${{NAME}} with letters, digits and '_', or $${{ for a literal ${{"
            ),
        }
    }
}

/// Expands `${NAME}` in `s` with `lookup`; `$${` is a literal `${`, and a `$` not followed by
/// `{` stays as written. `None` when `s` has nothing to expand, so callers keep borrowing.
pub fn expand(
    s: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, EnvError> {
    if !s.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}');
            let name = end.map(|e| &tail[..e]).unwrap_or("");
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let Some(end) = end.filter(|_| valid) else {
                let shown: String = after.chars().take(24).collect();
                return Err(EnvError::Malformed(shown));
            };
            match lookup(name) {
                Some(v) => out.push_str(&v),
                None => return Err(EnvError::Unset(name.to_string())),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(Some(out))
}

/// The process environment, for [`expand`]; a variable that is not UTF-8 counts as unset.
pub fn from_process(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("10.0.0.5".into()),
            "EMPTY" => Some(String::new()),
            "CREDENTIALS_DIRECTORY" => Some("/run/credentials/dime-edge.service".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_escapes_and_refuses() {
        let cases: &[(&str, Result<Option<&str>, EnvError>)] = &[
            ("plain", Ok(None)),
            ("cost $5", Ok(None)),
            ("${HOST}:8080", Ok(Some("10.0.0.5:8080"))),
            ("a${EMPTY}b", Ok(Some("ab"))),
            (
                "${CREDENTIALS_DIRECTORY}/purge-token",
                Ok(Some("/run/credentials/dime-edge.service/purge-token")),
            ),
            ("$${HOST} and ${HOST}", Ok(Some("${HOST} and 10.0.0.5"))),
            ("$$ and $x ${HOST}", Ok(Some("$$ and $x 10.0.0.5"))),
            ("${NOPE}", Err(EnvError::Unset("NOPE".into()))),
            ("${HOST", Err(EnvError::Malformed("${HOST".into()))),
            ("${}", Err(EnvError::Malformed("${}".into()))),
            ("${1X}", Err(EnvError::Malformed("${1X}".into()))),
            ("${A-B}", Err(EnvError::Malformed("${A-B}".into()))),
        ];
        for (input, want) in cases {
            let got = expand(input, env);
            let want = want.clone().map(|o| o.map(str::to_string));
            assert_eq!(got, want, "{input}");
        }
    }
}
