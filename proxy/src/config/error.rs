//! Configuration errors that name their place: file, line, column, field and reason.

use std::fmt;
use std::ops::Range;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigError {
    /// The file (or `<command line>`).
    pub file: String,
    /// 1-based line, 0 when the problem has no place in the file.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted path of the field, e.g. `pools.streamers.connect_timeout`.
    pub field: String,
    /// What is wrong and, where it helps, what would be right.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}: {}", self.file, self.field, self.reason)
        } else {
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file, self.line, self.column, self.field, self.reason
            )
        }
    }
}

/// Every problem found in one file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Turns byte offsets in one source text into errors with line and column.
pub(crate) struct Locator<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl Locator<'_> {
    /// An error at `span` of the source.
    pub(crate) fn at(
        &self,
        span: Range<usize>,
        field: &str,
        reason: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = self.line_col(span.start);
        ConfigError {
            file: self.file.to_string(),
            line,
            column,
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// An error about the file as a whole.
    pub(crate) fn whole(&self, field: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: 0,
            column: 0,
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text.as_bytes()[..offset];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1);
        let column = self.text[line_start..offset].chars().count() + 1;
        (line, column)
    }

    /// A TOML parse or type error, with the dotted field it happened in.
    pub(crate) fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = e.message().trim().to_string();
        match e.span() {
            Some(span) => {
                let field = self.field_at(span.clone());
                self.at(span, &field, message)
            }
            None => self.whole("(file)", message),
        }
    }

    /// Best-effort path of the key at `span`, for syntax errors (which stop before the tree
    /// that names fields exactly exists): the nearest `[table]` header above it, with an index
    /// for arrays of tables (`routes[1].cache`), plus the key itself.
    fn field_at(&self, span: Range<usize>) -> String {
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |p| p + 1);
        let line = self.text[line_start..].lines().next().unwrap_or("").trim();
        if line.starts_with('[') {
            let line_end = self.text[line_start..]
                .find('\n')
                .map_or(self.text.len(), |e| line_start + e);
            return indexed_header(line, &self.text[..line_end]);
        }
        let key = line
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"')
            .to_string();
        let above = &self.text[..line_start];
        let header = above
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| indexed_header(l, above));
        match header {
            Some(h) if !key.is_empty() => format!("{h}.{key}"),
            Some(h) => h,
            None if !key.is_empty() => key,
            None => "(file)".to_string(),
        }
    }
}

impl ConfigError {
    /// The line `check` prints for a warning: like an error, with `warning:` after the place.
    pub fn as_warning(&self) -> String {
        if self.line == 0 {
            format!("{}: warning: {}: {}", self.file, self.field, self.reason)
        } else {
            format!(
                "{}:{}:{}: warning: {}: {}",
                self.file, self.line, self.column, self.field, self.reason
            )
        }
    }
}

/// The path a `[a.b]` or `[[a]]` header line opens, with the index of each array of tables
/// it is inside: `[routes.cache]` after the second `[[routes]]` is `routes[1].cache`. `above`
/// is the text up to and including the header.
fn indexed_header(line: &str, above: &str) -> String {
    let inner = line
        .split('#')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches(|c| c == '[' || c == ']')
        .trim();
    let segs: Vec<&str> = inner.split('.').map(str::trim).collect();
    let mut out = String::new();
    for (i, seg) in segs.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(seg);
        let array_header = format!("[[{}]]", segs[..=i].join("."));
        let count = above
            .lines()
            .filter(|l| l.trim().starts_with(&array_header))
            .count();
        if count > 0 {
            out.push_str(&format!("[{}]", count - 1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_name_the_indexed_route_table() {
        let text = "[[routes]]\npath = \"/a/\"\n[[routes]]\npath = \"/b/\"\n[routes.cache]\nmedia_ttl = \"1h\n";
        let loc = Locator {
            file: "edge.toml",
            text,
        };
        let at = text.find("media_ttl").unwrap();
        assert_eq!(loc.field_at(at..at + 1), "routes[1].cache.media_ttl");
        let at = text.rfind("[[routes]]").unwrap();
        assert_eq!(loc.field_at(at..at + 1), "routes[1]");
    }
}
