//! [`ForwardedClientCertLayer`]: the client certificate that a trusted TLS-terminating proxy
//! forwards in a header, as the request's [`ClientCertificate`].

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use percent_encoding::percent_decode;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use subtle::ConstantTimeEq;

use crate::cert::ClientCertificate;
use crate::client::ClientAddr;
use crate::error::AuthError;
use crate::gate::{Check, Gate, GateLayer, LayerKind, NeverWaits, Step, Verdict};

/// The default cap on the forwarded header's length, all its lines together: 16 KiB.
pub const DEFAULT_MAX_CERT_HEADER_LEN: usize = 16 * 1024;

/// Envoy's header.
static XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// How a proxy forwards the client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertHeader {
    /// Envoy's `X-Forwarded-Client-Cert`: comma-separated elements of `;`-separated
    /// `key=value` pairs (values may be double-quoted, with `\"` inside). The **last**
    /// element is read, the one appended by the proxy that connects to us: its `Cert`
    /// (the URL-encoded PEM), its `Hash` (the hex SHA-256 of the DER) alone, or both (they
    /// must agree). Set Envoy's `forward_client_cert_details` to `SANITIZE_SET` (or
    /// `APPEND_FORWARD`) and `set_current_client_cert_details` to `cert: true`; with the
    /// hash alone only certificate-bound tokens work, not certificate identities.
    Xfcc,
    /// A header holding the URL-encoded PEM, such as nginx's
    /// `proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;`. An empty value
    /// (nginx's, when the client sent no certificate) is no certificate.
    EscapedPem(HeaderName),
}

/// Believes the client certificate that a trusted TLS-terminating proxy forwards in a
/// header, and puts it on the request as the [`ClientCertificate`] extension, for
/// certificate-bound tokens and [`ClientCertAuthenticator`](super::ClientCertAuthenticator).
/// Put it in front of authentication.
///
/// * The header is read only when the request's TCP peer is one of the trusted proxies of
///   the [`ClientAddr`] (see [`ClientAddr::peer_is_trusted`]; the peer address comes from
///   axum's `ConnectInfo<SocketAddr>` or a `SocketAddr` extension). From any other peer,
///   or with no known peer, the header is ignored and the request keeps whatever
///   certificate its own TLS connection presented.
/// * From a trusted proxy, a valid header replaces the request's certificate; a malformed
///   one (bad syntax, not one PEM certificate, a hash that is not hex SHA-256 or that
///   disagrees with the certificate, longer than the [cap](ForwardedClientCertLayer::max_header_len)) is
///   rejected with 400 `invalid_request`, before any handler; no header leaves the request
///   as it is. Mind that a proxy which authenticates to us with its own client certificate
///   and forwards no header leaves *its* certificate on the request: make the proxy
///   always send (or strip) the header.
///
/// The certificate is believed as it is: the proxy verified it against its trust store.
///
/// ```
/// use tower_api_guard::ClientAddr;
/// use tower_api_guard::mtls::{CertHeader, ForwardedClientCertLayer};
///
/// let proxies = ClientAddr::new().trusted_proxies(["10.0.0.0/8"]).unwrap();
/// let envoy = ForwardedClientCertLayer::xfcc(proxies.clone());
/// let nginx = ForwardedClientCertLayer::new(
///     proxies,
///     CertHeader::EscapedPem(http::HeaderName::from_static("x-ssl-client-cert")),
/// )
/// .max_header_len(8 * 1024);
/// ```
pub type ForwardedClientCertLayer = GateLayer<ReadForwardedCert>;

/// The service made by [`ForwardedClientCertLayer`].
pub type ForwardedClientCert<S> = Gate<ReadForwardedCert, S>;

/// The check of [`ForwardedClientCertLayer`]: from a trusted proxy, read the forwarded
/// certificate into the request's extensions.
#[derive(Clone)]
pub struct ReadForwardedCert {
    client_addr: ClientAddr,
    header: CertHeader,
    max_len: usize,
}

