//! Ownership: a path parameter must name the caller.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::routes::Target;
use crate::head::RequestHead;
use crate::identity::Identity;

type Extract = dyn Fn(&RequestHead<'_>) -> Option<String> + Send + Sync;

#[derive(Clone)]
enum From {
    /// A path parameter, as the router decoded it.
    Path(Arc<str>),
    /// Your own extractor.
    Extract(Arc<Extract>),
}

#[derive(Debug, Clone)]
enum Field {
    Subject,
    Tenant,
    Claim(Arc<str>),
}

/// Who owns the resource a request names: a path parameter (or your own extractor) must
/// equal the caller's subject, tenant or a claim — exactly, case-sensitively, after the
/// router's percent-decoding, never by parsing the raw URI. An optional role overrides it.
/// Use with [`Requirement::owner`](super::Requirement::owner).
///
/// The parameter comes from axum (`route_layer`: its matched route and decoded
/// parameters), from a [`RouteTable`](super::RouteTable) in front, or from
/// [`extract`](Self::extract). A route without the parameter denies, with a `warn` event:
/// it is a configuration mistake, and it fails closed.
///
/// ```
/// use tower_api_guard::authz::{Ownership, RequireLayer};
///
/// // GET /users/{id}/orders: only user {id}, or an admin.
/// let layer = RequireLayer::owner(Ownership::path_param("id").unless_role("admin"));
/// // GET /orgs/{org}/invoices: members of the organization in the `org_id` claim.
/// let layer = RequireLayer::owner(Ownership::path_param("org").claim("org_id"));
/// ```
#[derive(Clone)]
pub struct Ownership {
    from: From,
    field: Field,
    unless: Arc<[String]>,
}

impl fmt::Debug for Ownership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = match &self.from {
            From::Path(name) => format!("path parameter {name}"),
            From::Extract(_) => "extractor".to_owned(),
        };
        f.debug_struct("Ownership")
            .field("from", &from)
            .field("field", &self.field)
            .field("unless", &self.unless)
            .finish()
    }
}

impl Ownership {
    /// The path parameter `name` (as in `/users/{name}`) must equal the caller's subject.
    pub fn path_param(name: &str) -> Self {
        Self {
            from: From::Path(name.into()),
            field: Field::Subject,
            unless: Arc::from([]),
        }
    }

    /// The value your extractor reads from the request head (a gRPC metadata entry, a
    /// header your router sets) must equal the caller's subject. `None` denies.
    pub fn extract<F>(extract: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> Option<String> + Send + Sync + 'static,
    {
        Self {
            from: From::Extract(Arc::new(extract)),
            field: Field::Subject,
            unless: Arc::from([]),
        }
    }

    /// Compare with the claim `name` (a string, or an integer written in decimal) instead
    /// of the subject; a dotted path reaches into objects (`org.id`).
    pub fn claim(mut self, name: &str) -> Self {
        self.field = Field::Claim(name.into());
        self
    }

    /// Compare with the identity's tenant instead of the subject.
    pub fn tenant(mut self) -> Self {
        self.field = Field::Tenant;
        self
    }

    /// Callers with role `role` pass whatever the parameter says.
    pub fn unless_role(mut self, role: &str) -> Self {
        let mut roles = self.unless.to_vec();
        roles.push(role.to_owned());
        self.unless = roles.into();
        self
    }

    pub(crate) fn needs_target(&self) -> bool {
        matches!(self.from, From::Path(_))
    }

    /// What a 403 is logged as requiring.
    pub(crate) fn describe(&self) -> String {
        let field = match &self.field {
            Field::Subject => "subject".to_owned(),
            Field::Tenant => "tenant".to_owned(),
            Field::Claim(c) => format!("claim {c}"),
        };
        let from = match &self.from {
            From::Path(name) => format!("path parameter {name}"),
            From::Extract(_) => "extracted value".to_owned(),
        };
        format!("owner: {from} = {field}")
    }

    /// `Ok(())` allows; `Err(reason)` denies.
    pub(crate) fn decide(
        &self,
        identity: &Identity,
        head: &RequestHead<'_>,
        target: Option<&Target>,
    ) -> Result<(), &'static str> {
        if self.unless.iter().any(|r| identity.has_role(r)) {
            return Ok(());
        }
        let value = match &self.from {
            From::Path(name) => match target.and_then(|t| t.param(name)) {
                Some(value) => std::borrow::Cow::Borrowed(value),
                None => {
                    tracing::warn!(
                        target: "tower_api_guard::authz",
                        param = %name,
                        "ownership: the route has no such path parameter (denied)"
                    );
                    return Err("ownership: the route has no such path parameter");
                }
            },
            From::Extract(extract) => match extract(head) {
                Some(value) => std::borrow::Cow::Owned(value),
                None => return Err("ownership: the extractor found no value"),
            },
        };
        let owns = match &self.field {
            Field::Subject => same(identity.subject(), &value),
            Field::Tenant => identity.tenant().is_some_and(|t| same(t, &value)),
            Field::Claim(claim) => match identity.claim(claim) {
                Some(Value::String(s)) => same(s, &value),
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => same(&n.to_string(), &value),
                _ => false,
            },
        };
        if owns {
            Ok(())
        } else {
            Err("ownership: not the owner")
        }
    }
}

/// Exact equality of two non-empty strings.
fn same(owner: &str, value: &str) -> bool {
    !owner.is_empty() && owner == value
}
