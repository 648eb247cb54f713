//! HTTPS: certificates chosen by SNI, HTTP/2 and HTTP/1.1 by ALPN, certificates rotated
//! under load, bad certificates refused, redirects to HTTPS, and origins over TLS.

use crate::common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::edge::{check, check_in, pool, BIN};
use common::tls::{
    cert_entry, client_config, handshake, https_client, replace, Pair, Pki, TlsEdge, TlsOrigin,
};
use common::Upstream;

fn route(pool_name: &str) -> String {
    format!("[[routes]]\npath = \"/\"\npool = \"{pool_name}\"\n")
}

/// An edge serving `pair` over HTTPS, with every path routed to `origin`.
async fn edge_with(pki: &Pki, pair: &Pair, origin: &Upstream) -> TlsEdge {
    let body = format!(
        "{}{}{}",
        cert_entry(pair, None),
        pool("p", &[origin.addr], ""),
        route("p")
    );
    TlsEdge::start(pki.dir.path(), &body).await
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_picks_the_certificate_issued_for_each_name() {
    let origin = Upstream::start("o").await;
    let pki = Pki::new();
    // The first certificate is the default: it also carries the IP, for handshakes without SNI.
    let a = pki.issue("a", &["a.test", "127.0.0.1"]);
    let b = pki.issue("b", &["b.test"]);
    let wild = pki.issue("wild", &["*.w.test"]);
    let body = format!(
        "{}{}{}{}{}",
        cert_entry(&a, Some(&["a.test"])),
        cert_entry(&b, None),
        cert_entry(&wild, None),
        pool("p", &[origin.addr], ""),
        route("p")
    );
    let edge = TlsEdge::start(pki.dir.path(), &body).await;
    let config = client_config(pki.ca_pem(), &[b"http/1.1"]);

    for (name, expected) in [
        ("a.test", &a),
        ("b.test", &b),
        ("B.Test", &b),
        ("x.w.test", &wild),
        ("127.0.0.1", &a),
    ] {
        let hs = handshake(edge.https, name, config.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", edge.edge.logs()));
        assert_eq!(
            hs.leaf,
            expected.leaf_der(),
            "{name} got another certificate"
        );
    }
    // A wildcard covers one label: deeper names get the default, which the client rejects.
    let deep = handshake(edge.https, "a.b.w.test", config.clone()).await;
    assert!(deep.is_err(), "a.b.w.test was accepted: {deep:?}");

    // Each certificate's end date is exported, for alerts before one lapses (issued for 30 days).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for pair in [&a, &b, &wild] {
        let series = format!(
            "dime_tls_certificate_expiry_timestamp_seconds{{cert=\"{}\"}}",
            pair.cert.display()
        );
        let expiry = edge.edge.metric(&series).await.expect(&series);
        let days = (expiry - now) / 86400.0;
        assert!(
            (29.0..31.0).contains(&days),
            "{series} {expiry}: {days} days"
        );
    }

    // And through a real client, with the name in the Host header too.
    let client = https_client(pki.ca_pem(), &["b.test"], edge.https)
        .build()
        .unwrap();
    let r = client
        .get(edge.url("b.test", "/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "o /hello");
    assert_eq!(
        origin.last().headers["x-forwarded-proto"],
        "https",
        "the origin is told the viewer used HTTPS"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_and_http1_are_both_served_by_alpn_over_tls_1_2_and_1_3() {
    let origin = Upstream::start("o").await;
    let pki = Pki::new();
    let a = pki.issue("a", &["a.test"]);
    let edge = edge_with(&pki, &a, &origin).await;

    let h2 = handshake(
        edge.https,
        "a.test",
        client_config(pki.ca_pem(), &[b"h2", b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(h2.version, "TLSv1_3");
    let h1 = handshake(
        edge.https,
        "a.test",
        client_config(pki.ca_pem(), &[b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));

    // TLS 1.2 only: still served.
    let tls12 = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        .with_root_certificates(load_roots(pki.ca_pem()))
        .with_no_client_auth();
    let hs = handshake(edge.https, "a.test", Arc::new(tls12))
        .await
        .unwrap();
    assert_eq!(hs.version, "TLSv1_2");

    let h2_client = https_client(pki.ca_pem(), &["a.test"], edge.https)
        .build()
        .unwrap();
    let r = h2_client
        .get(edge.url("a.test", "/two"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.text().await.unwrap(), "o /two");

    let h1_client = https_client(pki.ca_pem(), &["a.test"], edge.https)
        .http1_only()
        .build()
        .unwrap();
    let r = h1_client
        .get(edge.url("a.test", "/one"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.text().await.unwrap(), "o /one");
}

/// Counts the TLS records that arrive on a client's TCP stream (the bytes under rustls).
struct RecordCounter {
    tcp: tokio::net::TcpStream,
    records: Arc<AtomicUsize>,
    /// Bytes of the record header being read, and what is left of the record's body.
    header: Vec<u8>,
    body_left: usize,
}

impl tokio::io::AsyncRead for RecordCounter {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        std::task::ready!(std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf))?;
        let this = &mut *self;
        for &b in &buf.filled()[before..] {
            if this.body_left > 0 {
                this.body_left -= 1;
                continue;
            }
            this.header.push(b);
            if this.header.len() == 5 {
                this.body_left = u16::from_be_bytes([this.header[3], this.header[4]]) as usize;
                this.header.clear();
                this.records.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for RecordCounter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// An edge over HTTPS for `a.test` in front of an origin with a cacheable 1 KiB
/// `/hit.m3u8`, and a TLS connection to it offering `alpn`, counting the records that arrive.
async fn counted_connection(
    alpn: &[u8],
) -> (
    Upstream,
    TlsEdge,
    tokio_rustls::client::TlsStream<RecordCounter>,
    Arc<AtomicUsize>,
) {
    let origin = Upstream::start("o").await;
    origin.script(
        "/hit.m3u8",
        common::upstream::Script::ok(&[("cache-control", "max-age=3600")], vec![b'x'; 1024]),
    );
    let pki = Pki::new();
    let pair = pki.issue("a", &["a.test"]);
    let edge = edge_with(&pki, &pair, &origin).await;
    let records = Arc::new(AtomicUsize::new(0));
    let tcp = tokio::net::TcpStream::connect(edge.https).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let counted = RecordCounter {
        tcp,
        records: records.clone(),
        header: Vec::new(),
        body_left: 0,
    };
    let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config(pki.ca_pem(), &[alpn]))
        .connect(name, counted)
        .await
        .unwrap();
    (origin, edge, tls, records)
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_responses_ready_together_leave_in_one_write() {
    // pingora's h2 connection flushed once per stream that produced a frame, so 32 hits asked
    // for at once left as some 32 TLS records and as many sendmsg calls. The edge now collects
    // what is ready into one write (proxy/vendor/README.md, change 5).
    let (origin, _edge, tls, records) = counted_connection(b"h2").await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let get = || {
        http::Request::get("https://a.test/hit.m3u8")
            .body(())
            .unwrap()
    };
    let fetch = |response: h2::client::ResponseFuture| async move {
        let response = response.await.unwrap();
        let cache = response.headers()["x-cache-status"].clone();
        let mut body = response.into_body();
        let mut len = 0;
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            len += chunk.len();
            body.flow_control().release_capacity(chunk.len()).unwrap();
        }
        (cache, len)
    };

    // The miss that fills the cache, then a pause for the settings and session tickets.
    let (response, _) = client.send_request(get(), true).unwrap();
    assert_eq!(fetch(response).await.1, 1024);
    tokio::time::sleep(Duration::from_millis(300)).await;

    for round in 0..3 {
        let before = records.load(Ordering::Relaxed);
        let mut pending = Vec::new();
        for _ in 0..32 {
            let (response, _) = client.send_request(get(), true).unwrap();
            pending.push(response);
        }
        for response in pending {
            let (cache, len) = fetch(response).await;
            assert_eq!((cache.to_str().unwrap(), len), ("HIT", 1024));
        }
        let sent = records.load(Ordering::Relaxed) - before;
        assert!(
            sent <= 16,
            "round {round}: 32 hits asked for at once came in {sent} TLS records"
        );
    }
    assert_eq!(origin.hits_for("/hit.m3u8"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_https_1_1_response_is_one_tls_record() {
    // pingora writes the header, then the body, and rustls made a record of each: two
    // encryptions for a response that fits in one record. The edge joins them
    // (proxy/vendor/README.md, change 5).
    let (_origin, _edge, mut tls, records) = counted_connection(b"http/1.1").await;
    let get = async |tls: &mut tokio_rustls::client::TlsStream<RecordCounter>| {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tls.write_all(b"GET /hit.m3u8 HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = tls.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {response:?}");
            response.extend_from_slice(&buf[..n]);
            if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
                if response.len() >= end + 4 + 1024 {
                    return String::from_utf8_lossy(&response[..end]).to_lowercase();
                }
            }
        }
    };
    // The miss that fills the cache, then a pause for the session tickets.
    get(&mut tls).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before = records.load(Ordering::Relaxed);
    for _ in 0..10 {
        let head = get(&mut tls).await;
        assert!(head.contains("x-cache-status: hit"), "{head}");
    }
    let sent = records.load(Ordering::Relaxed) - before;
    assert_eq!(sent, 10, "10 hits of 1 KiB came in {sent} TLS records");
}

/// A ClientHello for `name` announcing `version` the way pre-TLS 1.3 clients do: in the
/// legacy version field, without a supported_versions extension.
fn client_hello(version: [u8; 2], name: &str) -> Vec<u8> {
    let mut ext = Vec::new();
    // server_name
    let host = name.as_bytes();
    let mut sni = vec![0x00];
    sni.extend((host.len() as u16).to_be_bytes());
    sni.extend(host);
    let mut list = (sni.len() as u16).to_be_bytes().to_vec();
    list.extend(sni);
    ext.extend([0x00, 0x00]);
    ext.extend((list.len() as u16).to_be_bytes());
    ext.extend(list);
    // supported_groups: x25519, secp256r1; ec_point_formats: uncompressed
    ext.extend([0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]);
    ext.extend([0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
    ext.extend([
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01,
    ]);
    let mut body = version.to_vec();
    body.extend([7u8; 32]); // random
    body.push(0); // no session id
                  // ECDHE-ECDSA/RSA with AES-GCM (TLS 1.2) and AES-CBC-SHA (TLS 1.0/1.1)
    body.extend([0x00, 0x08, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x09, 0xc0, 0x13]);
    body.extend([0x01, 0x00]); // null compression
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut handshake = vec![0x01];
    handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// The first record the edge answers `hello` with: its content type and first 2 payload bytes.
async fn first_record(addr: std::net::SocketAddr, hello: &[u8]) -> [u8; 7] {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let mut answer = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut answer))
        .await
        .expect("no answer to the ClientHello")
        .unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_1_1_and_older_are_refused() {
    let origin = Upstream::start("o").await;
    let pki = Pki::new();
    let a = pki.issue("a", &["a.test"]);
    let edge = edge_with(&pki, &a, &origin).await;
    // The same hello as TLS 1.2 gets a ServerHello (handshake record, 22)...
    let tls12 = first_record(edge.https, &client_hello([3, 3], "a.test")).await;
    assert_eq!(tls12[0], 22, "TLS 1.2 hello answered with {tls12:?}");
    assert_eq!(tls12[5], 2, "not a ServerHello: {tls12:?}");
    // ...and as TLS 1.1 or 1.0 a fatal alert (21), no handshake.
    for version in [[3, 2], [3, 1]] {
        let old = first_record(edge.https, &client_hello(version, "a.test")).await;
        assert_eq!(old[0], 21, "{version:?} hello answered with {old:?}");
        assert_eq!(old[5], 2, "not a fatal alert: {old:?}");
    }
}

fn load_roots(ca_pem: &str) -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

/// Fresh handshakes in a loop until `stop`; counts successes and keeps every failure.
fn handshake_loop(
    addr: std::net::SocketAddr,
    name: &'static str,
    config: Arc<rustls::ClientConfig>,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            match handshake(addr, name, config.clone()).await {
                Ok(_) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => failures.lock().unwrap().push(e),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

/// Handshakes until the presented leaf is `want`, at most 10 s.
async fn wait_for_leaf(edge: &TlsEdge, name: &str, ca_pem: &str, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hs = handshake(edge.https, name, client_config(ca_pem, &[b"http/1.1"])).await;
        if hs.as_ref().is_ok_and(|h| h.leaf == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served: {hs:?}\n{}",
            edge.edge.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_rotate_under_load_without_one_failed_handshake() {
    let origin = Upstream::start("o").await;
    let pki = Pki::new();
    let first = pki.issue("site", &["a.test"]);
    let edge = edge_with(&pki, &first, &origin).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let config = client_config(pki.ca_pem(), &[b"h2", b"http/1.1"]);
    let loops: Vec<_> = (0..3)
        .map(|_| {
            handshake_loop(
                edge.https,
                "a.test",
                config.clone(),
                stop.clone(),
                ok.clone(),
                failures.clone(),
            )
        })
        .collect();

    // Three rotations, each replacing key and certificate the way certbot or cert-manager
    // does. Nobody asks for a reload: the file watcher sees the new files. (Between the two
    // renames the key does not match the old certificate: that reload is rejected and the
    // old pair keeps serving.)
    let mut current = first.leaf_der();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let next = pki.issue("site", &["a.test"]);
        let want = next.leaf_der();
        assert_ne!(want, current);
        wait_for_leaf(&edge, "a.test", pki.ca_pem(), &want).await;
        current = want;
    }
    assert!(
        edge.edge.logs().contains("config reloaded"),
        "{}",
        edge.edge.logs()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed handshakes: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "too few handshakes to mean anything"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_new_certificate_is_rejected_and_the_old_one_kept() {
    // SIGHUP here; the file watcher takes the same path.
    let origin = Upstream::start("o").await;
    let pki = Pki::new();
    let good = pki.issue("site", &["a.test"]);
    let edge = edge_with(&pki, &good, &origin).await;
    let good_leaf = good.leaf_der();
    let good_key = std::fs::read(&good.key).unwrap();

    // A key from another certificate: the pair does not match.
    let other = pki.issue("other", &["a.test"]);
    replace(&good.key, &std::fs::read(&other.key).unwrap());
    replace(
        &good.cert,
        &std::fs::read(&pki.issue("site2", &["a.test"]).cert).unwrap(),
    );
    edge.hangup();
    wait_for_log(&edge, "does not match the certificate").await;
    let hs = handshake(edge.https, "a.test", client_config(pki.ca_pem(), &[]))
        .await
        .unwrap();
    assert_eq!(
        hs.leaf, good_leaf,
        "the old certificate must still be served"
    );

    // Not PEM at all.
    replace(&good.cert, b"this is not a certificate\n");
    replace(&good.key, &good_key);
    edge.hangup();
    wait_for_log(&edge, "no certificate").await;
    let hs = handshake(edge.https, "a.test", client_config(pki.ca_pem(), &[]))
        .await
        .unwrap();
    assert_eq!(hs.leaf, good_leaf);
    let logs = edge.edge.logs();
    assert!(logs.contains("still serving the previous config"), "{logs}");
    assert!(
        logs.contains(good.cert.to_str().unwrap()),
        "the error names the file: {logs}"
    );
}

async fn wait_for_log(edge: &TlsEdge, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !edge.edge.logs().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no \"{needle}\" in the log:\n{}",
            edge.edge.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `dime-edge check` on `body` (after a `[listen]` with an HTTPS listener) in `dir`.
fn check_https(dir: &std::path::Path, body: &str) -> (bool, String) {
    let (status, text) = check_in(
        dir,
        "check.toml",
        &format!("[listen]\nhttp = [\"127.0.0.1:18080\"]\nhttps = [\"127.0.0.1:18443\"]\n\n{body}\n[pools.p]\nbackends = [\"127.0.0.1:18081\"]\n\n[[routes]]\npath = \"/\"\npool = \"p\"\n"),
    );
    (status.success(), text)
}

#[test]
fn bad_certificates_are_refused_with_the_config_line_and_the_file() {
    let pki = Pki::new();
    let a = pki.issue("a", &["a.test"]);
    let b = pki.issue("b", &["b.test"]);
    let dir = pki.dir.path();

    // Relative paths are relative to the config file.
    let (ok, text) = check_https(
        dir,
        "[[tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n",
    );
    assert!(ok, "{text}");
    assert!(text.contains("1 certificate(s)"), "{text}");

    let (ok, text) = check_https(
        dir,
        "[[tls.certificates]]\ncert = \"a.pem\"\nkey = \"b.key\"\n",
    );
    assert!(!ok);
    assert!(
        text.contains(&format!(
            "check.toml:6:8: tls.certificates[0].cert: {} does not match the certificate in {}",
            b.key.display(),
            a.cert.display()
        )),
        "{text}"
    );

    let (ok, text) = check_https(
        dir,
        "[[tls.certificates]]\ncert = \"missing.pem\"\nkey = \"a.key\"\n",
    );
    assert!(!ok);
    assert!(
        text.contains("check.toml:6:8: tls.certificates[0].cert: cannot read"),
        "{text}"
    );
    assert!(text.contains("missing.pem"), "{text}");

    std::fs::write(dir.join("junk.pem"), "hello\n").unwrap();
    let (ok, text) = check_https(
        dir,
        "[[tls.certificates]]\ncert = \"junk.pem\"\nkey = \"a.key\"\n",
    );
    assert!(!ok);
    assert!(text.contains("tls.certificates[0].cert:"), "{text}");
    assert!(text.contains("junk.pem: no certificate"), "{text}");

    // A name the certificate does not cover would fail every client's verification.
    let (ok, text) = check_https(
        dir,
        "[[tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\nnames = [\"c.test\"]\n",
    );
    assert!(!ok);
    assert!(
        text.contains("tls.certificates[0].names[0]:")
            && text.contains("does not cover \"c.test\""),
        "{text}"
    );

    // One name, two certificates.
    let (ok, text) = check_https(
        dir,
        &format!(
            "{}{}",
            "[[tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n",
            "[[tls.certificates]]\ncert = \"b.pem\"\nkey = \"b.key\"\nnames = [\"b.test\", \"a.test\"]\n"
        ),
    );
    assert!(!ok);
    assert!(
        text.contains("\"a.test\" is already served by tls.certificates[0]"),
        "{text}"
    );

    // An expired certificate.
    let expired = expired_pair(dir);
    let (ok, text) = check_https(
        dir,
        &format!(
            "[[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
            expired.0, expired.1
        ),
    );
    assert!(!ok);
    assert!(text.contains("the certificate expired on"), "{text}");

    // Valid, but about to expire: accepted, with a warning.
    let soon = pki.issue_for("soon", &["a.test"], Duration::from_secs(5 * 86400));
    let (ok, text) = check_https(
        dir,
        &format!(
            "[[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
            soon.cert.display(),
            soon.key.display()
        ),
    );
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "check.toml: warning: tls.certificates[0].cert: {} expires on",
            soon.cert.display()
        )) && text.contains(" day(s)); renew it"),
        "{text}"
    );

    // HTTPS without certificates.
    let (ok, text) = check_https(dir, "");
    assert!(!ok);
    assert!(
        text.contains("listen.https: HTTPS listeners need at least one [[tls.certificates]]"),
        "{text}"
    );
}

/// A self-signed certificate that expired yesterday, as (cert, key) file names in `dir`.
fn expired_pair(dir: &std::path::Path) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["old.test".to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now - time::Duration::days(1);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("old.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("old.key"), key.serialize_pem()).unwrap();
    ("old.pem".into(), "old.key".into())
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_is_redirected_to_https_on_the_routes_that_ask() {
    let origin = Upstream::start("o").await;
    let pki = Pki::new();
    let a = pki.issue("a", &["a.test"]);
    let body = format!(
        "{}{}[[routes]]\npath = \"/secure/\"\npool = \"p\"\nredirect_https = true\n\n{}",
        cert_entry(&a, None),
        pool("p", &[origin.addr], ""),
        route("p")
    );
    let edge = TlsEdge::start(pki.dir.path(), &body).await;
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let http = edge.edge.http;

    let r = no_redirects
        .post(format!("http://{http}/secure/x?y=1"))
        .header("host", format!("a.test:{}", http.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308, "308 keeps the method and body");
    assert_eq!(
        r.headers()["location"],
        format!("https://a.test:{}/secure/x?y=1", edge.https.port()).as_str()
    );
    // Other routes stay on plain HTTP.
    let r = no_redirects
        .get(format!("http://{http}/open"))
        .header("host", "a.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Following the redirect lands on the HTTPS listener and the origin.
    let client = https_client(pki.ca_pem(), &["a.test"], edge.https)
        .resolve("a.test", http)
        .build()
        .unwrap();
    let r = client
        .get(format!("http://a.test:{}/secure/page", http.port()))
        .send()
        .await;
    // The resolver override maps the name to one address for both ports: reqwest keeps
    // each URL's port, so the redirect reaches the HTTPS listener.
    let r = r.unwrap();
    assert_eq!(r.url().scheme(), "https");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "o /secure/page");
    assert_eq!(origin.last().headers["x-forwarded-proto"], "https");
}

#[tokio::test(flavor = "multi_thread")]
async fn origins_over_tls_are_verified_against_the_configured_ca() {
    let pki = Pki::new();
    let origin_cert = pki.issue("origin", &["origin.test"]);
    let origin = TlsOrigin::start(&origin_cert).await;
    let site = pki.issue("a", &["a.test"]);
    let ca = pki.ca_file();
    let dir = tempfile::tempdir().unwrap();

    // The CA bundle that signed the origin's certificate: served, health checks pass over TLS.
    let verified = TlsEdge::start(
        dir.path(),
        &format!(
            "{}{}{}",
            cert_entry(&site, None),
            tls_pool(
                origin.addr,
                &format!("sni = \"origin.test\"\nca_file = \"{}\"", ca.display())
            ),
            route("p")
        ),
    )
    .await;
    verified.edge.wait_ready().await;
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(verified.edge.url("/via-tls"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "tls-origin /via-tls");
    drop(verified);

    // The wrong name: verification fails, nothing is served from that origin.
    let dir2 = tempfile::tempdir().unwrap();
    let wrong = TlsEdge::start(
        dir2.path(),
        &format!(
            "{}{}{}",
            cert_entry(&site, None),
            tls_pool(
                origin.addr,
                &format!("sni = \"other.test\"\nca_file = \"{}\"", ca.display())
            ),
            route("p")
        ),
    )
    .await;
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(wrong.edge.url("/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        502,
        "an origin whose certificate does not match its name"
    );
    drop(wrong);

    // Verification off: served, and the log says loudly that it is off.
    let dir3 = tempfile::tempdir().unwrap();
    let unverified = TlsEdge::start(
        dir3.path(),
        &format!(
            "{}{}{}",
            cert_entry(&site, None),
            tls_pool(origin.addr, "verify = false"),
            route("p")
        ),
    )
    .await;
    unverified.edge.wait_ready().await;
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(unverified.edge.url("/y"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        unverified
            .edge
            .logs()
            .contains("is NOT verified (verify = false)"),
        "{}",
        unverified.edge.logs()
    );
}

/// A pool `p` on one TLS backend with `extra` TLS lines and an HTTP health check over TLS.
fn tls_pool(addr: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "[pools.p]\nbackends = [\"{addr}\"]\ntls = true\n{extra}\n\n[pools.p.health_check]\ntype = \"http\"\npath = \"/healthz\"\ninterval = \"200ms\"\nrise = 1\nfall = 1\n\n"
    )
}

#[test]
fn pool_tls_settings_are_checked() {
    let (status, text) = check(
        "[listen]\nhttp = [\"127.0.0.1:18080\"]\n\n[pools.a]\nbackends = [\"127.0.0.1:1\"]\ntls = true\n\n[pools.b]\nbackends = [\"127.0.0.1:2\"]\nsni = \"x.test\"\n\n[pools.c]\nbackends = [\"127.0.0.1:3\"]\ntls = true\nsni = \"c.test\"\nca_file = \"nope.pem\"\n\n[[routes]]\npath = \"/\"\npool = \"a\"\n",
    );
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("edge.toml:6:7: pools.a.sni: tls = true needs sni"),
        "{text}"
    );
    assert!(
        text.contains("edge.toml:10:7: pools.b.sni: only applies with tls = true"),
        "{text}"
    );
    assert!(
        text.contains("edge.toml:16:11: pools.c.ca_file: cannot read"),
        "{text}"
    );
    assert!(text.contains("nope.pem"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cert_generate_makes_a_ca_and_a_certificate_the_edge_serves() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("certs");
    let gen = |names: &[&str]| {
        let mut args = vec!["cert", "generate", "--out", out_dir.to_str().unwrap()];
        for n in names {
            args.extend(["--name", n]);
        }
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let bad = Command::new(BIN)
        .args(["cert", "generate", "--out", out_dir.to_str().unwrap()])
        .args(["--name", "bad name!"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr),
        "dime-edge cert generate: --name \"bad name!\": not a host name (\"localhost\", \"*.example.test\") or an IP address\n"
    );
    assert!(!out_dir.exists(), "nothing is written for a bad name");
    let first = gen(&["localhost", "127.0.0.1"]);
    assert!(first.starts_with("new CA:"), "{first}");
    assert!(
        first.contains("curl --cacert"),
        "it says how to trust the CA: {first}"
    );
    let ca_pem = std::fs::read_to_string(out_dir.join("ca.pem")).unwrap();
    let second = gen(&["localhost", "127.0.0.1"]);
    assert!(second.starts_with("reused CA:"), "{second}");
    assert_eq!(
        std::fs::read_to_string(out_dir.join("ca.pem")).unwrap(),
        ca_pem,
        "a browser that trusts the CA keeps trusting it"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out_dir.join("edge.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the key is private: {mode:o}");

    let origin = Upstream::start("o").await;
    let edge = TlsEdge::start(
        dir.path(),
        &format!(
            "[[tls.certificates]]\ncert = \"certs/edge.pem\"\nkey = \"certs/edge.key\"\n\n{}{}",
            pool("p", &[origin.addr], ""),
            route("p")
        ),
    )
    .await;
    let client = https_client(&ca_pem, &["localhost"], edge.https)
        .build()
        .unwrap();
    let r = client
        .get(edge.url("localhost", "/dev"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = https_client(&ca_pem, &[], edge.https)
        .build()
        .unwrap()
        .get(format!("https://127.0.0.1:{}/ip", edge.https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the IP SAN serves clients that use the address"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_https_listener_waits_for_an_upgrade_and_the_running_one_keeps_serving() {
    let origin = Upstream::start("o").await;
    let pki = Pki::new();
    let a = pki.issue("a", &["a.test"]);
    let b = pki.issue("b", &["b.test"]);
    let edge = edge_with(&pki, &a, &origin).await;
    let text = std::fs::read_to_string(&edge.config).unwrap();
    let moved = format!("127.0.0.1:{}", common::free_port());
    // A new listener address and a second certificate, in one edit.
    let next = text.replace(&edge.https.to_string(), &moved) + &cert_entry(&b, None);
    replace(&edge.config, next.as_bytes());
    wait_for_log(&edge, "restart needed: listen.https changed").await;
    wait_for_log(&edge, "config reloaded").await;

    // The running listener stays, and already serves the new certificate.
    let hs = handshake(edge.https, "b.test", client_config(pki.ca_pem(), &[]))
        .await
        .unwrap();
    assert_eq!(hs.leaf, b.leaf_der());
    assert!(
        tokio::net::TcpStream::connect(&moved).await.is_err(),
        "a listener appeared without an upgrade"
    );
}
