//! Cedar policies (the `cedar-policy` crate), validated against a schema at load.
//!
//! [`CedarEngine`] parses a policy set once (and, given a schema in Cedar's schema format,
//! `.cedarschema`, validates it in strict mode: a policy that reads an undeclared
//! attribute, names an unknown action or compares a string with a number is refused at
//! load, never at request time). Each request then builds at most three entities and a
//! context from the [`PolicyInput`] and asks Cedar's `Authorizer`.
//!
//! # The request Cedar sees
//!
//! | Cedar | from the [`PolicyInput`] |
//! |---|---|
//! | `principal` | `<principal type>::"<principal.id>"` (type `User` unless [`CedarEngine::principal_type`]) |
//! | `principal`'s parents | `<role type>::"<role>"` for every role (type `Role` unless [`CedarEngine::role_type`]), so that `principal in Role::"auditor"` holds |
//! | `principal.id`, `.source` | `String` |
//! | `principal.scopes` | `Set<String>` |
//! | `principal.issuer`, `.tenant` | `String`, only when the identity has one |
//! | `action` | `Action::"<action.name>"`, with its action groups from the schema (`action "GET /x" in ["read"]` makes `action in Action::"read"` hold) |
//! | `resource` | `<resource.kind>::"<resource.id>"` (the empty id `""` without one) |
//! | `resource.<attr>` | `resource.attributes`, converted from JSON (below) |
//! | `context.time` | `Long`: Unix seconds |
//! | `context.scopes` | `Set<String>` |
//! | `context.method` | `String`: the HTTP method |
//! | `context.params` | `Record` of `String`s: every path parameter |
//! | `context.route` | `String`: the matched route template, only when known |
//! | `context.client_addr` | `String`, only when known |
//! | `context.claims` | `Record`: the identity's claims, converted from JSON (empty when they are not an object) |
//!
//! When the schema declares all its actions in one namespace (`namespace App { action … }`),
//! the action's type is that namespace's (`App::Action`) rather than `Action`.
//!
//! JSON values become Cedar values thus: strings, booleans and integers (`Long`) as they
//! are, arrays as sets, objects as records. Cedar has no null and no floating-point
//! numbers: `null` members and elements are **dropped**, and so are numbers written with a
//! fraction or an exponent (`1.5`, `1.0`, `1e3`), integers outside the range of an `i64`,
//! and anything nested more than 32 arrays or objects deep. Guard reads of such attributes
//! with `has` (`resource has owner && resource.owner == principal.id`).
//!
//! The entities and the context are **not** validated against the schema per request:
//! attributes the schema does not declare (such as `context.params` and `context.claims`,
//! whose keys vary) do not fail a request, and a policy reads them only once the schema
//! declares them. The policies themselves were validated at load.
//!
//! If the resource is the principal itself (type and id equal), Cedar sees one entity: the
//! principal's attributes, plus the resource attributes that do not collide with them.
//!
//! # Speed
//! A request builds only what the policies can observe, which changes no decision: an
//! entity attribute whose name appears in no policy is left out (attributes are reachable
//! only by name), an entity with neither attributes nor parents is left out of the store
//! (for Cedar a missing entity has no attributes and no ancestors), the action's entity is
//! added only when it is in an action group, and the context is built only when a policy
//! mentions `context`. With the quickstart's policies a decision takes a few microseconds.
//!
//! # Decisions
//! The decision names the determining policies (the permits that allowed it, or the forbids
//! that denied it; none when nothing permitted the request): a policy's `@id("…")`
//! annotation when it has one, else Cedar's id (`policy0`, `policy1`, … in file order).
//!
//! Evaluation **fails closed**: when any policy errors while evaluating a request (it read
//! an attribute that is missing, applied `<` to a string), the answer is an
//! [`Evaluation`](PolicyErrorKind::Evaluation) error naming the policies, never an allow,
//! because an erroring `forbid` might have denied the request. Validation against a schema
//! rules most such errors out at load; `has` guards rule out the rest.
//!
//! # Example
//! ```
//! use tower_api_guard::identity::{Identity, Source};
//! use tower_api_guard::policy::cedar::CedarEngine;
//! use tower_api_guard::policy::{Action, Evaluation, PolicyEngine, PolicyInput, Resource};
//!
//! let engine = CedarEngine::from_text(
//!     r#"@id("auditors") permit (principal in Role::"auditor", action, resource);"#,
//!     None,
//! )
//! .unwrap();
//! let alice = Identity::builder("alice", Source::Jwt { issuer: "https://issuer.example".into() })
//!     .roles(["auditor"])
//!     .build();
//! let input = PolicyInput::new(
//!     &alice,
//!     Action::new("read", "GET", None),
//!     Resource::new("Document", Some("1".into())),
//!     1_796_400_000,
//! );
//! let Evaluation::Ready(Ok(decision)) = engine.evaluate(&input) else { panic!() };
//! assert!(decision.is_allowed());
//! assert_eq!(decision.policies(), ["auditors"]);
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicyId, PolicySet, Request, RestrictedExpression, Schema, ValidationMode,
    Validator,
};
use serde_json::{Map, Value};

use super::{Evaluation, PolicyDecision, PolicyEngine, PolicyError, PolicyErrorKind, PolicyInput};

/// The largest policy or schema text accepted: 1 MiB.
const MAX_TEXT_BYTES: usize = 1 << 20;

/// JSON nested deeper than this (arrays and objects) is dropped.
const MAX_DEPTH: usize = 32;

/// How many parse or validation errors one message lists.
const MAX_LISTED: usize = 10;

const TARGET: &str = "tower_api_guard::policy";

/// Cedar policies, validated against a schema at load when there is one. See the
/// [module docs](self) for the request Cedar sees.
///
/// Parsing and validation happen once, in [`from_text`](Self::from_text) or
/// [`from_files`](Self::from_files); a decision builds at most three entities and a
/// context and runs Cedar's authorizer. Reload by building a new engine (see
/// [`Policy`](super::Policy)).
pub struct CedarEngine {
    authorizer: Authorizer,
    policies: PolicySet,
    /// The `@id` annotation of each policy that has one (a non-empty one). Looked up once:
    /// `PolicySet::annotation` parses the key on every call.
    labels: HashMap<PolicyId, Box<str>>,
    /// What the policies can observe, so that requests build no more than that.
    usage: Usage,
    /// `Some` when the policies were validated against a schema.
    schema: Option<SchemaFacts>,
    action_type: EntityTypeName,
    principal_type: EntityTypeName,
    role_type: EntityTypeName,
    /// Decisions by the facts the policies can observe ([`CedarEngine::decision_cache`]).
    decisions: Option<quick_cache::sync::Cache<String, PolicyDecision>>,
}

