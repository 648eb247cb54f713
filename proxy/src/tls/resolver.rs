//! SNI: which certificate a handshake gets, from a set that reloads swap whole.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// One immutable table of certificates by name.
#[derive(Default)]
pub struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is stored under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// For handshakes without SNI (IP literals) or with a name no certificate lists.
    default: Option<Arc<CertifiedKey>>,
    /// How many certificates it holds, for logs.
    count: usize,
}

impl CertSet {
    /// A set from `(names, key)` pairs in config order; the first certificate is the default.
    /// Names are lowercase `host` or `*.suffix`, already checked to be unique.
    pub fn new(entries: &[(Vec<String>, Arc<CertifiedKey>)]) -> Self {
        let mut set = CertSet {
            count: entries.len(),
            ..CertSet::default()
        };
        for (names, key) in entries {
            if set.default.is_none() {
                set.default = Some(key.clone());
            }
            for name in names {
                match name.strip_prefix("*.") {
                    Some(suffix) => set.wildcard.insert(suffix.to_string(), key.clone()),
                    None => set.exact.insert(name.clone(), key.clone()),
                };
            }
        }
        set
    }

    /// The certificate for a requested server name: exact, then a one-label wildcard, then
    /// the default.
    pub fn lookup(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return Some(k.clone());
            }
        }
        self.default.clone()
    }

    /// How many certificates the set holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the set holds no certificate.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// The resolver every HTTPS listener shares. A reload stores a new [`CertSet`] with one
/// pointer swap: a handshake sees the old set or the new one, never a half-built one.
pub struct SniResolver {
    set: ArcSwap<CertSet>,
}

impl SniResolver {
    /// A resolver serving `set`.
    pub fn new(set: CertSet) -> Self {
        SniResolver {
            set: ArcSwap::from_pointee(set),
        }
    }

    /// Serves `set` from the next handshake on.
    pub fn replace(&self, set: CertSet) {
        self.set.store(Arc::new(set));
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SniResolver({} certificate(s))", self.set.load().len())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.set.load().lookup(hello.server_name())
    }
}
