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
    pub fn at(&self, span: Range<usize>, field: &str, reason: impl Into<String>) -> ConfigError {
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
    pub fn whole(&self, field: &str, reason: impl Into<String>) -> ConfigError {
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
    pub fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = e.message().trim().to_string();
        match e.span() {
            Some(span) => {
                let field = self.field_at(span.clone());
                self.at(span, &field, message)
            }
            None => self.whole("(file)", message),
        }
    }

    /// Best-effort dotted name of the key at `span`: the nearest `[table]` header above it
    /// plus the key itself, so `unknown field` errors say where the field is.
    fn field_at(&self, span: Range<usize>) -> String {
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |p| p + 1);
        let line = self.text[line_start..].lines().next().unwrap_or("").trim();
        let key = line
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"')
            .to_string();
        let header = self.text[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
        let key_is_header = line.starts_with('[');
        match (header, key_is_header) {
            (_, true) => line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string(),
            (Some(h), false) if !key.is_empty() => format!("{h}.{key}"),
            (Some(h), false) => h,
            (None, false) if !key.is_empty() => key,
            (None, false) => "(file)".to_string(),
        }
    }
}
