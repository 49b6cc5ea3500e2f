//! The real engines behind `RequireLayer`: the quickstart's two policy files mean the same
//! (every subject × role × action × document), allow / deny / error → 503 / dry-run through
//! an axum app for each engine, a Cedar schema that refuses a policy at load, and reloading
//! real files: a broken or invalid file keeps the previous policy, a good one swaps in, and
//! the watch picks a change up.
#![cfg(all(
    feature = "cedar",
    feature = "rego",
    feature = "testing",
    feature = "axum"
))]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Method, Request, StatusCode};
use serde_json::Map;
use tower_api_guard::AuthErrorKind;
use tower_api_guard::authz::RequireLayer;
use tower_api_guard::policy::cedar::CedarEngine;
use tower_api_guard::policy::rego::RegoEngine;
use tower_api_guard::policy::{
    Action, Evaluation, Policy, PolicyEngine, PolicyErrorKind, PolicyInput, PolicyRequirement,
    Resource, ResourceLoading,
};
use tower_api_guard::testing::{caller, with_identity};

use common::calls;

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies")
}

fn cedar() -> CedarEngine {
    CedarEngine::from_files(
        &policies().join("documents.cedar"),
        Some(&policies().join("documents.cedarschema")),
    )
    .unwrap()
}

fn rego() -> RegoEngine {
    RegoEngine::from_file(&policies().join("documents.rego")).unwrap()
}

/// The quickstart's documents: 1–3 owned by demo-user, 4 by other-user, others unknown.
fn owner_of(id: &str) -> Option<&'static str> {
    match id {
        "1" | "2" | "3" => Some("demo-user"),
        "4" => Some("other-user"),
        _ => None,
    }
}

fn attributes(id: &str) -> Map<String, serde_json::Value> {
    let mut attributes = Map::new();
    if let Some(owner) = owner_of(id) {
        attributes.insert("owner".into(), owner.into());
    }
    attributes
}

fn decide(
    engine: &dyn PolicyEngine,
    subject: &str,
    roles: &[&str],
    action: &str,
    id: &str,
) -> bool {
    let identity = caller(subject).roles(roles.iter().copied()).build();
    let method = if action == "read" { "GET" } else { "PUT" };
    let input = PolicyInput::new(
        &identity,
        Action::new(action, method, Some("/documents/{id}".into())),
        Resource::new("Document", Some(id.into())).with_attributes(attributes(id)),
        1_800_000_000,
    );
    match engine.evaluate(&input) {
        Evaluation::Ready(Ok(decision)) => decision.is_allowed(),
        other => panic!("{} {subject} {action} {id}: {other:?}", engine.name()),
    }
}