impl fmt::Debug for ReadForwardedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadForwardedCert")
            .field("client_addr", &self.client_addr)
            .field("header", &self.header)
            .field("max_len", &self.max_len)
            .finish()
    }
}

impl ForwardedClientCertLayer {
    /// Believe `header` from the trusted proxies of `client_addr`.
    pub fn new(client_addr: ClientAddr, header: CertHeader) -> Self {
        GateLayer::from_check(ReadForwardedCert {
            client_addr,
            header,
            max_len: DEFAULT_MAX_CERT_HEADER_LEN,
        })
    }

    /// Believe Envoy's `X-Forwarded-Client-Cert` from the trusted proxies of
    /// `client_addr`; same as `new(client_addr, CertHeader::Xfcc)`.
    pub fn xfcc(client_addr: ClientAddr) -> Self {
        Self::new(client_addr, CertHeader::Xfcc)
    }

    /// Reject (400) a forwarded header longer than `bytes`, all its lines together
    /// (default [`DEFAULT_MAX_CERT_HEADER_LEN`], 16 KiB).
    pub fn max_header_len(mut self, bytes: usize) -> Self {
        self.check_mut().max_len = bytes;
        self
    }
}

impl<S> ForwardedClientCert<S> {
    /// Wrap `inner`.
    pub fn new(inner: S, client_addr: ClientAddr, header: CertHeader) -> Self {
        tower_layer::Layer::layer(&ForwardedClientCertLayer::new(client_addr, header), inner)
    }

    /// A layer; same as [`ForwardedClientCertLayer::new`].
    pub fn layer(client_addr: ClientAddr, header: CertHeader) -> ForwardedClientCertLayer {
        ForwardedClientCertLayer::new(client_addr, header)
    }
}

impl Check for ReadForwardedCert {
    type Ticket = ();
    type Wait = NeverWaits;
    const LAYER: LayerKind = LayerKind::Auth;

    fn check<B>(&self, request: &mut Request<B>) -> Step<(), NeverWaits> {
        let name = match &self.header {
            CertHeader::Xfcc => &XFCC,
            CertHeader::EscapedPem(name) => name,
        };
        if !request.headers().contains_key(name)
            || !self.client_addr.peer_is_trusted(request.extensions())
        {
            return Step::Allow(());
        }
        match self.read(request.headers(), name) {
            Ok(Some(certificate)) => {
                request.extensions_mut().insert(certificate);
                Step::Allow(())
            }
            Ok(None) => Step::Allow(()),
            Err(error) => Step::Deny(error.into()),
        }
    }

    fn resume<B>(&self, never: Infallible, _request: &mut Request<B>) -> Verdict<()> {
        match never {}
    }

    fn finish<R>((): (), _response: &mut Response<R>) {}
}

fn malformed() -> AuthError {
    AuthError::invalid_request("malformed forwarded client certificate header")
}

impl ReadForwardedCert {
    /// The forwarded certificate, `None` when the header holds none.
    fn read(
        &self,
        headers: &HeaderMap,
        name: &HeaderName,
    ) -> Result<Option<ClientCertificate>, AuthError> {
        let values = headers.get_all(name);
        let mut total = 0usize;
        for value in &values {
            // Lines are joined with `, ` when a proxy folds them.
            total = total.saturating_add(value.len()).saturating_add(2);
        }
        if total.saturating_sub(2) > self.max_len {
            return Err(AuthError::invalid_request(
                "forwarded client certificate header too long",
            ));
        }
        match &self.header {
            CertHeader::Xfcc => xfcc(values.iter()),
            CertHeader::EscapedPem(_) => {
                let mut lines = values.iter();
                let value = lines.next().map_or(&b""[..], HeaderValue::as_bytes);
                if lines.next().is_some() {
                    return Err(AuthError::invalid_request(
                        "more than one forwarded client certificate header",
                    ));
                }
                let value = trim(value);
                if value.is_empty() {
                    Ok(None)
                } else {
                    escaped_pem(value).map(Some)
                }
            }
        }
    }
}

