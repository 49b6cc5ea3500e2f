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
/// that another authenticator of an `or` takes costs nothing): a few microseconds for a
/// usual certificate, and no waiting (the answer is always ready, see
/// [`Authenticator::authenticate_now`]).
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
                if let Some(allowed) = &trust_domains {
                    if !allowed.iter().any(|d| **d == *domain) {
                        return Err(ConfigError::setting(
                            "a client-certificate grant names a SPIFFE ID outside the allowed trust domains",
                        ));
                    }
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
