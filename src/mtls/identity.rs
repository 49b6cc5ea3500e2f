//! [`ClientCertAuthenticator`]: the verified client certificate of a request as an
//! [`Identity`] (service to service).

use std::collections::HashMap;
use std::fmt;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::auth::Authenticator;
use crate::cert::ClientCertificate;
use crate::error::{AuthError, ConfigError};
use crate::head::RequestHead;
use crate::identity::{Identity, Source};

/// The longest SPIFFE ID (SPIFFE-ID specification, §2.3).
const MAX_SPIFFE_ID: usize = 2048;
/// The longest SPIFFE trust domain name (SPIFFE-ID specification, §2.1).
const MAX_TRUST_DOMAIN: usize = 255;
/// The longest DNS name.
const MAX_DNS_NAME: usize = 253;
/// The longest common name taken as a subject (RFC 5280 says 64 characters; some CAs
/// write more).
const MAX_COMMON_NAME: usize = 256;

/// A name of a client certificate that [`ClientCertAuthenticator`] can take as the
/// identity's subject. See [`ClientCertAuthenticatorBuilder::subject_order`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CertSubject {
    /// The SPIFFE ID: the one URI SAN `spiffe://trust-domain/path` (claim `spiffe_id`).
    SpiffeId,
    /// The first DNS SAN (claim `dns`).
    DnsName,
    /// The subject's common name (claim `cn`).
    CommonName,
}

impl CertSubject {
    /// The identity's claim that holds the subject taken from this name.
    fn claim(self) -> &'static str {
        match self {
            CertSubject::SpiffeId => "spiffe_id",
            CertSubject::DnsName => "dns",
            CertSubject::CommonName => "cn",
        }
    }
}

/// What a subject is granted.
#[derive(Debug, Clone)]
struct Grant {
    roles: Box<[Box<str>]>,
    scopes: Box<[Box<str>]>,
}

struct Inner {
    order: Box<[CertSubject]>,
    trust_domains: Option<Box<[Box<str>]>>,
    grants: HashMap<Box<str>, Grant>,
    require_mapping: bool,
}

/// Authenticates a request by its verified client certificate (mutual TLS, service to
/// service): reads the [`ClientCertificate`] request extension (left by the TLS server, or
/// by [`ForwardedClientCertLayer`](super::ForwardedClientCertLayer) behind a trusted
/// proxy) and makes an [`Identity`] with [`Source::ClientCertificate`].
///
/// * **No certificate** on the request: no credential of this kind (`Ok(None)` from
///   `extract`), so `jwt.or(certs)` falls through to the certificate, and `AuthLayer`
///   alone answers 401 without an error code.
/// * **The subject** is the first name found in the [order](ClientCertAuthenticatorBuilder::subject_order)
///   (by default the SPIFFE ID, then the first DNS SAN, then the subject CN). A name that
///   is present but malformed is a rejection, never a reason to try the next one: a
///   certificate with a bad SPIFFE ID, or two SPIFFE IDs, is refused even if it also has a
///   DNS name.
/// * **SPIFFE IDs** are checked as the SPIFFE specification writes them: a lowercase trust
///   domain of `a-z 0-9 . - _`, a non-empty path of non-empty segments (no `.` or `..`) of
///   `A-Z a-z 0-9 . - _`, no query, fragment, port or user, at most 2048 bytes; a workload
///   certificate has exactly one SPIFFE URI SAN (other URI SANs are ignored). With an
///   [allow-list](ClientCertAuthenticatorBuilder::trust_domains), a SPIFFE ID from any
///   other trust domain is refused (the allow-list applies to SPIFFE IDs only: to accept
///   nothing else, make [`CertSubject::SpiffeId`] the only subject).
/// * **Roles and scopes** come from [grants](ClientCertAuthenticatorBuilder::grant) keyed
///   by the exact subject. A subject without a grant still authenticates, with no roles
///   and no scopes (guards behind the layer decide), unless
///   [`require_mapping`](ClientCertAuthenticatorBuilder::require_mapping) is set.
/// * **The identity's claims** hold `x5t#S256` (the certificate's thumbprint, base64url)
///   and the subject under `spiffe_id`, `dns` or `cn`; its expiry is the certificate's
///   `notAfter`.
/// * **Rejections** (401 `invalid_token`, a fixed reason, never certificate bytes): a
///   certificate that does not parse, one known only by its thumbprint (a proxy that
///   forwarded the hash alone), one with no usable subject, an unlisted trust domain, an
///   unmapped subject under `require_mapping`.
///
/// The certificate itself is not verified here: the TLS server (or the proxy) did that.
///
/// # Performance
/// The DER is parsed on every request, in `authenticate` (never in `extract`, so a request
/// that another authenticator of an `or` takes costs nothing): about 2 µs for a 370-byte
/// ECDSA certificate with a SPIFFE ID, a DNS name and a CN (x509-parser 0.17, release
/// build), more for larger RSA certificates. There is no waiting: the answer is always
/// ready (see [`Authenticator::authenticate_now`]).
///
/// ```
/// use tower_api_guard::auth::AuthLayer;
/// use tower_api_guard::mtls::ClientCertAuthenticator;
///
/// let certs = ClientCertAuthenticator::builder()
///     .trust_domains(["example.org"])
///     .grant("spiffe://example.org/billing", ["billing"], ["invoices:write"])
///     .build()
///     .unwrap();
/// let layer = AuthLayer::new(certs);
/// ```
#[derive(Clone)]
pub struct ClientCertAuthenticator {
    inner: Arc<Inner>,
}