/// Optional whitespace around list elements and pairs.
fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Split `bytes` at every `separator` outside double quotes (a backslash inside quotes
/// escapes the next byte). `Err` on an unterminated quoted string.
fn split_outside_quotes(bytes: &[u8], separator: u8) -> Result<Vec<&[u8]>, AuthError> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if quoted {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = false;
            }
        } else if b == b'"' {
            quoted = true;
        } else if b == separator {
            parts.push(&bytes[start..i]);
            start = i + 1;
        }
    }
    if quoted {
        return Err(malformed());
    }
    parts.push(&bytes[start..]);
    Ok(parts)
}

/// A pair's value: a token, or a quoted string (unescaped).
fn unquote(value: &[u8]) -> Result<Cow<'_, [u8]>, AuthError> {
    let Some(inner) = value.strip_prefix(b"\"") else {
        return if value.contains(&b'"') {
            Err(malformed())
        } else {
            Ok(Cow::Borrowed(value))
        };
    };
    let mut out: Option<Vec<u8>> = None;
    let mut escaped = false;
    for (i, &b) in inner.iter().enumerate() {
        if escaped {
            escaped = false;
            if let Some(out) = &mut out {
                out.push(b);
            }
        } else if b == b'\\' {
            escaped = true;
            out.get_or_insert_with(|| inner[..i].to_vec());
        } else if b == b'"' {
            // The closing quote must end the value.
            if i + 1 != inner.len() {
                return Err(malformed());
            }
            return Ok(match out {
                Some(out) => Cow::Owned(out),
                None => Cow::Borrowed(&inner[..i]),
            });
        } else if let Some(out) = &mut out {
            out.push(b);
        }
    }
    Err(malformed())
}

/// Envoy's header: the last non-empty element of the last line that has one.
fn xfcc<'a>(
    lines: impl Iterator<Item = &'a HeaderValue>,
) -> Result<Option<ClientCertificate>, AuthError> {
    let mut last = None;
    for line in lines {
        // Every line is split, so that a malformed one is caught wherever it is.
        let elements = split_outside_quotes(line.as_bytes(), b',')?;
        if let Some(element) = elements.into_iter().map(trim).rfind(|e| !e.is_empty()) {
            last = Some(element);
        }
    }
    let Some(element) = last else {
        return Ok(None);
    };
    let mut cert = None;
    let mut hash = None;
    for pair in split_outside_quotes(element, b';')? {
        let pair = trim(pair);
        if pair.is_empty() {
            continue;
        }
        let Some(eq) = pair.iter().position(|&b| b == b'=') else {
            return Err(malformed());
        };
        let key = trim(&pair[..eq]);
        let value = unquote(trim(&pair[eq + 1..]))?;
        if key.is_empty() || !key.iter().all(u8::is_ascii_alphanumeric) {
            return Err(malformed());
        }
        let slot = if key.eq_ignore_ascii_case(b"cert") {
            &mut cert
        } else if key.eq_ignore_ascii_case(b"hash") {
            &mut hash
        } else {
            // By, Chain, Subject, URI, DNS: not needed.
            continue;
        };
        if slot.replace(value).is_some() {
            return Err(AuthError::invalid_request(
                "forwarded client certificate element repeats Cert or Hash",
            ));
        }
    }
    let hash = hash.map(|h| hex_sha256(&h)).transpose()?;
    match (cert, hash) {
        (Some(cert), hash) => {
            let cert = escaped_pem(&cert)?;
            match hash {
                Some(hash) if !bool::from(cert.thumbprint().ct_eq(&hash)) => Err(
                    AuthError::invalid_request("forwarded client certificate and hash disagree"),
                ),
                _ => Ok(Some(cert)),
            }
        }
        (None, Some(hash)) => Ok(Some(ClientCertificate::from_thumbprint(hash))),
        (None, None) => Err(AuthError::invalid_request(
            "forwarded client certificate element has neither Cert nor Hash",
        )),
    }
}

