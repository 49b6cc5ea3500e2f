//! [`Identity`]: who the caller is, made by authentication and read by everything after it.
//!
//! An `Identity` is one [`Arc`]: cloning it is a reference-count increment. Auth layers
//! insert it into the request's extensions; guards, rate limiters and handlers read it.
//!
//! ```
//! use tower_api_guard::{Identity, Source};
//!
//! let identity = Identity::builder("alice", Source::Jwt { issuer: "https://issuer.example".into() })
//!     .scopes(["items:read", "items:write"])
//!     .roles(["admin"])
//!     .claims(serde_json::json!({ "sub": "alice", "org": { "id": "acme" } }))
//!     .build();
//!
//! assert!(identity.has_scope("items:read"));
//! assert!(!identity.has_scope("items"));
//! assert!(identity.has_role("admin"));
//! assert_eq!(identity.claim("org.id"), Some(&serde_json::json!("acme")));
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Where an [`Identity`] came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// A bearer JWT issued by `issuer`.
    Jwt {
        /// The token's verified `iss`.
        issuer: String,
    },
    /// An API key; `key_id` is the key record's id, never the key itself.
    ApiKey {
        /// The key record's id.
        key_id: String,
    },
    /// A verified TLS client certificate (mutual TLS, service to service); the subject is
    /// the certificate's SPIFFE ID, DNS name or common name.
    ClientCertificate {
        /// The certificate's SHA-256 thumbprint, base64url without padding (RFC 8705
        /// `x5t#S256`).
        x5t_s256: String,
    },
    /// An opaque token that the issuer's introspection endpoint (RFC 7662) said is active.
    Introspection {
        /// The `iss` of the introspection response, when it had one.
        issuer: Option<String>,
    },
    /// A credential checked by an authenticator outside this crate.
    Custom {
        /// A name for the mechanism, for logs and handlers.
        mechanism: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Jwt { .. } => f.write_str("jwt"),
            Source::ApiKey { .. } => f.write_str("api_key"),
            Source::ClientCertificate { .. } => f.write_str("client_certificate"),
            Source::Introspection { .. } => f.write_str("introspection"),
            Source::Custom { mechanism } => write!(f, "custom:{mechanism}"),
        }
    }
}

/// A set of strings with exact, case-sensitive membership. Used for [`Scopes`] and [`Roles`].
///
/// Stored sorted and deduplicated; membership is a short linear scan for small sets and a
/// binary search for larger ones.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StringSet(Box<[Box<str>]>);

impl StringSet {
    /// Whether `item` is in the set (exact, case-sensitive: `admin` never matches `Admin`
    /// or `admin:read`).
    pub fn contains(&self, item: &str) -> bool {
        // Small sets (the common case): a linear scan that rejects by length before
        // comparing bytes beats a binary search of string comparisons.
        if self.0.len() <= 8 {
            self.0.iter().any(|s| s.len() == item.len() && **s == *item)
        } else {
            self.0.binary_search_by(|s| (**s).cmp(item)).is_ok()
        }
    }

    /// The items, sorted.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.0.iter().map(|s| &**s)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<S: Into<Box<str>>> FromIterator<S> for StringSet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut items: Vec<Box<str>> = iter.into_iter().map(Into::into).collect();
        items.sort_unstable();
        items.dedup();
        StringSet(items.into_boxed_slice())
    }
}

impl fmt::Debug for StringSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl serde::Serialize for StringSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// The scopes granted to an identity.
pub type Scopes = StringSet;
/// The roles held by an identity.
pub type Roles = StringSet;

struct Inner {
    subject: String,
    source: Source,
    scopes: Scopes,
    roles: Roles,
    permissions: StringSet,
    tenant: Option<String>,
    expires_at: Option<SystemTime>,
    claims: Value,
    plan: Option<String>,
    /// [`Identity::caller_key`], made on first use.
    caller_key: std::sync::OnceLock<Box<str>>,
    /// [`Identity::credential_key`], made on first use.
    #[cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
    credential_key: std::sync::OnceLock<Option<CredentialKey>>,
}

