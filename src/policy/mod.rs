//! Policy engines behind [`RequireLayer`](crate::authz::RequireLayer): the facts a policy
//! sees ([`PolicyInput`]), the engine interface ([`PolicyEngine`]), and [`Policy`], a handle
//! that swaps the policy set atomically when it is reloaded.
//!
//! | engine | feature | what it evaluates |
//! |---|---|---|
//! | `CedarEngine` | `cedar` | Cedar policies (the `cedar-policy` crate), validated against a schema at load |
//! | `RegoEngine` | `rego` | Rego (OPA's language) in process (the `regorus` crate): `data.<package>.allow` |
//! | `OpaClient` | `opa` | an OPA sidecar: `POST /v1/data/<path>` with `{"input": …}` |
//!
//! Every engine sees the same facts, built by [`PolicyRequirement`] from the
//! [`Identity`](crate::Identity) and the request:
//!
//! | fact | from |
//! |---|---|
//! | `principal` | the identity: `id` (subject), `source`, `issuer`, `roles`, `scopes`, `tenant` |
//! | `action` | `name` (the route table's or [`PolicyRequirement::action`]'s name, else `"METHOD /route/{param}"`), `method`, `route` |
//! | `resource` | `type` (configured), `id` (a path parameter), `params` (every path parameter), `attributes` (from your [`ResourceLoader`]) |
//! | `context` | `client_addr` (as [`ClientAddr`](crate::ClientAddr) sees it), `time` (Unix seconds), `scopes`, `claims` |
//!
//! # Reload without a deploy
//! A [`Policy`] is cheap to clone and shared by every request; [`Policy::reload`] builds a
//! new engine from its source and swaps it in with one atomic store (`arc-swap`: requests
//! never lock, and each request sees one whole policy set). A source that fails to parse or
//! validate leaves the previous policy in force and emits an `error` event (target
//! `tower_api_guard::policy`): never an empty policy that allows or denies everything.
//! [`Policy::watch`] polls the source files and reloads when they change.
//!
//! # Decisions
//! A decision is allow or deny, with the ids of the policies that determined it, reported in
//! a `tracing` event (target `tower_api_guard::policy`, `debug` for allow, `info` for deny). An
//! engine error becomes a 503 with `Retry-After` (gRPC `UNAVAILABLE`) unless the requirement
//! was told to fail open.

#[cfg(feature = "cedar")]
#[cfg_attr(docsrs, doc(cfg(feature = "cedar")))]
pub mod cedar;
#[cfg(feature = "opa")]
#[cfg_attr(docsrs, doc(cfg(feature = "opa")))]
pub mod opa;
#[cfg(feature = "rego")]
#[cfg_attr(docsrs, doc(cfg(feature = "rego")))]
pub mod rego;

mod handle;
mod input;
mod requirement;

pub use handle::{Policy, PolicySource, WatchHandle};
pub use input::{Action, Context, PolicyInput, Principal, Resource};
pub use requirement::{PolicyRequirement, ResourceLoader, ResourceLoading};

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// A policy engine: decides a [`PolicyInput`].
///
/// In-process engines (Cedar, Rego) answer at once with [`Evaluation::Ready`]; an engine
/// behind the network (an OPA sidecar) answers [`Evaluation::Pending`].
pub trait PolicyEngine: Send + Sync + 'static {
    /// Decide.
    fn evaluate(&self, input: &PolicyInput) -> Evaluation;

    /// A short name for logs: `"cedar"`, `"rego"`, `"opa"`.
    fn name(&self) -> &'static str;
}

/// A closure is an engine (named `"custom"`): policies written in Rust, and tests.
///
/// ```
/// use tower_api_guard::policy::{Evaluation, Policy, PolicyDecision, PolicyInput};
///
/// let policy = Policy::new(|input: &PolicyInput| {
///     let owner = input.resource.attributes.get("owner").and_then(|o| o.as_str());
///     Evaluation::Ready(Ok(if owner == Some(input.principal.id.as_str()) {
///         PolicyDecision::allow(["owner"])
///     } else {
///         PolicyDecision::deny(Vec::<String>::new())
///     }))
/// });
/// assert_eq!(policy.engine_name(), "custom");
/// ```
impl<F> PolicyEngine for F
where
    F: Fn(&PolicyInput) -> Evaluation + Send + Sync + 'static,
{
    fn evaluate(&self, input: &PolicyInput) -> Evaluation {
        self(input)
    }

    fn name(&self) -> &'static str {
        "custom"
    }
}

/// The future of an [`Evaluation::Pending`].
pub type EvaluationFuture =
    Pin<Box<dyn Future<Output = Result<PolicyDecision, PolicyError>> + Send + 'static>>;

/// What a [`PolicyEngine`] answers.
pub enum Evaluation {
    /// Decided (or failed) at once.
    Ready(Result<PolicyDecision, PolicyError>),
    /// Deciding.
    Pending(EvaluationFuture),
}

impl fmt::Debug for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Evaluation::Ready(result) => f.debug_tuple("Ready").field(result).finish(),
            Evaluation::Pending(_) => f.write_str("Pending"),
        }
    }
}

impl From<Result<PolicyDecision, PolicyError>> for Evaluation {
    fn from(result: Result<PolicyDecision, PolicyError>) -> Self {
        Evaluation::Ready(result)
    }
}

/// Allow or deny, with the ids of the policies that determined it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDecision {
    allowed: bool,
    policies: Vec<String>,
}

impl PolicyDecision {
    /// Allowed, by `policies`.
    pub fn allow<I: IntoIterator<Item = S>, S: Into<String>>(policies: I) -> Self {
        Self {
            allowed: true,
            policies: policies.into_iter().map(Into::into).collect(),
        }
    }

    /// Denied, by `policies` (empty when nothing permitted it).
    pub fn deny<I: IntoIterator<Item = S>, S: Into<String>>(policies: I) -> Self {
        Self {
            allowed: false,
            policies: policies.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// The ids of the policies that determined the decision (Cedar's policy ids; the rule
    /// path for Rego).
    pub fn policies(&self) -> &[String] {
        &self.policies
    }
}

/// What kind of failure a [`PolicyError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PolicyErrorKind {
    /// A policy file could not be read.
    Io,
    /// The policy or schema text does not parse.
    Parse,
    /// The policies do not validate against the schema.
    Validation,
    /// Evaluating a request failed (a runtime error of the policy, an input the engine
    /// refused, an answer that is not a boolean).
    Evaluation,
    /// The engine could not be reached in time (an OPA sidecar).
    Unavailable,
}

/// Why a policy could not be loaded or evaluated. The message is for logs: it may name a
/// file, a policy id or a line, and never holds a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    kind: PolicyErrorKind,
    message: Cow<'static, str>,
}

impl PolicyError {
    /// A new error.
    pub fn new(kind: PolicyErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The kind.
    pub fn kind(&self) -> PolicyErrorKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            PolicyErrorKind::Io => "cannot read the policy",
            PolicyErrorKind::Parse => "the policy does not parse",
            PolicyErrorKind::Validation => "the policy does not validate",
            PolicyErrorKind::Evaluation => "the policy failed to evaluate",
            PolicyErrorKind::Unavailable => "the policy engine is unavailable",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for PolicyError {}

/// At most `max` bytes of `text`, cut at a character boundary.
#[cfg(any(feature = "rego", feature = "opa"))]
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
