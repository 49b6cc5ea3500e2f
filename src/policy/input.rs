//! The facts every policy engine sees.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::identity::{Identity, Source};

/// The facts of one request, the same for every engine. Serialized, it is the `input`
/// document of Rego and OPA:
///
/// ```json
/// {
///   "principal": {"id": "demo-user", "source": "jwt", "issuer": "https://issuer.example",
///                 "roles": ["auditor"], "scopes": ["items:read"], "tenant": null},
///   "action":    {"name": "read", "method": "GET", "route": "/documents/{id}"},
///   "resource":  {"type": "Document", "id": "1", "params": {"id": "1"},
///                 "attributes": {"owner": "demo-user"}},
///   "context":   {"client_addr": "203.0.113.7", "time": 1796400000,
///                 "scopes": ["items:read"], "claims": {"sub": "demo-user"}}
/// }
/// ```
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PolicyInput {
    /// Who asks.
    pub principal: Principal,
    /// What they do.
    pub action: Action,
    /// To what.
    pub resource: Resource,
    /// Everything else.
    pub context: Context,
}

impl PolicyInput {
    /// Facts for `identity` doing `action` to `resource`, at `time` (Unix seconds), with no
    /// client address: for tests, benchmarks and engines driven by hand.
    pub fn new(identity: &Identity, action: Action, resource: Resource, time: i64) -> Self {
        Self {
            principal: Principal::of(identity),
            action,
            resource,
            context: Context {
                client_addr: None,
                time,
                scopes: identity.scopes().iter().map(str::to_owned).collect(),
                claims: identity.claims().clone(),
            },
        }
    }

    /// The JSON document (Rego's and OPA's `input`).
    pub fn to_json(&self) -> Value {
        // Serializing these plain types cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The caller.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Principal {
    /// The subject.
    pub id: String,
    /// How it authenticated: `jwt`, `api_key`, `client_certificate`, `introspection`,
    /// `custom`.
    pub source: &'static str,
    /// The issuer, for tokens.
    pub issuer: Option<String>,
    /// Roles, after the role model's hierarchy.
    pub roles: Vec<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// The tenant, when the identity has one.
    pub tenant: Option<String>,
}

impl Principal {
    /// The principal of an identity.
    pub fn of(identity: &Identity) -> Self {
        let (source, issuer) = match identity.source() {
            Source::Jwt { issuer } => ("jwt", Some(issuer.clone())),
            Source::ApiKey { .. } => ("api_key", None),
            Source::ClientCertificate { .. } => ("client_certificate", None),
            Source::Introspection { issuer } => ("introspection", issuer.clone()),
            _ => ("custom", None),
        };
        Self {
            id: identity.subject().to_owned(),
            source,
            issuer,
            roles: identity.roles().iter().map(str::to_owned).collect(),
            scopes: identity.scopes().iter().map(str::to_owned).collect(),
            tenant: identity.tenant().map(str::to_owned),
        }
    }
}

/// The action.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Action {
    /// Its name: the route table's or the requirement's name for it, else
    /// `"METHOD /route/{param}"`.
    pub name: String,
    /// The HTTP method.
    pub method: String,
    /// The matched route template, when a router or the route table knows it.
    pub route: Option<String>,
}

impl Action {
    /// An action.
    pub fn new(name: impl Into<String>, method: impl Into<String>, route: Option<String>) -> Self {
        Self {
            name: name.into(),
            method: method.into(),
            route,
        }
    }
}

/// The resource.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Resource {
    /// The resource type (Cedar's entity type), e.g. `Document`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its id: the configured path parameter.
    pub id: Option<String>,
    /// Every path parameter, decoded by the router.
    pub params: BTreeMap<String, String>,
    /// What your [`ResourceLoader`](super::ResourceLoader) said about it (an owner, a
    /// tenant); empty without one.
    pub attributes: Map<String, Value>,
}

impl Resource {
    /// A resource with no parameters or attributes.
    pub fn new(kind: impl Into<String>, id: Option<String>) -> Self {
        Self {
            kind: kind.into(),
            id,
            params: BTreeMap::new(),
            attributes: Map::new(),
        }
    }

    /// With attributes.
    pub fn with_attributes(mut self, attributes: Map<String, Value>) -> Self {
        self.attributes = attributes;
        self
    }

    /// With path parameters.
    pub fn with_params(mut self, params: BTreeMap<String, String>) -> Self {
        self.params = params;
        self
    }
}

/// The request's context.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Context {
    /// The client's address, as [`ClientAddr`](crate::ClientAddr) resolves it, when the
    /// server makes the peer address known.
    pub client_addr: Option<String>,
    /// Now, in Unix seconds.
    pub time: i64,
    /// The identity's scopes.
    pub scopes: Vec<String>,
    /// The identity's raw claims (a JSON object; `null` for API keys without metadata).
    pub claims: Value,
}
