//! What the cache did for a request: the one spelling of `X-Cache-Status`, the access log's
//! `cache` field and the `dime_cache_requests_total{status}` label.

use pingora_cache::{CachePhase, HttpCache};

/// What the cache did for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered fresh from the cache.
    Hit,
    /// Fetched from the origin (and stored, if cacheable).
    Miss,
    /// Answered stale from the cache (stale-if-error).
    Stale,
    /// Answered stale while a revalidation runs (stale-while-revalidate).
    Updating,
    /// Stored but stale: fetched again from the origin.
    Expired,
    /// Stored, stale, and confirmed by the origin's 304.
    Revalidated,
    /// The cache was not used: caching off, a method other than GET or HEAD, or an answer of
    /// the edge's own.
    Bypass,
}

impl CacheStatus {
    /// Every status, in the order the metrics and `/status` list them.
    pub const ALL: [CacheStatus; 7] = [
        CacheStatus::Hit,
        CacheStatus::Miss,
        CacheStatus::Stale,
        CacheStatus::Updating,
        CacheStatus::Expired,
        CacheStatus::Revalidated,
        CacheStatus::Bypass,
    ];

    /// Every status's label, in [`CacheStatus::ALL`]'s order.
    pub const LABELS: [&'static str; 7] = [
        CacheStatus::Hit.as_str(),
        CacheStatus::Miss.as_str(),
        CacheStatus::Stale.as_str(),
        CacheStatus::Updating.as_str(),
        CacheStatus::Expired.as_str(),
        CacheStatus::Revalidated.as_str(),
        CacheStatus::Bypass.as_str(),
    ];

    /// The status for the phase pingora's cache ended in.
    pub fn of_phase(phase: &CachePhase) -> Self {
        match phase {
            CachePhase::Hit => CacheStatus::Hit,
            CachePhase::Miss => CacheStatus::Miss,
            CachePhase::Stale => CacheStatus::Stale,
            CachePhase::StaleUpdating => CacheStatus::Updating,
            CachePhase::Expired => CacheStatus::Expired,
            CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => CacheStatus::Revalidated,
            CachePhase::Bypass
            | CachePhase::Disabled(_)
            | CachePhase::Uninit
            | CachePhase::CacheKey => CacheStatus::Bypass,
        }
    }

    /// The status of a request whose cache state is `cache`; `started_fill` when its miss
    /// started a background fill, which it then read like a waiter.
    pub fn of_request(cache: &HttpCache, started_fill: bool) -> Self {
        if started_fill {
            // Its miss went to the origin, though it reads the fill like a waiter.
            CacheStatus::Miss
        } else if cache.enabled() || cache.bypassing() {
            CacheStatus::of_phase(&cache.phase())
        } else {
            CacheStatus::Bypass
        }
    }

    /// The label: `HIT`, `MISS`, `STALE`, `UPDATING`, `EXPIRED`, `REVALIDATED` or `BYPASS`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Updating => "UPDATING",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Bypass => "BYPASS",
        }
    }

    /// Whether the body came from the cache: what the hit ratio and
    /// `dime_cache_served_bytes_total` count as hits.
    pub fn served_from_cache(self) -> bool {
        matches!(
            self,
            CacheStatus::Hit
                | CacheStatus::Stale
                | CacheStatus::Updating
                | CacheStatus::Revalidated
        )
    }

    /// Whether the request looked the cache up and found it wanting (what the hit ratio
    /// divides by, with the hits): a miss or an expired object. Bypassed requests do not count.
    pub fn missed(self) -> bool {
        matches!(self, CacheStatus::Miss | CacheStatus::Expired)
    }
}

impl std::fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::NoCacheReason;

    #[test]
    fn each_phase_has_its_documented_label() {
        let table = [
            (CachePhase::Hit, "HIT"),
            (CachePhase::Miss, "MISS"),
            (CachePhase::Stale, "STALE"),
            (CachePhase::StaleUpdating, "UPDATING"),
            (CachePhase::Expired, "EXPIRED"),
            (CachePhase::Revalidated, "REVALIDATED"),
            (
                CachePhase::RevalidatedNoCache(NoCacheReason::OriginNotCache),
                "REVALIDATED",
            ),
            (CachePhase::Bypass, "BYPASS"),
            (CachePhase::Disabled(NoCacheReason::NeverEnabled), "BYPASS"),
            (CachePhase::Uninit, "BYPASS"),
            (CachePhase::CacheKey, "BYPASS"),
        ];
        for (phase, label) in table {
            assert_eq!(CacheStatus::of_phase(&phase).as_str(), label, "{phase:?}");
        }
    }

    #[test]
    fn labels_are_listed_once_each_in_order() {
        let shown: Vec<String> = CacheStatus::ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            shown,
            [
                "HIT",
                "MISS",
                "STALE",
                "UPDATING",
                "EXPIRED",
                "REVALIDATED",
                "BYPASS"
            ]
        );
        assert_eq!(CacheStatus::LABELS.to_vec(), shown);
        let served: Vec<&str> = CacheStatus::ALL
            .iter()
            .filter(|s| s.served_from_cache())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(served, ["HIT", "STALE", "UPDATING", "REVALIDATED"]);
        let missed: Vec<&str> = CacheStatus::ALL
            .iter()
            .filter(|s| s.missed())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(missed, ["MISS", "EXPIRED"]);
    }
}
