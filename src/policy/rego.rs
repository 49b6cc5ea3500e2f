//! Rego policies (OPA's language) evaluated in process with the `regorus` crate.
//!
//! A [`RegoEngine`] holds one Rego module, compiled once at load for one query (by default
//! `data.<the module's package>.allow`). Each request is evaluated with the
//! [`PolicyInput`] as Rego's `input`; the rule must be exactly `true` to allow:
//!
//! | the rule is | decision |
//! |---|---|
//! | `true` | allow |
//! | `false`, or undefined (no rule body matched and no `default`) | deny |
//! | anything else (a string, a number, a set…) | [`Evaluation`](PolicyErrorKind::Evaluation) error |
//! | a runtime error (conflicting outputs of a complete rule, a failing builtin) | [`Evaluation`](PolicyErrorKind::Evaluation) error |
//!
//! Modules use Rego v1 syntax (`if`, `in`, `contains`, `every`), as OPA 1.0 does.
//!
//! ```
//! use tower_api_guard::policy::rego::RegoEngine;
//!
//! let engine = RegoEngine::from_text(
//!     "authz.rego",
//!     r#"
//!     package authz
//!     default allow := false
//!     allow if "admin" in input.principal.roles
//!     "#,
//! )
//! .unwrap();
//! assert_eq!(engine.query_path(), "data.authz.allow");
//! ```

use std::fmt;
use std::path::Path;

use super::{
    Evaluation, PolicyDecision, PolicyEngine, PolicyError, PolicyErrorKind, PolicyInput, truncate,
};

/// The largest Rego module accepted, in bytes (1 MiB).
pub const MAX_POLICY_LEN: usize = 1024 * 1024;

/// The longest query accepted, in bytes.
const MAX_QUERY_LEN: usize = 1024;

/// The longest error message kept from regorus, in bytes.
const MAX_MESSAGE_LEN: usize = 512;

/// A Rego module evaluated in process (the `regorus` crate), compiled once for its query.
///
/// Cheap to evaluate from many threads at once: evaluation takes `&self` and shares the
/// compiled policy (each evaluation gets a fresh interpreter state over it). `Debug` shows
/// the module's file name and the query, not the policy text.
pub struct RegoEngine {
    /// The module's file name, for error messages.
    name: String,
    /// The parsed module, kept to compile another query.
    source: regorus::Engine,
    /// The rule evaluated, e.g. `data.guard.allow`.
    query: String,
    /// The module compiled for `query`.
    compiled: regorus::CompiledPolicy,
}

impl fmt::Debug for RegoEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegoEngine")
            .field("name", &self.name)
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

