//! The rules a Low-Latency HLS media playlist must follow, checked on its text: the HLS
//! specification's second edition (draft-pantos-hls-rfc8216bis, §4.4.3.7 `EXT-X-PART-INF`,
//! §4.4.3.8 `EXT-X-SERVER-CONTROL`, §4.4.4.9 `EXT-X-PART`, §4.4.5.3 `EXT-X-PRELOAD-HINT`,
//! §6.2.5.2 blocking reload) and Apple's authoring rules for low-latency streams. What the
//! packager writes, and what the streamer and the edge pass on, must pass [`check`].

use std::fmt;

/// One broken rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// 1-based line of the tag at fault (the first line when a tag is missing).
    pub line: usize,
    /// The rule's short name, as listed on [`check`].
    pub rule: &'static str,
    /// What is wrong, with the values read.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {} ({})", self.line, self.message, self.rule)
    }
}

/// Parts may add up to their segment's `EXTINF` with this much rounding (each duration is
/// written with 5 decimals).
const SUM_TOLERANCE: f64 = 0.001;

/// Every rule `text` breaks, in the order of the lines at fault; empty when it is a valid
/// low-latency media playlist. The rules:
/// - `server-control`: `EXT-X-SERVER-CONTROL` says `CAN-BLOCK-RELOAD=YES` and gives a
///   `PART-HOLD-BACK` of at least twice the part target (§4.4.3.8);
/// - `part-inf`: `EXT-X-PART-INF` gives a `PART-TARGET` below the target duration, and the
///   playlist lists parts (§4.4.3.7);
/// - `part-duration`: no part is longer than the part target, and none but a segment's last
///   or an independent one is shorter than 85 % of it (§4.4.4.9);
/// - `parts-sum`: the parts of a segment add up to its `EXTINF` (for the first segment that
///   lists parts, which may have lost its first ones, at most to it);
/// - `independent`: a segment whose parts are all listed starts with an `INDEPENDENT=YES`
///   part, as each segment starts with a key frame;
/// - `parts-recent`: parts are listed for the last segments only, without a gap, then for the
///   segment in progress;
/// - `preload-hint`: exactly one `EXT-X-PRELOAD-HINT:TYPE=PART`, after the last part, naming
///   a part not listed (§4.4.5.3);
/// - `program-date-time`: the segments carry `EXT-X-PROGRAM-DATE-TIME`, which latency is
///   measured against;
/// - `target-duration`: every `EXTINF`, rounded, is at most `EXT-X-TARGETDURATION`;
/// - `syntax`: a tag whose attributes do not parse.
pub fn check(text: &str) -> Vec<Violation> {
    let mut c = Checker::default();
    for (i, line) in text.lines().enumerate() {
        c.line(i + 1, line.trim());
    }
    c.finish()
}

#[derive(Debug)]
struct Part {
    line: usize,
    duration: f64,
    uri: String,
    independent: bool,
}

#[derive(Debug)]
struct Segment {
    /// The line of its `EXTINF`.
    line: usize,
    duration: f64,
    parts: Vec<Part>,
}

#[derive(Default)]
struct Checker {
    found: Vec<Violation>,
    /// `(line, CAN-BLOCK-RELOAD=YES, PART-HOLD-BACK)`.
    server_control: Option<(usize, bool, Option<f64>)>,
    /// `(line, PART-TARGET)`.
    part_target: Option<(usize, f64)>,
    target_duration: Option<(usize, u64)>,
    program_date_time: bool,
    segments: Vec<Segment>,
    /// The `EXTINF` read for the segment whose URI comes next: `(line, duration)`.
    extinf: Option<(usize, f64)>,
    /// Parts read since the last segment's URI: the next segment's, or the one in progress.
    parts: Vec<Part>,
    /// `(line, URI)` of each `EXT-X-PRELOAD-HINT` of `TYPE=PART`.
    hints: Vec<(usize, String)>,
    /// The line of the last `EXT-X-PART`.
    last_part_line: usize,
}

impl Checker {
    fn violation(&mut self, line: usize, rule: &'static str, message: String) {
        self.found.push(Violation {
            line,
            rule,
            message,
        });
    }

