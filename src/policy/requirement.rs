//! [`PolicyRequirement`]: a policy engine as a [`Requirement`](crate::authz::Requirement).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::Method;
use serde_json::{Map, Value};

use super::{
    Action, Context, Evaluation, Policy, PolicyDecision, PolicyInput, Principal, Resource,
};
use crate::authz::routes::Target;
use crate::authz::{CheckError, Outcome, OutcomeFuture};
use crate::client::ClientAddr;
use crate::clock::{Clock, SystemClock};
use crate::error::AuthError;
use crate::head::RequestHead;
use crate::identity::Identity;

/// The future of a [`ResourceLoading::Pending`].
pub type ResourceFuture =
    Pin<Box<dyn Future<Output = Result<Map<String, Value>, CheckError>> + Send + 'static>>;

/// What a [`ResourceLoader`] answers: the resource's attributes (an empty map for a
/// resource it does not know), or an error that makes the request fail closed (503).
pub enum ResourceLoading {
    /// Known at once (an in-memory table).
    Ready(Result<Map<String, Value>, CheckError>),
    /// Loading (a database query).
    Pending(ResourceFuture),
}

impl fmt::Debug for ResourceLoading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceLoading::Ready(r) => f.debug_tuple("Ready").field(r).finish(),
            ResourceLoading::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// Loads what a policy needs to know about a resource (its owner, its tenant), given its
/// type and id. Closures `Fn(&str, &str) -> ResourceLoading` are loaders.
pub trait ResourceLoader: Send + Sync + 'static {
    /// The attributes of the resource `kind` / `id`.
    fn load(&self, kind: &str, id: &str) -> ResourceLoading;
}

impl<F> ResourceLoader for F
where
    F: Fn(&str, &str) -> ResourceLoading + Send + Sync + 'static,
{
    fn load(&self, kind: &str, id: &str) -> ResourceLoading {
        self(kind, id)
    }
}

/// A [`Policy`] as a requirement: builds the [`PolicyInput`] of each request, loads the
/// resource's attributes, asks the engine, and reports the decision with the ids of the
/// policies that determined it. Use with
/// [`Requirement::policy`](crate::authz::Requirement::policy).
///
/// A denial is a 403 (gRPC `PERMISSION_DENIED`); an engine or loader error is a 503 with
/// `Retry-After` (gRPC `UNAVAILABLE`) unless the layer fails open; the layer's time budget
/// covers the loader and the engine together.
#[derive(Clone)]
pub struct PolicyRequirement {
    policy: Policy,
    resource_type: Arc<str>,
    id_param: Option<Arc<str>>,
    actions: Arc<[(Method, Arc<str>)]>,
    loader: Option<Arc<dyn ResourceLoader>>,
    client: ClientAddr,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for PolicyRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyRequirement")
            .field("policy", &self.policy)
            .field("resource_type", &self.resource_type)
            .field("id_param", &self.id_param)
            .field("actions", &self.actions)
            .field("loader", &self.loader.is_some())
            .finish_non_exhaustive()
    }
}

impl PolicyRequirement {
    /// Ask `policy`. The resource type is `Resource` and it has no id until
    /// [`resource`](Self::resource) says which path parameter holds it.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            resource_type: "Resource".into(),
            id_param: None,
            actions: Arc::from([]),
            loader: None,
            client: ClientAddr::new(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The resource's type (Cedar's entity type, e.g. `Document`) and the path parameter
    /// that holds its id (`id` for `/documents/{id}`).
    pub fn resource(mut self, kind: &str, id_param: &str) -> Self {
        self.resource_type = kind.into();
        self.id_param = Some(id_param.into());
        self
    }

    /// Name the action of `method` requests (`GET` → `read`). A route table's
    /// [`route_as`](crate::authz::RouteTable::route_as) name comes first; without either,
    /// the action is `"METHOD /route/{param}"`.
    pub fn action(mut self, method: Method, name: &str) -> Self {
        let mut actions = self.actions.to_vec();
        actions.retain(|(m, _)| *m != method);
        actions.push((method, name.into()));
        self.actions = actions.into();
        self
    }

    /// Load the resource's attributes before each decision.
    pub fn loader(mut self, loader: impl ResourceLoader) -> Self {
        self.loader = Some(Arc::new(loader));
        self
    }

