//! `[tls]`: the certificates the HTTPS listeners serve, each read by the loader and checked
//! against the names it is written to serve.

use std::collections::HashMap;

use super::super::file::{ConfigFile, TlsSection};
use super::super::loader;
use super::listen::Listeners;
use super::Compiler;
use crate::config::types::CertSpec;
use crate::host::HostMatch;
use crate::tls;

impl Compiler<'_> {
    pub(super) fn certificates(&mut self, t: &TlsSection) -> Vec<CertSpec> {
        let mut out: Vec<CertSpec> = Vec::new();
        // name -> index of the certificate that serves it
        let mut owners: HashMap<String, usize> = HashMap::new();
        for (i, entry) in t.certificates.iter().enumerate() {
            let field = format!("tls.certificates[{i}]");
            let e = entry.get_ref();
            let cert = self.path(e.cert.get_ref());
            let key = self.path(e.key.get_ref());
            let loaded = match loader::certificate(&cert, &key) {
                Ok(l) => l,
                Err(err) => {
                    // A key problem is reported at the key field, everything else at the cert.
                    let (span, f) = match &err {
                        tls::CertError::NoKey { .. } => (e.key.span(), format!("{field}.key")),
                        tls::CertError::Read { path, .. } if *path == key => {
                            (e.key.span(), format!("{field}.key"))
                        }
                        _ => (e.cert.span(), format!("{field}.cert")),
                    };
                    self.err(span, &f, err.to_string());
                    continue;
                }
            };
            let names: Vec<String> = match &e.names {
                Some(list) => {
                    if list.get_ref().is_empty() {
                        self.err(list.span(), &format!("{field}.names"), "empty list: name at least one host, or leave names out to use the certificate's SANs");
                    }
                    let mut names = Vec::new();
                    for (j, n) in list.get_ref().iter().enumerate() {
                        let nf = format!("{field}.names[{j}]");
                        let name = match HostMatch::parse(n.get_ref()) {
                            Ok(HostMatch::Exact(h)) => h,
                            Ok(HostMatch::Wildcard(suffix)) => format!("*{suffix}"),
                            Ok(HostMatch::Any) => continue,
                            Err(reason) => {
                                self.err(n.span(), &nf, reason);
                                continue;
                            }
                        };
                        if !loaded.covers(&name) {
                            self.err(
                                n.span(),
                                &nf,
                                format!(
                                    "{} does not cover \"{name}\" (its DNS names: {}); clients would reject the handshake",
                                    cert.display(),
                                    if loaded.sans.is_empty() { "none".to_string() } else { loaded.sans.join(", ") }
                                ),
                            );
                        }
                        names.push(name);
                    }
                    names
                }
                None => {
                    if loaded.sans.is_empty() {
                        self.err(
                            e.cert.span(),
                            &format!("{field}.cert"),
                            format!("{}: the certificate has no DNS names in subjectAltName; list the hosts it serves with names = [...]", cert.display()),
                        );
                    }
                    loaded.sans.clone()
                }
            };
            for name in &names {
                if let Some(j) = owners.get(name) {
                    let span = e.names.as_ref().map_or(e.cert.span(), |n| n.span());
                    self.err(
                        span,
                        &format!("{field}.names"),
                        format!("\"{name}\" is already served by tls.certificates[{j}]; each name needs exactly one certificate"),
                    );
                } else {
                    owners.insert(name.clone(), i);
                }
            }
            out.push(CertSpec {
                cert,
                key,
                names,
                loaded,
            });
        }
        out
    }

    /// HTTPS listeners and certificates come together: one without the other is a mistake.
    pub(super) fn tls_needs_https(
        &mut self,
        file: &ConfigFile,
        listen: &Listeners,
        certificates: &[CertSpec],
    ) {
        if !listen.https.is_empty() && certificates.is_empty() && file.tls.certificates.is_empty() {
            let span = file.listen.https[0].span();
            self.err(
                span,
                "listen.https",
                "HTTPS listeners need at least one [[tls.certificates]] entry (cert = \"...pem\", key = \"...key\")",
            );
        }
        if listen.https.is_empty() {
            if let Some(first) = file.tls.certificates.first() {
                self.err(
                    first.span(),
                    "tls.certificates",
                    "certificates are configured but no HTTPS listener: add [listen] https = [\"0.0.0.0:443\"]",
                );
            }
        }
    }
}
