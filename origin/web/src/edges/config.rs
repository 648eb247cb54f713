//! The `--edges` file: the edges, the regions with their client prefixes and fallback order,
//! and the poller's timing, checked into a [`FleetConfig`] with every error's file, line and field.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::client_address::Cidr;

/// How often each edge is polled unless `[poll] interval` says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// How long one poll request may take unless `[poll] timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Failed polls in a row that take a healthy edge down.
pub const DEFAULT_FALL: u32 = 2;
/// Successful polls in a row that bring a down edge back.
pub const DEFAULT_RISE: u32 = 1;

/// One edge node, as viewers and the poller reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSpec {
    /// Unique name, e.g. `eu-1`.
    pub name: String,
    /// The region it stands in (a key of `[regions]`).
    pub region: String,
    /// What viewers put in front of a stream path, ending in `/`: `https://eu-1.cdn.example/stream/`.
    pub url: String,
    /// Its admin listener, without a trailing `/`: `http://10.99.0.2:9090`.
    pub admin: String,
}

/// One region: the fallback order viewers from it get after its own edges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionSpec {
    /// Name, e.g. `eu`.
    pub name: String,
    /// Other regions, nearest first.
    pub fallback: Vec<String>,
}

/// How the poller runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSpec {
    /// Time between two polls of one edge.
    pub interval: Duration,
    /// Bound on each request (connect included).
    pub timeout: Duration,
    /// Successes in a row that bring a down edge up.
    pub rise: u32,
    /// Failures in a row that take an up edge down.
    pub fall: u32,
}

impl Default for PollSpec {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
        }
    }
}

/// A checked `--edges` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// Every edge, in file order (the last tie-breaker of the ranking).
    pub edges: Vec<EdgeSpec>,
    /// Every region, by name.
    pub regions: BTreeMap<String, RegionSpec>,
    /// Client prefix to region, longest prefix first.
    pub prefixes: Vec<(Cidr, String)>,
    /// The region of clients no prefix matches.
    pub default_region: String,
    /// The poller's timing.
    pub poll: PollSpec,
}

/// One problem in the file: `FILE:LINE:COLUMN: FIELD: REASON`, as `dime-edge check` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgesError {
    /// The file as given.
    pub file: String,
    /// 1-based line; 0 when the problem has no place (the file cannot be read).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted path of the field, e.g. `edges[1].admin`.
    pub field: String,
    /// What is wrong and what would be right.
    pub reason: String,
}

impl fmt::Display for EdgesError {
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

/// Every problem found in the file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct EdgesErrors(pub Vec<EdgesError>);

impl fmt::Display for EdgesErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid --edges file:")?;
        for error in &self.0 {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoot {
    default_region: Spanned<String>,
    #[serde(default)]
    poll: Option<PollSection>,
    regions: Spanned<BTreeMap<Spanned<String>, Spanned<RegionSection>>>,
    edges: Spanned<Vec<Spanned<EdgeSection>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PollSection {
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    rise: Option<Spanned<i64>>,
    fall: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionSection {
    #[serde(default)]
    prefixes: Vec<Spanned<String>>,
    #[serde(default)]
    fallback: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeSection {
    name: Spanned<String>,
    region: Spanned<String>,
    url: Spanned<String>,
    admin: Spanned<String>,
}

impl FleetConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, EdgesErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| {
            EdgesErrors(vec![EdgesError {
                file: file.clone(),
                line: 0,
                column: 0,
                field: "(file)".to_owned(),
                reason: format!("cannot read it: {cause}"),
            }])
        })?;
        Self::parse(&file, &text)
    }

    /// Checks `text`, naming it `file` in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, EdgesErrors> {
        let at = Locator { file, text };
        let root: FileRoot = toml::from_str(text).map_err(|e| EdgesErrors(vec![at.toml(&e)]))?;
        let mut errors = Vec::new();
        let config = at.check(root, &mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            errors.sort_by_key(|e| (e.line, e.column));
            Err(EdgesErrors(errors))
        }
    }
}

/// Offsets in the text to lines and columns.
struct Locator<'a> {
    file: &'a str,
    text: &'a str,
}

