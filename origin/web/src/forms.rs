//! Admin form fields and their validation into catalog fields, with one message per field.

use serde::Deserialize;

use crate::catalog::{ChannelFields, TitleFields};
use crate::media::is_absolute_url;

/// The fields of the title form, as posted.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct TitleForm {
    /// Display title.
    #[serde(default)]
    pub title: String,
    /// URL name; derived from the title when left empty.
    #[serde(default)]
    pub slug: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Poster location (optional).
    #[serde(default)]
    pub poster: String,
    /// Running time: seconds, `m:ss` or `h:mm:ss` (optional).
    #[serde(default)]
    pub duration: String,
    /// HLS playlist location.
    #[serde(default)]
    pub stream_url: String,
}

/// The fields of the channel form, as posted.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct ChannelForm {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// URL name; derived from the name when left empty.
    #[serde(default)]
    pub slug: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Poster location (optional).
    #[serde(default)]
    pub poster: String,
    /// Live HLS playlist location.
    #[serde(default)]
    pub stream_url: String,
}

/// One problem with one field: what the form shows next to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// The form field's name.
    pub field: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Longest slug accepted.
const MAX_SLUG: usize = 80;
/// Longest title or name accepted.
const MAX_NAME: usize = 200;
/// Longest description accepted.
const MAX_DESCRIPTION: usize = 5000;
/// Longest stream or poster location accepted.
const MAX_LOCATION: usize = 2000;

/// A URL name from free text: lower-case ASCII letters and digits joined by single dashes.
pub fn slugify(text: &str) -> String {
    let mut slug = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    slug.chars()
        .take(MAX_SLUG)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned()
}

/// Whether `slug` is a valid URL name: `[a-z0-9]` runs joined by single dashes.
pub fn valid_slug(slug: &str) -> bool {
    (1..=MAX_SLUG).contains(&slug.len())
        && slug.split('-').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

/// Checks a stream or poster location: an http(s) URL, or a path relative to the media base
/// that cannot climb out of it.
pub fn check_location(location: &str) -> Result<(), String> {
    if location.len() > MAX_LOCATION {
        return Err(format!("too long (at most {MAX_LOCATION} characters)"));
    }
    if location
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("must not contain spaces or control characters".to_owned());
    }
    if is_absolute_url(location) {
        return Ok(());
    }
    // A colon before the first slash reads as a URL scheme (javascript:, data:, ftp://).
    if location.contains("://")
        || location
            .split('/')
            .next()
            .is_some_and(|first| first.contains(':'))
    {
        return Err("only http:// and https:// URLs are allowed".to_owned());
    }
    if location.starts_with('/') {
        return Err(
            "a relative path under the media base, e.g. vod/sample/index.m3u8, without a leading /"
                .to_owned(),
        );
    }
    if location
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
    {
        return Err("must not contain . or .. segments".to_owned());
    }
    if location.contains('\\') {
        return Err("must use / between path segments".to_owned());
    }
    Ok(())
}

/// Parses a running time: seconds (`90`, `90.5`), `m:ss` or `h:mm:ss`; empty means unknown.
pub fn parse_duration(text: &str) -> Result<Option<i64>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        format!("`{text}` is not a duration: use seconds (90), m:ss (1:30) or h:mm:ss (1:02:03)")
    };
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() > 3 {
        return Err(invalid());
    }
    let (last, leading) = parts.split_last().ok_or_else(invalid)?;
    let seconds: f64 = last.parse().map_err(|_| invalid())?;
    if !seconds.is_finite() || seconds < 0.0 || (!leading.is_empty() && seconds >= 60.0) {
        return Err(invalid());
    }
    let mut total_ms = (seconds * 1000.0).round() as i64;
    let mut unit_ms = 60_000i64;
    for part in leading.iter().rev() {
        let value: i64 = part.parse().map_err(|_| invalid())?;
        if value < 0 || (unit_ms == 60_000 && leading.len() == 2 && value >= 60) {
            return Err(invalid());
        }
        // Checked: `9999999999999:00:00` is no duration, not an overflow.
        total_ms = value
            .checked_mul(unit_ms)
            .and_then(|ms| ms.checked_add(total_ms))
            .ok_or_else(invalid)?;
        unit_ms *= 60;
    }
    Ok(Some(total_ms))
}

