//! `mtls::serve_tls` over real TCP and TLS: an axum `Router` sees the client certificate of
//! its connection (or none), untrusted certificates fail the handshake without stopping
//! the server, HTTP/2 is negotiated by ALPN; `server_config` rejects bad input by name.
#![cfg(feature = "mtls")]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tower_api_guard::mtls::{ClientCertificate, serve_tls, serve_tls_with_shutdown, server_config};
use tower_api_guard::{ClientAddr, ConfigErrorKind};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A certificate and its key, in PEM.
struct Pem {
    cert: String,
    key: String,
    der: Vec<u8>,
}

struct Pki {
    ca: String,
    server: Pem,
    client: Pem,
    /// Signed by a CA the server does not trust.
    rogue: Pem,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Pem {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

fn pki() -> Pki {
    let ca = new_ca("test CA");
    let other = new_ca("untrusted CA");
    Pki {
        server: leaf(
            &ca,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        client: leaf(&ca, &["client.test"], ExtendedKeyUsagePurpose::ClientAuth),
        rogue: leaf(
            &other,
            &["client.test"],
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
        ca: ca.pem(),
    }
}

/// The handler: the certificate thumbprint (or "none"), whether `ConnectInfo` and the
/// peer address are there, and the HTTP version.
async fn whoami(request: Request) -> String {
    let extensions = request.extensions();
    let cert = extensions
        .get::<ClientCertificate>()
        .map_or_else(|| "none".to_owned(), ClientCertificate::x5t_s256);
    let connect_info = extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .is_some();
    let peer = ClientAddr::new().peer(extensions).is_some();
    format!(
        "{cert} connect_info={connect_info} peer={peer} {:?}",
        request.version()
    )
}

fn app() -> Router {
    Router::new().route("/", get(whoami))
}

async fn start(pki: &Pki) -> SocketAddr {
    let config = server_config(
        pki.server.cert.as_bytes(),
        pki.server.key.as_bytes(),
        Some(pki.ca.as_bytes()),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_tls(listener, config, app()));
    addr
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A rustls client trusting `ca`, presenting `identity` if given, offering `alpn`.
fn client(ca: &str, identity: Option<&Pem>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(pem) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(pem.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// GET / over a fresh connection; HTTP/2 when ALPN picked it.
async fn get_root(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<String, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = TlsConnector::from(config)
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let response = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        let request = http::Request::get(format!("https://localhost:{}/", addr.port()))
            .body(Empty::<Bytes>::new())?;
        sender.send_request(request).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        let request = http::Request::get("/")
            .header(http::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())?;
        sender.send_request(request).await?
    };
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(body.to_vec())?)
}

/// The RFC 8705 thumbprint of `der`, computed here rather than by the crate.
fn x5t(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

const CONNECT_INFO: bool = cfg!(feature = "axum");

#[tokio::test]
async fn the_handler_sees_the_client_certificate_of_its_connection() {
    let pki = pki();
    let addr = start(&pki).await;
    let body = get_root(addr, client(&pki.ca, Some(&pki.client), &[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(
        body,
        format!(
            "{} connect_info={CONNECT_INFO} peer=true HTTP/1.1",
            x5t(&pki.client.der)
        )
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_served_and_sees_none() {
    let pki = pki();
    let addr = start(&pki).await;
    let body = get_root(addr, client(&pki.ca, None, &[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(
        body,
        format!("none connect_info={CONNECT_INFO} peer=true HTTP/1.1")
    );
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn_and_carries_the_certificate() {
    let pki = pki();
    let addr = start(&pki).await;
    let body = get_root(
        addr,
        client(&pki.ca, Some(&pki.client), &[b"h2", b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(
        body,
        format!(
            "{} connect_info={CONNECT_INFO} peer=true HTTP/2.0",
            x5t(&pki.client.der)
        )
    );
}

#[tokio::test]
async fn an_untrusted_client_certificate_fails_and_the_server_keeps_serving() {
    let pki = pki();
    let addr = start(&pki).await;
    for _ in 0..2 {
        let result = get_root(addr, client(&pki.ca, Some(&pki.rogue), &[b"http/1.1"])).await;
        assert!(result.is_err(), "{result:?}");
    }
    let body = get_root(addr, client(&pki.ca, Some(&pki.client), &[b"h2"]))
        .await
        .unwrap();
    assert!(body.starts_with(&x5t(&pki.client.der)), "{body}");
    // A connection that never starts its handshake does not hold up the others.
    let _idle = TcpStream::connect(addr).await.unwrap();
    let body = get_root(addr, client(&pki.ca, None, &[b"http/1.1"]))
        .await
        .unwrap();
    assert!(body.starts_with("none "), "{body}");
}

#[tokio::test]
async fn each_connection_has_its_own_certificate() {
    let pki = pki();
    let addr = start(&pki).await;
    let with = client(&pki.ca, Some(&pki.client), &[b"h2"]);
    let without = client(&pki.ca, None, &[b"h2"]);
    let (a, b, c) = tokio::join!(
        get_root(addr, with.clone()),
        get_root(addr, without),
        get_root(addr, with)
    );
    let expected = x5t(&pki.client.der);
    assert!(a.unwrap().starts_with(&expected));
    assert!(b.unwrap().starts_with("none "));
    assert!(c.unwrap().starts_with(&expected));
}

#[cfg(feature = "reqwest")]
#[tokio::test]
async fn reqwest_presents_its_identity() {
    let pki = pki();
    let addr = start(&pki).await;
    let identity = format!("{}{}", pki.client.key, pki.client.cert);
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pki.ca.as_bytes()).unwrap()])
        .identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/", addr.port());
    let body = http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(body.starts_with(&x5t(&pki.client.der)), "{body}");

    let anonymous = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pki.ca.as_bytes()).unwrap()])
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let body = anonymous
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.starts_with("none "), "{body}");
}

#[tokio::test]
async fn graceful_shutdown_stops_accepting_and_returns() {
    let pki = pki();
    let config = server_config(
        pki.server.cert.as_bytes(),
        pki.server.key.as_bytes(),
        Some(pki.ca.as_bytes()),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_tls_with_shutdown(listener, config, app(), async {
        let _ = stopped.await;
    }));
    let body = get_root(addr, client(&pki.ca, Some(&pki.client), &[b"h2"]))
        .await
        .unwrap();
    assert!(body.starts_with(&x5t(&pki.client.der)));

    // An idle connection mid-handshake must not keep the server from stopping.
    let _idle = TcpStream::connect(addr).await.unwrap();
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}

// ---- server_config ----

#[test]
fn a_valid_configuration_offers_h2_and_http11() {
    let pki = pki();
    for ca in [None, Some(pki.ca.as_bytes())] {
        let config =
            server_config(pki.server.cert.as_bytes(), pki.server.key.as_bytes(), ca).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}

#[test]
fn server_config_names_what_is_wrong() {
    let pki = pki();
    let cert = pki.server.cert.as_bytes();
    let key = pki.server.key.as_bytes();
    let ca = pki.ca.as_bytes();

    // (certificate chain, key, client CA, kind, words in the message)
    type Case<'a> = (
        &'a [u8],
        &'a [u8],
        Option<&'a [u8]>,
        ConfigErrorKind,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            b"garbage",
            key,
            None,
            ConfigErrorKind::Parse,
            "server certificate chain: no CERTIFICATE",
        ),
        (
            key,
            key,
            None,
            ConfigErrorKind::Parse,
            "server certificate chain: no CERTIFICATE",
        ),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n",
            key,
            None,
            ConfigErrorKind::Parse,
            "server certificate chain: the PEM is malformed (a BEGIN line has no matching END line)",
        ),
        (
            cert,
            cert,
            None,
            ConfigErrorKind::InvalidKey,
            "server private key: no PRIVATE KEY",
        ),
        (
            cert,
            b"",
            None,
            ConfigErrorKind::InvalidKey,
            "server private key: no PRIVATE KEY",
        ),
        (
            cert,
            pki.client.key.as_bytes(),
            None,
            ConfigErrorKind::InvalidKey,
            "server certificate and private key",
        ),
        (
            cert,
            key,
            Some(b"garbage"),
            ConfigErrorKind::Parse,
            "client CA: no CERTIFICATE",
        ),
        (
            cert,
            key,
            Some(b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n"),
            ConfigErrorKind::InvalidKey,
            "client CA: certificate 1 is not a usable trust anchor",
        ),
        (
            pki.client.cert.as_bytes(),
            key,
            Some(ca),
            ConfigErrorKind::InvalidKey,
            "server certificate and private key",
        ),
    ];
    for (i, (chain, key, ca, kind, words)) in cases.into_iter().enumerate() {
        let error = server_config(chain, key, ca).expect_err(words);
        assert_eq!(error.kind(), kind, "case {i}: {error}");
        assert!(error.message().contains(words), "case {i}: {error}");
    }
}

#[test]
fn a_malformed_key_is_not_quoted_in_the_error() {
    let pki = pki();
    let body: String = pki
        .server
        .key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    // The key's base64 cut short, with no END line; or with a stray character.
    for (broken, problem) in [
        (
            format!("-----BEGIN PRIVATE KEY-----\n{}\n", &body[..40]),
            "a BEGIN line has no matching END line",
        ),
        (
            format!(
                "-----BEGIN PRIVATE KEY-----\n{}!\n-----END PRIVATE KEY-----\n",
                &body[..40]
            ),
            "invalid base64",
        ),
    ] {
        let error = server_config(pki.server.cert.as_bytes(), broken.as_bytes(), None).unwrap_err();
        assert_eq!(error.kind(), ConfigErrorKind::InvalidKey);
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains(&body[..16]), "{shown}");
        assert!(!shown.contains('!'), "{shown}");
        assert!(
            shown.contains(&format!(
                "server private key: the PEM is malformed ({problem}"
            )),
            "{shown}"
        );
    }
}
