//! Certificate-bound tokens (RFC 8705) over a real TLS connection: `serve_tls` hands each
//! request its connection's client certificate, and the JWT layer checks
//! `cnf["x5t#S256"]` against it.
#![cfg(all(feature = "mtls", feature = "reqwest", feature = "testing"))]

mod common;

use axum::Router;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use sha2::{Digest, Sha256};
use tower_api_guard::auth::AuthLayer;
use tower_api_guard::mtls::{serve_tls, server_config};
use tower_api_guard::{ClientCertificate, Identity};

use common::jwt::{AUD, issuer_and_jwt};

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String, Vec<u8>),
    stranger: (String, String),
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let pem = params.clone().self_signed(&key).unwrap().pem();
    (params, key, pem)
}

fn leaf(names: &[&str], issuer: &Issuer<'_, KeyPair>) -> (String, String, Vec<u8>) {
    let params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

fn pki() -> Pki {
    let (ca_params, ca_key, ca_pem) = ca("test CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let (server_cert, server_key, _) = leaf(&["localhost"], &issuer);
    let client = leaf(&["client.example"], &issuer);
    let (other_params, other_key, _) = ca("another CA");
    let other = Issuer::new(other_params, other_key);
    let (stranger_cert, stranger_key, _) = leaf(&["stranger.example"], &other);
    Pki {
        ca_pem,
        server: (server_cert, server_key),
        client,
        stranger: (stranger_cert, stranger_key),
    }
}

fn client(pki: &Pki, identity: Option<(&str, &str)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap()]);
    if let Some((cert, key)) = identity {
        let pem = format!("{cert}{key}");
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn a_certificate_bound_token_passes_only_over_its_certificates_connection() {
    let pki = pki();
    let (issuer, jwt) = issuer_and_jwt(AUD);
    let app = Router::new()
        .route(
            "/me",
            get(|identity: Identity| async move { identity.subject().to_owned() }),
        )
        .route_layer(AuthLayer::new(jwt))
        .route(
            "/cert",
            get(
                |cert: Option<axum::Extension<ClientCertificate>>| async move {
                    cert.map_or("none".to_owned(), |c| c.x5t_s256())
                },
            ),
        );
    let config = server_config(
        pki.server.0.as_bytes(),
        pki.server.1.as_bytes(),
        Some(pki.ca_pem.as_bytes()),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve_tls(listener, config, app));
    let url = |path: &str| format!("https://localhost:{port}{path}");

    // The thumbprint the server sees is SHA-256 of the DER, computed here independently.
    let x5t = URL_SAFE_NO_PAD.encode(Sha256::digest(&pki.client.2));
    let with_cert = client(&pki, Some((&pki.client.0, &pki.client.1)));
    let seen = with_cert.get(url("/cert")).send().await.unwrap();
    assert_eq!(seen.text().await.unwrap(), x5t);
    let without = client(&pki, None);
    let seen = without.get(url("/cert")).send().await.unwrap();
    assert_eq!(seen.text().await.unwrap(), "none");

    let token = issuer
        .token()
        .subject("svc")
        .audience(AUD)
        .certificate_bound(&x5t)
        .mint();
    let me = |c: &reqwest::Client| c.get(url("/me")).bearer_auth(&token).send();
    let ok = me(&with_cert).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "svc");
    assert_eq!(me(&without).await.unwrap().status(), 401);

    // A certificate from another CA fails the handshake; the server keeps serving.
    let stranger = client(&pki, Some((&pki.stranger.0, &pki.stranger.1)));
    assert!(stranger.get(url("/cert")).send().await.is_err());
    assert_eq!(me(&with_cert).await.unwrap().status(), 200);
}