impl Locator<'_> {
    fn at(&self, span: Range<usize>, field: &str, reason: impl Into<String>) -> EdgesError {
        let offset = span.start.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |p| p + 1);
        EdgesError {
            file: self.file.to_owned(),
            line,
            column: self.text[line_start..offset].chars().count() + 1,
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    /// A syntax or type error: serde knows the place but not the path, so the field is read
    /// from the text around it (the table header above, counted for `[[edges]]`, and the key).
    fn toml(&self, e: &toml::de::Error) -> EdgesError {
        let message = e.message().trim().to_owned();
        let span = e.span().unwrap_or(0..0);
        let offset = span.start.min(self.text.len());
        let line_start = self.text[..offset].rfind('\n').map_or(0, |p| p + 1);
        let line = self.text[line_start..].lines().next().unwrap_or("").trim();
        let mut table = String::new();
        let mut counts: HashMap<String, usize> = HashMap::new();
        let header_scan_end = if line.starts_with('[') {
            self.text[line_start..]
                .find('\n')
                .map_or(self.text.len(), |end| line_start + end)
        } else {
            line_start
        };
        for header in self.text[..header_scan_end].lines().map(str::trim) {
            if let Some(name) = header.strip_prefix("[[").and_then(|h| h.split("]]").next()) {
                let name = name.trim().to_owned();
                let index = counts.entry(name.clone()).or_insert(0);
                table = format!("{name}[{index}]");
                *index += 1;
            } else if let Some(name) = header.strip_prefix('[').and_then(|h| h.split(']').next()) {
                table = name.trim().to_owned();
            }
        }
        let key = if line.starts_with('[') {
            None
        } else {
            line.split('=')
                .next()
                .map(str::trim)
                .filter(|k| !k.is_empty())
        };
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let leaf = missing.or(key);
        let field = match (table.is_empty(), leaf) {
            (true, Some(leaf)) => leaf.to_owned(),
            (true, None) => "(file)".to_owned(),
            (false, Some(leaf)) => format!("{table}.{leaf}"),
            (false, None) => table,
        };
        self.at(span, &field, message)
    }

    fn check(&self, root: FileRoot, errors: &mut Vec<EdgesError>) -> FleetConfig {
        let poll = self.check_poll(root.poll, errors);

        let region_names: Vec<String> = root
            .regions
            .get_ref()
            .keys()
            .map(|k| k.get_ref().clone())
            .collect();
        if region_names.is_empty() {
            errors.push(self.at(
                root.regions.span(),
                "regions",
                "no region: define at least one, e.g. [regions.eu]",
            ));
        }
        let known = |name: &str| region_names.iter().any(|r| r == name);
        let names = region_names.join(", ");

        let mut regions = BTreeMap::new();
        let mut prefixes: Vec<(Cidr, String)> = Vec::new();
        let mut prefix_owner: HashMap<String, String> = HashMap::new();
        for (name, section) in root.regions.into_inner() {
            let (name_span, name) = (name.span(), name.into_inner());
            let section = section.into_inner();
            if name.is_empty() {
                errors.push(self.at(
                    name_span.clone(),
                    "regions",
                    "a region name must not be empty",
                ));
            }
            for (i, text) in section.prefixes.iter().enumerate() {
                let field = format!("regions.{name}.prefixes[{i}]");
                match text.get_ref().parse::<Cidr>() {
                    Err(e) => errors.push(self.at(text.span(), &field, e.to_string())),
                    Ok(cidr) => {
                        if let Some(other) = prefix_owner.insert(cidr.to_string(), name.clone()) {
                            errors.push(self.at(
                                text.span(),
                                &field,
                                format!("{cidr} is already a prefix of region {other}: a prefix belongs to one region"),
                            ));
                        } else {
                            prefixes.push((cidr, name.clone()));
                        }
                    }
                }
            }
            let mut fallback: Vec<String> = Vec::new();
            for (i, other) in section.fallback.iter().enumerate() {
                let field = format!("regions.{name}.fallback[{i}]");
                let other_name = other.get_ref();
                if !known(other_name) {
                    errors.push(self.at(
                        other.span(),
                        &field,
                        format!("unknown region `{other_name}`: the regions are {names}"),
                    ));
                } else if *other_name == name {
                    errors.push(self.at(
                        other.span(),
                        &field,
                        "a region is not its own fallback: its edges always come first",
                    ));
                } else if fallback.contains(other_name) {
                    errors.push(self.at(
                        other.span(),
                        &field,
                        format!("region `{other_name}` is listed twice"),
                    ));
                } else {
                    fallback.push(other_name.clone());
                }
            }
            regions.insert(name.clone(), RegionSpec { name, fallback });
        }
        // Longest prefix first, so the first match is the most specific one.
        prefixes.sort_by_key(|(cidr, _)| std::cmp::Reverse(cidr.prefix_len()));

        if !known(root.default_region.get_ref()) && !region_names.is_empty() {
            errors.push(self.at(
                root.default_region.span(),
                "default_region",
                format!(
                    "unknown region `{}`: the regions are {names}",
                    root.default_region.get_ref()
                ),
            ));
        }

        let mut edges: Vec<EdgeSpec> = Vec::new();
        if root.edges.get_ref().is_empty() {
            errors.push(self.at(
                root.edges.span(),
                "edges",
                "no edge: add at least one [[edges]] table",
            ));
        }
        for (i, edge) in root.edges.into_inner().into_iter().enumerate() {
            let edge = edge.into_inner();
            let field = |key: &str| format!("edges[{i}].{key}");
            let name = edge.name.get_ref().trim().to_owned();
            if name.is_empty() {
                errors.push(self.at(edge.name.span(), &field("name"), "an edge needs a name"));
            } else if edges.iter().any(|e| e.name == name) {
                errors.push(self.at(
                    edge.name.span(),
                    &field("name"),
                    format!("edge `{name}` is defined twice: names must be unique"),
                ));
            }
            if !known(edge.region.get_ref()) {
                errors.push(self.at(
                    edge.region.span(),
                    &field("region"),
                    format!(
                        "unknown region `{}`: the regions are {names}",
                        edge.region.get_ref()
                    ),
                ));
            }
            let url = check_url(edge.url.get_ref());
            if let Err(reason) = &url {
                errors.push(self.at(edge.url.span(), &field("url"), reason.clone()));
            }
            let admin = check_admin(edge.admin.get_ref());
            if let Err(reason) = &admin {
                errors.push(self.at(edge.admin.span(), &field("admin"), reason.clone()));
            }
            if let (Ok(url), Ok(admin)) = (url, admin) {
                edges.push(EdgeSpec {
                    name,
                    region: edge.region.into_inner(),
                    url,
                    admin,
                });
            }
        }

        FleetConfig {
            edges,
            regions,
            prefixes,
            default_region: root.default_region.into_inner(),
            poll,
        }
    }

    fn check_poll(&self, section: Option<PollSection>, errors: &mut Vec<EdgesError>) -> PollSpec {
        let mut poll = PollSpec::default();
        let Some(section) = section else {
            return poll;
        };
        let mut duration = |value: &Option<Spanned<String>>, key: &str, into: &mut Duration| {
            let Some(value) = value else { return };
            match humantime::parse_duration(value.get_ref()) {
                Ok(d) if !d.is_zero() && d <= Duration::from_secs(3600) => *into = d,
                Ok(_) => errors.push(self.at(
                    value.span(),
                    &format!("poll.{key}"),
                    "must be more than 0 and at most 1h",
                )),
                Err(e) => errors.push(self.at(
                    value.span(),
                    &format!("poll.{key}"),
                    format!(
                        "`{}` is not a duration ({e}): write e.g. 2s or 500ms",
                        value.get_ref()
                    ),
                )),
            }
        };
        duration(&section.interval, "interval", &mut poll.interval);
        duration(&section.timeout, "timeout", &mut poll.timeout);
        if let Some(timeout) = &section.timeout {
            if poll.timeout > poll.interval {
                errors.push(self.at(
                    timeout.span(),
                    "poll.timeout",
                    format!(
                        "{} is longer than the interval ({}): a poll must end before the next starts",
                        humantime::format_duration(poll.timeout),
                        humantime::format_duration(poll.interval)
                    ),
                ));
            }
        }
        for (value, key, into) in [
            (&section.rise, "rise", &mut poll.rise),
            (&section.fall, "fall", &mut poll.fall),
        ] {
            if let Some(value) = value {
                match u32::try_from(*value.get_ref()) {
                    Ok(n @ 1..=100) => *into = n,
                    _ => errors.push(self.at(
                        value.span(),
                        &format!("poll.{key}"),
                        format!("{} is out of range: use 1 to 100 polls", value.get_ref()),
                    )),
                }
            }
        }
        poll
    }
}