#[test]
fn the_two_quickstart_policies_mean_the_same() {
    let (cedar, rego) = (cedar(), rego());
    let mut checked = 0;
    for subject in ["demo-user", "other-user", "auditor-user", "nobody"] {
        for roles in [&[][..], &["auditor"], &["admin"], &["auditor", "admin"]] {
            for action in ["read", "write"] {
                for id in ["1", "3", "4", "9"] {
                    let owner = owner_of(id) == Some(subject);
                    let expected = owner || (action == "read" && roles.contains(&"auditor"));
                    assert_eq!(
                        decide(&cedar, subject, roles, action, id),
                        expected,
                        "cedar {subject} {roles:?} {action} {id}"
                    );
                    assert_eq!(
                        decide(&rego, subject, roles, action, id),
                        expected,
                        "rego {subject} {roles:?} {action} {id}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 128);
}

/// `GET` / `PUT /documents/{id}` guarded by `policy`; document `db-down` cannot be loaded.
fn app(policy: Policy, dry_run: bool) -> Router {
    let requirement = PolicyRequirement::new(policy)
        .resource("Document", "id")
        .action(Method::GET, "read")
        .action(Method::PUT, "write")
        .loader(|_kind: &str, id: &str| ResourceLoading::Ready(Ok(attributes(id))));
    Router::new()
        .route(
            "/documents/{id}",
            get(|| async { "doc" }).put(|| async { "put" }),
        )
        .route_layer(RequireLayer::policy(requirement).dry_run(dry_run))
}

async fn status(
    app: &Router,
    method: &str,
    path: &str,
    subject: &str,
    roles: &[&str],
) -> (StatusCode, Option<AuthErrorKind>) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let identity = caller(subject).roles(roles.iter().copied()).build();
    let response = calls::call(app, with_identity(request, identity)).await;
    (response.status(), calls::error_kind(&response))
}

/// A policy that reads an attribute no document has: an evaluation error.
const CEDAR_ERRORING: &str = r#"
@id("reads-missing")
permit (principal, action, resource) when { resource.missing == "x" };
"#;
const REGO_ERRORING: &str = r#"
package guard
allow := "yes" if input.resource.id == "1"
"#;

#[tokio::test]
async fn each_engine_allows_denies_and_fails_closed_through_the_layer() {
    for policy in [Policy::new(cedar()), Policy::new(rego())] {
        let name = policy.engine_name();
        let app = app(policy, false);
        assert_eq!(
            status(&app, "GET", "/documents/1", "demo-user", &[])
                .await
                .0,
            StatusCode::OK,
            "{name}"
        );
        assert_eq!(
            status(&app, "PUT", "/documents/1", "demo-user", &[])
                .await
                .0,
            StatusCode::OK,
            "{name}"
        );
        assert_eq!(
            status(&app, "GET", "/documents/4", "demo-user", &[]).await,
            (StatusCode::FORBIDDEN, Some(AuthErrorKind::Forbidden)),
            "{name}"
        );
        assert_eq!(
            status(&app, "GET", "/documents/4", "aud", &["auditor"])
                .await
                .0,
            StatusCode::OK,
            "{name}"
        );
        assert_eq!(
            status(&app, "PUT", "/documents/4", "aud", &["auditor"])
                .await
                .0,
            StatusCode::FORBIDDEN,
            "{name}"
        );
    }
    let erroring = [
        Policy::new(CedarEngine::from_text(CEDAR_ERRORING, None).unwrap()),
        Policy::new(RegoEngine::from_text("erroring.rego", REGO_ERRORING).unwrap()),
    ];
    for policy in erroring {
        let name = policy.engine_name();
        let closed = app(policy.clone(), false);
        assert_eq!(
            status(&closed, "GET", "/documents/1", "demo-user", &[]).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(AuthErrorKind::Unavailable)
            ),
            "{name}"
        );
        let dry = app(policy, true);
        assert_eq!(
            status(&dry, "GET", "/documents/1", "demo-user", &[])
                .await
                .0,
            StatusCode::OK,
            "{name}"
        );
    }
    // Dry run lets a denial through too.
    let dry = app(Policy::new(cedar()), true);
    assert_eq!(
        status(&dry, "GET", "/documents/4", "demo-user", &[])
            .await
            .0,
        StatusCode::OK
    );
}

#[test]
fn a_cedar_schema_refuses_a_policy_at_load() {
    let schema = std::fs::read_to_string(policies().join("documents.cedarschema")).unwrap();
    let typo = r#"permit (principal, action, resource) when { resource.ownr == principal.id };"#;
    let error = CedarEngine::from_text(typo, Some(&schema)).unwrap_err();
    assert_eq!(error.kind(), PolicyErrorKind::Validation);
    assert!(CedarEngine::from_text("permit (principal, action", None).is_err());
    assert!(RegoEngine::from_text("broken.rego", "package guard\nallow if {").is_err());
}

fn copy_policies(dir: &Path) {
    for file in ["documents.cedar", "documents.cedarschema", "documents.rego"] {
        std::fs::copy(policies().join(file), dir.join(file)).unwrap();
    }
}

#[tokio::test]
async fn a_broken_or_invalid_file_keeps_the_previous_policy() {
    let dir = common::files::tempdir("engines");
    copy_policies(&dir);
    let cedar = Policy::from_file(dir.join("documents.cedar")).unwrap();
    let rego = Policy::from_file(dir.join("documents.rego")).unwrap();
    assert_eq!((cedar.engine_name(), rego.engine_name()), ("cedar", "rego"));
    let app_cedar = app(cedar.clone(), false);
    let app_rego = app(rego.clone(), false);

    // Does not parse; does not validate against the schema.
    std::fs::write(dir.join("documents.cedar"), "permit (principal, action").unwrap();
    assert_eq!(cedar.reload().unwrap_err().kind(), PolicyErrorKind::Parse);
    std::fs::write(
        dir.join("documents.cedar"),
        "permit (principal, action, resource) when { resource.ownr == principal.id };",
    )
    .unwrap();
    assert_eq!(
        cedar.reload().unwrap_err().kind(),
        PolicyErrorKind::Validation
    );
    std::fs::write(dir.join("documents.rego"), "package guard\nallow if {").unwrap();
    assert_eq!(rego.reload().unwrap_err().kind(), PolicyErrorKind::Parse);

    // The previous policies are still in force, whole.
    for app in [&app_cedar, &app_rego] {
        assert_eq!(
            status(app, "GET", "/documents/1", "demo-user", &[]).await.0,
            StatusCode::OK
        );
        assert_eq!(
            status(app, "GET", "/documents/4", "demo-user", &[]).await.0,
            StatusCode::FORBIDDEN
        );
    }
    assert_eq!((cedar.generation(), rego.generation()), (1, 1));

    // A good change swaps in: now nobody but the auditor may read.
    std::fs::write(
        dir.join("documents.cedar"),
        "@id(\"auditors\")\npermit (principal in Role::\"auditor\", action == Action::\"read\", resource);",
    )
    .unwrap();
    assert_eq!(cedar.reload().unwrap(), 2);
    assert_eq!(
        status(&app_cedar, "GET", "/documents/1", "demo-user", &[])
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&app_cedar, "GET", "/documents/1", "aud", &["auditor"])
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_picks_up_a_changed_policy_file() {
    let dir = common::files::tempdir("engines");
    copy_policies(&dir);
    let policy = Policy::from_file(dir.join("documents.rego")).unwrap();
    let _watch = policy.watch(Duration::from_millis(50));
    let app = app(policy.clone(), false);
    assert_eq!(
        status(&app, "GET", "/documents/1", "demo-user", &[])
            .await
            .0,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    std::fs::write(
        dir.join("documents.rego"),
        "package guard\ndefault allow := false\n",
    )
    .unwrap();
    // Wait for the reload (bounded); this asserts that it happens, not how fast.
    for _ in 0..400 {
        if policy.generation() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(policy.generation(), 2);
    assert_eq!(
        status(&app, "GET", "/documents/1", "demo-user", &[])
            .await
            .0,
        StatusCode::FORBIDDEN
    );
}