/// The key of the credential an identity presented, for limits per credential: see
/// [`Identity::credential_key`].
#[cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
pub(crate) struct CredentialKey {
    /// The hash tag its shared state lives under: the owner's caller key for a credential
    /// that belongs to one subject (an API key, a certificate), the client's own key for
    /// a JWT client that many subjects use.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) tag: Box<str>,
    /// After the tag: `:cred:<id>` for an owned credential, empty for a client.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) suffix: Box<str>,
    /// One string for in-process maps: `cred:` + the tag's length + the tag + the suffix
    /// (no caller key starts with `cred:`).
    pub(crate) flat: Box<str>,
}

/// Who the caller is. Cheap to clone (one [`Arc`]).
///
/// `Debug` prints the subject, source, scopes and roles, never claims' values.
#[derive(Clone)]
pub struct Identity(Arc<Inner>);

impl Identity {
    /// Start building an identity for `subject`.
    pub fn builder(subject: impl Into<String>, source: Source) -> IdentityBuilder {
        IdentityBuilder {
            inner: Inner {
                subject: subject.into(),
                source,
                scopes: Scopes::default(),
                roles: Roles::default(),
                permissions: StringSet::default(),
                tenant: None,
                expires_at: None,
                claims: Value::Object(Default::default()),
                plan: None,
                caller_key: std::sync::OnceLock::new(),
                credential_key: std::sync::OnceLock::new(),
            },
        }
    }

    /// A string naming the caller uniquely across sources and issuers, for code that keeps
    /// state per caller (the rate and concurrency limiters key on it).
    ///
    /// It is the source's kind, the namespace the subject belongs to, and the subject:
    ///
    /// - [`Source::Jwt`]: `jwt:` + the issuer + the subject. The issuer is part of the key
    ///   because two issuers name their subjects independently: `alice` of one is not
    ///   `alice` of the other.
    /// - [`Source::ApiKey`]: `api_key:` + the subject (the key's owner). The key id is left
    ///   out on purpose: the keys of one owner (several keys, or an old and a new key during
    ///   a rotation's grace period) are one caller, with one budget.
    /// - [`Source::ClientCertificate`]: `client_certificate:` + the subject (the SPIFFE ID,
    ///   DNS name or common name). The thumbprint is left out for the same reason: a
    ///   renewed certificate of one service is the same caller.
    /// - [`Source::Introspection`]: `introspection:` + the issuer, when the response named
    ///   one, + the subject.
    /// - [`Source::Custom`]: `custom:` + the mechanism + the subject.
    ///
    /// Every variable part but the last is written with its length in bytes before it
    /// (`jwt:17:https://a.example:alice`), so no choice of issuer, mechanism or subject makes
    /// two callers' keys equal, whatever characters they hold. No key starts with `ip:`,
    /// the prefix of the anonymous limiter's per-address keys.
    ///
    /// # Performance
    /// Made once per identity and cached (a cached token's identity is reused, so once per
    /// token); later calls are a load.
    #[cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
    pub(crate) fn caller_key(&self) -> &str {
        self.0.caller_key.get_or_init(|| {
            let subject = self.subject();
            let (kind, namespace) = match self.source() {
                Source::Jwt { issuer } => ("jwt", Some(issuer.as_str())),
                Source::ApiKey { .. } => ("api_key", None),
                Source::ClientCertificate { .. } => ("client_certificate", None),
                Source::Introspection { issuer } => {
                    ("introspection", Some(issuer.as_deref().unwrap_or_default()))
                }
                Source::Custom { mechanism } => ("custom", Some(mechanism.as_str())),
            };
            let mut key = String::with_capacity(
                kind.len() + namespace.map_or(0, |n| n.len() + 24) + subject.len() + 1,
            );
            key.push_str(kind);
            key.push(':');
            if let Some(namespace) = namespace {
                // `{len}:{namespace}:` — the length says where the namespace ends.
                use fmt::Write as _;
                let _ = write!(key, "{}:{namespace}:", namespace.len());
            }
            key.push_str(subject);
            key.into_boxed_str()
        })
    }