impl fmt::Debug for ClientCertAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertAuthenticator")
            .field("order", &self.inner.order)
            .field("trust_domains", &self.inner.trust_domains)
            .field("grants", &self.inner.grants.len())
            .field("require_mapping", &self.inner.require_mapping)
            .finish()
    }
}

/// Builds a [`ClientCertAuthenticator`]. Made by [`ClientCertAuthenticator::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientCertAuthenticatorBuilder {
    order: Vec<CertSubject>,
    trust_domains: Option<Vec<String>>,
    grants: Vec<(String, Grant)>,
    require_mapping: bool,
}

impl ClientCertAuthenticator {
    /// Start building: subjects from the SPIFFE ID, then the DNS SAN, then the CN; every
    /// trust domain; no grants.
    pub fn builder() -> ClientCertAuthenticatorBuilder {
        ClientCertAuthenticatorBuilder {
            order: vec![
                CertSubject::SpiffeId,
                CertSubject::DnsName,
                CertSubject::CommonName,
            ],
            trust_domains: None,
            grants: Vec::new(),
            require_mapping: false,
        }
    }

    /// The identity of `certificate`, outside a layer.
    ///
    /// # Errors
    /// 401 `invalid_token` as described in the [type's docs](Self).
    pub fn identify(&self, certificate: &ClientCertificate) -> Result<Identity, AuthError> {
        let der = certificate.der().ok_or_else(|| {
            AuthError::invalid_token("client certificate known only by its thumbprint")
        })?;
        let unparsable = || AuthError::invalid_token("client certificate does not parse");
        let (rest, x509) = X509Certificate::from_der(der).map_err(|_| unparsable())?;
        if !rest.is_empty() {
            return Err(unparsable());
        }
        let (kind, subject) = self.subject_of(&x509)?;
        let grant = self.inner.grants.get(subject);
        if grant.is_none() && self.inner.require_mapping {
            return Err(AuthError::invalid_token(
                "client certificate subject has no grant",
            ));
        }
        let x5t = certificate.x5t_s256();
        let mut claims = Map::with_capacity(2);
        claims.insert("x5t#S256".to_owned(), Value::String(x5t.clone()));
        claims.insert(kind.claim().to_owned(), Value::String(subject.to_owned()));
        let mut identity = Identity::builder(subject, Source::ClientCertificate { x5t_s256: x5t })
            .claims(Value::Object(claims));
        if let Ok(secs) = u64::try_from(x509.validity().not_after.timestamp()) {
            identity = identity.expires_at(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        }
        if let Some(grant) = grant {
            identity = identity
                .roles(grant.roles.iter().map(|r| &**r))
                .scopes(grant.scopes.iter().map(|s| &**s));
        }
        Ok(identity.build())
    }

    /// The subject: the first name of the configured order that the certificate has.
    fn subject_of<'c>(
        &self,
        x509: &'c X509Certificate<'_>,
    ) -> Result<(CertSubject, &'c str), AuthError> {
        let sans = x509.subject_alternative_name().map_err(|_| {
            AuthError::invalid_token("client certificate has a malformed subject alternative name")
        })?;
        let names: &[GeneralName<'_>] = sans.as_ref().map_or(&[], |e| &e.value.general_names);
        for &kind in &*self.inner.order {
            let found = match kind {
                CertSubject::SpiffeId => self.spiffe_id(names)?,
                CertSubject::DnsName => dns_name(names)?,
                CertSubject::CommonName => common_name(x509)?,
            };
            if let Some(subject) = found {
                return Ok((kind, subject));
            }
        }
        Err(AuthError::invalid_token(
            "client certificate names no usable subject",
        ))
    }

    /// The one SPIFFE URI SAN, checked, in an allowed trust domain.
    fn spiffe_id<'c>(&self, names: &[GeneralName<'c>]) -> Result<Option<&'c str>, AuthError> {
        let mut found = None;
        for name in names {
            if let GeneralName::URI(uri) = name
                && is_spiffe_scheme(uri)
                && found.replace(*uri).is_some()
            {
                return Err(AuthError::invalid_token(
                    "client certificate has more than one SPIFFE ID",
                ));
            }
        }
        let Some(id) = found else { return Ok(None) };
        let trust_domain = spiffe_trust_domain(id).ok_or_else(|| {
            AuthError::invalid_token("client certificate has a malformed SPIFFE ID")
        })?;
        if let Some(allowed) = &self.inner.trust_domains
            && !allowed.iter().any(|d| **d == *trust_domain)
        {
            return Err(AuthError::invalid_token(
                "client certificate SPIFFE trust domain is not allowed",
            ));
        }
        Ok(Some(id))
    }
}