impl RegoEngine {
    /// Load a Rego module from a file; its file name names it in error messages.
    ///
    /// # Errors
    /// A file that cannot be read is an [`Io`](PolicyErrorKind::Io) error; a module larger
    /// than [`MAX_POLICY_LEN`], not UTF-8, that does not parse, or without an `allow` rule
    /// in its package is a [`Parse`](PolicyErrorKind::Parse) error.
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let shown = path.display();
        let too_large = || {
            PolicyError::new(
                PolicyErrorKind::Parse,
                format!("{shown}: larger than {MAX_POLICY_LEN} bytes"),
            )
        };
        let metadata = std::fs::metadata(path)
            .map_err(|e| PolicyError::new(PolicyErrorKind::Io, format!("{shown}: {e}")))?;
        if metadata.len() > MAX_POLICY_LEN as u64 {
            return Err(too_large());
        }
        let bytes = std::fs::read(path)
            .map_err(|e| PolicyError::new(PolicyErrorKind::Io, format!("{shown}: {e}")))?;
        // The file may have grown between the two calls.
        if bytes.len() > MAX_POLICY_LEN {
            return Err(too_large());
        }
        let text = String::from_utf8(bytes).map_err(|_| {
            PolicyError::new(PolicyErrorKind::Parse, format!("{shown}: not UTF-8 text"))
        })?;
        Self::from_text(&path.to_string_lossy(), &text)
    }

    /// Load a Rego module from text; `name` (its file name) names it in error messages.
    /// The query is `data.<the module's package>.allow`; see [`query`](Self::query) for
    /// another.
    ///
    /// # Errors
    /// A module larger than [`MAX_POLICY_LEN`], that does not parse or compile, or without
    /// an `allow` rule in its package is a [`Parse`](PolicyErrorKind::Parse) error.
    pub fn from_text(name: &str, text: &str) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_LEN {
            return Err(PolicyError::new(
                PolicyErrorKind::Parse,
                format!("{name}: larger than {MAX_POLICY_LEN} bytes"),
            ));
        }
        let mut source = regorus::Engine::new();
        source
            .add_policy(name.to_owned(), text.to_owned())
            .map_err(|e| parse_error(name, &e.to_string()))?;
        let packages = source
            .get_policy_package_components()
            .map_err(|e| parse_error(name, &e.to_string()))?;
        let package = packages
            .first()
            .ok_or_else(|| parse_error(name, "no package"))?;
        let mut query = rule_path(&package.components);
        query.push_str(".allow");
        Self::compile(name.to_owned(), source, query)
    }

    /// Evaluate `query` (a rule path, e.g. `data.authz.allow`) instead of
    /// `data.<package>.allow`.
    ///
    /// # Errors
    /// A query that is not a rule of the module is a [`Parse`](PolicyErrorKind::Parse)
    /// error.
    pub fn query(self, query: &str) -> Result<Self, PolicyError> {
        let query = query.trim();
        if query.is_empty() || query.len() > MAX_QUERY_LEN {
            return Err(PolicyError::new(
                PolicyErrorKind::Parse,
                format!(
                    "{}: the query must be a rule path, e.g. data.authz.allow",
                    self.name
                ),
            ));
        }
        Self::compile(self.name, self.source, query.to_owned())
    }

    /// The rule evaluated, e.g. `data.guard.allow`.
    pub fn query_path(&self) -> &str {
        &self.query
    }

    fn compile(
        name: String,
        mut source: regorus::Engine,
        query: String,
    ) -> Result<Self, PolicyError> {
        let compiled = source
            .compile_with_entrypoint(&query.as_str().into())
            .map_err(|e| {
                let message = e.to_string();
                if message.contains("not a valid rule path") {
                    PolicyError::new(
                        PolicyErrorKind::Parse,
                        format!(
                            "{name}: the query {} is not a rule of the module",
                            truncate(&query, MAX_QUERY_LEN)
                        ),
                    )
                } else {
                    parse_error(&name, &message)
                }
            })?;
        Ok(Self {
            name,
            source,
            query,
            compiled,
        })
    }

    fn decide(&self, input: &PolicyInput) -> Result<PolicyDecision, PolicyError> {
        let input: regorus::Value = serde_json::from_value(input.to_json()).map_err(|_| {
            PolicyError::new(
                PolicyErrorKind::Evaluation,
                "the input cannot be converted for Rego",
            )
        })?;
        let value = self.compiled.eval_with_input(input).map_err(|e| {
            PolicyError::new(
                PolicyErrorKind::Evaluation,
                format!("{}: {}", self.query, compact(&e.to_string())),
            )
        })?;
        match value {
            regorus::Value::Bool(true) => Ok(PolicyDecision::allow([self.query.as_str()])),
            regorus::Value::Bool(false) | regorus::Value::Undefined => {
                Ok(PolicyDecision::deny([self.query.as_str()]))
            }
            other => Err(PolicyError::new(
                PolicyErrorKind::Evaluation,
                format!(
                    "{} is {}, not a boolean",
                    self.query,
                    match other {
                        regorus::Value::Null => "null",
                        regorus::Value::Number(_) => "a number",
                        regorus::Value::String(_) => "a string",
                        regorus::Value::Array(_) => "an array",
                        regorus::Value::Set(_) => "a set",
                        regorus::Value::Object(_) => "an object",
                        _ => "not a boolean",
                    }
                ),
            )),
        }
    }
}

impl PolicyEngine for RegoEngine {
    fn evaluate(&self, input: &PolicyInput) -> Evaluation {
        Evaluation::Ready(self.decide(input))
    }

    fn name(&self) -> &'static str {
        "rego"
    }
}