    fn line(&mut self, n: usize, line: &str) {
        if line.is_empty() {
            return;
        }
        let (tag, value) = match line.split_once(':') {
            Some((tag, value)) if line.starts_with('#') => (tag, value),
            _ => (line, ""),
        };
        match tag {
            "#EXT-X-SERVER-CONTROL" => {
                let Some(a) = self.attributes(n, tag, value) else {
                    return;
                };
                let block = attr(&a, "CAN-BLOCK-RELOAD") == Some("YES");
                let hold_back = self.decimal(n, tag, &a, "PART-HOLD-BACK");
                self.server_control = Some((n, block, hold_back));
            }
            "#EXT-X-PART-INF" => {
                let Some(a) = self.attributes(n, tag, value) else {
                    return;
                };
                match self.decimal(n, tag, &a, "PART-TARGET") {
                    Some(t) => self.part_target = Some((n, t)),
                    None => {
                        self.violation(n, "part-inf", "EXT-X-PART-INF has no PART-TARGET".into())
                    }
                }
            }
            "#EXT-X-TARGETDURATION" => match value.trim().parse() {
                Ok(t) => self.target_duration = Some((n, t)),
                Err(_) => self.violation(
                    n,
                    "syntax",
                    format!("EXT-X-TARGETDURATION {value:?} is not a whole number"),
                ),
            },
            "#EXT-X-PROGRAM-DATE-TIME" => self.program_date_time = true,
            "#EXTINF" => {
                let number = value.split(',').next().unwrap_or("").trim();
                match number.parse::<f64>() {
                    Ok(d) if d.is_finite() && d >= 0.0 => self.extinf = Some((n, d)),
                    _ => {
                        self.violation(n, "syntax", format!("EXTINF {number:?} is not a duration"))
                    }
                }
            }
            "#EXT-X-PART" => {
                let Some(a) = self.attributes(n, tag, value) else {
                    return;
                };
                let duration = self.decimal(n, tag, &a, "DURATION");
                let uri = attr(&a, "URI").map(str::to_string);
                match (duration, uri) {
                    (Some(duration), Some(uri)) => {
                        self.last_part_line = n;
                        self.parts.push(Part {
                            line: n,
                            duration,
                            uri,
                            independent: attr(&a, "INDEPENDENT") == Some("YES"),
                        });
                    }
                    _ => self.violation(n, "syntax", "EXT-X-PART needs DURATION and URI".into()),
                }
            }
            "#EXT-X-PRELOAD-HINT" => {
                let Some(a) = self.attributes(n, tag, value) else {
                    return;
                };
                if attr(&a, "TYPE") == Some("PART") {
                    match attr(&a, "URI") {
                        Some(uri) => self.hints.push((n, uri.to_string())),
                        None => {
                            self.violation(n, "syntax", "EXT-X-PRELOAD-HINT needs a URI".into())
                        }
                    }
                }
            }
            t if t.starts_with('#') => {}
            // A URI line: the segment the EXTINF before it described.
            _ => {
                let Some((line, duration)) = self.extinf.take() else {
                    self.violation(n, "syntax", format!("{line:?} has no EXTINF before it"));
                    return;
                };
                let parts = std::mem::take(&mut self.parts);
                self.segments.push(Segment {
                    line,
                    duration,
                    parts,
                });
            }
        }
    }

    /// The attribute list of `tag`, or `None` (and a violation) when it does not parse.
    fn attributes(&mut self, n: usize, tag: &str, value: &str) -> Option<Vec<(String, String)>> {
        match attributes(value) {
            Ok(a) => Some(a),
            Err(e) => {
                self.violation(n, "syntax", format!("{tag}: {e}"));
                None
            }
        }
    }