/// The first DNS SAN, checked.
fn dns_name<'c>(names: &[GeneralName<'c>]) -> Result<Option<&'c str>, AuthError> {
    let Some(name) = names.iter().find_map(|n| match n {
        GeneralName::DNSName(dns) => Some(*dns),
        _ => None,
    }) else {
        return Ok(None);
    };
    let valid = !name.is_empty()
        && name.len() <= MAX_DNS_NAME
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if valid {
        Ok(Some(name))
    } else {
        // Wildcards included: `*.example.org` names no one service.
        Err(AuthError::invalid_token(
            "client certificate has a malformed DNS name",
        ))
    }
}

/// The subject's one common name, checked.
fn common_name<'c>(x509: &'c X509Certificate<'_>) -> Result<Option<&'c str>, AuthError> {
    let mut names = x509.subject().iter_common_name();
    let Some(first) = names.next() else {
        return Ok(None);
    };
    if names.next().is_some() {
        return Err(AuthError::invalid_token(
            "client certificate has more than one common name",
        ));
    }
    match first.as_str() {
        Ok(cn)
            if !cn.is_empty()
                && cn.len() <= MAX_COMMON_NAME
                && !cn.chars().any(char::is_control) =>
        {
            Ok(Some(cn))
        }
        _ => Err(AuthError::invalid_token(
            "client certificate has an unusable common name",
        )),
    }
}

/// Whether a URI is meant as a SPIFFE ID (its scheme is `spiffe`, in any case: an
/// uppercase one is a malformed SPIFFE ID, not another kind of URI).
fn is_spiffe_scheme(uri: &str) -> bool {
    uri.as_bytes()
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"spiffe:"))
}