/// The default capacity of the decision cache.
pub const DEFAULT_DECISION_CACHE: usize = 10_000;

/// What the policies can observe, found at load in their JSON form (where escapes in
/// strings are resolved).
///
/// An entity's attribute is reachable only by its name (`resource.owner`,
/// `resource has owner`, `resource["owner"]`): an attribute whose name appears nowhere in
/// the policies cannot change a decision, and is left out. The context is a value as a
/// whole (`context == {…}`), so it is built whole, but only when a policy mentions the
/// `context` variable.
struct Usage {
    context: bool,
    /// Every string in the policies' JSON form; `None` keeps every attribute.
    names: Option<HashSet<String>>,
}

impl Usage {
    fn of(policies: &PolicySet) -> Self {
        let mut context = false;
        let mut names = HashSet::new();
        for policy in policies.policies() {
            match policy.to_json() {
                Ok(json) => collect_names(&json, &mut names, &mut context),
                // Not expected; then everything is observable.
                Err(_) => {
                    return Self {
                        context: true,
                        names: None,
                    };
                }
            }
        }
        Self {
            context,
            names: Some(names),
        }
    }

    fn names(&self, name: &str) -> bool {
        self.names.as_ref().is_none_or(|names| names.contains(name))
    }
}

fn collect_names(json: &Value, names: &mut HashSet<String>, context: &mut bool) {
    match json {
        Value::String(s) => {
            names.insert(s.clone());
        }
        Value::Array(items) => {
            for item in items {
                collect_names(item, names, context);
            }
        }
        Value::Object(members) => {
            for (key, value) in members {
                if key == "Var" && value.as_str() == Some("context") {
                    *context = true;
                }
                names.insert(key.clone());
                collect_names(value, names, context);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// What a request needs from the schema, extracted at load.
struct SchemaFacts {
    /// The schema's action entities of the action type that are in action groups (their
    /// ancestors), by action name.
    actions: HashMap<String, Entity>,
    /// The schema's entity types, parsed once, by name.
    types: HashMap<String, EntityTypeName>,
}

impl fmt::Debug for CedarEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CedarEngine")
            .field("policies", &self.policies.num_of_policies())
            .field("schema", &self.schema.is_some())
            .field("principal_type", &self.principal_type.to_string())
            .field("role_type", &self.role_type.to_string())
            .field("action_type", &self.action_type.to_string())
            .field(
                "decision_cache",
                &self.decisions.as_ref().map_or(0, |c| c.capacity()),
            )
            .finish_non_exhaustive()
    }
}

impl CedarEngine {
    /// Parse `policies` (Cedar policy text) and, with a `schema` (Cedar's schema format,
    /// as in a `.cedarschema` file), validate them against it in strict mode.
    ///
    /// Templates (policies with `?principal` or `?resource` slots) are refused: nothing
    /// links them, and an unlinked template never applies.
    ///
    /// # Errors
    /// * [`Parse`](PolicyErrorKind::Parse): the policies or the schema do not parse, hold
    ///   templates, or are larger than 1 MiB;
    /// * [`Validation`](PolicyErrorKind::Validation): a policy does not validate against the
    ///   schema (the message lists the errors, each naming its policy).
    pub fn from_text(policies: &str, schema: Option<&str>) -> Result<Self, PolicyError> {
        Self::load(policies, "policies", schema.map(|s| (s, "schema")))
    }

    /// Read the policies (and the schema) from files, then as
    /// [`from_text`](Self::from_text).
    ///
    /// # Errors
    /// [`Io`](PolicyErrorKind::Io) when a file cannot be read (the message names it); the
    /// errors of [`from_text`](Self::from_text) otherwise, naming the file. A file that
    /// is not UTF-8 is a [`Parse`](PolicyErrorKind::Parse) error.
    pub fn from_files(policies: &Path, schema: Option<&Path>) -> Result<Self, PolicyError> {
        let policy_text = read_text(policies)?;
        let schema_text = schema.map(read_text).transpose()?;
        let policy_name = policies.display().to_string();
        let schema_name = schema.map(|s| s.display().to_string());
        Self::load(
            &policy_text,
            &policy_name,
            schema_text.as_deref().zip(schema_name.as_deref()),
        )
    }

    /// Remember up to `capacity` decisions (default [`DEFAULT_DECISION_CACHE`]; 0 turns the
    /// cache off). A decision is a pure function of the policies and the facts they can
    /// observe, so it is cached under exactly those facts — the principal's id, roles and
    /// the attributes the policies name, the action, the resource's type, id and named
    /// attributes, and the whole context when a policy reads `context` — compared in full,
    /// never by hash alone. A reloaded policy is a new engine with an empty cache; errors
    /// are never cached.
    pub fn decision_cache(mut self, capacity: usize) -> Self {
        self.decisions = decision_cache(capacity);
        self
    }

    /// The principal's entity type (default `User`), e.g. `App::User`.
    ///
    /// # Errors
    /// [`Parse`](PolicyErrorKind::Parse) when `name` is not a Cedar entity type name.
    pub fn principal_type(mut self, name: &str) -> Result<Self, PolicyError> {
        self.principal_type = parse_type(name, "principal type")?;
        Ok(self)
    }

    /// The entity type of the principal's roles, its parents (default `Role`).
    ///
    /// # Errors
    /// [`Parse`](PolicyErrorKind::Parse) when `name` is not a Cedar entity type name.
    pub fn role_type(mut self, name: &str) -> Result<Self, PolicyError> {
        self.role_type = parse_type(name, "role type")?;
        Ok(self)
    }

    fn load(
        policies: &str,
        policy_name: &str,
        schema: Option<(&str, &str)>,
    ) -> Result<Self, PolicyError> {
        check_size(policies, policy_name)?;
        if let Some((text, name)) = schema {
            check_size(text, name)?;
        }
        let policy_set = PolicySet::from_str(policies).map_err(|errors| {
            let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
            PolicyError::new(
                PolicyErrorKind::Parse,
                format!("{policy_name}: {}", list(&messages)),
            )
        })?;
        if policy_set.num_of_templates() > 0 {
            let ids: Vec<String> = policy_set
                .templates()
                .map(|t| t.annotation("id").unwrap_or(t.id().as_ref()).to_owned())
                .collect();
            return Err(PolicyError::new(
                PolicyErrorKind::Parse,
                format!(
                    "{policy_name}: templates are not supported (nothing links them): {}",
                    list(&ids)
                ),
            ));
        }

        let labels = policy_set
            .policies()
            .filter_map(|p| {
                let label = p.annotation("id").filter(|label| !label.is_empty())?;
                Some((p.id().clone(), Box::from(label)))
            })
            .collect();
        let usage = Usage::of(&policy_set);
        let mut engine = Self {
            authorizer: Authorizer::new(),
            policies: policy_set,
            labels,
            usage,
            schema: None,
            action_type: default_type("Action"),
            principal_type: default_type("User"),
            role_type: default_type("Role"),
            decisions: decision_cache(DEFAULT_DECISION_CACHE),
        };
        if let Some((text, name)) = schema {
            engine.validate(text, name, policy_name)?;
        }
        Ok(engine)
    }

    /// Validate the policies against the schema and keep what requests need from it.
    fn validate(
        &mut self,
        text: &str,
        schema_name: &str,
        policy_name: &str,
    ) -> Result<(), PolicyError> {
        let (schema, warnings) = Schema::from_cedarschema_str(text)
            .map_err(|e| PolicyError::new(PolicyErrorKind::Parse, format!("{schema_name}: {e}")))?;
        for warning in warnings {
            tracing::warn!(target: TARGET, schema = schema_name, %warning, "Cedar schema warning");
        }
        let validator = Validator::new(schema);
        let result = validator.validate(&self.policies, ValidationMode::Strict);
        if !result.validation_passed() {
            let messages: Vec<String> = result
                .validation_errors()
                .map(|e| self.labelled(e.policy_id(), e))
                .collect();
            return Err(PolicyError::new(
                PolicyErrorKind::Validation,
                format!("{policy_name} against {schema_name}: {}", list(&messages)),
            ));
        }
        for warning in result.validation_warnings() {
            tracing::warn!(
                target: TARGET,
                policies = policy_name,
                warning = %self.labelled(warning.policy_id(), warning),
                "Cedar validation warning"
            );
        }

        let schema = validator.schema();
        let actions = schema
            .action_entities()
            .map_err(|e| PolicyError::new(PolicyErrorKind::Parse, format!("{schema_name}: {e}")))?;
        // The action type: the one every declared action shares (`App::Action` in a
        // namespace), else `Action`.
        let mut action_types = schema.actions().map(EntityUid::type_name);
        if let Some(first) = action_types.next()
            && action_types.all(|t| t == first)
        {
            self.action_type = first.clone();
        }
        // Only actions in groups need their entity in a request: `action in Action::"x"`
        // on an action that is in no store is plain equality, which is what an action
        // without groups gets anyway (and one entity fewer is faster).
        let actions = actions
            .iter()
            .filter(|e| e.uid().type_name() == &self.action_type)
            .filter(|e| {
                actions
                    .ancestors(&e.uid())
                    .is_some_and(|mut groups| groups.next().is_some())
            })
            .map(|e| (e.uid().id().unescaped().to_owned(), e.clone()))
            .collect();
        let types = schema
            .entity_types()
            .map(|t| (t.to_string(), t.clone()))
            .collect();
        self.schema = Some(SchemaFacts { actions, types });
        Ok(())
    }

    /// `error`, prefixed with the policy's `@id` when it has one (Cedar's messages name
    /// its Cedar id).
    fn labelled(&self, id: &PolicyId, error: &dyn fmt::Display) -> String {
        match self.labels.get(id) {
            Some(label) => format!("[{label}] {error}"),
            None => error.to_string(),
        }
    }

    /// The id reported for a policy: its `@id` annotation, else Cedar's id.
    fn display_id<'a>(&'a self, id: &'a PolicyId) -> &'a str {
        match self.labels.get(id) {
            Some(label) => label,
            None => id.as_ref(),
        }
    }

    /// The entity type named `name`: pre-parsed when the schema declares it.
    fn entity_type(&self, name: &str) -> Result<EntityTypeName, PolicyError> {
        if let Some(known) = self.schema.as_ref().and_then(|s| s.types.get(name)) {
            return Ok(known.clone());
        }
        EntityTypeName::from_str(name).map_err(|e| {
            PolicyError::new(
                PolicyErrorKind::Evaluation,
                format!("resource type `{name}` is not a Cedar entity type name: {e}"),
            )
        })
    }

    /// The Cedar request and entities for `input`.
    fn request(&self, input: &PolicyInput) -> Result<(Request, Entities), PolicyError> {
        let principal = &input.principal;
        let principal_uid = uid(&self.principal_type, &principal.id);
        let mut principal_attrs = Vec::with_capacity(5);
        let mut attr = |name: &str, value: &dyn Fn() -> RestrictedExpression| {
            if self.usage.names(name) {
                principal_attrs.push((name.to_owned(), value()));
            }
        };
        attr("id", &|| string(&principal.id));
        attr("source", &|| string(principal.source));
        attr("scopes", &|| strings(&principal.scopes));
        if let Some(issuer) = &principal.issuer {
            attr("issuer", &|| string(issuer));
        }
        if let Some(tenant) = &principal.tenant {
            attr("tenant", &|| string(tenant));
        }
        // A role that is the principal itself would make a cycle, which Cedar refuses;
        // `in` holds for the principal itself anyway.
        let parents: Vec<EntityUid> = principal
            .roles
            .iter()
            .map(|role| uid(&self.role_type, role))
            .filter(|role| *role != principal_uid)
            .collect();

        let action = self
            .schema
            .as_ref()
            .and_then(|s| s.actions.get(&input.action.name));
        let action_uid = match action {
            Some(entity) => entity.uid(),
            None => uid(&self.action_type, &input.action.name),
        };

        let resource = &input.resource;
        let resource_uid = uid(
            &self.entity_type(&resource.kind)?,
            resource.id.as_deref().unwrap_or(""),
        );
        let resource_attrs: Vec<_> = resource
            .attributes
            .iter()
            .filter(|(name, _)| self.usage.names(name))
            .filter_map(|(name, value)| Some((name.clone(), to_cedar(value, 0)?)))
            .collect();

        // An entity with neither attributes nor parents is left out of the store: for
        // Cedar, a missing entity has no attributes (`has` is false) and no ancestors.
        let mut entities = Vec::with_capacity(3);
        let mut add = |uid: &EntityUid, attrs: Vec<_>, parents: Vec<_>| {
            if !attrs.is_empty() || !parents.is_empty() {
                entities.push(entity(uid.clone(), attrs, parents)?);
            }
            Ok::<_, PolicyError>(())
        };
        if resource_uid == principal_uid {
            // One entity: the principal's attributes win.
            let extra: Vec<_> = resource_attrs
                .into_iter()
                .filter(|(name, _)| !principal_attrs.iter().any(|(taken, _)| taken == name))
                .collect();
            principal_attrs.extend(extra);
            add(&principal_uid, principal_attrs, parents)?;
        } else {
            add(&principal_uid, principal_attrs, parents)?;
            // A resource that is the action itself is the schema's action entity.
            if action.is_none() || resource_uid != action_uid {
                add(&resource_uid, resource_attrs, Vec::new())?;
            }
        }
        if let Some(action) = action {
            entities.push(action.clone());
        }
        let entities = Entities::from_entities(entities, None).map_err(|e| {
            PolicyError::new(PolicyErrorKind::Evaluation, format!("Cedar entities: {e}"))
        })?;

        let context = if self.usage.context {
            self.context(input)?
        } else {
            Context::empty()
        };
        let request = Request::new(principal_uid, action_uid, resource_uid, context, None)
            .map_err(|e| {
                PolicyError::new(PolicyErrorKind::Evaluation, format!("Cedar request: {e}"))
            })?;
        Ok((request, entities))
    }

    /// The context record for `input`.
    fn context(&self, input: &PolicyInput) -> Result<Context, PolicyError> {
        let context = &input.context;
        let mut pairs = Vec::with_capacity(7);
        pairs.push((
            "time".to_owned(),
            RestrictedExpression::new_long(context.time),
        ));
        pairs.push(("scopes".to_owned(), strings(&context.scopes)));
        pairs.push(("method".to_owned(), string(&input.action.method)));
        let params = input
            .resource
            .params
            .iter()
            .map(|(name, value)| (name.clone(), string(value)));
        pairs.push(("params".to_owned(), record(params)?));
        if let Some(route) = &input.action.route {
            pairs.push(("route".to_owned(), string(route)));
        }
        if let Some(addr) = &context.client_addr {
            pairs.push(("client_addr".to_owned(), string(addr)));
        }
        let claims = match &context.claims {
            Value::Object(claims) => fields(claims, 0),
            _ => Vec::new(),
        };
        pairs.push(("claims".to_owned(), record(claims)?));
        Context::from_pairs(pairs).map_err(|e| {
            PolicyError::new(PolicyErrorKind::Evaluation, format!("Cedar context: {e}"))
        })
    }

    fn decide(&self, input: &PolicyInput) -> Result<PolicyDecision, PolicyError> {
        let Some(cache) = &self.decisions else {
            return self.authorize(input);
        };
        let key = self.cache_key(input);
        if let Some(decision) = cache.get(&key) {
            return Ok(decision);
        }
        let decision = self.authorize(input)?;
        cache.insert(key, decision.clone());
        Ok(decision)
    }

    /// Every fact the policies can observe, each length-prefixed (unambiguous): the key of
    /// the decision cache. Mirrors [`request`](Self::request) and
    /// [`context`](Self::context).
    fn cache_key(&self, input: &PolicyInput) -> String {
        use std::fmt::Write;
        let mut key = String::with_capacity(160);
        let field = |key: &mut String, text: &str| {
            let _ = write!(key, "{}:", text.len());
            key.push_str(text);
        };
        let list = |key: &mut String, items: &[String]| {
            let _ = write!(key, "{}[", items.len());
            for item in items {
                let _ = write!(key, "{}:", item.len());
                key.push_str(item);
            }
        };
        let principal = &input.principal;
        field(&mut key, &principal.id);
        list(&mut key, &principal.roles);
        if self.usage.names("source") {
            field(&mut key, principal.source);
        }
        if self.usage.names("scopes") {
            list(&mut key, &principal.scopes);
        }
        for (name, value) in [("issuer", &principal.issuer), ("tenant", &principal.tenant)] {
            if self.usage.names(name) {
                match value {
                    Some(value) => field(&mut key, value),
                    None => key.push('-'),
                }
            }
        }
        field(&mut key, &input.action.name);
        let resource = &input.resource;
        field(&mut key, &resource.kind);
        field(&mut key, resource.id.as_deref().unwrap_or(""));
        for (name, value) in &resource.attributes {
            if self.usage.names(name) {
                field(&mut key, name);
                field(&mut key, &value.to_string());
            }
        }
        key.push('|');
        if self.usage.context {
            let context = &input.context;
            let _ = write!(key, "{}", context.time);
            list(&mut key, &context.scopes);
            field(&mut key, &input.action.method);
            for (name, value) in &resource.params {
                field(&mut key, name);
                field(&mut key, value);
            }
            key.push('|');
            field(&mut key, input.action.route.as_deref().unwrap_or("\0"));
            field(&mut key, context.client_addr.as_deref().unwrap_or("\0"));
            field(&mut key, &context.claims.to_string());
        }
        key
    }

    fn authorize(&self, input: &PolicyInput) -> Result<PolicyDecision, PolicyError> {
        let (request, entities) = self.request(input)?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &entities);
        let diagnostics = response.diagnostics();

        // Fail closed: an erroring policy (a forbid, perhaps) did not get its say.
        let errors: Vec<String> = diagnostics
            .errors()
            .map(|error| match error {
                AuthorizationError::PolicyEvaluationError(e) => {
                    format!("policy `{}`: {}", self.display_id(e.policy_id()), e.inner())
                }
            })
            .collect();
        if !errors.is_empty() {
            return Err(PolicyError::new(PolicyErrorKind::Evaluation, list(&errors)));
        }

        let mut ids: Vec<&str> = diagnostics.reason().map(|id| self.display_id(id)).collect();
        ids.sort_unstable();
        Ok(match response.decision() {
            Decision::Allow => PolicyDecision::allow(ids),
            Decision::Deny => PolicyDecision::deny(ids),
        })
    }
}

impl PolicyEngine for CedarEngine {
    fn evaluate(&self, input: &PolicyInput) -> Evaluation {
        Evaluation::Ready(self.decide(input))
    }

    fn name(&self) -> &'static str {
        "cedar"
    }
}

