//! TLS for tests: a CA that issues certificates, clients that read what the edge presents,
//! an edge with an HTTPS listener, and an HTTPS origin.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dime_edge::tls::generate::DevAuthority;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::edge::Launch;
use super::EdgeProc;

/// A test CA and the directory its certificates are written to.
pub struct Pki {
    /// Holds `ca.pem` and every issued pair.
    pub dir: tempfile::TempDir,
    ca: DevAuthority,
}

/// Paths of one issued certificate.
#[derive(Clone, Debug)]
pub struct Pair {
    /// PEM chain.
    pub cert: PathBuf,
    /// PEM key.
    pub key: PathBuf,
}

impl Pair {
    /// The leaf certificate's DER, as written now.
    pub fn leaf_der(&self) -> Vec<u8> {
        CertificateDer::pem_file_iter(&self.cert)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }
}

impl Pki {
    /// A fresh CA in a fresh directory.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevAuthority::new().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
        Pki { dir, ca }
    }

    /// The CA certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// Issues a certificate for `names` as `<file>.pem` / `<file>.key`, replacing any earlier
    /// pair of that name by rename (key first), as a certificate manager does.
    pub fn issue(&self, file: &str, names: &[&str]) -> Pair {
        self.issue_for(file, names, Duration::from_secs(30 * 24 * 3600))
    }

    /// Like [`Pki::issue`], valid from yesterday until `valid_for` from now.
    pub fn issue_for(&self, file: &str, names: &[&str], valid_for: Duration) -> Pair {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let issued = self.ca.issue(&names, valid_for).unwrap();
        let pair = self.pair(file);
        replace(&pair.key, issued.key_pem.as_bytes());
        replace(&pair.cert, issued.cert_pem.as_bytes());
        pair
    }

    /// The paths `issue(file, ..)` writes.
    pub fn pair(&self, file: &str) -> Pair {
        Pair {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        }
    }
}

/// Replaces `path` atomically with `bytes`.
pub fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// What a TLS handshake with the edge gave.
#[derive(Debug)]
pub struct Handshake {
    /// The leaf certificate presented, DER.
    pub leaf: Vec<u8>,
    /// The protocol chosen by ALPN.
    pub alpn: Option<Vec<u8>>,
    /// The TLS version.
    pub version: String,
}

/// A rustls client config trusting only `ca_pem`, offering `alpn`.
pub fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Connects to `addr`, handshakes for `name` (an IP sends no SNI) and verifies the chain.
pub async fn handshake(
    addr: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<Handshake, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(config).connect(server_name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| format!("handshake: {e}"))?;
    let (_, conn) = tls.get_ref();
    Ok(Handshake {
        leaf: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default(),
        alpn: conn.alpn_protocol().map(|p| p.to_vec()),
        version: conn
            .protocol_version()
            .map_or_else(String::new, |v| format!("{v:?}")),
    })
}

/// An HTTPS client trusting `ca_pem` that sends `names` to `addr`.
pub fn https_client(ca_pem: &str, names: &[&str], addr: SocketAddr) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(30));
    for n in names {
        b = b.resolve(n, addr);
    }
    b
}

/// An edge with an HTTP and an HTTPS listener on free ports, config `body` after `[listen]`,
/// written to `dir/edge.toml`.
pub struct TlsEdge {
    /// The running process.
    pub edge: EdgeProc,
    /// The HTTPS listener.
    pub https: SocketAddr,
    /// The config file.
    pub config: PathBuf,
}

impl TlsEdge {
    /// Starts it.
    pub async fn start(dir: &Path, body: &str) -> TlsEdge {
        let config = dir.join("edge.toml");
        let (edge, [_, https, _]) = EdgeProc::start_on_free_ports(|[http, https, admin]| {
            std::fs::write(
                &config,
                format!(
                    "[listen]\nhttp = [\"{http}\"]\nhttps = [\"{https}\"]\nadmin = \"{admin}\"\n\n{body}"
                ),
            )
            .unwrap();
            Launch {
                dir: tempfile::tempdir().unwrap(),
                http,
                admin,
                config: config.clone(),
                args: vec!["run".into(), "-c".into(), config.display().to_string()],
            }
        })
        .await;
        TlsEdge {
            edge,
            https,
            config,
        }
    }

    /// `https://name:port/path` on the HTTPS listener.
    pub fn url(&self, name: &str, path: &str) -> String {
        format!("https://{name}:{}{path}", self.https.port())
    }

    /// Sends SIGHUP.
    pub fn hangup(&self) {
        signal(self.edge.pid(), "HUP");
    }
}

/// Sends `kill -SIG pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

/// `[[tls.certificates]]` for `pair`, with `names` when given.
pub fn cert_entry(pair: &Pair, names: Option<&[&str]>) -> String {
    let names = names.map_or(String::new(), |n| {
        let list: Vec<String> = n.iter().map(|x| format!("\"{x}\"")).collect();
        format!("names = [{}]\n", list.join(", "))
    });
    format!(
        "[[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n{names}\n",
        pair.cert.display(),
        pair.key.display()
    )
}

/// An HTTPS origin on loopback answering `tls-origin PATH` to everything.
pub struct TlsOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsOrigin {
    /// Serves with the certificate `pair`.
    pub async fn start(pair: &Pair) -> TlsOrigin {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pair.cert)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_file(&pair.key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                        let body = format!("tls-origin {}", req.uri().path());
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsOrigin { addr, task }
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}