/// Whether `domain` is a SPIFFE trust domain name.
fn valid_trust_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= MAX_TRUST_DOMAIN
        && domain
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
}

/// The trust domain of a SPIFFE ID of a workload (with a path), or `None` when `id` is not
/// one.
fn spiffe_trust_domain(id: &str) -> Option<&str> {
    if id.len() > MAX_SPIFFE_ID {
        return None;
    }
    let (domain, path) = id.strip_prefix("spiffe://")?.split_once('/')?;
    if !valid_trust_domain(domain) {
        return None;
    }
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    path.split('/').all(segment_ok).then_some(domain)
}

impl ClientCertAuthenticatorBuilder {
    /// Where the subject is taken from, first match wins (default: SPIFFE ID, DNS name,
    /// common name). Leave a kind out to never use it: `[CertSubject::SpiffeId]` accepts
    /// SPIFFE workload certificates only.
    pub fn subject_order(mut self, order: impl IntoIterator<Item = CertSubject>) -> Self {
        self.order = order.into_iter().collect();
        self
    }

    /// Accept SPIFFE IDs of these trust domains only (lowercase names such as
    /// `example.org`). By default every trust domain is accepted.
    pub fn trust_domains<I, S>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.trust_domains = Some(domains.into_iter().map(Into::into).collect());
        self
    }

    /// Give the identity of the exact subject `subject` (a SPIFFE ID, DNS name or common
    /// name, compared byte for byte) these roles and scopes. A subject granted twice is a
    /// configuration error.
    pub fn grant<R, RS, C, CS>(mut self, subject: impl Into<String>, roles: R, scopes: C) -> Self
    where
        R: IntoIterator<Item = RS>,
        RS: Into<Box<str>>,
        C: IntoIterator<Item = CS>,
        CS: Into<Box<str>>,
    {
        self.grants.push((
            subject.into(),
            Grant {
                roles: roles.into_iter().map(Into::into).collect(),
                scopes: scopes.into_iter().map(Into::into).collect(),
            },
        ));
        self
    }

    /// Refuse (401) a certificate whose subject has no [grant](Self::grant). Without it,
    /// such a subject authenticates with no roles and no scopes.
    pub fn require_mapping(mut self) -> Self {
        self.require_mapping = true;
        self
    }

    /// Finish.
    ///
    /// # Errors
    /// An empty subject order or one naming a kind twice; an empty trust-domain allow-list
    /// or a trust domain that is not a lowercase SPIFFE trust domain name; a grant for an
    /// empty subject, for a malformed SPIFFE ID or one outside the allowed trust domains,
    /// or two grants for one subject.
    pub fn build(self) -> Result<ClientCertAuthenticator, ConfigError> {
        if self.order.is_empty() {
            return Err(ConfigError::setting(
                "the client-certificate subject order is empty",
            ));
        }
        for (i, kind) in self.order.iter().enumerate() {
            if self.order[..i].contains(kind) {
                return Err(ConfigError::setting(
                    "the client-certificate subject order names a kind twice",
                ));
            }
        }
        let trust_domains: Option<Box<[Box<str>]>> = match self.trust_domains {
            None => None,
            Some(domains) if domains.is_empty() => {
                return Err(ConfigError::setting(
                    "the SPIFFE trust-domain allow-list is empty",
                ));
            }
            Some(domains) => {
                if !domains.iter().all(|d| valid_trust_domain(d)) {
                    return Err(ConfigError::parse(
                        "a SPIFFE trust domain is not a lowercase name of a-z, 0-9, '.', '-', '_'",
                    ));
                }
                Some(domains.into_iter().map(String::into_boxed_str).collect())
            }
        };
        let mut grants = HashMap::with_capacity(self.grants.len());
        for (subject, grant) in self.grants {
            if subject.is_empty() {
                return Err(ConfigError::setting(
                    "a client-certificate grant names an empty subject",
                ));
            }
            if is_spiffe_scheme(&subject) {
                let Some(domain) = spiffe_trust_domain(&subject) else {
                    return Err(ConfigError::parse(
                        "a client-certificate grant names a malformed SPIFFE ID",
                    ));
                };
                if let Some(allowed) = &trust_domains
                    && !allowed.iter().any(|d| **d == *domain)
                {
                    return Err(ConfigError::setting(
                        "a client-certificate grant names a SPIFFE ID outside the allowed trust domains",
                    ));
                }
            }
            if grants.insert(subject.into_boxed_str(), grant).is_some() {
                return Err(ConfigError::setting(
                    "a client-certificate subject is granted twice",
                ));
            }
        }
        Ok(ClientCertAuthenticator {
            inner: Arc::new(Inner {
                order: self.order.into_boxed_slice(),
                trust_domains,
                grants,
                require_mapping: self.require_mapping,
            }),
        })
    }
}

