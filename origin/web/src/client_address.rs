//! Who the client is: the TCP peer, or, when the peer is a trusted proxy (`--trusted-proxy`),
//! the address that proxy names in `X-Forwarded-For`.
//!
//! A proxy appends the address it received the request from, so only the last entry is the
//! trusted proxy's word; anything before it came from the client. One hop: the edge talks to
//! the web app directly.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

/// One `--trusted-proxy` value: an address block such as `10.0.0.0/8`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

/// A `--trusted-proxy` value that is not an address or address block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an address block: use CIDR notation such as 10.0.0.0/8, fd00::/8 or a single address")]
pub struct InvalidCidr(String);

impl FromStr for Cidr {
    type Err = InvalidCidr;

    fn from_str(text: &str) -> Result<Self, InvalidCidr> {
        let text = text.trim();
        if let Ok(net) = text.parse::<IpNet>() {
            // 10.1.2.3/8 names the block 10.0.0.0/8: keep what was meant, not the host bits.
            return Ok(Self(net.trunc()));
        }
        text.parse::<IpAddr>()
            .map(|addr| Self(IpNet::from(addr)))
            .map_err(|_| InvalidCidr(text.to_owned()))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Cidr {
    /// Whether `addr` is in this block (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.contains(&addr.to_canonical())
    }

    /// The prefix length (`/24`): the longer, the more specific, when blocks overlap.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }
}

impl Default for TrustedProxies {
    /// Loopback: an edge on the same host (`make run`).
    fn default() -> Self {
        Self::loopback()
    }
}

impl TrustedProxies {
    /// The proxies in `blocks`; an empty list trusts no one (every client is its TCP peer).
    pub fn new(blocks: Vec<Cidr>) -> Self {
        Self(blocks)
    }

    /// `127.0.0.0/8` and `::1`.
    pub fn loopback() -> Self {
        Self(vec![
            "127.0.0.0/8".parse().expect("a valid block"),
            "::1/128".parse().expect("a valid block"),
        ])
    }

    /// Whether `addr` is one of the trusted proxies.
    pub fn trusts(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|block| block.contains(addr))
    }

    /// The blocks, for the startup log line.
    pub fn blocks(&self) -> &[Cidr] {
        &self.0
    }

    /// The client of a request that came from `peer` with `headers`: the last
    /// `X-Forwarded-For` entry when the peer is trusted and that entry is an address, else
    /// the peer.
    pub fn client_address(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .next_back()
            .and_then(|entry| entry.trim().parse::<IpAddr>().ok())
            .map_or(peer, |client| client.to_canonical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn blocks_parse_from_cidr_or_a_single_address() {
        let block: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(block.to_string(), "10.0.0.0/8");
        assert!(block.contains(ip("10.200.0.1")));
        assert!(!block.contains(ip("11.0.0.1")));
        let single: Cidr = "192.0.2.7".parse().unwrap();
        assert!(single.contains(ip("192.0.2.7")) && !single.contains(ip("192.0.2.8")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!("::ffff:127.0.0.1"
            .parse::<IpAddr>()
            .is_ok_and(|mapped| TrustedProxies::loopback().trusts(mapped)));
        for bad in ["", "10.0.0.0/33", "edge", "10.0.0/8"] {
            assert_eq!(
                bad.parse::<Cidr>(),
                Err(InvalidCidr(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        // (peer, X-Forwarded-For values, the client)
        let cases: &[(&str, &[&str], &str)] = &[
            // No proxy involved: the peer.
            ("203.0.113.5", &[], "203.0.113.5"),
            // An untrusted peer cannot name someone else.
            ("203.0.113.5", &["198.51.100.1"], "203.0.113.5"),
            // The trusted edge names its client.
            ("10.0.0.2", &["198.51.100.1"], "198.51.100.1"),
            // What the client sent before the edge's entry is its own word.
            ("10.0.0.2", &["192.0.2.9, 198.51.100.1"], "198.51.100.1"),
            // Across several header lines, the last entry of the last line.
            ("10.0.0.2", &["192.0.2.9", "198.51.100.1"], "198.51.100.1"),
            // A client naming a trusted address first is still only itself.
            ("10.0.0.2", &["10.9.9.9, 198.51.100.1"], "198.51.100.1"),
            // The proxy's entry is garbage: the proxy.
            ("10.0.0.2", &["unknown"], "10.0.0.2"),
        ];
        for (peer, values, client) in cases {
            assert_eq!(
                trusted.client_address(&forwarded(values), ip(peer)),
                ip(client),
                "peer {peer}, X-Forwarded-For {values:?}"
            );
        }
        let nobody = TrustedProxies::new(Vec::new());
        assert_eq!(
            nobody.client_address(&forwarded(&["198.51.100.1"]), ip("127.0.0.1")),
            ip("127.0.0.1")
        );
    }
}