/// A viewer-facing base: an absolute http(s) URL without query or fragment, ending in `/`.
fn check_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            format!("`{url}` is not an http(s) URL: write the base viewers load streams from, e.g. https://eu-1.cdn.example/stream/")
        })?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    if url
        .chars()
        .any(|c| c.is_whitespace() || c == '?' || c == '#' || c == '"' || c == '<' || c == '>')
    {
        return Err(format!(
            "`{url}` holds a space, query, fragment or quote: a base is a plain prefix"
        ));
    }
    let mut url = url.to_owned();
    if !url.ends_with('/') {
        url.push('/');
    }
    Ok(url)
}

/// An admin listener: `http://HOST:PORT` (plain HTTP; it sits on the overlay, see docs/fleet.md).
fn check_admin(admin: &str) -> Result<String, String> {
    let rest = admin.strip_prefix("http://").ok_or_else(|| {
        format!("`{admin}` is not an http:// URL: write the edge's admin listener, e.g. http://10.99.0.2:9090 (https is not supported: the admin listener is reached over the overlay)")
    })?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty()
        || authority.contains(['/', '?', '#', '@'])
        || authority.contains(char::is_whitespace)
    {
        return Err(format!(
            "`{admin}` must be only http://HOST:PORT: /readyz and /metrics are appended to it"
        ));
    }
    Ok(format!("http://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
default_region = "eu"

[poll]
interval = "500ms"
timeout = "400ms"
fall = 3

[regions.eu]
prefixes = ["192.0.2.0/24", "2001:db8::/32"]
fallback = ["us"]

[regions.us]
prefixes = ["198.51.100.0/24", "198.51.100.128/25"]

[[edges]]
name = "eu-1"
region = "eu"
url = "https://eu-1.cdn.example/stream"
admin = "http://10.99.0.2:9090/"
"#;

    #[test]
    fn a_good_file_is_compiled() {
        let config = FleetConfig::parse("edges.toml", GOOD).unwrap();
        assert_eq!(config.default_region, "eu");
        assert_eq!(config.edges[0].url, "https://eu-1.cdn.example/stream/");
        assert_eq!(config.edges[0].admin, "http://10.99.0.2:9090");
        assert_eq!(config.regions["eu"].fallback, ["us"]);
        assert_eq!(config.poll.interval, Duration::from_millis(500));
        assert_eq!(config.poll.fall, 3);
        assert_eq!(config.poll.rise, DEFAULT_RISE);
        // Longest first: the /25 before the /24 it sits in.
        assert_eq!(config.prefixes[0].0.to_string(), "2001:db8::/32");
        assert_eq!(config.prefixes[1].0.to_string(), "198.51.100.128/25");
    }

    fn errors(text: &str) -> Vec<String> {
        FleetConfig::parse("edges.toml", text)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn every_bad_field_is_named_with_its_line() {
        let bad = GOOD
            .replace("\"500ms\"", "\"soon\"")
            .replace("fall = 3", "fall = 0")
            .replace("\"192.0.2.0/24\"", "\"192.0.2.0/33\"")
            .replace("fallback = [\"us\"]", "fallback = [\"asia\"]")
            .replace("\nregion = \"eu\"", "\nregion = \"mars\"")
            .replace(
                "admin = \"http://10.99.0.2:9090/\"",
                "admin = \"https://10.99.0.2:9090\"",
            );
        let found = errors(&bad);
        assert_eq!(found.len(), 6, "{found:#?}");
        assert!(
            found[0].starts_with("edges.toml:5:12: poll.interval: `soon` is not a duration"),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with("edges.toml:7:8: poll.fall: 0 is out of range"),
            "{found:#?}"
        );
        assert!(
            found[2].starts_with(
                "edges.toml:10:13: regions.eu.prefixes[0]: `192.0.2.0/33` is not an address block"
            ),
            "{found:#?}"
        );
        assert!(found[3].starts_with("edges.toml:11:13: regions.eu.fallback[0]: unknown region `asia`: the regions are eu, us"), "{found:#?}");
        assert!(
            found[4].starts_with("edges.toml:18:10: edges[0].region: unknown region `mars`"),
            "{found:#?}"
        );
        assert!(
            found[5].starts_with(
                "edges.toml:20:9: edges[0].admin: `https://10.99.0.2:9090` is not an http:// URL"
            ),
            "{found:#?}"
        );
    }

    #[test]
    fn serde_errors_get_a_place_and_a_field_too() {
        let unknown = errors(&GOOD.replace("admin = ", "adminn = "));
        assert_eq!(unknown.len(), 1, "{unknown:#?}");
        assert!(
            unknown[0].starts_with("edges.toml:20:1: edges[0].adminn: unknown field `adminn`"),
            "{unknown:#?}"
        );
        let second = format!("{GOOD}\n[[edges]]\nname = \"eu-2\"\nregion = \"eu\"\nurl = \"https://eu-2.cdn.example/stream/\"\n");
        let missing = errors(&second);
        assert!(
            missing[0].contains("edges[1].admin: missing field `admin`"),
            "{missing:#?}"
        );
        let wrong_type = errors(&GOOD.replace("fall = 3", "fall = \"3\""));
        assert!(
            wrong_type[0].starts_with("edges.toml:7:8: poll.fall: invalid type"),
            "{wrong_type:#?}"
        );
        let syntax = errors("default_region = \n");
        assert!(syntax[0].starts_with("edges.toml:1:"), "{syntax:#?}");
    }

    #[test]
    fn prefixes_belong_to_one_region_and_names_are_unique() {
        let bad = GOOD.replace("\"198.51.100.0/24\"", "\"192.0.2.0/24\"")
            + "\n[[edges]]\nname = \"eu-1\"\nregion = \"us\"\nurl = \"http://127.0.0.1:1/stream/\"\nadmin = \"http://127.0.0.1:2\"\n";
        let found = errors(&bad);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0]
                .contains("regions.us.prefixes[0]: 192.0.2.0/24 is already a prefix of region eu"),
            "{found:#?}"
        );
        assert!(
            found[1].contains("edges[1].name: edge `eu-1` is defined twice"),
            "{found:#?}"
        );
    }
}