impl Authenticator for ClientCertAuthenticator {
    type Credential = ClientCertificate;
    type Future = Ready<Result<Option<Identity>, AuthError>>;

    /// The request's [`ClientCertificate`] extension (a reference count), if any; nothing
    /// is parsed here.
    fn extract(&self, head: &RequestHead<'_>) -> Result<Option<ClientCertificate>, AuthError> {
        Ok(head
            .extensions
            .and_then(|e| e.get::<ClientCertificate>())
            .cloned())
    }

    fn authenticate(&self, certificate: ClientCertificate) -> Self::Future {
        ready(self.identify(&certificate).map(Some))
    }

    fn authenticate_now(
        &self,
        certificate: ClientCertificate,
    ) -> Result<Result<Option<Identity>, AuthError>, ClientCertificate> {
        Ok(self.identify(&certificate).map(Some))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::SocketAddr;

    use http::{Request, StatusCode};
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    use super::*;
    use crate::auth::{AuthLayer, AuthenticatorExt};
    use crate::error::AuthErrorKind;
    use crate::gate::support::{HeaderAuth, run};

    /// A self-signed certificate with these URI and DNS SANs and common name, as DER.
    pub(crate) fn der(uris: &[&str], dns: &[&str], cn: Option<&str>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        for uri in uris {
            let uri = (*uri).try_into().unwrap();
            params.subject_alt_names.push(SanType::URI(uri));
        }
        for name in dns {
            let name = (*name).try_into().unwrap();
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn cert(uris: &[&str], dns: &[&str], cn: Option<&str>) -> ClientCertificate {
        ClientCertificate::from_der(der(uris, dns, cn))
    }

    fn default() -> ClientCertAuthenticator {
        ClientCertAuthenticator::builder().build().unwrap()
    }

    /// The rejection's reason, asserting it is a 401 `invalid_token`.
    fn refused(auth: &ClientCertAuthenticator, cert: &ClientCertificate) -> String {
        let error = auth.identify(cert).unwrap_err();
        assert_eq!(error.kind(), AuthErrorKind::InvalidToken);
        error.reason().to_owned()
    }

    const BILLING: &str = "spiffe://example.org/ns/prod/billing";

    #[test]
    fn subjects_come_in_the_default_order() {
        let auth = default();
        let all = cert(&[BILLING], &["billing.internal"], Some("billing-cn"));
        let id = auth.identify(&all).unwrap();
        assert_eq!(id.subject(), BILLING);
        assert_eq!(
            id.source(),
            &Source::ClientCertificate {
                x5t_s256: all.x5t_s256()
            }
        );
        assert_eq!(id.source().to_string(), "client_certificate");
        assert_eq!(id.claim("spiffe_id"), Some(&Value::from(BILLING)));
        assert_eq!(id.claim("x5t#S256"), Some(&Value::from(all.x5t_s256())));
        assert_eq!(id.claim("dns"), None);
        assert!(id.expires_at().is_some());
        assert!(id.roles().is_empty() && id.scopes().is_empty());

        // Other URI SANs are not SPIFFE IDs.
        let dns = cert(
            &["https://billing.example.org/"],
            &["billing.internal", "other.internal"],
            Some("billing-cn"),
        );
        let id = auth.identify(&dns).unwrap();
        assert_eq!(id.subject(), "billing.internal");
        assert_eq!(id.claim("dns"), Some(&Value::from("billing.internal")));

        let cn = cert(&[], &[], Some("billing-cn"));
        let id = auth.identify(&cn).unwrap();
        assert_eq!(id.subject(), "billing-cn");
        assert_eq!(id.claim("cn"), Some(&Value::from("billing-cn")));

        let nothing = cert(&["urn:example:x"], &[], None);
        assert_eq!(
            refused(&auth, &nothing),
            "client certificate names no usable subject"
        );
    }

    #[test]
    fn the_subject_order_is_configurable() {
        let all = cert(&[BILLING], &["billing.internal"], Some("billing-cn"));
        let cn_first = ClientCertAuthenticator::builder()
            .subject_order([CertSubject::CommonName, CertSubject::SpiffeId])
            .build()
            .unwrap();
        assert_eq!(cn_first.identify(&all).unwrap().subject(), "billing-cn");
        let dns_only = ClientCertAuthenticator::builder()
            .subject_order([CertSubject::DnsName])
            .build()
            .unwrap();
        assert_eq!(
            dns_only.identify(&all).unwrap().subject(),
            "billing.internal"
        );
        let spiffe_only = ClientCertAuthenticator::builder()
            .subject_order([CertSubject::SpiffeId])
            .build()
            .unwrap();
        let no_spiffe = cert(&[], &["billing.internal"], Some("billing-cn"));
        refused(&spiffe_only, &no_spiffe);
        for bad in [vec![], vec![CertSubject::DnsName, CertSubject::DnsName]] {
            assert!(
                ClientCertAuthenticator::builder()
                    .subject_order(bad)
                    .build()
                    .is_err()
            );
        }
    }

    #[test]
    fn spiffe_ids_are_checked_and_never_fall_through() {
        let auth = default();
        let two = cert(
            &[BILLING, "spiffe://example.org/other"],
            &["billing.internal"],
            None,
        );
        assert_eq!(
            refused(&auth, &two),
            "client certificate has more than one SPIFFE ID"
        );
        for bad in [
            "spiffe://Example.org/billing",
            "SPIFFE://example.org/billing",
            "spiffe://example.org",
            "spiffe://example.org/",
            "spiffe://example.org/a//b",
            "spiffe://example.org/a/",
            "spiffe://example.org/a/../b",
            "spiffe://example.org/a?x=1",
            "spiffe://example.org/a#frag",
            "spiffe://example.org:443/a",
            "spiffe://user@example.org/a",
            "spiffe:///a",
            "spiffe://example.org/a%20b",
        ] {
            let c = cert(&[bad], &["billing.internal"], Some("cn"));
            assert_eq!(
                refused(&auth, &c),
                "client certificate has a malformed SPIFFE ID",
                "{bad}"
            );
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(2048));
        refused(&auth, &cert(&[&long], &[], None));
        let longest = format!("spiffe://example.org/{}", "a".repeat(2048 - 21));
        assert_eq!(
            auth.identify(&cert(&[&longest], &[], None))
                .unwrap()
                .subject(),
            longest
        );
        for good in [
            "spiffe://example.org/a",
            "spiffe://my-domain_1.example/ns/Prod/sa/x.y-z_Q",
        ] {
            assert_eq!(
                auth.identify(&cert(&[good], &[], None)).unwrap().subject(),
                good
            );
        }
    }

    #[test]
    fn dns_names_and_common_names_are_checked() {
        let auth = default();
        for bad in ["*.example.org", "a..b", ".a", "a b"] {
            let c = cert(&[], &[bad, "fine.example.org"], Some("cn"));
            assert_eq!(
                refused(&auth, &c),
                "client certificate has a malformed DNS name",
                "{bad}"
            );
        }
        let c = cert(&[], &[], Some("bad\ncn"));
        assert_eq!(
            refused(&auth, &c),
            "client certificate has an unusable common name"
        );
    }

    #[test]
    fn trust_domains_allow_list() {
        let auth = ClientCertAuthenticator::builder()
            .trust_domains(["example.org", "prod.example.com"])
            .build()
            .unwrap();
        assert_eq!(
            auth.identify(&cert(&[BILLING], &[], None))
                .unwrap()
                .subject(),
            BILLING
        );
        let other = cert(
            &["spiffe://evil.example/billing"],
            &["billing.internal"],
            None,
        );
        assert_eq!(
            refused(&auth, &other),
            "client certificate SPIFFE trust domain is not allowed"
        );
        // A suffix or prefix of an allowed domain is another domain.
        refused(&auth, &cert(&["spiffe://example.org.evil/a"], &[], None));
        refused(&auth, &cert(&["spiffe://xexample.org/a"], &[], None));
        // The allow-list is about SPIFFE IDs: a DNS-named certificate still authenticates.
        let dns = cert(&[], &["billing.internal"], None);
        assert_eq!(auth.identify(&dns).unwrap().subject(), "billing.internal");

        for bad in [
            vec!["Example.org"],
            vec![""],
            vec!["example.org:443"],
            vec!["example.org/x"],
            vec![],
        ] {
            assert!(
                ClientCertAuthenticator::builder()
                    .trust_domains(bad.clone())
                    .build()
                    .is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn grants_map_subjects_to_roles_and_scopes() {
        let builder = ClientCertAuthenticator::builder()
            .grant(BILLING, ["billing"], ["invoices:read", "invoices:write"])
            .grant("reports.internal", ["reader"], Vec::<String>::new());
        let auth = builder.clone().build().unwrap();
        let id = auth.identify(&cert(&[BILLING], &[], None)).unwrap();
        assert!(id.has_role("billing"));
        assert!(id.has_scope("invoices:write") && id.has_scope("invoices:read"));
        let id = auth
            .identify(&cert(&[], &["reports.internal"], None))
            .unwrap();
        assert!(id.has_role("reader") && id.scopes().is_empty());
        // Exact subjects only.
        let id = auth
            .identify(&cert(&["spiffe://example.org/ns/prod/billing2"], &[], None))
            .unwrap();
        assert!(id.roles().is_empty() && id.scopes().is_empty());

        let strict = builder.require_mapping().build().unwrap();
        assert!(strict.identify(&cert(&[BILLING], &[], None)).is_ok());
        assert_eq!(
            refused(&strict, &cert(&[], &["unknown.internal"], None)),
            "client certificate subject has no grant"
        );

        let none: [&str; 0] = [];
        for bad in [
            ClientCertAuthenticator::builder().grant("", none, none),
            ClientCertAuthenticator::builder().grant("spiffe://Example.org/a", none, none),
            ClientCertAuthenticator::builder()
                .grant("a", none, none)
                .grant("a", ["x"], none),
            ClientCertAuthenticator::builder()
                .trust_domains(["example.org"])
                .grant("spiffe://other.org/a", none, none),
        ] {
            assert!(bad.build().is_err());
        }
    }

    #[test]
    fn certificates_without_usable_der_are_refused() {
        let auth = default();
        let good = cert(&[BILLING], &[], None);
        let hashed = ClientCertificate::from_thumbprint(*good.thumbprint());
        assert_eq!(
            refused(&auth, &hashed),
            "client certificate known only by its thumbprint"
        );
        for garbage in [
            Vec::new(),
            b"not DER".to_vec(),
            good.der().unwrap()[..100].to_vec(),
            [good.der().unwrap(), &[0u8][..]].concat(),
        ] {
            let reason = refused(&auth, &ClientCertificate::from_der(garbage));
            assert_eq!(reason, "client certificate does not parse");
        }
    }

    #[test]
    fn extract_reads_the_extension_and_parses_nothing() {
        let auth = default();
        let mut request = Request::new(());
        assert!(auth.extract(&RequestHead::of(&request)).unwrap().is_none());
        // Garbage is extracted (parsing happens in authenticate).
        request
            .extensions_mut()
            .insert(ClientCertificate::from_der(&b"garbage"[..]));
        assert!(auth.extract(&RequestHead::of(&request)).unwrap().is_some());
    }

    /// A request with a peer address and, optionally, a client certificate and `x-user`.
    fn request(cert: Option<ClientCertificate>, user: Option<&str>) -> Request<()> {
        let mut request = Request::get("/");
        if let Some(user) = user {
            request = request.header("x-user", user);
        }
        let mut request = request.body(()).unwrap();
        let peer: SocketAddr = "192.0.2.10:50000".parse().unwrap();
        request.extensions_mut().insert(peer);
        if let Some(cert) = cert {
            request.extensions_mut().insert(cert);
        }
        request
    }

    #[tokio::test]
    async fn through_the_auth_layer() {
        let layer = AuthLayer::new(
            ClientCertAuthenticator::builder()
                .grant(BILLING, ["billing"], ["invoices:write"])
                .build()
                .unwrap(),
        );
        let good = cert(&[BILLING], &[], None);
        let out = run(&layer, request(Some(good), None)).await;
        assert_eq!(out.status, StatusCode::OK);
        assert_eq!(out.subject.as_deref(), Some(BILLING));
        assert_eq!(out.calls, 1);

        let out = run(&layer, request(None, None)).await;
        assert_eq!(out.status, StatusCode::UNAUTHORIZED);
        assert_eq!(out.error.unwrap().kind(), AuthErrorKind::MissingCredentials);
        assert_eq!(out.calls, 0);

        let garbage = ClientCertificate::from_der(&b"garbage"[..]);
        let out = run(&layer, request(Some(garbage), None)).await;
        assert_eq!(out.status, StatusCode::UNAUTHORIZED);
        assert_eq!(out.error.unwrap().kind(), AuthErrorKind::InvalidToken);
        assert_eq!(out.calls, 0);
    }

    #[tokio::test]
    async fn composes_with_or() {
        let layer = AuthLayer::new(HeaderAuth { waits: false }.or(default()));
        let good = || Some(cert(&[BILLING], &[], None));

        // Only the header: the header authenticator.
        let out = run(&layer, request(None, Some("alice"))).await;
        assert_eq!(out.subject.as_deref(), Some("alice"));
        // Only the certificate: the certificate.
        let out = run(&layer, request(good(), None)).await;
        assert_eq!(out.subject.as_deref(), Some(BILLING));
        // Both: ambiguous.
        let out = run(&layer, request(good(), Some("alice"))).await;
        assert_eq!(out.status, StatusCode::BAD_REQUEST);
        assert_eq!(out.calls, 0);
        // A bad certificate never falls through.
        let bad = Some(cert(&["spiffe://Bad/x"], &["dns.internal"], None));
        let out = run(&layer, request(bad, None)).await;
        assert_eq!(out.status, StatusCode::UNAUTHORIZED);
        // Neither.
        let out = run(&layer, request(None, None)).await;
        assert_eq!(out.status, StatusCode::UNAUTHORIZED);

        // The certificate first, with a waiting second authenticator.
        let layer = AuthLayer::new(default().or(HeaderAuth { waits: true }));
        let out = run(&layer, request(None, Some("bob"))).await;
        assert_eq!(out.subject.as_deref(), Some("bob"));
        let out = run(&layer, request(good(), None)).await;
        assert_eq!(out.subject.as_deref(), Some(BILLING));
    }

    #[test]
    fn caller_keys_name_the_subject() {
        let id = default().identify(&cert(&[BILLING], &[], None)).unwrap();
        assert_eq!(id.caller_key(), format!("client_certificate:{BILLING}"));
    }
}