    /// The decimal attribute `name` of `tag`, if present; a violation when it is not a number.
    fn decimal(&mut self, n: usize, tag: &str, a: &[(String, String)], name: &str) -> Option<f64> {
        let value = attr(a, name)?;
        match value.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Some(v),
            _ => {
                self.violation(
                    n,
                    "syntax",
                    format!("{tag}: {name}={value} is not a duration"),
                );
                None
            }
        }
    }

    fn finish(mut self) -> Vec<Violation> {
        let in_progress = std::mem::take(&mut self.parts);
        self.server_control_rules();
        let part_target = self.part_inf_rules(!in_progress.is_empty());
        if let Some(target) = part_target {
            self.part_duration_rules(target, &in_progress);
        }
        self.segment_rules(!in_progress.is_empty());
        self.hint_rules(&in_progress);
        if !self.program_date_time {
            self.violation(
                1,
                "program-date-time",
                "no EXT-X-PROGRAM-DATE-TIME: a player cannot tell its latency".into(),
            );
        }
        self.found.sort_by_key(|v| v.line);
        self.found
    }

    fn server_control_rules(&mut self) {
        let target = self.part_target.map(|(_, t)| t);
        match self.server_control {
            None => self.violation(
                1,
                "server-control",
                "no EXT-X-SERVER-CONTROL: players cannot block on reload".into(),
            ),
            Some((n, block, hold_back)) => {
                if !block {
                    self.violation(
                        n,
                        "server-control",
                        "EXT-X-SERVER-CONTROL lacks CAN-BLOCK-RELOAD=YES".into(),
                    );
                }
                match (hold_back, target) {
                    (None, _) => self.violation(
                        n,
                        "server-control",
                        "EXT-X-SERVER-CONTROL lacks PART-HOLD-BACK".into(),
                    ),
                    (Some(h), Some(t)) if h < 2.0 * t => self.violation(
                        n,
                        "server-control",
                        format!("PART-HOLD-BACK={h} is less than twice PART-TARGET={t}"),
                    ),
                    _ => {}
                }
            }
        }
    }

    /// The part target, when the playlist gives one that the other rules can use.
    fn part_inf_rules(&mut self, parts_in_progress: bool) -> Option<f64> {
        let listed = parts_in_progress || self.segments.iter().any(|s| !s.parts.is_empty());
        let Some((n, target)) = self.part_target else {
            if listed || self.server_control.is_some() {
                self.violation(1, "part-inf", "no EXT-X-PART-INF with a PART-TARGET".into());
            }
            return None;
        };
        if let Some((_, td)) = self.target_duration {
            if target >= td as f64 {
                self.violation(
                    n,
                    "part-inf",
                    format!("PART-TARGET={target} is not below EXT-X-TARGETDURATION {td}"),
                );
            }
        }
        if !listed {
            self.violation(n, "part-inf", "EXT-X-PART-INF, but no EXT-X-PART".into());
        }
        Some(target)
    }

    fn part_duration_rules(&mut self, target: f64, in_progress: &[Part]) {
        let mut found = Vec::new();
        let segments = self.segments.iter().map(|s| (s.parts.as_slice(), true));
        for (parts, whole) in segments.chain(std::iter::once((in_progress, false))) {
            for (i, p) in parts.iter().enumerate() {
                // Durations are written rounded; allow for it.
                if p.duration > target + SUM_TOLERANCE {
                    found.push((
                        p.line,
                        format!(
                            "part {} lasts {} s, more than PART-TARGET={target}",
                            p.uri, p.duration
                        ),
                    ));
                }
                let last = whole && i + 1 == parts.len();
                if !last && !p.independent && p.duration < 0.85 * target - SUM_TOLERANCE {
                    found.push((
                        p.line,
                        format!(
                            "part {} lasts {} s, less than 85 % of PART-TARGET={target}",
                            p.uri, p.duration
                        ),
                    ));
                }
            }
        }
        for (line, message) in found {
            self.violation(line, "part-duration", message);
        }
    }

    fn segment_rules(&mut self, parts_in_progress: bool) {
        let mut found = Vec::new();
        let target = self.target_duration;
        let first_with_parts = self.segments.iter().position(|s| !s.parts.is_empty());
        for (i, s) in self.segments.iter().enumerate() {
            if let Some((_, td)) = target {
                if s.duration.round() as u64 > td {
                    found.push((
                        s.line,
                        "target-duration",
                        format!(
                            "EXTINF {} rounds above EXT-X-TARGETDURATION {td}",
                            s.duration
                        ),
                    ));
                }
            }
            let Some(first) = first_with_parts else {
                continue;
            };
            if i > first && s.parts.is_empty() {
                found.push((
                    s.line,
                    "parts-recent",
                    "a segment without parts after segments with parts".into(),
                ));
            }
            if s.parts.is_empty() {
                continue;
            }
            let sum: f64 = s.parts.iter().map(|p| p.duration).sum();
            let tolerance = SUM_TOLERANCE * s.parts.len() as f64;
            let complete = i > first;
            if (complete && (sum - s.duration).abs() > tolerance) || sum > s.duration + tolerance {
                found.push((
                    s.line,
                    "parts-sum",
                    format!(
                        "its parts add up to {sum:.5} s, its EXTINF is {}",
                        s.duration
                    ),
                ));
            }
            if complete && !s.parts[0].independent {
                found.push((
                    s.parts[0].line,
                    "independent",
                    format!(
                        "part {} starts a segment but is not INDEPENDENT=YES",
                        s.parts[0].uri
                    ),
                ));
            }
        }
        if parts_in_progress && first_with_parts.is_none() && !self.segments.is_empty() {
            let line = self.segments[self.segments.len() - 1].line;
            found.push((
                line,
                "parts-recent",
                "parts for the segment in progress, but none for the last segments".into(),
            ));
        }
        for (line, rule, message) in found {
            self.violation(line, rule, message);
        }
    }

    fn hint_rules(&mut self, in_progress: &[Part]) {
        let hints = std::mem::take(&mut self.hints);
        match hints.as_slice() {
            [] => self.violation(
                1,
                "preload-hint",
                "no EXT-X-PRELOAD-HINT:TYPE=PART for the next part".into(),
            ),
            [(n, uri)] => {
                let listed = self
                    .segments
                    .iter()
                    .flat_map(|s| s.parts.iter())
                    .chain(in_progress)
                    .any(|p| p.uri == *uri);
                if listed {
                    self.violation(
                        *n,
                        "preload-hint",
                        format!("the preload hint names {uri}, a part already listed"),
                    );
                }
                if *n < self.last_part_line {
                    self.violation(
                        *n,
                        "preload-hint",
                        "the preload hint comes before the last part".into(),
                    );
                }
            }
            [_, (n, _), ..] => self.violation(
                *n,
                "preload-hint",
                format!(
                    "{} EXT-X-PRELOAD-HINT:TYPE=PART tags; one is allowed",
                    hints.len()
                ),
            ),
        }
    }
}