/// A URL-encoded PEM holding exactly one certificate.
fn escaped_pem(escaped: &[u8]) -> Result<ClientCertificate, AuthError> {
    let not_one =
        || AuthError::invalid_request("forwarded client certificate is not one PEM certificate");
    let pem: Cow<'_, [u8]> = percent_decode(escaped).into();
    let mut certificates = CertificateDer::pem_slice_iter(&pem);
    let der = match certificates.next() {
        Some(Ok(der)) if !der.is_empty() => der,
        _ => return Err(not_one()),
    };
    if certificates.next().is_some() {
        return Err(not_one());
    }
    Ok(ClientCertificate::from_der(der.to_vec()))
}

/// 64 hex digits, either case.
fn hex_sha256(hex: &[u8]) -> Result<[u8; 32], AuthError> {
    let bad = || AuthError::invalid_request("forwarded client certificate hash is not hex SHA-256");
    if hex.len() != 64 {
        return Err(bad());
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (digit(pair[0]).ok_or_else(bad)? << 4) | digit(pair[1]).ok_or_else(bad)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http::StatusCode;
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::auth::AuthLayer;
    use crate::error::AuthErrorKind;
    use crate::identity::Identity;
    use crate::mtls::ClientCertAuthenticator;
    use crate::mtls::identity::tests::der;

    const PROXY: &str = "10.0.0.7:40000";
    const STRANGER: &str = "198.51.100.9:40000";
    const NGINX: HeaderName = HeaderName::from_static("x-ssl-client-cert");

    fn proxies() -> ClientAddr {
        ClientAddr::new().trusted_proxies(["10.0.0.0/8"]).unwrap()
    }

    fn pem_of(der: &[u8]) -> String {
        // rustls-pki-types writes no PEM; build it by hand, 64 columns.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        pem
    }

    fn escaped(der: &[u8]) -> String {
        utf8_percent_encode(&pem_of(der), NON_ALPHANUMERIC).to_string()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn sha256_hex(der: &[u8]) -> String {
        hex(ClientCertificate::from_der(der.to_vec()).thumbprint())
    }

    struct Seen {
        status: StatusCode,
        cert: Option<ClientCertificate>,
        error: Option<AuthError>,
    }

    /// Call the layer with `headers`, from `peer`, with `tls` as the connection's own
    /// certificate; what the inner service saw.
    async fn call(
        layer: &ForwardedClientCertLayer,
        peer: Option<&str>,
        tls: Option<ClientCertificate>,
        headers: &[(HeaderName, &str)],
    ) -> Seen {
        let inner = tower::service_fn(|req: Request<()>| async move {
            let mut response = Response::new(());
            if let Some(cert) = req.extensions().get::<ClientCertificate>() {
                response.extensions_mut().insert(cert.clone());
            }
            Ok::<_, Infallible>(response)
        });
        let mut request = Request::new(());
        for (name, value) in headers {
            request
                .headers_mut()
                .append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        if let Some(peer) = peer {
            request
                .extensions_mut()
                .insert(peer.parse::<SocketAddr>().unwrap());
        }
        if let Some(tls) = tls {
            request.extensions_mut().insert(tls);
        }
        let response = tower_layer::Layer::layer(layer, inner)
            .oneshot(request)
            .await
            .unwrap();
        Seen {
            status: response.status(),
            cert: response.extensions().get::<ClientCertificate>().cloned(),
            error: response.extensions().get::<AuthError>().cloned(),
        }
    }

    async fn xfcc_from_proxy(value: &str) -> Seen {
        call(
            &ForwardedClientCertLayer::xfcc(proxies()),
            Some(PROXY),
            None,
            &[(XFCC.clone(), value)],
        )
        .await
    }

    /// The request was refused with 400 and this reason, before the inner service.
    fn bad_request(seen: &Seen) -> String {
        assert_eq!(seen.status, StatusCode::BAD_REQUEST);
        let error = seen.error.as_ref().unwrap();
        assert_eq!(error.kind(), AuthErrorKind::InvalidRequest);
        error.reason().to_owned()
    }

    #[tokio::test]
    async fn xfcc_cert_hash_and_both() {
        let der = der(&[], &["svc.internal"], None);
        let hash = sha256_hex(&der);

        let seen = xfcc_from_proxy(&format!(
            r#"By=spiffe://example.org/gw;Cert="{}";Subject="";URI=;DNS=svc.internal"#,
            escaped(&der)
        ))
        .await;
        assert_eq!(seen.status, StatusCode::OK);
        assert_eq!(seen.cert.unwrap().der(), Some(&der[..]));

        // The hash alone: the thumbprint, no DER. Either case of hex.
        for hash in [hash.clone(), hash.to_uppercase()] {
            let seen = xfcc_from_proxy(&format!("By=x;Hash={hash}")).await;
            let cert = seen.cert.unwrap();
            assert_eq!(cert.der(), None);
            assert_eq!(hex(cert.thumbprint()), hash.to_lowercase());
        }

        // Both, agreeing (unquoted Cert is fine too).
        let seen = xfcc_from_proxy(&format!("Hash={hash};Cert={}", escaped(&der))).await;
        assert_eq!(seen.cert.unwrap().der(), Some(&der[..]));

        // Both, disagreeing.
        let other = sha256_hex(b"another certificate");
        let seen = xfcc_from_proxy(&format!("Hash={other};Cert=\"{}\"", escaped(&der))).await;
        assert_eq!(
            bad_request(&seen),
            "forwarded client certificate and hash disagree"
        );
        assert!(seen.cert.is_none());
    }

    #[tokio::test]
    async fn xfcc_quoted_values_and_several_elements() {
        let first = der(&[], &["first.internal"], None);
        let last = der(&[], &["last.internal"], None);
        // Commas, semicolons, equals signs and escaped quotes inside quoted values.
        let value = format!(
            r#"Hash={};Subject="CN=a, O=\"b;c=d\", L=x";Cert="{}", By="a,b";Subject="O=\"x,y\"";Cert="{}";Hash={}"#,
            sha256_hex(&first),
            escaped(&first),
            escaped(&last),
            sha256_hex(&last),
        );
        let seen = xfcc_from_proxy(&value).await;
        assert_eq!(seen.status, StatusCode::OK);
        assert_eq!(seen.cert.unwrap().der(), Some(&last[..]));

        // Several header lines: the last element of the last line; empty elements skipped.
        let seen = call(
            &ForwardedClientCertLayer::xfcc(proxies()),
            Some(PROXY),
            None,
            &[
                (XFCC.clone(), &format!("Hash={}", sha256_hex(&last))),
                (XFCC.clone(), &format!("Hash={}, ,", sha256_hex(&first))),
            ],
        )
        .await;
        assert_eq!(hex(seen.cert.unwrap().thumbprint()), sha256_hex(&first));
    }

    #[tokio::test]
    async fn malformed_xfcc_from_a_trusted_proxy_is_a_400() {
        let der = der(&[], &["svc.internal"], None);
        let two = format!("{}{}", pem_of(&der), pem_of(&der));
        let two = utf8_percent_encode(&two, NON_ALPHANUMERIC).to_string();
        let hash = sha256_hex(&der);
        let cases = [
            (
                format!("Hash={hash};Cert=\"unterminated"),
                "malformed forwarded client certificate header",
            ),
            (
                format!("By=\"open, Hash={hash}"),
                "malformed forwarded client certificate header",
            ),
            (
                format!("Hash{hash}"),
                "malformed forwarded client certificate header",
            ),
            (
                format!("Hash=\"{hash}\"x"),
                "malformed forwarded client certificate header",
            ),
            (
                format!("Hash=a\"{hash}"),
                "malformed forwarded client certificate header",
            ),
            (
                format!("=x;Hash={hash}"),
                "malformed forwarded client certificate header",
            ),
            (
                "Cert=\"not a pem\"".to_owned(),
                "forwarded client certificate is not one PEM certificate",
            ),
            (
                format!("Cert={two}"),
                "forwarded client certificate is not one PEM certificate",
            ),
            (
                "Cert=".to_owned(),
                "forwarded client certificate is not one PEM certificate",
            ),
            (
                "Hash=abcd".to_owned(),
                "forwarded client certificate hash is not hex SHA-256",
            ),
            (
                format!("Hash={}", "zz".repeat(32)),
                "forwarded client certificate hash is not hex SHA-256",
            ),
            (
                "By=spiffe://example.org/gw;URI=x".to_owned(),
                "forwarded client certificate element has neither Cert nor Hash",
            ),
            (
                format!("Hash={hash};hash={hash}"),
                "forwarded client certificate element repeats Cert or Hash",
            ),
        ];
        for (value, reason) in cases {
            let seen = xfcc_from_proxy(&value).await;
            assert_eq!(bad_request(&seen), reason, "{value}");
            // Never the header's content in the reason.
            assert!(!bad_request(&seen).contains(&hash));
        }
    }

    #[tokio::test]
    async fn nginx_escaped_pem() {
        let layer = ForwardedClientCertLayer::new(proxies(), CertHeader::EscapedPem(NGINX));
        let der = der(&[], &["svc.internal"], None);
        let seen = call(&layer, Some(PROXY), None, &[(NGINX, &escaped(&der))]).await;
        assert_eq!(seen.status, StatusCode::OK);
        assert_eq!(seen.cert.unwrap().der(), Some(&der[..]));

        // nginx's empty value: no certificate.
        let seen = call(&layer, Some(PROXY), None, &[(NGINX, "")]).await;
        assert_eq!(seen.status, StatusCode::OK);
        assert!(seen.cert.is_none());

        let seen = call(&layer, Some(PROXY), None, &[(NGINX, "garbage")]).await;
        assert_eq!(
            bad_request(&seen),
            "forwarded client certificate is not one PEM certificate"
        );
        let e = escaped(&der);
        let seen = call(&layer, Some(PROXY), None, &[(NGINX, &e), (NGINX, &e)]).await;
        assert_eq!(
            bad_request(&seen),
            "more than one forwarded client certificate header"
        );
        // The XFCC header means nothing to this layer.
        let seen = call(&layer, Some(PROXY), None, &[(XFCC.clone(), "Hash=garbage")]).await;
        assert_eq!(seen.status, StatusCode::OK);
        assert!(seen.cert.is_none());
    }

    #[tokio::test]
    async fn headers_from_untrusted_or_unknown_peers_are_ignored() {
        let tls = ClientCertificate::from_der(der(&[], &["tls.internal"], None));
        let forged = der(&[], &["forged.internal"], None);
        let xfcc = ForwardedClientCertLayer::xfcc(proxies());
        let nginx = ForwardedClientCertLayer::new(proxies(), CertHeader::EscapedPem(NGINX));
        let headers = [
            (XFCC.clone(), format!("Cert=\"{}\"", escaped(&forged))),
            (NGINX, escaped(&forged)),
        ];
        for layer in [&xfcc, &nginx] {
            for (name, value) in &headers {
                for peer in [Some(STRANGER), None] {
                    let h = [(name.clone(), value.as_str())];
                    // The connection's own certificate stays.
                    let seen = call(layer, peer, Some(tls.clone()), &h).await;
                    assert_eq!(seen.status, StatusCode::OK);
                    assert_eq!(seen.cert.unwrap().thumbprint(), tls.thumbprint());
                    let seen = call(layer, peer, None, &h).await;
                    assert!(seen.cert.is_none());
                    // Even a malformed header is not looked at.
                    let h = [(name.clone(), "Cert=\"unterminated")];
                    assert_eq!(call(layer, peer, None, &h).await.status, StatusCode::OK);
                }
            }
        }
        // From the trusted proxy, the forwarded one replaces the connection's; no header
        // leaves it.
        let h = [(XFCC.clone(), headers[0].1.as_str())];
        let seen = call(&xfcc, Some(PROXY), Some(tls.clone()), &h).await;
        assert_eq!(seen.cert.unwrap().der(), Some(&forged[..]));
        let seen = call(&xfcc, Some(PROXY), Some(tls.clone()), &[]).await;
        assert_eq!(seen.cert.unwrap().thumbprint(), tls.thumbprint());
    }

    #[tokio::test]
    async fn an_over_long_header_is_a_400() {
        let der = der(&[], &["svc.internal"], None);
        let value = format!("Cert=\"{}\"", escaped(&der));
        let layer = ForwardedClientCertLayer::xfcc(proxies());
        let padded = format!(
            "{},{value}",
            "By=x;".repeat(DEFAULT_MAX_CERT_HEADER_LEN / 5)
        );
        assert_eq!(
            bad_request(&xfcc_from_proxy(&padded).await),
            "forwarded client certificate header too long"
        );
        // Exactly at the cap passes; one more byte does not; lines count together.
        let small = layer.clone().max_header_len(value.len());
        let h = [(XFCC.clone(), value.as_str())];
        assert_eq!(
            call(&small, Some(PROXY), None, &h).await.status,
            StatusCode::OK
        );
        let small = layer.max_header_len(value.len() - 1);
        assert_eq!(
            call(&small, Some(PROXY), None, &h).await.status,
            StatusCode::BAD_REQUEST
        );
        let small = ForwardedClientCertLayer::xfcc(proxies()).max_header_len(value.len() + 5);
        let h = [(XFCC.clone(), value.as_str()), (XFCC.clone(), "By=x")];
        assert_eq!(
            call(&small, Some(PROXY), None, &h).await.status,
            StatusCode::BAD_REQUEST
        );
        // From a stranger, not even the length is looked at.
        assert_eq!(
            call(&small, Some(STRANGER), None, &h).await.status,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn in_front_of_client_certificate_authentication() {
        let svc = ServiceBuilder::new()
            .layer(ForwardedClientCertLayer::xfcc(proxies()))
            .layer(AuthLayer::new(
                ClientCertAuthenticator::builder().build().unwrap(),
            ))
            .service_fn(|req: Request<()>| async move {
                let who = req
                    .extensions()
                    .get::<Identity>()
                    .map(|i| i.subject().to_owned());
                let mut res = Response::new(());
                if let Some(who) = who {
                    res.headers_mut()
                        .insert("x-who", HeaderValue::from_str(&who).unwrap());
                }
                Ok::<_, Infallible>(res)
            });
        let der = der(&["spiffe://example.org/billing"], &[], None);
        let request = |value: String, peer: &str| {
            let mut r = Request::builder().header(&XFCC, value).body(()).unwrap();
            r.extensions_mut()
                .insert(peer.parse::<SocketAddr>().unwrap());
            r
        };
        let res = svc
            .clone()
            .oneshot(request(format!("Cert=\"{}\"", escaped(&der)), PROXY))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["x-who"], "spiffe://example.org/billing");
        // A hash alone is not enough for an identity.
        let res = svc
            .clone()
            .oneshot(request(format!("Hash={}", sha256_hex(&der)), PROXY))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        // A stranger's header is no credential.
        let res = svc
            .oneshot(request(format!("Cert=\"{}\"", escaped(&der)), STRANGER))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            res.extensions().get::<AuthError>().unwrap().kind(),
            AuthErrorKind::MissingCredentials
        );
    }

    proptest::proptest! {
        #[test]
        fn no_header_panics(value in r#"[a-zA-Z0-9"\\,;= %\-]{0,64}"#) {
            let Ok(value) = HeaderValue::from_str(&value) else { return Ok(()) };
            let mut headers = HeaderMap::new();
            headers.insert(XFCC.clone(), value.clone());
            headers.insert(NGINX, value);
            let check = ReadForwardedCert { client_addr: proxies(), header: CertHeader::Xfcc, max_len: 64 };
            let _ = check.read(&headers, &XFCC);
            let check = ReadForwardedCert { header: CertHeader::EscapedPem(NGINX), ..check };
            let _ = check.read(&headers, &NGINX);
        }
    }
}
