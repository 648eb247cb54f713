//! `[cache]` and each route's `[routes.cache]`: the shared cache's budget and the policies.

use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::super::file::{CacheSection, DurationText, RouteCacheSection, SizeText};
use super::Compiler;
use crate::cache::{AbandonedFill, CacheMode, CachePolicy, TargetedField};
use crate::config::types::{CacheSettings, DEFAULT_CACHE_MEMORY};

/// `[cache]`, validated: the budget bound at startup and the settings that apply live.
pub(super) struct Cache {
    pub(super) live: CacheSettings,
    pub(super) memory: u64,
    pub(super) lock_timeout: Duration,
    pub(super) fill_memory: u64,
}

impl Compiler<'_> {
    pub(super) fn cache_settings(&mut self, c: &CacheSection) -> Cache {
        let memory = match &c.memory {
            Some(m) => self.size(m, "cache.memory").unwrap_or(DEFAULT_CACHE_MEMORY),
            None => DEFAULT_CACHE_MEMORY,
        };
        let (purge_token, purge_token_file) = self.secret(
            c.purge_token.as_ref(),
            c.purge_token_file.as_ref(),
            "cache",
            "purge_token",
        );
        let lock_timeout = self
            .duration(c.lock_timeout.as_ref(), "cache.lock_timeout")
            .unwrap_or(Duration::from_secs(30));
        // A quarter of the cache by default: fills become stored objects, so the two together
        // stay within 1.25x `memory` even when every fill is in progress at once.
        let fill_memory = match &c.fill_memory {
            Some(m) => self.size(m, "cache.fill_memory").unwrap_or(memory / 4),
            None => memory / 4,
        };
        Cache {
            live: CacheSettings {
                purge_token,
                purge_token_file,
            },
            memory,
            lock_timeout,
            fill_memory,
        }
    }

    pub(super) fn route_cache(
        &mut self,
        route_field: &str,
        c: Option<&RouteCacheSection>,
    ) -> CachePolicy {
        let mut p = CachePolicy::rfc_default();
        let Some(c) = c else {
            return p;
        };
        let field = format!("{route_field}.cache");
        if let Some(m) = &c.mode {
            p.mode = match m.get_ref().as_str() {
                "rfc" => CacheMode::Rfc,
                "video" => CacheMode::Video,
                "off" => CacheMode::Off,
                other => {
                    self.err(
                        m.span(),
                        &format!("{field}.mode"),
                        format!("unknown cache mode \"{other}\": use rfc, video or off"),
                    );
                    CacheMode::Rfc
                }
            };
        }
        if p.mode == CacheMode::Video {
            p.keep_query = Some(vec![
                "_HLS_msn".into(),
                "_HLS_part".into(),
                "_HLS_skip".into(),
            ]);
            p.background_fill = true;
        }
        if let Some(on) = c.background_fill {
            p.background_fill = on;
        }
        if let Some(a) = &c.abandoned_fill {
            p.abandoned_fill = match a.get_ref().as_str() {
                "finish" => AbandonedFill::Finish,
                "abort" => AbandonedFill::Abort,
                other => {
                    self.err(
                        a.span(),
                        &format!("{field}.abandoned_fill"),
                        format!("unknown value \"{other}\": use finish or abort"),
                    );
                    AbandonedFill::Finish
                }
            };
        }
        if let Some(keep) = &c.keep_query {
            p.keep_query = Some(keep.clone());
        }
        if let Some(store) = c.store_set_cookie {
            p.store_set_cookie = store;
        }
        if let Some(fields) = &c.targeted_fields {
            p.targeted_fields = self.targeted_fields(fields, &format!("{field}.targeted_fields"));
        }
        if let Some(strip) = c.strip_targeted {
            p.strip_targeted = strip;
        }
        if let Some(n) = &c.max_variants {
            if let Some(n) = self.count(n, &format!("{field}.max_variants"), 1, 10_000) {
                p.max_variants = n;
            }
        }
        if let Some(m) = &c.max_object_size {
            if let Some(n) = self.size(m, &format!("{field}.max_object_size")) {
                p.max_object_size = usize::try_from(n).unwrap_or(usize::MAX);
            }
        }
        let mut d = |v: &Option<Spanned<DurationText>>,
                     key: &str,
                     slot: &mut Duration,
                     allow_zero: bool| {
            let Some(v) = v else { return };
            let f = format!("{field}.{key}");
            if allow_zero
                && humantime::parse_duration(v.get_ref().as_str()).is_ok_and(|d| d.is_zero())
            {
                *slot = Duration::ZERO;
            } else if let Some(x) = self.duration(Some(v), &f) {
                *slot = x;
            }
        };
        d(
            &c.target_duration,
            "target_duration",
            &mut p.target_duration,
            false,
        );
        d(&c.media_ttl, "media_ttl", &mut p.media_ttl, false);
        d(&c.negative_ttl, "negative_ttl", &mut p.negative_ttl, true);
        d(
            &c.stale_while_revalidate,
            "stale_while_revalidate",
            &mut p.stale_while_revalidate,
            true,
        );
        d(
            &c.stale_if_error,
            "stale_if_error",
            &mut p.stale_if_error,
            true,
        );
        p
    }

    /// RFC 9213 targeted field names: field names, each once, and never Cache-Control, which
    /// they take precedence over.
    fn targeted_fields(&mut self, names: &[Spanned<String>], field: &str) -> Vec<TargetedField> {
        let mut out: Vec<TargetedField> = Vec::new();
        for n in names {
            let text = n.get_ref();
            let Ok(name) = HeaderName::from_bytes(text.as_bytes()) else {
                self.err(
                    n.span(),
                    field,
                    format!(
                        "\"{text}\" is not a field name: use letters, digits and '-', e.g. \"CDN-Cache-Control\""
                    ),
                );
                continue;
            };
            if name == http::header::CACHE_CONTROL {
                self.err(
                    n.span(),
                    field,
                    format!(
                        "\"{text}\" is what targeted fields take precedence over: list only fields addressed to this edge, e.g. \"CDN-Cache-Control\" (an empty list obeys Cache-Control alone)"
                    ),
                );
                continue;
            }
            if out.iter().any(|f| f.name == name) {
                self.err(
                    n.span(),
                    field,
                    format!("\"{text}\" is listed twice: field names ignore case"),
                );
                continue;
            }
            out.push(TargetedField::new(name));
        }
        out
    }

    pub(super) fn size(&mut self, v: &Spanned<SizeText>, field: &str) -> Option<u64> {
        match super::parse_size(&v.get_ref().0) {
            Some(n) if n > 0 => Some(n),
            _ => {
                self.err(
                    v.span(),
                    field,
                    format!(
                        "invalid size \"{}\": write a number and a unit, e.g. \"512MiB\", \"4GiB\"",
                        v.get_ref().0
                    ),
                );
                None
            }
        }
    }
}