    /// The credential this identity presented, for limits per credential
    /// ([`RateLimiterLayer::per_credential`](crate::rate_limit::RateLimiterLayer::per_credential)):
    ///
    /// - [`Source::ApiKey`]: the key's record id, under its owner;
    /// - [`Source::ClientCertificate`]: the certificate's thumbprint, under its subject;
    /// - [`Source::Jwt`] and [`Source::Introspection`]: the OAuth client, `client_id`
    ///   (RFC 9068) or else `azp`, with the issuer (a client's quota is shared by every
    ///   user of that client);
    /// - otherwise (or a token naming no client): none.
    ///
    /// Made once per identity and cached.
    #[cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
    pub(crate) fn credential_key(&self) -> Option<&CredentialKey> {
        self.0
            .credential_key
            .get_or_init(|| {
                let owned = |id: &str| (self.caller_key().into(), format!(":cred:{id}"));
                let client = |issuer: &str| {
                    let client = ["client_id", "azp"]
                        .iter()
                        .find_map(|c| self.claims().get(*c)?.as_str())
                        .filter(|c| !c.is_empty())?;
                    Some((
                        format!("client:{}:{issuer}:{client}", issuer.len()),
                        String::new(),
                    ))
                };
                let (tag, suffix): (String, String) = match self.source() {
                    Source::ApiKey { key_id } => owned(key_id),
                    Source::ClientCertificate { x5t_s256 } => owned(x5t_s256),
                    Source::Jwt { issuer } => client(issuer)?,
                    Source::Introspection { issuer } => {
                        client(issuer.as_deref().unwrap_or_default())?
                    }
                    Source::Custom { .. } => return None,
                };
                Some(CredentialKey {
                    flat: format!("cred:{}:{tag}{suffix}", tag.len()).into(),
                    tag: tag.into(),
                    suffix: suffix.into(),
                })
            })
            .as_ref()
    }

    /// The subject: the JWT's `sub` (or the configured fallback), or the API key's owner.
    pub fn subject(&self) -> &str {
        &self.0.subject
    }

    /// Where the identity came from.
    pub fn source(&self) -> &Source {
        &self.0.source
    }

    /// The granted scopes.
    pub fn scopes(&self) -> &Scopes {
        &self.0.scopes
    }

    /// The held roles.
    pub fn roles(&self) -> &Roles {
        &self.0.roles
    }

    /// The permissions granted through roles (see [`RoleModel`]).
    pub fn permissions(&self) -> &StringSet {
        &self.0.permissions
    }

    /// Whether the permission is granted through a role (exact, case-sensitive match).
    pub fn has_permission(&self, permission: &str) -> bool {
        self.0.permissions.contains(permission)
    }

    /// Whether the scope is granted (exact, case-sensitive match).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.0.scopes.contains(scope)
    }

    /// Whether the role is held (exact, case-sensitive match).
    pub fn has_role(&self, role: &str) -> bool {
        self.0.roles.contains(role)
    }

    /// The tenant, when the credential names one.
    pub fn tenant(&self) -> Option<&str> {
        self.0.tenant.as_deref()
    }

    /// When the credential expires.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.0.expires_at
    }

    /// The rate-limit plan, when the credential names one.
    pub fn plan(&self) -> Option<&str> {
        self.0.plan.as_deref()
    }

    /// All raw claims (for a JWT) or key metadata (for an API key), as a JSON object.
    pub fn claims(&self) -> &Value {
        &self.0.claims
    }

    /// One claim by dotted path: `"realm_access.roles"` reads `claims["realm_access"]["roles"]`.
    ///
    /// A path segment that names no member, or steps into a non-object, gives `None`.
    pub fn claim(&self, path: &str) -> Option<&Value> {
        claim_path(&self.0.claims, path)
    }

    /// Deserialize the raw claims into `T`.
    ///
    /// # Errors
    /// When the claims do not have the shape of `T`.
    pub fn claims_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.0.claims)
    }
}

