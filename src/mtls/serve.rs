//! A tokio-rustls / hyper server that hands every request the client certificate of its
//! connection: [`server_config`], [`serve_tls`], [`serve_tls_with_shutdown`] and the
//! per-connection service wrapper [`WithConnection`].

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{Either, select};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::cert::ClientCertificate;
use crate::error::ConfigError;

const TARGET: &str = "tower_api_guard::mtls";

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the accept loop pauses after an error that is not about one connection
/// (out of file descriptors, out of memory), so that it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

type BoxError = Box<dyn StdError + Send + Sync>;

/// A rustls server configuration from PEM: the server's certificate chain (end-entity
/// first), its private key (PKCS#8, PKCS#1 or SEC1) and, for mutual TLS, the CA
/// certificates that client certificates must chain to.
///
/// With `client_ca_pem`, client certificates are *requested and optional*: a client that
/// presents none is served (its requests carry no [`ClientCertificate`], and the layers
/// decide what that means), a client that presents one that does not verify against these
/// CAs fails the handshake. Without it, no client certificate is requested.
///
/// ALPN offers `h2` and `http/1.1`. The crypto provider is the process default when one is
/// installed ([`CryptoProvider::install_default`]), AWS-LC otherwise.
///
/// # Errors
///
/// A [`ConfigError`] naming the input at fault: no `CERTIFICATE` block or malformed PEM in
/// the chain or the CA bundle ([`Parse`](crate::ConfigErrorKind::Parse)); a key that is
/// missing, malformed or does not match the certificate, or a CA certificate that is not
/// usable as a trust anchor ([`InvalidKey`](crate::ConfigErrorKind::InvalidKey)). Messages
/// never contain key material.
pub fn server_config(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, ConfigError> {
    let chain = certificates(cert_chain_pem, "server certificate chain")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => ConfigError::key(
            "server private key: no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block in the PEM",
        ),
        e => ConfigError::key(format!(
            "server private key: the PEM is malformed ({})",
            pem_problem(&e)
        )),
    })?;

    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::setting(format!("TLS protocol versions: {e}")))?;

    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca_pem) => {
            let mut roots = RootCertStore::empty();
            for (i, ca) in certificates(ca_pem, "client CA")?.into_iter().enumerate() {
                roots.add(ca).map_err(|e| {
                    ConfigError::key(format!(
                        "client CA: certificate {} is not a usable trust anchor: {e}",
                        i + 1
                    ))
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| ConfigError::key(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };

    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        ConfigError::key(format!(
            "server certificate and private key: {e} (does the key belong to the first certificate?)"
        ))
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every `CERTIFICATE` block of `pem`; at least one.
fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ConfigError::parse(format!(
                "{what}: the PEM is malformed ({})",
                pem_problem(&e)
            ))
        })?;
    if certs.is_empty() {
        return Err(ConfigError::parse(format!(
            "{what}: no CERTIFICATE block in the PEM"
        )));
    }
    Ok(certs)
}

/// What is wrong with a PEM file, in words of our own: the PEM error's `Display` may quote
/// bytes of the file (a line, a base64 error with a symbol), which for a key are secret.
fn pem_problem(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a BEGIN line has no matching END line",
        pem::Error::IllegalSectionStart { .. } => "a malformed BEGIN line",
        pem::Error::Base64Decode(_) => "invalid base64 inside a block",
        pem::Error::SectionTooLarge => "a block is too large",
        pem::Error::NoItemsFound => "no block of the expected kind",
        _ => "unreadable",
    }
}

/// Serves `service` over TLS on `listener`, HTTP/1.1 and HTTP/2 (by ALPN), until the
/// returned future is dropped.
///
/// Each accepted connection runs in its own task: the TLS handshake (at most 10 seconds),
/// then the client's end-entity certificate, when it presented one, is read once into a
/// [`ClientCertificate`], and every request of the connection reaches `service` through
/// [`WithConnection`], which inserts into its extensions that certificate, the peer
/// [`SocketAddr`] and (feature `axum`) `axum::extract::ConnectInfo<SocketAddr>`.
///
/// `service` is any cloneable tower service for `Request<Incoming>`; an axum `Router`
/// works as it is. A failed handshake or connection is logged at `debug` (target
/// `tower_api_guard::mtls`) and does not stop the server; neither does an error accepting
/// a connection (after an error such as running out of file descriptors the loop pauses
/// for a second).
///
/// # Errors
///
/// None today: the loop logs errors and goes on. The `io::Result` leaves room for fatal
/// listener errors.
pub async fn serve_tls<S, B>(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    service: S,
) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_tls_with_shutdown(listener, config, service, std::future::pending()).await
}