/// An optional text field: empty means absent.
fn optional(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Checks the fields every catalog form shares; appends problems to `errors`.
fn check_common(
    name_field: &'static str,
    name: &str,
    slug: &str,
    description: &str,
    poster: Option<&str>,
    stream_url: &str,
    errors: &mut Vec<FieldError>,
) {
    let mut push = |field, message: String| errors.push(FieldError { field, message });
    if name.is_empty() {
        push(name_field, "required".to_owned());
    } else if name.chars().count() > MAX_NAME {
        push(
            name_field,
            format!("too long (at most {MAX_NAME} characters)"),
        );
    }
    if !valid_slug(slug) {
        push(
            "slug",
            format!("`{slug}` is not a slug: use lower-case letters, digits and single dashes, at most {MAX_SLUG} characters"),
        );
    }
    if description.chars().count() > MAX_DESCRIPTION {
        push(
            "description",
            format!("too long (at most {MAX_DESCRIPTION} characters)"),
        );
    }
    if let Some(poster) = poster {
        if let Err(message) = check_location(poster) {
            push("poster", message);
        }
    }
    if stream_url.is_empty() {
        push(
            "stream_url",
            "required, e.g. vod/sample/index.m3u8".to_owned(),
        );
    } else if let Err(message) = check_location(stream_url) {
        push("stream_url", message);
    }
}

/// The fields every catalog form shares, trimmed: what [`common_fields`] hands back.
struct Common {
    name: String,
    slug: String,
    description: String,
    poster: Option<String>,
    stream_url: String,
}

/// Trims the shared fields (the slug derived from the name when left empty) and checks them;
/// appends problems to `errors`.
fn common_fields(
    name_field: &'static str,
    name: &str,
    slug: &str,
    description: &str,
    poster: &str,
    stream_url: &str,
    errors: &mut Vec<FieldError>,
) -> Common {
    let name = name.trim();
    let slug = match slug.trim() {
        "" => slugify(name),
        given => given.to_owned(),
    };
    let poster = optional(poster);
    let stream_url = stream_url.trim();
    check_common(
        name_field,
        name,
        &slug,
        description,
        poster.as_deref(),
        stream_url,
        errors,
    );
    Common {
        name: name.to_owned(),
        slug,
        description: description.trim().to_owned(),
        poster,
        stream_url: stream_url.to_owned(),
    }
}

impl TitleForm {
    /// The catalog fields this form describes, or every problem found.
    pub fn validate(&self) -> Result<TitleFields, Vec<FieldError>> {
        let mut errors = Vec::new();
        let common = common_fields(
            "title",
            &self.title,
            &self.slug,
            &self.description,
            &self.poster,
            &self.stream_url,
            &mut errors,
        );
        let duration_ms = parse_duration(&self.duration).unwrap_or_else(|message| {
            errors.push(FieldError {
                field: "duration",
                message,
            });
            None
        });
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(TitleFields {
            slug: common.slug,
            title: common.name,
            description: common.description,
            poster: common.poster,
            duration_ms,
            stream_url: common.stream_url,
        })
    }
}

impl ChannelForm {
    /// The catalog fields this form describes, or every problem found.
    pub fn validate(&self) -> Result<ChannelFields, Vec<FieldError>> {
        let mut errors = Vec::new();
        let common = common_fields(
            "name",
            &self.name,
            &self.slug,
            &self.description,
            &self.poster,
            &self.stream_url,
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ChannelFields {
            slug: common.slug,
            name: common.name,
            description: common.description,
            poster: common.poster,
            stream_url: common.stream_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_come_from_titles() {
        assert_eq!(slugify("Big Buck Bunny (2008)"), "big-buck-bunny-2008");
        assert_eq!(slugify("  --Hello__World--  "), "hello-world");
        assert_eq!(slugify("日本"), "");
        assert!(valid_slug("big-buck-bunny"));
        assert!(!valid_slug("Big"));
        assert!(!valid_slug("a--b"));
        assert!(!valid_slug("-a"));
    }

    #[test]
    fn locations_stay_under_the_media_base_or_are_http_urls() {
        assert!(check_location("vod/sample/index.m3u8").is_ok());
        assert!(check_location("https://cdn.example/a.m3u8").is_ok());
        assert!(check_location("/etc/passwd").is_err());
        assert!(check_location("vod/../../secret").is_err());
        assert!(check_location("javascript:alert(1)").is_err());
        assert!(check_location("ftp://host/a").is_err());
        assert!(check_location("a b").is_err());
    }

    #[test]
    fn durations_accept_seconds_and_clock_forms() {
        assert_eq!(parse_duration(""), Ok(None));
        assert_eq!(parse_duration("90"), Ok(Some(90_000)));
        assert_eq!(parse_duration("1:30"), Ok(Some(90_000)));
        assert_eq!(parse_duration("1:02:03"), Ok(Some(3_723_000)));
        assert_eq!(parse_duration("12.5"), Ok(Some(12_500)));
        assert!(parse_duration("1:75").is_err());
        assert!(parse_duration("1:75:00").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-3").is_err());
        // Found by make fuzz (forms): these overflowed i64 milliseconds and panicked.
        assert!(parse_duration("9999999999999999:00:00").is_err());
        assert!(parse_duration("153722867280912:59").is_err());
        assert!(parse_duration("1:9e300").is_err());
    }

    #[test]
    fn a_title_form_reports_every_bad_field() {
        let form = TitleForm {
            title: String::new(),
            slug: "Bad Slug".to_owned(),
            duration: "later".to_owned(),
            stream_url: "/abs".to_owned(),
            ..TitleForm::default()
        };
        let fields: Vec<_> = form
            .validate()
            .unwrap_err()
            .iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["title", "slug", "stream_url", "duration"]);
    }
}