/// Follow a dotted path through JSON objects.
pub(crate) fn claim_path<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    // An exact member name wins, so claims whose names contain dots stay reachable.
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut current = claims;
    for segment in path.split('.') {
        current = current.as_object()?.get(segment)?;
    }
    Some(current)
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("subject", &self.0.subject)
            .field("source", &self.0.source)
            .field("scopes", &self.0.scopes)
            .field("roles", &self.0.roles)
            .field("permissions", &self.0.permissions)
            .field("tenant", &self.0.tenant)
            .field("expires_at", &self.0.expires_at)
            .field("plan", &self.0.plan)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Identity`]. Made by [`Identity::builder`].
#[must_use]
pub struct IdentityBuilder {
    inner: Inner,
}

impl IdentityBuilder {
    /// Granted scopes.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        self.inner.scopes = scopes.into_iter().collect();
        self
    }

    /// Held roles.
    pub fn roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        self.inner.roles = roles.into_iter().collect();
        self
    }

    /// Permissions granted through roles.
    pub fn permissions<I, S>(mut self, permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        self.inner.permissions = permissions.into_iter().collect();
        self
    }

    /// Expand the roles set so far through `model` (hierarchy) and grant their
    /// permissions. Done once, when the identity is made, so a check is a set lookup.
    pub fn role_model(mut self, model: &RoleModel) -> Self {
        let (roles, permissions) = model.resolve(self.inner.roles.iter());
        self.inner.roles = roles.into_iter().collect();
        let mut all: Vec<Box<str>> = self.inner.permissions.iter().map(Box::from).collect();
        all.extend(permissions.into_iter().map(String::into_boxed_str));
        self.inner.permissions = all.into_iter().collect();
        self
    }

    /// The tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.inner.tenant = Some(tenant.into());
        self
    }

    /// When the credential expires.
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.inner.expires_at = Some(at);
        self
    }

    /// The raw claims or key metadata (a JSON object).
    pub fn claims(mut self, claims: Value) -> Self {
        self.inner.claims = claims;
        self
    }

    /// The rate-limit plan.
    pub fn plan(mut self, plan: impl Into<String>) -> Self {
        self.inner.plan = Some(plan.into());
        self
    }

    /// Finish.
    pub fn build(self) -> Identity {
        Identity(Arc::new(self.inner))
    }
}

/// Roles with a hierarchy (`admin` includes `editor` includes `viewer`) and the permissions
/// each role grants (`editor` → `posts:read posts:write`). Applied once when an identity is
/// made ([`IdentityBuilder::role_model`], `JwtAuthenticatorBuilder::role_model`), so a
/// check is a set lookup.
///
/// ```
/// use tower_api_guard::{Identity, RoleModel, Source};
///
/// let model = RoleModel::new()
///     .inherit("admin", ["editor"])
///     .inherit("editor", ["viewer"])
///     .grant("editor", ["posts:write"])
///     .grant("viewer", ["posts:read"]);
/// let id = Identity::builder("ann", Source::Custom { mechanism: "doc".into() })
///     .roles(["admin"])
///     .role_model(&model)
///     .build();
/// assert!(id.has_role("viewer"));
/// assert!(id.has_permission("posts:read") && id.has_permission("posts:write"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct RoleModel {
    includes: std::collections::HashMap<String, Vec<String>>,
    grants: std::collections::HashMap<String, Vec<String>>,
}