fn check_size(text: &str, name: &str) -> Result<(), PolicyError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(too_large(name));
    }
    Ok(())
}

fn too_large(name: &str) -> PolicyError {
    PolicyError::new(
        PolicyErrorKind::Parse,
        format!("{name}: larger than {MAX_TEXT_BYTES} bytes"),
    )
}

fn read_text(path: &Path) -> Result<String, PolicyError> {
    let io_error = |e: std::io::Error| {
        PolicyError::new(PolicyErrorKind::Io, format!("{}: {e}", path.display()))
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_TEXT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() > MAX_TEXT_BYTES {
        return Err(too_large(&path.display().to_string()));
    }
    String::from_utf8(bytes).map_err(|_| {
        PolicyError::new(
            PolicyErrorKind::Parse,
            format!("{}: not UTF-8", path.display()),
        )
    })
}

/// At most [`MAX_LISTED`] messages, joined.
fn list(messages: &[String]) -> String {
    let mut out = messages
        .iter()
        .take(MAX_LISTED)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("; ");
    if messages.len() > MAX_LISTED {
        out.push_str(&format!("; and {} more", messages.len() - MAX_LISTED));
    }
    out
}

fn parse_type(name: &str, what: &str) -> Result<EntityTypeName, PolicyError> {
    EntityTypeName::from_str(name).map_err(|e| {
        PolicyError::new(
            PolicyErrorKind::Parse,
            format!("{what} `{name}` is not a Cedar entity type name: {e}"),
        )
    })
}

/// A type name known to parse.
fn default_type(name: &'static str) -> EntityTypeName {
    match EntityTypeName::from_str(name) {
        Ok(parsed) => parsed,
        // `User`, `Role` and `Action` are valid names: unreachable.
        Err(e) => unreachable!("`{name}` is a valid Cedar entity type name: {e}"),
    }
}

fn decision_cache(capacity: usize) -> Option<quick_cache::sync::Cache<String, PolicyDecision>> {
    (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity))
}