fn parse_error(name: &str, message: &str) -> PolicyError {
    let message = compact(message);
    // regorus's parse errors start with the file name already.
    if message.starts_with(name) {
        PolicyError::new(PolicyErrorKind::Parse, message)
    } else {
        PolicyError::new(PolicyErrorKind::Parse, format!("{name}: {message}"))
    }
}

/// `data` and the package's components: identifiers after a dot, anything else as a quoted
/// string in brackets (`data.graph["1.0.0"]`).
fn rule_path(components: &[String]) -> String {
    let mut path = String::from("data");
    for component in components {
        let identifier = component
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && component
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if identifier {
            path.push('.');
            path.push_str(component);
        } else {
            path.push('[');
            path.push_str(
                &serde_json::to_string(component).unwrap_or_else(|_| String::from("\"\"")),
            );
            path.push(']');
        }
    }
    path
}

/// regorus's messages quote the policy line with a caret under the column:
/// `\n--> file:3:5\n  |\n3 | text\n  |     ^\nerror: msg`. For a log line, keep
/// `file:3:5: msg`, at most [`MAX_MESSAGE_LEN`] bytes.
fn compact(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let location = lines.iter().find_map(|l| l.strip_prefix("--> "));
    let text = match (location, lines.last()) {
        (Some(location), Some(last)) => {
            let last = last.strip_prefix("error: ").unwrap_or(last);
            format!("{location}: {last}")
        }
        _ => lines.join(" "),
    };
    truncate(&text, MAX_MESSAGE_LEN).to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::*;
    use crate::identity::{Identity, Source};
    use crate::policy::{Action, Resource};

    fn quickstart() -> RegoEngine {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies/documents.rego");
        RegoEngine::from_file(&path).unwrap()
    }

    fn identity(subject: &str, roles: &[&str]) -> Identity {
        Identity::builder(
            subject,
            Source::Jwt {
                issuer: "https://issuer.example".into(),
            },
        )
        .roles(roles.iter().copied())
        .build()
    }

    fn input(identity: &Identity, action: &str, id: &str, owner: Option<&str>) -> PolicyInput {
        let method = if action == "read" { "GET" } else { "PUT" };
        let mut attributes = Map::new();
        if let Some(owner) = owner {
            attributes.insert("owner".into(), json!(owner));
        }
        PolicyInput::new(
            identity,
            Action::new(action, method, Some("/documents/{id}".into())),
            Resource::new("Document", Some(id.into())).with_attributes(attributes),
            1_796_400_000,
        )
    }

    fn decide(engine: &RegoEngine, input: &PolicyInput) -> Result<PolicyDecision, PolicyError> {
        match engine.evaluate(input) {
            Evaluation::Ready(result) => result,
            Evaluation::Pending(_) => panic!("rego answers at once"),
        }
    }

    fn allowed(engine: &RegoEngine, input: &PolicyInput) -> bool {
        decide(engine, input).unwrap().is_allowed()
    }

    #[test]
    fn the_engine_is_send_sync_and_debug_shows_no_policy_text() {
        fn assert_send_sync<T: Send + Sync + fmt::Debug + 'static>() {}
        assert_send_sync::<RegoEngine>();
        let engine = quickstart();
        assert_eq!(engine.name(), "rego");
        assert_eq!(engine.query_path(), "data.guard.allow");
        let shown = format!("{engine:?}");
        assert!(shown.contains("data.guard.allow"), "{shown}");
        assert!(!shown.contains("auditor"), "{shown}");
    }

    #[test]
    fn the_quickstart_policy_lets_owners_read_and_write_and_auditors_read() {
        let engine = quickstart();
        let alice = identity("alice", &[]);
        let bob = identity("bob", &[]);
        let auditor = identity("carol", &["auditor"]);

        let decision = decide(&engine, &input(&alice, "read", "1", Some("alice"))).unwrap();
        assert!(decision.is_allowed());
        assert_eq!(decision.policies(), ["data.guard.allow"]);
        assert!(allowed(
            &engine,
            &input(&alice, "write", "1", Some("alice"))
        ));

        // Another user.
        let decision = decide(&engine, &input(&bob, "read", "1", Some("alice"))).unwrap();
        assert!(!decision.is_allowed());
        assert_eq!(decision.policies(), ["data.guard.allow"]);
        assert!(!allowed(&engine, &input(&bob, "write", "1", Some("alice"))));

        // An auditor reads any document and writes none, not even one they would own.
        assert!(allowed(
            &engine,
            &input(&auditor, "read", "2", Some("alice"))
        ));
        assert!(!allowed(
            &engine,
            &input(&auditor, "write", "2", Some("alice"))
        ));

        // An unknown document has no owner.
        assert!(!allowed(&engine, &input(&alice, "read", "99", None)));
        assert!(!allowed(&engine, &input(&alice, "write", "99", None)));

        // Another action, another resource type.
        assert!(!allowed(
            &engine,
            &input(&alice, "delete", "1", Some("alice"))
        ));
        let folder = PolicyInput::new(
            &alice,
            Action::new("read", "GET", None),
            Resource::new("Folder", Some("1".into()))
                .with_attributes([("owner".to_owned(), json!("alice"))].into_iter().collect()),
            0,
        );
        assert!(!allowed(&engine, &folder));
    }

    #[test]
    fn rego_v1_syntax_works() {
        let engine = RegoEngine::from_text(
            "v1.rego",
            r#"
            package v1
            readers contains "alice"
            readers contains "bob"
            allow if {
                input.principal.id in readers
                every role in input.principal.roles { role != "banned" }
            }
            "#,
        )
        .unwrap();
        assert!(allowed(
            &engine,
            &input(&identity("bob", &["x"]), "read", "1", None)
        ));
        assert!(!allowed(
            &engine,
            &input(&identity("bob", &["banned"]), "read", "1", None)
        ));
        assert!(!allowed(
            &engine,
            &input(&identity("eve", &[]), "read", "1", None)
        ));
    }

    #[test]
    fn a_module_that_does_not_parse_is_a_parse_error_naming_the_file_and_line() {
        let error =
            RegoEngine::from_text("broken.rego", "package broken\n\nallow if {\n").unwrap_err();
        assert_eq!(error.kind(), PolicyErrorKind::Parse);
        assert!(error.message().starts_with("broken.rego"), "{error}");
        assert!(!error.message().contains('\n'), "{error}");

        let error = RegoEngine::from_text("empty.rego", "").unwrap_err();
        assert_eq!(error.kind(), PolicyErrorKind::Parse);

        // Rego v0 syntax (no `if`) is refused.
        let error =
            RegoEngine::from_text("v0.rego", "package v0\nallow { input.x == 1 }\n").unwrap_err();
        assert_eq!(error.kind(), PolicyErrorKind::Parse);
    }

    #[test]
    fn a_module_without_the_rule_or_too_large_is_refused() {
        let error =
            RegoEngine::from_text("other.rego", "package other\npermit := true\n").unwrap_err();
        assert_eq!(error.kind(), PolicyErrorKind::Parse);
        assert!(error.message().contains("data.other.allow"), "{error}");

        let huge = format!(
            "package big\n{}",
            "# padding\n".repeat(MAX_POLICY_LEN / 10 + 1)
        );
        let error = RegoEngine::from_text("big.rego", &huge).unwrap_err();
        assert_eq!(error.kind(), PolicyErrorKind::Parse);
    }

    #[test]
    fn a_missing_file_is_an_io_error() {
        let error = RegoEngine::from_file(Path::new("/nonexistent/policy.rego")).unwrap_err();
        assert_eq!(error.kind(), PolicyErrorKind::Io);
        assert!(
            error.message().contains("/nonexistent/policy.rego"),
            "{error}"
        );
    }

    #[test]
    fn a_custom_query_is_checked_at_load() {
        let text = r#"
            package authz
            permit if input.action.name == "read"
            allow := false
        "#;
        let engine = RegoEngine::from_text("authz.rego", text)
            .unwrap()
            .query("data.authz.permit")
            .unwrap();
        assert_eq!(engine.query_path(), "data.authz.permit");
        let user = identity("alice", &[]);
        let decision = decide(&engine, &input(&user, "read", "1", None)).unwrap();
        assert!(decision.is_allowed());
        assert_eq!(decision.policies(), ["data.authz.permit"]);
        // `permit` is undefined for a write: denied.
        assert!(!allowed(&engine, &input(&user, "write", "1", None)));

        let error = RegoEngine::from_text("authz.rego", text)
            .unwrap()
            .query("data.authz.nope")
            .unwrap_err();
        assert_eq!(error.kind(), PolicyErrorKind::Parse);
        assert!(error.message().contains("data.authz.nope"), "{error}");
        let error = RegoEngine::from_text("authz.rego", text)
            .unwrap()
            .query("  ")
            .unwrap_err();
        assert_eq!(error.kind(), PolicyErrorKind::Parse);
        let error = RegoEngine::from_text("authz.rego", text)
            .unwrap()
            .query("data.authz[")
            .unwrap_err();
        assert_eq!(error.kind(), PolicyErrorKind::Parse);
    }

    #[test]
    fn a_package_with_several_components_gets_its_default_query() {
        let engine = RegoEngine::from_text(
            "nested.rego",
            "package app.http.authz\nallow if input.action.method == \"GET\"\n",
        )
        .unwrap();
        assert_eq!(engine.query_path(), "data.app.http.authz.allow");
        let user = identity("alice", &[]);
        assert!(allowed(&engine, &input(&user, "read", "1", None)));
        assert!(!allowed(&engine, &input(&user, "write", "1", None)));
    }

    #[test]
    fn an_undefined_rule_denies() {
        let engine = RegoEngine::from_text(
            "undefined.rego",
            "package undefined\nallow if input.principal.id == \"root\"\n",
        )
        .unwrap();
        let decision = decide(&engine, &input(&identity("alice", &[]), "read", "1", None)).unwrap();
        assert!(!decision.is_allowed());
        assert_eq!(decision.policies(), ["data.undefined.allow"]);
    }

    #[test]
    fn a_result_that_is_not_a_boolean_is_an_evaluation_error() {
        for (body, shown) in [
            ("allow := \"yes\"", "a string"),
            ("allow := 1", "a number"),
            ("allow contains \"x\"", "a set"),
            ("allow := {\"a\": true}", "an object"),
            ("allow := null", "null"),
        ] {
            let engine =
                RegoEngine::from_text("odd.rego", &format!("package odd\n{body}\n")).unwrap();
            let error =
                decide(&engine, &input(&identity("alice", &[]), "read", "1", None)).unwrap_err();
            assert_eq!(error.kind(), PolicyErrorKind::Evaluation, "{body}");
            assert!(error.message().contains(shown), "{body}: {error}");
        }
    }

    #[test]
    fn a_runtime_error_is_an_evaluation_error() {
        // A complete rule with two different values.
        let engine = RegoEngine::from_text(
            "conflict.rego",
            "package conflict\nallow := true if input.action.name == \"read\"\nallow := false if input.principal.id == \"alice\"\n",
        )
        .unwrap();
        let user = identity("alice", &[]);
        let error = decide(&engine, &input(&user, "read", "1", None)).unwrap_err();
        assert_eq!(error.kind(), PolicyErrorKind::Evaluation);
        assert!(
            error.message().starts_with("data.conflict.allow"),
            "{error}"
        );
        assert!(!error.message().contains('\n'), "{error}");
        // Only one of them: no conflict.
        assert!(!allowed(&engine, &input(&user, "write", "1", None)));

        // Division by zero.
        let engine = RegoEngine::from_text(
            "divide.rego",
            "package divide\nallow if 1 / count(input.principal.roles) > 0\n",
        )
        .unwrap();
        let error = decide(&engine, &input(&user, "read", "1", None)).unwrap_err();
        assert_eq!(error.kind(), PolicyErrorKind::Evaluation);
        assert!(allowed(
            &engine,
            &input(&identity("bob", &["x"]), "read", "1", None)
        ));
    }

    #[test]
    fn messages_are_compacted_and_truncated() {
        assert_eq!(
            compact("\n--> a.rego:3:5\n  |\n3 | allow if {\n  |     ^\nerror: unexpected eof"),
            "a.rego:3:5: unexpected eof"
        );
        assert_eq!(compact("one\ntwo"), "one two");
        let long = "é".repeat(MAX_MESSAGE_LEN);
        assert!(compact(&long).len() <= MAX_MESSAGE_LEN);
        assert_eq!(
            rule_path(&["graph".into(), "1.0.0".into()]),
            "data.graph[\"1.0.0\"]"
        );
    }
}