impl RoleModel {
    /// An empty model: roles are taken as they are.
    pub fn new() -> Self {
        Self::default()
    }

    /// `role` includes every role in `included` (and, transitively, what they include).
    #[must_use]
    pub fn inherit<I, S>(mut self, role: &str, included: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.includes
            .entry(role.to_owned())
            .or_default()
            .extend(included.into_iter().map(Into::into));
        self
    }

    /// `role` grants `permissions`.
    #[must_use]
    pub fn grant<I, S>(mut self, role: &str, permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.grants
            .entry(role.to_owned())
            .or_default()
            .extend(permissions.into_iter().map(Into::into));
        self
    }

    /// Every role reachable from `roles` (cycles are harmless) and the permissions they
    /// grant.
    pub fn resolve<'a>(
        &self,
        roles: impl IntoIterator<Item = &'a str>,
    ) -> (Vec<String>, Vec<String>) {
        let mut seen: Vec<String> = Vec::new();
        let mut stack: Vec<String> = roles.into_iter().map(str::to_owned).collect();
        while let Some(role) = stack.pop() {
            if seen.contains(&role) {
                continue;
            }
            if let Some(children) = self.includes.get(&role) {
                stack.extend(children.iter().cloned());
            }
            seen.push(role);
        }
        let permissions = seen
            .iter()
            .filter_map(|r| self.grants.get(r))
            .flatten()
            .cloned()
            .collect();
        (seen, permissions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id() -> Identity {
        Identity::builder(
            "alice",
            Source::ApiKey {
                key_id: "k1".into(),
            },
        )
        .scopes(["b", "a", "a", "admin:read"])
        .roles(["admin"])
        .claims(json!({"a": {"b": [1]}, "x.y": 2, "n": 3}))
        .build()
    }

    #[test]
    fn exact_membership() {
        let id = id();
        assert!(id.has_scope("a"));
        assert!(id.has_scope("admin:read"));
        assert!(!id.has_scope("admin"));
        assert!(!id.has_scope("A"));
        assert!(!id.has_role("Admin"));
        assert!(!id.has_role("notadmin"));
        assert!(id.has_role("admin"));
        assert_eq!(
            id.scopes().iter().collect::<Vec<_>>(),
            ["a", "admin:read", "b"]
        );
    }

    #[test]
    fn role_hierarchy_and_permissions() {
        let model = RoleModel::new()
            .inherit("admin", ["editor"])
            .inherit("editor", ["viewer"])
            .inherit("viewer", ["admin"]) // a cycle must not loop
            .grant("editor", ["posts:read", "posts:write"])
            .grant("viewer", ["posts:read"]);
        let id = Identity::builder("a", Source::ApiKey { key_id: "k".into() })
            .roles(["editor"])
            .role_model(&model)
            .build();
        assert!(id.has_role("editor") && id.has_role("viewer") && id.has_role("admin"));
        let id = Identity::builder("b", Source::ApiKey { key_id: "k".into() })
            .roles(["viewer-only"])
            .role_model(&model)
            .build();
        assert_eq!(id.roles().iter().collect::<Vec<_>>(), ["viewer-only"]);
        assert!(id.permissions().is_empty());
        let model = RoleModel::new()
            .inherit("admin", ["editor"])
            .grant("editor", ["posts:write"]);
        let id = Identity::builder("c", Source::ApiKey { key_id: "k".into() })
            .roles(["admin"])
            .role_model(&model)
            .build();
        assert!(id.has_permission("posts:write"));
        assert!(!id.has_permission("posts:read"));
        assert!(!id.has_scope("posts:write"), "permissions are not scopes");
    }

    #[test]
    fn large_and_small_sets() {
        let small: StringSet = ["b", "a", "ab"].into_iter().collect();
        assert!(
            small.contains("ab")
                && small.contains("a")
                && !small.contains("abc")
                && !small.contains("")
        );
        let names: Vec<String> = (0..100).map(|i| format!("scope-{i}")).collect();
        let large: StringSet = names.iter().map(String::as_str).collect();
        assert!(names.iter().all(|n| large.contains(n)));
        assert!(!large.contains("scope-100") && !large.contains("scope-"));
    }

    #[test]
    fn claim_paths() {
        let id = id();
        assert_eq!(id.claim("a.b"), Some(&json!([1])));
        assert_eq!(id.claim("x.y"), Some(&json!(2)));
        assert_eq!(id.claim("n.m"), None);
        assert_eq!(id.claim("missing"), None);
        #[derive(serde::Deserialize)]
        struct C {
            n: u32,
        }
        assert_eq!(id.claims_as::<C>().unwrap().n, 3);
        assert!(id.claims_as::<Vec<u8>>().is_err());
    }

    fn jwt(issuer: &str, subject: &str) -> Identity {
        Identity::builder(
            subject,
            Source::Jwt {
                issuer: issuer.into(),
            },
        )
        .build()
    }

    #[test]
    fn caller_key_names_the_issuer() {
        let a = jwt("https://a.example", "alice");
        let b = jwt("https://b.example", "alice");
        assert_ne!(a.caller_key(), b.caller_key());
        assert_eq!(
            a.caller_key(),
            jwt("https://a.example", "alice").caller_key()
        );
        assert_eq!(a.caller_key(), "jwt:17:https://a.example:alice");
        // Built once: the same allocation every time.
        assert!(std::ptr::eq(a.caller_key(), a.caller_key()));
    }

    #[test]
    fn caller_key_is_unambiguous() {
        // Wherever a separator falls, the length prefix tells the parts apart.
        for (iss_1, sub_1, iss_2, sub_2) in [
            ("a|b", "c", "a", "b|c"),
            ("a:b", "c", "a", "b:c"),
            ("a\u{0}b", "c", "a", "b\u{0}c"),
            ("1:a", "b", "1", "a:b"),
            ("", "a:b", "a", "b"),
        ] {
            assert_ne!(
                jwt(iss_1, sub_1).caller_key(),
                jwt(iss_2, sub_2).caller_key(),
                "{iss_1:?}/{sub_1:?} vs {iss_2:?}/{sub_2:?}"
            );
        }
        let custom = |mechanism: &str, subject: &str| {
            Identity::builder(
                subject,
                Source::Custom {
                    mechanism: mechanism.into(),
                },
            )
            .build()
        };
        assert_ne!(
            custom("a:b", "c").caller_key(),
            custom("a", "b:c").caller_key()
        );
        // Sources of different kinds never share a key, nor with the per-address keys.
        let key = |key_id: &str, subject: &str| {
            Identity::builder(
                subject,
                Source::ApiKey {
                    key_id: key_id.into(),
                },
            )
            .build()
        };
        let keys = [
            jwt("x", "alice").caller_key().to_owned(),
            key("k1", "alice").caller_key().to_owned(),
            custom("x", "alice").caller_key().to_owned(),
            custom("jwt", "alice").caller_key().to_owned(),
            key("k1", "1:x:alice").caller_key().to_owned(),
        ];
        for (i, k) in keys.iter().enumerate() {
            assert!(!k.starts_with("ip:"), "{k}");
            assert!(keys[i + 1..].iter().all(|other| other != k), "{k}");
        }
        // The keys of one owner are one caller.
        assert_eq!(
            key("k1", "alice").caller_key(),
            key("k2", "alice").caller_key()
        );
    }

    #[test]
    fn debug_has_no_claim_values() {
        let id = Identity::builder(
            "bob",
            Source::Custom {
                mechanism: "t".into(),
            },
        )
        .claims(json!({"secret": "hunter2"}))
        .build();
        let dbg = format!("{id:?}");
        assert!(dbg.contains("bob"));
        assert!(!dbg.contains("hunter2"));
    }
}
