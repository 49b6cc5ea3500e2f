//! Serving a tower service over TLS with optional client certificates: each connection's
//! certificate is read once, at the handshake, and handed to every request of that
//! connection as a [`ClientCertificate`] extension.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::cert::ClientCertificate;
use crate::error::ConfigError;

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A rustls server configuration from PEM files: the certificate chain, its private key,
/// and, when given, the CA whose client certificates are **requested but optional** (a
/// client without one still connects; a client with one that does not chain to the CA
/// fails the handshake). ALPN offers HTTP/2 and HTTP/1.1.
///
/// # Errors
/// A PEM without a certificate, a key that does not parse or does not match the
/// certificate, a CA file without a usable certificate.
pub fn server_config(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, ConfigError> {
    let chain = certificates(cert_chain_pem)
        .map_err(|()| ConfigError::key("the server certificate PEM holds no certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| ConfigError::key("the server key PEM holds no private key"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|_| ConfigError::setting("no TLS protocol version available"))?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            let cas = certificates(pem)
                .map_err(|()| ConfigError::key("the client CA PEM holds no certificate"))?;
            for ca in cas {
                roots
                    .add(ca)
                    .map_err(|_| ConfigError::key("the client CA certificate is unusable"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|_| ConfigError::key("the client CA cannot verify certificates"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|_| ConfigError::key("the server key does not fit the certificate"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ()> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|_| ())?;
    if certs.is_empty() { Err(()) } else { Ok(certs) }
}

/// Serve `service` (an axum `Router`, any cloneable tower service) over TLS on `listener`,
/// HTTP/1.1 and HTTP/2, until the listener fails for good.
///
/// Each request carries, as extensions, the connection's [`ClientCertificate`] (when the
/// client presented one), the peer's `SocketAddr`, and with feature `axum` its
/// `ConnectInfo<SocketAddr>` (what [`ClientAddr`](crate::ClientAddr) reads). A failed
/// handshake or connection is logged at `debug` (target `tower_api_guard::mtls`) and never
/// stops the loop.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_api_guard::mtls::{serve_tls, server_config};
///
/// let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
/// let config = server_config(
///     &std::fs::read("server.pem")?,
///     &std::fs::read("server.key")?,
///     Some(&std::fs::read("clients-ca.pem")?),
/// )?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
/// serve_tls(listener, config, app).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// Never for a single connection; the loop keeps accepting after an accept error too.
pub async fn serve_tls<S, B>(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    service: S,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_tls_with_shutdown(listener, config, service, std::future::pending()).await
}

/// [`serve_tls`] until `signal` completes; connections being served then finish on their
/// own tasks.
///
/// # Errors
/// Never for a single connection.
pub async fn serve_tls_with_shutdown<S, B>(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    service: S,
    signal: impl Future<Output = ()> + Send,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let acceptor = TlsAcceptor::from(config);
    let mut signal = std::pin::pin!(signal);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut signal => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(target: "tower_api_guard::mtls", %error, "accept failed");
                    // Out of file descriptors and the like: give the system a moment.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(target: "tower_api_guard::mtls", %peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(target: "tower_api_guard::mtls", %peer, "TLS handshake timed out");
                    return;
                }
            };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(<[_]>::first)
                .map(|der| ClientCertificate::from_der(der.as_ref().to_vec()));
            let service = WithConnection::new(service, peer, cert);
            let hyper_service = hyper::service::service_fn(move |request| {
                let mut service = service.clone();
                async move {
                    std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
                    service.call(request).await
                }
            });
            let served = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), hyper_service)
                .await;
            if let Err(error) = served {
                tracing::debug!(target: "tower_api_guard::mtls", %peer, %error, "connection ended with an error");
            }
        });
    }
}

/// Puts one connection's facts on each of its requests: the [`ClientCertificate`] (when
/// there is one), the peer `SocketAddr`, and with feature `axum` `ConnectInfo`. For users
/// who run their own accept loop.
#[derive(Debug, Clone)]
pub struct WithConnection<S> {
    inner: S,
    peer: SocketAddr,
    cert: Option<ClientCertificate>,
}

impl<S> WithConnection<S> {
    /// Wrap the service of one connection.
    pub fn new(inner: S, peer: SocketAddr, cert: Option<ClientCertificate>) -> Self {
        Self { inner, peer, cert }
    }
}

impl<S, B> Service<Request<B>> for WithConnection<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_is_a_configuration_error() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
        assert!(server_config(cert_pem.as_bytes(), key_pem.as_bytes(), None).is_ok());
        assert!(
            server_config(
                cert_pem.as_bytes(),
                key_pem.as_bytes(),
                Some(cert_pem.as_bytes())
            )
            .is_ok()
        );
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        let other_key = other.signing_key.serialize_pem();
        type Case<'a> = (&'a [u8], &'a [u8], Option<&'a [u8]>);
        let cases: [Case<'_>; 5] = [
            (b"garbage", key_pem.as_bytes(), None),
            (cert_pem.as_bytes(), b"garbage", None),
            (key_pem.as_bytes(), key_pem.as_bytes(), None),
            (cert_pem.as_bytes(), other_key.as_bytes(), None),
            (cert_pem.as_bytes(), key_pem.as_bytes(), Some(b"no CA here")),
        ];
        for (i, (c, k, ca)) in cases.into_iter().enumerate() {
            assert!(server_config(c, k, ca).is_err(), "case {i}");
        }
    }
}