    /// How `context.client_addr` is found (trusted proxies); default: the TCP peer.
    pub fn client_addr(mut self, client: ClientAddr) -> Self {
        self.client = client;
        self
    }

    /// The clock of `context.time` (tests).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The policy asked.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The facts of a request.
    pub(crate) fn input(
        &self,
        identity: &Identity,
        head: &RequestHead<'_>,
        target: &Target,
    ) -> PolicyInput {
        let route = target.route.as_deref().map(str::to_owned);
        let name = match (
            &target.action,
            self.actions.iter().find(|(m, _)| m == head.method),
        ) {
            (Some(action), _) => action.to_string(),
            (None, Some((_, action))) => action.to_string(),
            (None, None) => match &route {
                Some(route) => format!("{} {route}", head.method),
                None => head.method.to_string(),
            },
        };
        let id = self
            .id_param
            .as_ref()
            .and_then(|p| target.param(p))
            .map(str::to_owned);
        let params = target
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let client_addr = head
            .extensions
            .and_then(|e| self.client.peer(e))
            .map(|peer| self.client.resolve(peer, head.headers).to_string());
        let time = self
            .clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        PolicyInput {
            principal: Principal::of(identity),
            action: Action::new(name, head.method.as_str(), route),
            resource: Resource::new(&*self.resource_type, id).with_params(params),
            context: Context {
                client_addr,
                time,
                scopes: identity.scopes().iter().map(str::to_owned).collect(),
                claims: identity.claims().clone(),
            },
        }
    }

    pub(crate) fn decide(
        &self,
        identity: &Identity,
        head: &RequestHead<'_>,
        target: &Target,
    ) -> Result<Outcome, OutcomeFuture> {
        let mut input = self.input(identity, head, target);
        let loading = match (&self.loader, &input.resource.id) {
            (Some(loader), Some(id)) => Some(loader.load(&input.resource.kind, id)),
            _ => None,
        };
        let pending = match loading {
            None => None,
            Some(ResourceLoading::Ready(Ok(attributes))) => {
                input.resource.attributes = attributes;
                None
            }
            Some(ResourceLoading::Ready(Err(error))) => return Ok(Outcome::Error(error)),
            Some(ResourceLoading::Pending(future)) => Some(future),
        };
        let policy = self.policy.clone();
        match pending {
            None => match policy.evaluate(&input) {
                Evaluation::Ready(result) => Ok(outcome(&policy, &input, result)),
                Evaluation::Pending(future) => Err(Box::pin(async move {
                    let result = future.await;
                    outcome(&policy, &input, result)
                })),
            },
            Some(loading) => Err(Box::pin(async move {
                match loading.await {
                    Ok(attributes) => input.resource.attributes = attributes,
                    Err(error) => return Outcome::Error(error),
                }
                let result = match policy.evaluate(&input) {
                    Evaluation::Ready(result) => result,
                    Evaluation::Pending(future) => future.await,
                };
                outcome(&policy, &input, result)
            })),
        }
    }
}

/// The outcome of a decision, reported with the determining policies.
fn outcome(
    policy: &Policy,
    input: &PolicyInput,
    result: Result<PolicyDecision, super::PolicyError>,
) -> Outcome {
    macro_rules! decided {
        ($level:ident, $decision:expr, $message:literal) => {
            tracing::$level!(
                target: "tower_api_guard::policy",
                engine = policy.engine_name(),
                generation = policy.generation(),
                subject = %input.principal.id,
                action = %input.action.name,
                resource = input.resource.id.as_deref().unwrap_or(""),
                policies = ?$decision.policies(),
                $message
            )
        };
    }
    match result {
        Ok(decision) if decision.is_allowed() => {
            decided!(debug, decision, "policy allowed");
            Outcome::Allow
        }
        Ok(decision) => {
            decided!(info, decision, "policy denied");
            Outcome::Deny(
                AuthError::forbidden("policy denied")
                    .with_code(crate::error::ReasonCode::PolicyDenied)
                    .with_policies(decision.policies().join(",")),
            )
        }
        Err(error) => {
            tracing::warn!(
                target: "tower_api_guard::policy",
                engine = policy.engine_name(),
                generation = policy.generation(),
                error = %error,
                "policy evaluation failed"
            );
            Outcome::Error(CheckError::from(error))
        }
    }
}
