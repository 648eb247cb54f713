//! Steering: a viewer's address to its region (longest matching prefix), then to the ordered
//! list of edges its player tries.
//!
//! The order, best first:
//! 1. edges that are up and fully ready, by region (the viewer's own, then its fallback
//!    regions in their configured order, then every other region in file order), least
//!    loaded first within a region (unknown load after known loads, then file order);
//! 2. edges that are up but degraded (`/readyz` "ready, degraded": a pool in panic mode, which
//!    serves cache hits but may fail misses), in the same order;
//! 3. edges that are down, in the same order: a player that exhausted the others still has
//!    something to try, and the poller may simply not have seen the recovery yet.

use std::net::IpAddr;

use super::config::FleetConfig;
use super::health::EdgeHealth;

/// The region of a client: the longest configured prefix holding it, else the default one.
pub fn region_of(config: &FleetConfig, client: IpAddr) -> &str {
    config
        .prefixes
        .iter()
        .find(|(cidr, _)| cidr.contains(client))
        .map_or(config.default_region.as_str(), |(_, region)| {
            region.as_str()
        })
}

/// Indexes into `config.edges`, best first for a viewer in `region` (see the module doc).
pub fn rank(config: &FleetConfig, health: &[EdgeHealth], region: &str) -> Vec<usize> {
    let fallback = config
        .regions
        .get(region)
        .map(|r| r.fallback.as_slice())
        .unwrap_or_default();
    let region_rank = |edge_region: &str| -> usize {
        if edge_region == region {
            0
        } else if let Some(at) = fallback.iter().position(|r| r == edge_region) {
            1 + at
        } else {
            // Other regions: after the fallbacks, in the order their first edge appears.
            1 + fallback.len()
                + config
                    .edges
                    .iter()
                    .position(|e| e.region == edge_region)
                    .unwrap_or(usize::MAX - fallback.len() - 1)
        }
    };
    let mut order: Vec<usize> = (0..config.edges.len()).collect();
    order.sort_by_key(|&i| {
        let state = health.get(i).cloned().unwrap_or_default();
        let tier = match (state.up, state.degraded) {
            (true, false) => 0,
            (true, true) => 1,
            (false, _) => 2,
        };
        // Down edges: their last load is stale, keep them in region and file order.
        let load = if state.up {
            state.connections.map_or((1, 0), |n| (0, n))
        } else {
            (0, 0)
        };
        (tier, region_rank(&config.edges[i].region), load, i)
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: &str = r#"
default_region = "eu"
[regions.eu]
prefixes = ["10.0.0.0/8"]
fallback = ["us"]
[regions.us]
prefixes = ["10.1.0.0/16"]
fallback = ["eu"]
[regions.asia]
prefixes = ["10.1.2.0/24"]
[[edges]]
name = "eu-1"
region = "eu"
url = "http://eu-1/stream/"
admin = "http://127.0.0.1:1"
[[edges]]
name = "us-1"
region = "us"
url = "http://us-1/stream/"
admin = "http://127.0.0.1:2"
[[edges]]
name = "eu-2"
region = "eu"
url = "http://eu-2/stream/"
admin = "http://127.0.0.1:3"
[[edges]]
name = "asia-1"
region = "asia"
url = "http://asia-1/stream/"
admin = "http://127.0.0.1:4"
"#;

    fn names(config: &FleetConfig, order: &[usize]) -> Vec<String> {
        order
            .iter()
            .map(|&i| config.edges[i].name.clone())
            .collect()
    }

    fn up(connections: i64) -> EdgeHealth {
        EdgeHealth {
            connections: Some(connections),
            checked: true,
            ..EdgeHealth::default()
        }
    }

    #[test]
    fn the_longest_prefix_picks_the_region() {
        let config = FleetConfig::parse("f.toml", FLEET).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(region_of(&config, ip("10.9.9.9")), "eu");
        assert_eq!(region_of(&config, ip("10.1.9.9")), "us");
        assert_eq!(region_of(&config, ip("10.1.2.9")), "asia");
        assert_eq!(region_of(&config, ip("192.0.2.1")), "eu", "the default");
        assert_eq!(region_of(&config, ip("::ffff:10.1.2.9")), "asia");
    }

    #[test]
    fn region_then_load_then_health() {
        let config = FleetConfig::parse("f.toml", FLEET).unwrap();
        let mut health = vec![up(5), up(0), up(1), up(0)];
        assert_eq!(
            names(&config, &rank(&config, &health, "eu")),
            ["eu-2", "eu-1", "us-1", "asia-1"]
        );
        assert_eq!(
            names(&config, &rank(&config, &health, "us")),
            ["us-1", "eu-2", "eu-1", "asia-1"]
        );
        // Asia has no fallback: the others follow in file order of their regions.
        assert_eq!(
            names(&config, &rank(&config, &health, "asia")),
            ["asia-1", "eu-2", "eu-1", "us-1"]
        );
        health[2].up = false;
        health[0].degraded = true;
        assert_eq!(
            names(&config, &rank(&config, &health, "eu")),
            ["us-1", "asia-1", "eu-1", "eu-2"]
        );
    }
}