fn attr<'a>(a: &'a [(String, String)], name: &str) -> Option<&'a str> {
    a.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// An attribute list (RFC 8216 §4.2): `NAME=VALUE` pairs separated by commas, a value either a
/// quoted string (returned without its quotes) or a token running to the next comma.
fn attributes(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| format!("{rest:?} is not NAME=VALUE"))?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!("{name:?} is not an attribute name"));
        }
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| format!("{name}: a quoted string that does not end"))?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        out.push((name.to_string(), value.trim().to_string()));
        rest = match after.trim_start().strip_prefix(',') {
            Some(r) => r.trim_start(),
            None if after.trim().is_empty() => "",
            None => return Err(format!("{name}: {after:?} after the value")),
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid low-latency playlist: 2 s segments of six 1/3 s parts, the last two segments'
    /// parts listed, two parts of the segment in progress, a hint for the third.
    const VALID: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0
#EXT-X-PART-INF:PART-TARGET=0.33334
#EXT-X-MEDIA-SEQUENCE:10
#EXT-X-MAP:URI=\"init-0.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-12-02T00:00:00.000Z
#EXTINF:2.00000,
segment-10.m4s
#EXT-X-PART:DURATION=0.33334,URI=\"segment-11.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33333,URI=\"segment-11.1.m4s\"
#EXT-X-PART:DURATION=0.33333,URI=\"segment-11.2.m4s\"
#EXT-X-PART:DURATION=0.33334,URI=\"segment-11.3.m4s\"
#EXT-X-PART:DURATION=0.33333,URI=\"segment-11.4.m4s\"
#EXT-X-PART:DURATION=0.33333,URI=\"segment-11.5.m4s\"
#EXTINF:2.00000,
segment-11.m4s
#EXT-X-PART:DURATION=0.33334,URI=\"segment-12.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33333,URI=\"segment-12.1.m4s\"
#EXT-X-PART:DURATION=0.33333,URI=\"segment-12.2.m4s\"
#EXT-X-PART:DURATION=0.33334,URI=\"segment-12.3.m4s\"
#EXT-X-PART:DURATION=0.33333,URI=\"segment-12.4.m4s\"
#EXT-X-PART:DURATION=0.33333,URI=\"segment-12.5.m4s\"
#EXTINF:2.00000,
segment-12.m4s
#EXT-X-PART:DURATION=0.33334,URI=\"segment-13.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33333,URI=\"segment-13.1.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"segment-13.2.m4s\"
";

    fn rules(text: &str) -> Vec<&'static str> {
        check(text).iter().map(|v| v.rule).collect()
    }

    #[test]
    fn a_valid_low_latency_playlist_passes() {
        assert_eq!(check(VALID), vec![]);
    }

    #[test]
    fn each_broken_rule_is_named_at_its_line() {
        let cases: &[(&str, &str, &str)] = &[
            ("CAN-BLOCK-RELOAD=YES,", "", "server-control"),
            ("PART-HOLD-BACK=1.0", "PART-HOLD-BACK=0.5", "server-control"),
            ("#EXT-X-PART-INF:PART-TARGET=0.33334\n", "", "part-inf"),
            ("PART-TARGET=0.33334", "PART-TARGET=2.5", "part-inf"),
            (
                "DURATION=0.33333,URI=\"segment-12.1.m4s\"",
                "DURATION=0.4,URI=\"segment-12.1.m4s\"",
                "part-duration",
            ),
            (
                "DURATION=0.33333,URI=\"segment-12.1.m4s\"",
                "DURATION=0.1,URI=\"segment-12.1.m4s\"",
                "parts-sum",
            ),
            (
                "\"segment-12.0.m4s\",INDEPENDENT=YES",
                "\"segment-12.0.m4s\"",
                "independent",
            ),
            (
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"segment-13.2.m4s\"\n",
                "",
                "preload-hint",
            ),
            (
                "URI=\"segment-13.2.m4s\"\n",
                "URI=\"segment-13.1.m4s\"\n",
                "preload-hint",
            ),
            (
                "#EXT-X-PROGRAM-DATE-TIME:2026-12-02T00:00:00.000Z\n",
                "",
                "program-date-time",
            ),
            (
                "#EXTINF:2.00000,\nsegment-12.m4s",
                "#EXTINF:2.60000,\nsegment-12.m4s",
                "target-duration",
            ),
            ("PART-TARGET=0.33334", "PART-TARGET=\"0.33334", "syntax"),
        ];
        for (from, to, rule) in cases {
            assert!(
                VALID.contains(from),
                "{from:?} is not in the valid playlist"
            );
            let broken = VALID.replacen(from, to, 1);
            let found = rules(&broken);
            assert!(
                found.contains(rule),
                "{from:?} -> {to:?}: {:?}",
                check(&broken)
            );
        }
    }

    #[test]
    fn a_too_short_part_is_refused_unless_last_or_independent() {
        let broken = VALID.replacen(
            "DURATION=0.33333,URI=\"segment-12.1.m4s\"",
            "DURATION=0.2,URI=\"segment-12.1.m4s\"",
            1,
        );
        let found = check(&broken);
        let short: Vec<_> = found.iter().filter(|v| v.rule == "part-duration").collect();
        assert_eq!(short.len(), 1, "{found:?}");
        assert!(short[0].message.contains("less than 85 %"), "{}", short[0]);
        // The last part of a segment may be short: 1.8 s of parts ending in a 0.13 s one.
        let last_short = VALID
            .replacen(
                "#EXTINF:2.00000,\nsegment-12.m4s",
                "#EXTINF:1.80000,\nsegment-12.m4s",
                1,
            )
            .replacen(
                "DURATION=0.33333,URI=\"segment-12.5.m4s\"",
                "DURATION=0.13333,URI=\"segment-12.5.m4s\"",
                1,
            );
        assert_eq!(check(&last_short), vec![]);
    }

    #[test]
    fn a_gap_in_listed_parts_is_refused() {
        // Segment 12 loses its parts; 11 keeps them and 13 is in progress.
        let mut lines: Vec<&str> = VALID.lines().collect();
        lines.retain(|l| !(l.starts_with("#EXT-X-PART:") && l.contains("segment-12.")));
        let broken = lines.join("\n");
        assert!(
            rules(&broken).contains(&"parts-recent"),
            "{:?}",
            check(&broken)
        );
    }

    #[test]
    fn a_violation_reads_with_its_line_and_rule() {
        let broken = VALID.replacen("PART-HOLD-BACK=1.0", "PART-HOLD-BACK=0.5", 1);
        let v = &check(&broken)[0];
        assert_eq!(v.line, 4);
        assert_eq!(
            v.to_string(),
            "line 4: PART-HOLD-BACK=0.5 is less than twice PART-TARGET=0.33334 (server-control)"
        );
    }

    #[test]
    fn attribute_lists_keep_commas_inside_quotes() {
        assert_eq!(
            attributes("URI=\"a,b.m4s\",DURATION=0.5").unwrap(),
            vec![
                ("URI".into(), "a,b.m4s".into()),
                ("DURATION".into(), "0.5".into())
            ]
        );
        assert!(attributes("URI=\"open").is_err());
        assert!(attributes("lower=1").is_err());
    }
}