fn uid(kind: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(kind.clone(), EntityId::new(id))
}

fn entity(
    uid: EntityUid,
    attrs: Vec<(String, RestrictedExpression)>,
    parents: Vec<EntityUid>,
) -> Result<Entity, PolicyError> {
    Entity::new_with_tags(uid, attrs, parents, [])
        .map_err(|e| PolicyError::new(PolicyErrorKind::Evaluation, format!("Cedar entity: {e}")))
}

fn string(value: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(value.to_owned())
}

fn strings(values: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(values.iter().map(|v| string(v)))
}

fn record(
    fields: impl IntoIterator<Item = (String, RestrictedExpression)>,
) -> Result<RestrictedExpression, PolicyError> {
    RestrictedExpression::new_record(fields)
        .map_err(|e| PolicyError::new(PolicyErrorKind::Evaluation, format!("Cedar record: {e}")))
}

/// The members of a JSON object as Cedar record fields, dropping what Cedar cannot hold.
fn fields(object: &Map<String, Value>, depth: usize) -> Vec<(String, RestrictedExpression)> {
    object
        .iter()
        .filter_map(|(name, value)| Some((name.clone(), to_cedar(value, depth)?)))
        .collect()
}

/// A JSON value as a Cedar value: `None` for null, non-integer numbers, integers outside
/// `i64`, and containers nested deeper than [`MAX_DEPTH`].
fn to_cedar(value: &Value, depth: usize) -> Option<RestrictedExpression> {
    match value {
        Value::Null => None,
        Value::Bool(b) => Some(RestrictedExpression::new_bool(*b)),
        Value::Number(n) => n.as_i64().map(RestrictedExpression::new_long),
        Value::String(s) => Some(string(s)),
        Value::Array(items) if depth < MAX_DEPTH => Some(RestrictedExpression::new_set(
            items.iter().filter_map(|item| to_cedar(item, depth + 1)),
        )),
        // A JSON object's keys are unique, so building the record cannot fail.
        Value::Object(object) if depth < MAX_DEPTH => {
            RestrictedExpression::new_record(fields(object, depth + 1)).ok()
        }
        Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::identity::{Identity, Source};
    use crate::policy::{Action, Resource};

    const NOW: i64 = 1_796_400_000;

    fn user(subject: &str, roles: &[&str]) -> Identity {
        Identity::builder(
            subject,
            Source::Jwt {
                issuer: "https://issuer.example".into(),
            },
        )
        .roles(roles.iter().copied())
        .scopes(["documents"])
        .build()
    }

    fn attrs(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn input(
        identity: &Identity,
        action: &str,
        kind: &str,
        id: &str,
        attributes: Value,
    ) -> PolicyInput {
        let method = if action == "write" { "PUT" } else { "GET" };
        PolicyInput::new(
            identity,
            Action::new(action, method, Some("/documents/{id}".into())),
            Resource::new(kind, Some(id.into())).with_attributes(attrs(attributes)),
            NOW,
        )
    }

    fn decide(engine: &CedarEngine, input: &PolicyInput) -> Result<PolicyDecision, PolicyError> {
        match engine.evaluate(input) {
            Evaluation::Ready(result) => result,
            Evaluation::Pending(_) => panic!("Cedar answers at once"),
        }
    }

    fn quickstart() -> CedarEngine {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
        CedarEngine::from_files(
            &dir.join("documents.cedar"),
            Some(&dir.join("documents.cedarschema")),
        )
        .expect("the quickstart's policies validate")
    }

    /// The quickstart's documents: 1–4 owned, the rest unknown (no owner).
    fn document(identity: &Identity, action: &str, id: &str) -> PolicyInput {
        let owner = match id {
            "1" | "2" => json!({"owner": "alice"}),
            "3" | "4" => json!({"owner": "bob"}),
            _ => json!({}),
        };
        input(identity, action, "Document", id, owner)
    }

    #[test]
    fn engine_is_send_sync_debug() {
        fn assert_send_sync<T: Send + Sync + fmt::Debug + 'static>() {}
        assert_send_sync::<CedarEngine>();
        let engine = quickstart();
        assert_eq!(engine.name(), "cedar");
        let debug = format!("{engine:?}");
        assert!(debug.contains("CedarEngine"), "{debug}");
        assert!(!debug.contains("owner"), "no policy text: {debug}");
    }

    #[test]
    fn quickstart_owner_reads_and_writes_own_document() {
        let engine = quickstart();
        let alice = user("alice", &[]);
        for action in ["read", "write"] {
            let decision = decide(&engine, &document(&alice, action, "1")).unwrap();
            assert!(decision.is_allowed(), "{action}: {decision:?}");
            assert_eq!(decision.policies(), ["owner-read-write"]);
        }
    }

    #[test]
    fn quickstart_other_user_denied() {
        let engine = quickstart();
        let alice = user("alice", &[]);
        for action in ["read", "write"] {
            let decision = decide(&engine, &document(&alice, action, "3")).unwrap();
            assert!(!decision.is_allowed(), "{action}: {decision:?}");
            assert!(decision.policies().is_empty());
        }
        // A role that is not auditor grants nothing.
        let editor = user("carol", &["editor"]);
        assert!(
            !decide(&engine, &document(&editor, "read", "1"))
                .unwrap()
                .is_allowed()
        );
    }

    #[test]
    fn quickstart_auditor_reads_any_but_cannot_write() {
        let engine = quickstart();
        let auditor = user("dave", &["auditor"]);
        for id in ["1", "3", "99"] {
            let decision = decide(&engine, &document(&auditor, "read", id)).unwrap();
            assert!(decision.is_allowed(), "{id}: {decision:?}");
            assert_eq!(decision.policies(), ["auditor-read"]);
            let decision = decide(&engine, &document(&auditor, "write", id)).unwrap();
            assert!(!decision.is_allowed(), "{id}: {decision:?}");
        }
        // An auditor who owns the document: both permits determine the read.
        let alice = user("alice", &["auditor"]);
        let decision = decide(&engine, &document(&alice, "read", "1")).unwrap();
        assert_eq!(decision.policies(), ["auditor-read", "owner-read-write"]);
    }

    #[test]
    fn quickstart_unknown_document_denied_not_error() {
        let engine = quickstart();
        let alice = user("alice", &[]);
        for action in ["read", "write"] {
            let decision = decide(&engine, &document(&alice, action, "99")).unwrap();
            assert!(!decision.is_allowed());
        }
        // An unknown action is a deny too.
        let decision = decide(&engine, &document(&alice, "delete", "1")).unwrap();
        assert!(!decision.is_allowed());
    }

    #[test]
    fn cedar_ids_without_annotation() {
        let engine = CedarEngine::from_text(
            "permit (principal, action, resource);\n@id(\"named\") permit (principal, action, resource);",
            None,
        )
        .unwrap();
        let decision = decide(&engine, &document(&user("alice", &[]), "read", "1")).unwrap();
        assert_eq!(decision.policies(), ["named", "policy0"]);
    }

    #[test]
    fn forbid_determines_deny() {
        let engine = CedarEngine::from_text(
            r#"
            @id("all") permit (principal, action, resource);
            @id("no-bob") forbid (principal == User::"bob", action, resource);
            "#,
            None,
        )
        .unwrap();
        let decision = decide(&engine, &document(&user("bob", &[]), "read", "1")).unwrap();
        assert!(!decision.is_allowed());
        assert_eq!(decision.policies(), ["no-bob"]);
    }

    #[test]
    fn validation_failure_at_load() {
        let schema = include_str!("../../examples/policies/documents.cedarschema");
        let err = CedarEngine::from_text(
            r#"@id("by-colour") permit (principal, action, resource is Document)
               when { resource.colour == "red" };"#,
            Some(schema),
        )
        .unwrap_err();
        assert_eq!(err.kind(), PolicyErrorKind::Validation, "{err}");
        assert!(err.message().contains("by-colour"), "{err}");
        assert!(err.message().contains("policy0"), "{err}");

        // Unguarded read of an optional attribute: refused in strict mode.
        let err = CedarEngine::from_text(
            r#"permit (principal, action, resource is Document) when { resource.owner == principal.id };"#,
            Some(schema),
        )
        .unwrap_err();
        assert_eq!(err.kind(), PolicyErrorKind::Validation, "{err}");

        // An undeclared action.
        let err = CedarEngine::from_text(
            r#"permit (principal, action == Action::"delete", resource);"#,
            Some(schema),
        )
        .unwrap_err();
        assert_eq!(err.kind(), PolicyErrorKind::Validation, "{err}");
    }

    #[test]
    fn parse_errors() {
        let err = CedarEngine::from_text("permit (principal, action, resource", None).unwrap_err();
        assert_eq!(err.kind(), PolicyErrorKind::Parse, "{err}");
        assert!(err.message().starts_with("policies: "), "{err}");

        let err = CedarEngine::from_text(
            "permit (principal, action, resource);",
            Some("entity User {"),
        )
        .unwrap_err();
        assert_eq!(err.kind(), PolicyErrorKind::Parse, "{err}");
        assert!(err.message().starts_with("schema: "), "{err}");

        let err =
            CedarEngine::from_text("permit (principal == ?principal, action, resource);", None)
                .unwrap_err();
        assert_eq!(err.kind(), PolicyErrorKind::Parse, "{err}");
        assert!(err.message().contains("templates"), "{err}");

        let huge = "// padding\n".repeat(MAX_TEXT_BYTES / 10);
        let err = CedarEngine::from_text(&huge, None).unwrap_err();
        assert_eq!(err.kind(), PolicyErrorKind::Parse, "{err}");

        // No policies at all: every request is denied.
        let engine = CedarEngine::from_text("", None).unwrap();
        let decision = decide(&engine, &document(&user("alice", &[]), "read", "1")).unwrap();
        assert!(!decision.is_allowed());
    }

    #[test]
    fn io_errors_name_the_file() {
        let missing = Path::new("/nonexistent/policies.cedar");
        let err = CedarEngine::from_files(missing, None).unwrap_err();
        assert_eq!(err.kind(), PolicyErrorKind::Io);
        assert!(
            err.message().contains("/nonexistent/policies.cedar"),
            "{err}"
        );

        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
        let err = CedarEngine::from_files(
            &dir.join("documents.cedar"),
            Some(Path::new("/nonexistent/documents.cedarschema")),
        )
        .unwrap_err();
        assert_eq!(err.kind(), PolicyErrorKind::Io);
        assert!(err.message().contains("documents.cedarschema"), "{err}");
    }

    #[test]
    fn type_names() {
        let engine = CedarEngine::from_text(
            r#"@id("staff") permit (principal in App::Group::"staff", action, resource) when { principal is App::Person };"#,
            None,
        )
        .unwrap()
        .principal_type("App::Person")
        .unwrap()
        .role_type("App::Group")
        .unwrap();
        let decision = decide(&engine, &document(&user("alice", &["staff"]), "read", "1")).unwrap();
        assert!(decision.is_allowed());

        let err = CedarEngine::from_text("", None)
            .unwrap()
            .principal_type("not a type")
            .unwrap_err();
        assert_eq!(err.kind(), PolicyErrorKind::Parse);
        let err = CedarEngine::from_text("", None)
            .unwrap()
            .role_type("Role::")
            .unwrap_err();
        assert_eq!(err.kind(), PolicyErrorKind::Parse);

        // A resource type that is not a Cedar name fails closed.
        let engine = CedarEngine::from_text("permit (principal, action, resource);", None).unwrap();
        let err = decide(
            &engine,
            &input(&user("alice", &[]), "read", "no such type", "1", json!({})),
        )
        .unwrap_err();
        assert_eq!(err.kind(), PolicyErrorKind::Evaluation);
    }

    #[test]
    fn evaluation_error_fails_closed() {
        // No schema, so nothing stops the unguarded read at load.
        let engine = CedarEngine::from_text(
            r#"@id("owner") permit (principal, action, resource) when { resource.owner == principal.id };"#,
            None,
        )
        .unwrap();
        let alice = user("alice", &[]);
        assert!(
            decide(&engine, &document(&alice, "read", "1"))
                .unwrap()
                .is_allowed()
        );
        let err = decide(&engine, &document(&alice, "read", "99")).unwrap_err();
        assert_eq!(err.kind(), PolicyErrorKind::Evaluation);
        assert!(err.message().contains("owner"), "{err}");
    }

    #[test]
    fn the_decision_cache_keys_on_every_observed_fact() {
        let engine = quickstart();
        assert!(engine.decisions.is_some(), "on by default");
        let alice = user("alice", &[]);
        let cached = |input: &PolicyInput| decide(&engine, input).unwrap().is_allowed();
        // The same facts twice: the second answer is the cached one, and the same.
        assert!(cached(&document(&alice, "read", "1")));
        assert!(cached(&document(&alice, "read", "1")));
        let key = engine.cache_key(&document(&alice, "read", "1"));
        assert!(engine.decisions.as_ref().unwrap().get(&key).is_some());
        // Another owner of the same document id, another role set, another action, another
        // principal: each its own decision.
        let bobs = input(&alice, "read", "Document", "1", json!({"owner": "bob"}));
        assert!(!cached(&bobs));
        assert!(cached(&document(&user("x", &["auditor"]), "read", "3")));
        assert!(!cached(&document(&user("x", &[]), "read", "3")));
        assert!(!cached(&document(&user("x", &["auditor"]), "write", "3")));
        // An id that would collide without length prefixes.
        assert!(!cached(&document(&user("alice1", &[]), "read", "1")));

        // With a policy that reads the context, time is a fact too.
        let timed = CedarEngine::from_text(
            r#"permit (principal, action, resource) when { context.time < 100 };"#,
            None,
        )
        .unwrap();
        let at = |time: i64| {
            let mut facts = document(&alice, "read", "1");
            facts.context.time = time;
            decide(&timed, &facts).unwrap().is_allowed()
        };
        assert!(at(50));
        assert!(!at(150));
        assert!(at(50));

        // Errors are never cached; off means off.
        let erroring = CedarEngine::from_text(
            r#"permit (principal, action, resource) when { resource.owner == principal.id };"#,
            None,
        )
        .unwrap();
        for _ in 0..2 {
            assert!(decide(&erroring, &document(&alice, "read", "99")).is_err());
        }
        assert!(erroring.decisions.as_ref().unwrap().is_empty());
        let uncached = quickstart().decision_cache(0);
        assert!(uncached.decisions.is_none());
        assert!(
            decide(&uncached, &document(&alice, "read", "1"))
                .unwrap()
                .is_allowed()
        );
    }

    #[test]
    fn erroring_forbid_never_allows() {
        let engine = CedarEngine::from_text(
            r#"
            @id("everyone") permit (principal, action, resource);
            @id("blocked") forbid (principal, action, resource) when { resource.blocked };
            "#,
            None,
        )
        .unwrap();
        let alice = user("alice", &[]);
        let blocked = input(&alice, "read", "Document", "1", json!({"blocked": true}));
        assert!(!decide(&engine, &blocked).unwrap().is_allowed());
        let open = input(&alice, "read", "Document", "1", json!({"blocked": false}));
        assert!(decide(&engine, &open).unwrap().is_allowed());
        // The permit matches, the forbid errors: an error, not an allow.
        let unknown = input(&alice, "read", "Document", "1", json!({}));
        let err = decide(&engine, &unknown).unwrap_err();
        assert_eq!(err.kind(), PolicyErrorKind::Evaluation);
        assert!(err.message().contains("blocked"), "{err}");
    }

    #[test]
    fn action_groups_from_the_schema() {
        let schema = r#"
            entity Role;
            entity User in [Role];
            entity Item;
            action "read";
            action "GET /items/{id}", "GET /items" in ["read"] appliesTo {
                principal: [User],
                resource: [Item],
            };
            action "DELETE /items/{id}" appliesTo { principal: [User], resource: [Item] };
        "#;
        let engine = CedarEngine::from_text(
            r#"@id("readers") permit (principal, action in Action::"read", resource);"#,
            Some(schema),
        )
        .unwrap();
        let alice = user("alice", &[]);
        for (action, allowed) in [
            ("GET /items/{id}", true),
            ("GET /items", true),
            ("DELETE /items/{id}", false),
            ("PUT /items/{id}", false),
        ] {
            let decision = decide(&engine, &input(&alice, action, "Item", "1", json!({}))).unwrap();
            assert_eq!(decision.is_allowed(), allowed, "{action}");
        }
    }

    #[test]
    fn namespaced_schema_actions() {
        let schema = r#"
            namespace App {
                entity User;
                entity Item;
                action "read";
                action "GET /items" in ["read"] appliesTo { principal: [User], resource: [Item] };
            }
        "#;
        let engine = CedarEngine::from_text(
            r#"permit (principal is App::User, action in App::Action::"read", resource);"#,
            Some(schema),
        )
        .unwrap()
        .principal_type("App::User")
        .unwrap();
        let decision = decide(
            &engine,
            &input(
                &user("alice", &[]),
                "GET /items",
                "App::Item",
                "",
                json!({}),
            ),
        )
        .unwrap();
        assert!(decision.is_allowed());
    }

    #[test]
    fn facts_reach_the_policies() {
        let engine = CedarEngine::from_text(
            r#"
            @id("facts") permit (principal == User::"alice", action == Action::"read", resource == Document::"7")
            when {
                principal.id == "alice" &&
                principal.source == "jwt" &&
                principal.issuer == "https://issuer.example" &&
                principal.tenant == "acme" &&
                principal.scopes.contains("documents") &&
                !(principal has roles) &&
                context.time == 1796400000 &&
                context.scopes.contains("documents") &&
                context.method == "GET" &&
                context.route == "/documents/{id}" &&
                context.params.id == "7" &&
                context.client_addr == "203.0.113.7" &&
                context.claims.sub == "alice" &&
                context.claims.nested.level == 2 &&
                !(context.claims has gone) &&
                !(context.claims has ratio) &&
                context.claims.list.contains(1) &&
                resource.owner == "alice" &&
                resource.tags.contains("x") &&
                !(resource has nothing)
            };
            "#,
            None,
        )
        .unwrap();
        let alice = Identity::builder(
            "alice",
            Source::Jwt {
                issuer: "https://issuer.example".into(),
            },
        )
        .scopes(["documents"])
        .tenant("acme")
        .claims(json!({
            "sub": "alice",
            "nested": {"level": 2, "gone": null},
            "gone": null,
            "ratio": 0.5,
            "list": [1, null, 2.5, "two"],
        }))
        .build();
        let mut facts = PolicyInput::new(
            &alice,
            Action::new("read", "GET", Some("/documents/{id}".into())),
            Resource::new("Document", Some("7".into()))
                .with_params([("id".to_owned(), "7".to_owned())].into())
                .with_attributes(attrs(
                    json!({"owner": "alice", "tags": ["x"], "nothing": null}),
                )),
            NOW,
        );
        facts.context.client_addr = Some("203.0.113.7".into());
        let decision = decide(&engine, &facts).unwrap();
        assert!(decision.is_allowed(), "{decision:?}");
    }

    #[test]
    fn attributes_named_only_through_escapes_still_reach_the_policies() {
        // Attributes no policy names are left out of the request; names are collected
        // from the policies' JSON form, where string escapes are resolved.
        let engine = CedarEngine::from_text(
            r#"@id("escaped") permit (principal, action, resource) when { resource["\u{6f}wner"] == principal["\u{69}d"] };"#,
            None,
        )
        .unwrap();
        let alice = user("alice", &[]);
        let facts = input(
            &alice,
            "read",
            "Document",
            "1",
            json!({"owner": "alice", "other": 1}),
        );
        assert!(decide(&engine, &facts).unwrap().is_allowed());
        let facts = input(&alice, "read", "Document", "1", json!({"owner": "bob"}));
        assert!(!decide(&engine, &facts).unwrap().is_allowed());
    }

    #[test]
    fn context_as_a_whole() {
        let engine = CedarEngine::from_text(
            r#"permit (principal, action, resource) when { context == {"time": 1796400000, "scopes": [], "method": "GET", "params": {}, "claims": {}} };"#,
            None,
        )
        .unwrap();
        let identity = Identity::builder("alice", Source::Jwt { issuer: "i".into() }).build();
        let facts = PolicyInput::new(
            &identity,
            Action::new("read", "GET", None),
            Resource::new("Document", None),
            NOW,
        );
        assert!(decide(&engine, &facts).unwrap().is_allowed());
    }

    #[test]
    fn optional_principal_facts_absent() {
        let engine = CedarEngine::from_text(
            r#"permit (principal, action, resource)
               when { !(principal has tenant) && !(context has route) && !(context has client_addr) };"#,
            None,
        )
        .unwrap();
        let identity = user("alice", &[]);
        let facts = PolicyInput::new(
            &identity,
            Action::new("read", "GET", None),
            Resource::new("Document", None),
            NOW,
        );
        assert!(decide(&engine, &facts).unwrap().is_allowed());
    }

    #[test]
    fn resource_that_is_the_principal() {
        let engine = CedarEngine::from_text(
            r#"permit (principal, action, resource) when { resource == principal && resource.plan == "pro" && principal.id == "alice" };"#,
            None,
        )
        .unwrap();
        // `id` collides with the principal's: the principal's wins.
        let facts = input(
            &user("alice", &["alice"]),
            "read",
            "User",
            "alice",
            json!({"plan": "pro", "id": "mallory"}),
        );
        assert!(decide(&engine, &facts).unwrap().is_allowed());
    }

    fn nested(depth: usize) -> Value {
        let mut value = json!(1);
        for i in 0..depth {
            value = if i % 2 == 0 {
                json!([value])
            } else {
                json!({"a": value})
            };
        }
        value
    }

    #[test]
    fn awkward_json_never_panics() {
        let engine = CedarEngine::from_text(
            r#"permit (principal, action, resource) when { resource has a };"#,
            None,
        )
        .unwrap();
        let alice = user("alice", &[]);
        for value in [
            json!(null),
            json!(1.5),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(f64::MAX),
            json!([null, 1.5, u64::MAX, [], {}]),
            json!({"": null, "x": {"y": null}}),
            nested(MAX_DEPTH - 1),
            nested(MAX_DEPTH + 1),
            nested(300),
        ] {
            let facts = input(&alice, "read", "Document", "1", json!({"a": value.clone()}));
            let allowed = decide(&engine, &facts).unwrap().is_allowed();
            // Only the values Cedar cannot hold are dropped.
            let dropped =
                value.is_null() || value.is_f64() || value.is_u64() && value.as_i64().is_none();
            assert_eq!(allowed, !dropped, "{value}");
        }
    }

    #[test]
    fn json_deeper_than_max_depth_is_cut() {
        // `depth` objects `{"b": {"b": … inner}}`.
        let objects =
            |depth: usize, inner: Value| (0..depth).fold(inner, |inner, _| json!({ "b": inner }));
        // MAX_DEPTH objects are kept whole.
        assert_ne!(
            to_cedar(&objects(MAX_DEPTH, json!(1)), 0),
            to_cedar(&objects(MAX_DEPTH - 1, json!({})), 0),
        );
        // One more: the innermost object is dropped from its parent, the outer ones kept.
        assert_eq!(
            to_cedar(&objects(MAX_DEPTH + 1, json!(1)), 0),
            to_cedar(&objects(MAX_DEPTH - 1, json!({})), 0),
        );
        // Through a policy.
        let engine = CedarEngine::from_text(
            "permit (principal, action, resource) when { resource.a.b.b == 1 };",
            None,
        )
        .unwrap();
        let facts = input(
            &user("alice", &[]),
            "read",
            "Document",
            "1",
            json!({"a": objects(2, json!(1))}),
        );
        assert!(decide(&engine, &facts).unwrap().is_allowed());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn any_json_decides_without_panic(attributes in json_value(), claims in json_value()) {
            let engine = CedarEngine::from_text(
                r#"
                permit (principal, action, resource) when { resource has owner && resource.owner == principal.id };
                forbid (principal, action, resource) when { context.claims has blocked && context.claims.blocked == true };
                "#,
                None,
            )
            .unwrap();
            let identity = Identity::builder("alice", Source::Jwt { issuer: "i".into() })
                .claims(claims)
                .build();
            let facts = PolicyInput::new(
                &identity,
                Action::new("read", "GET", None),
                Resource::new("Document", Some("1".into())).with_attributes(attrs(json!({"owner": attributes}))),
                NOW,
            );
            // Typed comparisons across types are false, not errors: always a decision.
            prop_assert!(decide(&engine, &facts).is_ok());
        }
    }
}