/// [`serve_tls`] with graceful shutdown: once `signal` completes, no connection is
/// accepted any more, handshakes in progress are dropped, open connections finish the
/// requests they have started (HTTP/2 connections get a `GOAWAY`) and are closed; the
/// future completes when the last one is.
///
/// # Errors
///
/// As [`serve_tls`].
pub async fn serve_tls_with_shutdown<S, B>(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    service: S,
    signal: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let acceptor = TlsAcceptor::from(config);
    let (shutdown, watching) = watch::channel(());
    let mut signal = pin!(signal);
    loop {
        let accepted = match select(pin!(listener.accept()), signal.as_mut()).await {
            Either::Left((accepted, _)) => accepted,
            Either::Right(((), _)) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(connection(
                    stream,
                    peer,
                    acceptor.clone(),
                    service.clone(),
                    watching.clone(),
                ));
            }
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(target: TARGET, error = %e, "accept failed");
            }
            Err(e) => {
                tracing::warn!(target: TARGET, error = %e, "accept failed; pausing");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    tracing::debug!(target: TARGET, "shutting down");
    drop(listener);
    drop(watching);
    // Wakes every connection task; then wait until each has dropped its receiver.
    let _ = shutdown.send(());
    shutdown.closed().await;
    Ok(())
}

/// Errors about one connection (it went away before it was accepted), as opposed to
/// errors of the listener itself.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One connection: handshake, certificate, HTTP until it ends or the server shuts down.
async fn connection<S, B>(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    service: S,
    mut shutdown: watch::Receiver<()>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let tls = match select(pin!(handshake), pin!(shutdown.changed())).await {
        Either::Left((Ok(Ok(tls)), _)) => tls,
        Either::Left((Ok(Err(e)), _)) => {
            tracing::debug!(target: TARGET, %peer, error = %e, "TLS handshake failed");
            return;
        }
        Either::Left((Err(_elapsed), _)) => {
            tracing::debug!(target: TARGET, %peer, "TLS handshake timed out");
            return;
        }
        Either::Right(_) => return,
    };

    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|der| ClientCertificate::from_der(Bytes::copy_from_slice(der)));
    let service = TowerToHyperService::new(WithConnection::new(service, peer, cert));

    let builder = Builder::new(TokioExecutor::new());
    let mut conn = pin!(builder.serve_connection_with_upgrades(TokioIo::new(tls), service));
    let result = match select(conn.as_mut(), pin!(shutdown.changed())).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(target: TARGET, %peer, error = %e, "connection failed");
    }
}

/// A service wrapper that gives every request the facts of its connection, as request
/// extensions: the [`ClientCertificate`] (when the client presented one), the peer
/// [`SocketAddr`] and, with feature `axum`, `axum::extract::ConnectInfo<SocketAddr>` (which
/// [`ClientAddr::peer`](crate::ClientAddr::peer) reads first).
///
/// [`serve_tls`] wraps the service of each connection in it. With a hyper accept loop of
/// your own, make one per connection after the TLS handshake:
///
/// ```
/// use std::net::SocketAddr;
///
/// use hyper_util::rt::{TokioExecutor, TokioIo};
/// use hyper_util::server::conn::auto::Builder;
/// use hyper_util::service::TowerToHyperService;
/// use tokio::net::TcpStream;
/// use tokio_rustls::server::TlsStream;
/// use tower_api_guard::mtls::{ClientCertificate, WithConnection};
///
/// async fn serve_connection(tls: TlsStream<TcpStream>, peer: SocketAddr, app: axum::Router) {
///     let cert = tls
///         .get_ref()
///         .1
///         .peer_certificates()
///         .and_then(|chain| chain.first())
///         .map(|der| ClientCertificate::from_der(der.to_vec()));
///     let service = TowerToHyperService::new(WithConnection::new(app, peer, cert));
///     let _ = Builder::new(TokioExecutor::new())
///         .serve_connection_with_upgrades(TokioIo::new(tls), service)
///         .await;
/// }
/// ```
#[derive(Debug, Clone)]
pub struct WithConnection<S> {
    inner: S,
    peer: SocketAddr,
    cert: Option<ClientCertificate>,
}

impl<S> WithConnection<S> {
    /// Wraps `service` for the connection from `peer` that presented `cert`.
    pub fn new(service: S, peer: SocketAddr, cert: Option<ClientCertificate>) -> Self {
        Self {
            inner: service,
            peer,
            cert,
        }
    }

    /// The client certificate of the connection, if any.
    pub fn client_certificate(&self) -> Option<&ClientCertificate> {
        self.cert.as_ref()
    }

    /// The peer address of the connection.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

impl<S, B> Service<Request<B>> for WithConnection<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let extensions = request.extensions_mut();
        if let Some(cert) = &self.cert {
            extensions.insert(cert.clone());
        }
        extensions.insert(self.peer);
        #[cfg(feature = "axum")]
        extensions.insert(axum::extract::ConnectInfo(self.peer));
        self.inner.call(request)
    }
}
