//! [`ClientCertificate`]: the TLS client certificate of a request, as a request extension.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The client certificate of the TLS connection a request arrived on, already verified by
/// the TLS server (or by a trusted proxy that forwarded it). Layers read it from the
/// request's extensions:
///
/// * certificate-bound access tokens (RFC 8705 §3): a token whose `cnf` holds `x5t#S256`
///   passes only when this certificate's SHA-256 thumbprint equals it;
/// * client-certificate identities (service to service).
///
/// It is made once per connection (the SHA-256 thumbprint is computed then) and shared by
/// every request of that connection: cloning it costs one reference count.
///
/// ```
/// use tower_api_guard::ClientCertificate;
///
/// let cert = ClientCertificate::from_der(b"not really DER".to_vec());
/// assert_eq!(cert.thumbprint().len(), 32);
/// assert!(cert.matches_x5t_s256(&cert.x5t_s256()));
/// ```
#[derive(Clone)]
pub struct ClientCertificate(Arc<Inner>);

struct Inner {
    der: Option<Bytes>,
    thumbprint: [u8; 32],
}

impl ClientCertificate {
    /// The certificate in DER form (the end-entity certificate of the chain).
    pub fn from_der(der: impl Into<Bytes>) -> Self {
        let der = der.into();
        let thumbprint = Sha256::digest(&der).into();
        Self(Arc::new(Inner {
            der: Some(der),
            thumbprint,
        }))
    }

    /// Only the SHA-256 thumbprint of the certificate's DER (a proxy that forwards the hash
    /// alone, such as Envoy's `X-Forwarded-Client-Cert` with `Hash` but no `Cert`). Enough
    /// for certificate-bound tokens, not for certificate identities.
    pub fn from_thumbprint(sha256: [u8; 32]) -> Self {
        Self(Arc::new(Inner {
            der: None,
            thumbprint: sha256,
        }))
    }

    /// The DER bytes, when known.
    pub fn der(&self) -> Option<&[u8]> {
        self.0.der.as_deref()
    }

    /// The SHA-256 thumbprint of the DER.
    pub fn thumbprint(&self) -> &[u8; 32] {
        &self.0.thumbprint
    }

    /// The thumbprint as RFC 8705 writes it in `cnf["x5t#S256"]`: base64url, no padding.
    pub fn x5t_s256(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.thumbprint)
    }

    /// Whether `x5t` (a token's `cnf["x5t#S256"]`) names this certificate. Compared in
    /// constant time; a value that is not canonical base64url of 32 bytes never matches.
    pub fn matches_x5t_s256(&self, x5t: &str) -> bool {
        match URL_SAFE_NO_PAD.decode(x5t) {
            Ok(bytes) if bytes.len() == 32 => bytes.ct_eq(&self.0.thumbprint).into(),
            _ => false,
        }
    }
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("x5t#S256", &self.x5t_s256())
            .field("der_len", &self.0.der.as_ref().map(Bytes::len))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_is_sha256_of_the_der_and_matches_only_itself() {
        let cert = ClientCertificate::from_der(&b"abc"[..]);
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            cert.x5t_s256(),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
        assert!(cert.matches_x5t_s256("ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"));
        for other in [
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa1",
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0=",
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0",
            "",
            "AAAA",
        ] {
            assert!(!cert.matches_x5t_s256(other), "{other}");
        }
        let hashed = ClientCertificate::from_thumbprint(*cert.thumbprint());
        assert_eq!(hashed.x5t_s256(), cert.x5t_s256());
        assert_eq!(hashed.der(), None);
        assert_eq!(cert.der(), Some(&b"abc"[..]));
    }
}
