//! Resource-level authorization: fallible async checks (allow / deny / error → 503, the time
//! budget, fail-open and dry-run), ownership against tampered paths, the route table (deny by
//! default, the start-up check, with and without axum), policies through `Requirement::policy`
//! (the facts an engine sees, resource loaders, errors), atomic reload under concurrent
//! requests, a broken source keeping the previous policy, the file watch, and a real tonic
//! service guarded by a policy. Rows 37 and 38 of docs/security-cases.md.
#![cfg(all(
    feature = "policy",
    feature = "jwt",
    feature = "testing",
    feature = "axum"
))]

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use http::{Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use tower::{ServiceBuilder, ServiceExt};
use tower_api_guard::authz::{
    CheckError, Ownership, RequireLayer, Requirement, RouteMatch, RouteTable,
};
use tower_api_guard::clock::ManualClock;
use tower_api_guard::policy::{
    Evaluation, Policy, PolicyDecision, PolicyError, PolicyErrorKind, PolicyInput,
    PolicyRequirement, PolicySource, ResourceLoading,
};
use tower_api_guard::testing::{IdentityLayer, caller, with_identity};
use tower_api_guard::{AuthErrorKind, FailurePolicy, Identity};

use common::calls;

fn who(subject: &str) -> Identity {
    caller(subject).build()
}

/// Status, error kind and body of `method path` made as `identity` against `app`.
async fn send(
    app: &Router,
    method: &str,
    path: &str,
    identity: Option<Identity>,
) -> (StatusCode, Option<AuthErrorKind>, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    if let Some(identity) = identity {
        request = with_identity(request, identity);
    }
    let response = calls::call(app, request).await;
    let status = response.status();
    let kind = calls::error_kind(&response);
    (status, kind, calls::body_text(response).await)
}

// --- fallible async checks -------------------------------------------------------------

/// `ok` passes, `no` is denied, `down` cannot be decided, `slow` takes 10 s.
fn account_check() -> Requirement {
    Requirement::check("active account", |identity, _head| {
        let subject = identity.subject().to_owned();
        Box::pin(async move {
            match subject.as_str() {
                "ok" => Ok(true),
                "down" => Err(CheckError::new("account database: connection refused")),
                "busy" => Err(CheckError::new("overloaded").retry_after(Duration::from_secs(7))),
                "slow" => {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    })
}

fn checked(layer: RequireLayer) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route_layer(layer)
}

// Row 38: a check that cannot decide fails closed.
#[tokio::test]
async fn a_fallible_check_allows_denies_and_fails_closed() {
    let app = checked(RequireLayer::new(account_check()));
    assert_eq!(
        send(&app, "GET", "/", Some(who("ok"))).await.0,
        StatusCode::OK
    );

    let request = || with_identity(Request::get("/").body(Body::empty()).unwrap(), who("no"));
    let denied = calls::call(&app, request()).await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    assert_eq!(calls::error_kind(&denied), Some(AuthErrorKind::Forbidden));
    // A resource-level denial: no scope would help, so no challenge.
    assert!(denied.headers().get("www-authenticate").is_none());

    let down = calls::call(
        &app,
        with_identity(Request::get("/").body(Body::empty()).unwrap(), who("down")),
    )
    .await;
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.headers()["retry-after"], "1");
    let body = calls::body_text(down).await;
    assert!(
        !body.contains("connection refused"),
        "the reason is for logs: {body}"
    );

    let busy = calls::call(
        &app,
        with_identity(Request::get("/").body(Body::empty()).unwrap(), who("busy")),
    )
    .await;
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.headers()["retry-after"], "7");

    let anonymous = send(&app, "GET", "/", None).await;
    assert_eq!(anonymous.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(start_paused = true)]
async fn a_check_past_its_budget_could_not_decide() {
    // Tokio's paused clock: the check's 10 s sleep passes at once, without waiting.
    let tight = checked(RequireLayer::new(account_check()).budget(Duration::from_millis(100)));
    let (status, kind, _) = send(&tight, "GET", "/", Some(who("slow"))).await;
    assert_eq!(
        (status, kind),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(AuthErrorKind::Unavailable)
        )
    );

    let roomy = checked(RequireLayer::new(account_check()).budget(Duration::from_secs(11)));
    assert_eq!(
        send(&roomy, "GET", "/", Some(who("slow"))).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn failing_open_and_dry_run_are_explicit_choices() {
    let open = checked(RequireLayer::new(account_check()).on_error(FailurePolicy::Open));
    assert_eq!(
        send(&open, "GET", "/", Some(who("down"))).await.0,
        StatusCode::OK
    );
    // Failing open is about errors only: a denial stays a denial.
    assert_eq!(
        send(&open, "GET", "/", Some(who("no"))).await.0,
        StatusCode::FORBIDDEN
    );

    let dry = checked(RequireLayer::new(account_check()).dry_run(true));
    assert_eq!(
        send(&dry, "GET", "/", Some(who("down"))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&dry, "GET", "/", Some(who("no"))).await.0,
        StatusCode::OK
    );
}

// --- ownership --------------------------------------------------------------------------

/// `GET /users/{id}/orders` behind `ownership`; the handler answers the `id` it was given.
fn orders(ownership: Ownership) -> Router {
    Router::new()
        .route(
            "/users/{id}/orders",
            get(|Path(id): Path<String>| async move { id }),
        )
        .route("/orders", get(|| async { "all" }))
        .route_layer(RequireLayer::owner(ownership))
}

#[tokio::test]
async fn ownership_follows_the_router_and_never_yields_to_a_tampered_path() {
    let app = orders(Ownership::path_param("id").unless_role("admin"));
    assert_eq!(
        send(&app, "GET", "/users/alice/orders", Some(who("alice"))).await,
        (StatusCode::OK, None, "alice".to_owned())
    );
    let (status, kind, _) = send(&app, "GET", "/users/bob/orders", Some(who("alice"))).await;
    assert_eq!(
        (status, kind),
        (StatusCode::FORBIDDEN, Some(AuthErrorKind::Forbidden))
    );
    let admin = caller("root").roles(["admin"]).build();
    assert_eq!(
        send(&app, "GET", "/users/bob/orders", Some(admin)).await.0,
        StatusCode::OK
    );

    // Row 37: Alice tries to reach Bob's orders (or anyone's but hers): whatever the router makes of
    // the path, the request is refused or the handler is given "alice" itself.
    for path in [
        "/users/ALICE/orders",
        "/users/Alice/orders",
        "/users/alice%2F..%2Fbob/orders",
        "/users/alice%2Fbob/orders",
        "/users/alice/../bob/orders",
        "/users/bob/../alice/orders",
        "/users/alice/orders/",
        "/users/alice/orders/../../bob/orders",
        "/users/alice%00/orders",
        "/users/alice%20/orders",
        "/users/%20alice/orders",
        "/users/alice;bob/orders",
        "/users/bob%23alice/orders",
        "/users/bob/orders?id=alice",
        "/users/bob/orders#alice",
        "//users/alice/orders",
        "/users//orders",
        "/users/%61lice/orders",
        "/users/al%69ce/orders",
        "/users/alice%2e/orders",
        "/users/bob%2F..%2Falice/orders",
    ] {
        let (status, _, body) = send(&app, "GET", path, Some(who("alice"))).await;
        assert!(
            status != StatusCode::OK || body == "alice",
            "{path}: {status} {body}"
        );
    }

    // A route without the parameter is a configuration mistake: it denies.
    assert_eq!(
        send(&app, "GET", "/orders", Some(who("alice"))).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn ownership_by_claim_tenant_or_extractor() {
    let app = orders(Ownership::path_param("id").claim("org_id"));
    let member = caller("u1").claims(json!({"org_id": "acme"})).build();
    assert_eq!(
        send(&app, "GET", "/users/acme/orders", Some(member.clone()))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "GET", "/users/globex/orders", Some(member))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let numeric = caller("u2").claims(json!({"org_id": 42})).build();
    assert_eq!(
        send(&app, "GET", "/users/42/orders", Some(numeric.clone()))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "GET", "/users/042/orders", Some(numeric))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let without = caller("u3").build();
    assert_eq!(
        send(&app, "GET", "/users/acme/orders", Some(without))
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    let app = orders(Ownership::path_param("id").tenant());
    let tenant = caller("u4").tenant("t1").build();
    assert_eq!(
        send(&app, "GET", "/users/t1/orders", Some(tenant.clone()))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "GET", "/users/t2/orders", Some(tenant)).await.0,
        StatusCode::FORBIDDEN
    );

    let app = orders(Ownership::extract(|head| {
        head.headers
            .get("x-account")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }));
    let request = |account: Option<&str>| {
        let mut r = Request::get("/orders");
        if let Some(account) = account {
            r = r.header("x-account", account);
        }
        with_identity(r.body(Body::empty()).unwrap(), who("alice"))
    };
    assert_eq!(
        calls::call(&app, request(Some("alice"))).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        calls::call(&app, request(Some("bob"))).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        calls::call(&app, request(None)).await.status(),
        StatusCode::FORBIDDEN
    );
}

// --- the route table -----------------------------------------------------------------------

fn table() -> RouteTable {
    RouteTable::new()
        .route("GET /documents/{id}", Requirement::authenticated())
        .unwrap()
        .route(
            "PUT /documents/{id}",
            Requirement::all_scopes(["docs:write"]),
        )
        .unwrap()
        .route(
            "GET /users/{id}/orders",
            Requirement::owner(Ownership::path_param("id")),
        )
        .unwrap()
}

fn documents_app(layer: RequireLayer) -> Router {
    Router::new()
        .route(
            "/documents/{id}",
            get(|| async { "doc" }).put(|| async { "put" }),
        )
        .route("/users/{id}/orders", get(|| async { "orders" }))
        .route("/unlisted", get(|| async { "unlisted" }))
        .route_layer(layer)
}

#[tokio::test]
async fn the_route_table_denies_what_it_does_not_list() {
    let app = documents_app(RequireLayer::routes(table()));
    let writer = caller("w").scopes(["docs:write"]).build();
    assert_eq!(
        send(&app, "GET", "/documents/1", Some(who("r"))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "HEAD", "/documents/1", Some(who("r"))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "PUT", "/documents/1", Some(who("r"))).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&app, "PUT", "/documents/1", Some(writer)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "GET", "/users/ann/orders", Some(who("ann")))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "GET", "/users/bob/orders", Some(who("ann")))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (status, kind, _) = send(&app, "GET", "/unlisted", Some(who("r"))).await;
    assert_eq!(
        (status, kind),
        (StatusCode::FORBIDDEN, Some(AuthErrorKind::Forbidden))
    );

    let open = documents_app(RequireLayer::routes(table().allow_unlisted(true)));
    assert_eq!(
        send(&open, "GET", "/unlisted", Some(who("r"))).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_start_up_check_names_the_routes_the_table_misses() {
    let (events, _guard) = common::events::Captured::install(tracing::Level::WARN);
    let routes = [
        "GET /documents/{id}",
        "PUT /documents/{id}",
        "GET /users/{id}/orders",
        "GET /unlisted",
        "DELETE /documents/{id}",
    ];
    assert_eq!(
        table().unlisted(routes),
        ["GET /unlisted", "DELETE /documents/{id}"]
    );
    let logged = events.take();
    assert!(
        logged.contains("route is not in the route table"),
        "{logged}"
    );
    assert!(logged.contains("DELETE /documents/{id}"), "{logged}");
}

#[tokio::test]
async fn the_route_table_matches_by_itself_in_front_of_a_router_or_without_one() {
    // In front of the router (Router::layer): no matched route yet, the table matches.
    let app = Router::new()
        .route("/documents/{id}", get(|| async { "doc" }))
        .route("/users/{id}/orders", get(|| async { "orders" }))
        .layer(RequireLayer::routes(table()));
    assert_eq!(
        send(&app, "GET", "/documents/7", Some(who("r"))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "GET", "/users/ann/orders", Some(who("ann")))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "GET", "/users/bob/orders", Some(who("ann")))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&app, "GET", "/users/ann/orders/", Some(who("ann")))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&app, "GET", "/nowhere", Some(who("ann"))).await.0,
        StatusCode::FORBIDDEN
    );

    // No router at all: a plain tower service.
    let svc = ServiceBuilder::new()
        .layer(RequireLayer::routes(table()))
        .service_fn(|request: Request<()>| async move {
            // What the table found rides on the request.
            let found = request.extensions().get::<RouteMatch>().cloned();
            let text = found.map_or(String::new(), |f| {
                format!("{} {}", f.route(), f.param("id").unwrap_or(""))
            });
            Ok::<_, Infallible>(Response::new(text))
        });
    let call = |path: &str, subject: &str| {
        let request = with_identity(Request::get(path).body(()).unwrap(), who(subject));
        svc.clone().oneshot(request)
    };
    let response = call("/users/ann/orders", "ann").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls::body_text(response).await, "/users/{id}/orders ann");
    assert_eq!(
        call("/users/ann/orders", "bob").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call("/users/ann%2Fx/orders", "ann").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
}

// --- policies ------------------------------------------------------------------------------

/// An engine of our own: the owner (the resource's `owner` attribute) may do anything,
/// role `auditor` may `read`; subject `broken` makes it fail. It keeps every input it saw.
fn owner_policy(seen: Arc<Mutex<Vec<PolicyInput>>>) -> Policy {
    Policy::new(move |input: &PolicyInput| {
        seen.lock().unwrap().push(input.clone());
        if input.principal.id == "broken" {
            return Evaluation::Ready(Err(PolicyError::new(
                PolicyErrorKind::Evaluation,
                "division by zero",
            )));
        }
        let owner = input
            .resource
            .attributes
            .get("owner")
            .and_then(Value::as_str);
        let decision = if owner == Some(input.principal.id.as_str()) {
            PolicyDecision::allow(["owner"])
        } else if input.action.name == "read"
            && input.principal.roles.iter().any(|r| r == "auditor")
        {
            PolicyDecision::allow(["auditor"])
        } else {
            PolicyDecision::deny(Vec::<String>::new())
        };
        Evaluation::Ready(Ok(decision))
    })
}

fn owners(_kind: &str, id: &str) -> ResourceLoading {
    let owner = match id {
        "1" | "2" | "3" => Some("demo-user"),
        "4" => Some("other-user"),
        "db-down" => {
            return ResourceLoading::Ready(Err(CheckError::new("documents database down")));
        }
        _ => None,
    };
    let mut attributes = Map::new();
    if let Some(owner) = owner {
        attributes.insert("owner".into(), owner.into());
    }
    // Loaded asynchronously, as from a database.
    ResourceLoading::Pending(Box::pin(async move {
        tokio::task::yield_now().await;
        Ok(attributes)
    }))
}

fn policy_app(requirement: PolicyRequirement) -> Router {
    let table = RouteTable::new()
        .route_as(
            "GET /documents/{id}",
            "read",
            Requirement::policy(requirement.clone()),
        )
        .unwrap()
        .route_as(
            "PUT /documents/{id}",
            "write",
            Requirement::policy(requirement),
        )
        .unwrap();
    Router::new()
        .route(
            "/documents/{id}",
            get(|| async { "doc" }).put(|| async { "put" }),
        )
        .route_layer(RequireLayer::routes(table))
}

#[tokio::test]
async fn a_policy_decides_on_the_facts_of_the_request() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let requirement = PolicyRequirement::new(owner_policy(seen.clone()))
        .resource("Document", "id")
        .loader(owners)
        .clock(clock);
    let app = policy_app(requirement);
    let auditor = caller("aud").roles(["auditor"]).build();

    assert_eq!(
        send(&app, "GET", "/documents/1", Some(who("demo-user")))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "PUT", "/documents/1", Some(who("demo-user")))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "GET", "/documents/4", Some(who("demo-user")))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&app, "GET", "/documents/4", Some(auditor.clone()))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "PUT", "/documents/4", Some(auditor)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&app, "GET", "/documents/9", Some(who("demo-user")))
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    // The facts: principal, the route table's action name, the resource, the context.
    let inputs = seen.lock().unwrap().clone();
    let first = inputs[0].to_json();
    assert_eq!(first["principal"]["id"], "demo-user");
    assert_eq!(
        first["action"],
        json!({"name": "read", "method": "GET", "route": "/documents/{id}"})
    );
    assert_eq!(
        first["resource"],
        json!({"type": "Document", "id": "1", "params": {"id": "1"}, "attributes": {"owner": "demo-user"}})
    );
    assert_eq!(first["context"]["time"], 1_800_000_000);
    assert_eq!(inputs[1].action.name, "write");
    assert_eq!(inputs[5].resource.attributes, Map::new());
}

#[tokio::test]
async fn policy_and_loader_errors_fail_closed() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let requirement = PolicyRequirement::new(owner_policy(seen.clone()))
        .resource("Document", "id")
        .loader(owners);
    let app = policy_app(requirement.clone());
    let (status, kind, _) = send(&app, "GET", "/documents/1", Some(who("broken"))).await;
    assert_eq!(
        (status, kind),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(AuthErrorKind::Unavailable)
        )
    );
    let (status, _, _) = send(&app, "GET", "/documents/db-down", Some(who("demo-user"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // The engine is never asked when the resource could not be loaded.
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|i| i.resource.id.as_deref() != Some("db-down"))
    );

    // Dry run: a denial and an error are logged and let through.
    let dry = Router::new()
        .route("/documents/{id}", get(|| async { "doc" }))
        .route_layer(RequireLayer::policy(requirement).dry_run(true));
    assert_eq!(
        send(&dry, "GET", "/documents/4", Some(who("demo-user")))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&dry, "GET", "/documents/1", Some(who("broken")))
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_policy_sees_the_client_address_and_a_default_action_name() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/documents/{id}", get(|| async { "doc" }))
        .route_layer(RequireLayer::policy(
            PolicyRequirement::new(owner_policy(seen.clone())).resource("Document", "id"),
        ));
    let mut request = with_identity(
        Request::get("/documents/2").body(Body::empty()).unwrap(),
        who("demo-user"),
    );
    let peer: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    request.extensions_mut().insert(peer);
    calls::call(&app, request).await;
    let input = seen.lock().unwrap()[0].clone();
    assert_eq!(input.context.client_addr.as_deref(), Some("203.0.113.9"));
    assert_eq!(input.action.name, "GET /documents/{id}");
    assert_eq!(
        input.resource.params,
        BTreeMap::from([("id".to_owned(), "2".to_owned())])
    );
}

// --- reload ---------------------------------------------------------------------------------

/// Version `n` of a policy: allowed, by its two policies `v<n>-a` and `v<n>-b`.
fn version(n: usize) -> impl Fn(&PolicyInput) -> Evaluation + Send + Sync + 'static {
    move |_input: &PolicyInput| {
        Evaluation::Ready(Ok(PolicyDecision::allow([
            format!("v{n}-a"),
            format!("v{n}-b"),
        ])))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_swaps_the_whole_policy_under_concurrent_requests() {
    let policy = Policy::new(version(0));
    let input = PolicyInput::new(
        &who("alice"),
        tower_api_guard::policy::Action::new("read", "GET", None),
        tower_api_guard::policy::Resource::new("Document", Some("1".into())),
        0,
    );
    let decisions = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (policy, input, decisions) = (policy.clone(), input.clone(), decisions.clone());
        readers.push(tokio::spawn(async move {
            let mut versions_seen = std::collections::BTreeSet::new();
            for _ in 0..20_000 {
                let Evaluation::Ready(Ok(decision)) = policy.evaluate(&input) else {
                    panic!("a ready decision")
                };
                let ids = decision.policies();
                let n = ids[0]
                    .trim_start_matches('v')
                    .trim_end_matches("-a")
                    .to_owned();
                assert_eq!(
                    ids,
                    [format!("v{n}-a"), format!("v{n}-b")],
                    "half a policy set"
                );
                versions_seen.insert(n);
                decisions.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
            versions_seen.len()
        }));
    }
    for n in 1..=200 {
        assert_eq!(policy.replace(version(n)), n as u64 + 1);
        tokio::task::yield_now().await;
    }
    for reader in readers {
        reader.await.unwrap();
    }
    assert_eq!(decisions.load(Ordering::Relaxed), 80_000);
    assert_eq!(policy.generation(), 201);
}

/// A policy file of our own format: one subject per line may read.
fn subjects_source(path: std::path::PathBuf) -> PolicySource {
    PolicySource::new([path.clone()], move || {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| PolicyError::new(PolicyErrorKind::Io, e.to_string()))?;
        if text.contains("syntax error") {
            return Err(PolicyError::new(
                PolicyErrorKind::Parse,
                "line 1: syntax error",
            ));
        }
        let allowed: Vec<String> = text.lines().map(str::to_owned).collect();
        Ok(move |input: &PolicyInput| {
            Evaluation::Ready(Ok(if allowed.contains(&input.principal.id) {
                PolicyDecision::allow(["list"])
            } else {
                PolicyDecision::deny(Vec::<String>::new())
            }))
        })
    })
}

fn allowed(policy: &Policy, subject: &str) -> bool {
    let input = PolicyInput::new(
        &who(subject),
        tower_api_guard::policy::Action::new("read", "GET", None),
        tower_api_guard::policy::Resource::new("Document", None),
        0,
    );
    matches!(policy.evaluate(&input), Evaluation::Ready(Ok(d)) if d.is_allowed())
}

#[tokio::test]
async fn a_broken_source_keeps_the_previous_policy() {
    let dir = common::files::tempdir("policy");
    let path = dir.join("subjects.txt");
    std::fs::write(&path, "alice\n").unwrap();
    let policy = Policy::load(subjects_source(path.clone())).unwrap();
    assert!(allowed(&policy, "alice") && !allowed(&policy, "bob"));

    std::fs::write(&path, "bob\n").unwrap();
    assert_eq!(policy.reload().unwrap(), 2);
    assert!(!allowed(&policy, "alice") && allowed(&policy, "bob"));

    let (events, _guard) = common::events::Captured::install(tracing::Level::ERROR);
    std::fs::write(&path, "syntax error\n").unwrap();
    assert_eq!(policy.reload().unwrap_err().kind(), PolicyErrorKind::Parse);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(policy.reload().unwrap_err().kind(), PolicyErrorKind::Io);
    // Still version 2, in force and whole.
    assert_eq!(policy.generation(), 2);
    assert!(allowed(&policy, "bob") && !allowed(&policy, "alice"));
    assert!(events.take().contains("the previous policy stays in force"));

    // A source that does not load at start is an error, not an empty policy.
    assert!(Policy::load(subjects_source(dir.join("missing.txt"))).is_err());
}

#[tokio::test]
async fn the_watch_reloads_a_changed_file() {
    let dir = common::files::tempdir("policy");
    let path = dir.join("subjects.txt");
    std::fs::write(&path, "alice\n").unwrap();
    let policy = Policy::load(subjects_source(path.clone())).unwrap();
    let _watch = policy.watch(Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(60)).await;
    std::fs::write(&path, "bob\n").unwrap();
    // Wait for the reload (bounded); this asserts that it happens, not how fast.
    for _ in 0..500 {
        if policy.generation() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(policy.generation(), 2);
    assert!(allowed(&policy, "bob"));
}

// --- a real tonic service ---------------------------------------------------------------

#[tokio::test]
async fn a_tonic_service_guarded_by_a_policy() {
    use common::grpc::{GrpcServer, check};

    let seen = Arc::new(Mutex::new(Vec::new()));
    let requirement = PolicyRequirement::new(owner_policy(seen.clone()))
        .resource("Service", "id")
        .loader(|_kind: &str, _id: &str| ResourceLoading::Ready(Ok(Map::new())));
    for (subject, roles, expected) in [
        ("aud", vec!["auditor"], tonic::Code::Ok),
        ("bob", vec![], tonic::Code::PermissionDenied),
        ("broken", vec![], tonic::Code::Unavailable),
    ] {
        // The gRPC method is the action: name it for the policy.
        let layer = ServiceBuilder::new()
            .layer(IdentityLayer::new(caller(subject).roles(roles).build()))
            .layer(RequireLayer::policy(
                requirement.clone().action(http::Method::POST, "read"),
            ))
            .into_inner();
        let server = GrpcServer::start(layer).await;
        let mut client = server.client().await;
        let code = match check(&mut client, &[]).await {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        assert_eq!(code, expected, "{subject}");
        drop(client);
        server.stop().await;
    }
    let input = seen.lock().unwrap()[0].clone();
    assert_eq!(input.action.method, "POST");
    assert_eq!(input.action.route, None);
}

#[test]
fn a_route_match_reads_its_params() {
    let found = RouteMatch::new("/users/{id}", [("id", "ann")]);
    assert_eq!(
        (found.route(), found.param("id"), found.param("x")),
        ("/users/{id}", Some("ann"), None)
    );
}

// --- an OPA sidecar ----------------------------------------------------------------------

/// A stand-in for OPA on 127.0.0.1:0: `POST /v1/data/guard/allow` answers by the principal.
#[cfg(feature = "opa")]
async fn fake_opa() -> String {
    use axum::Json;
    use axum::routing::post;

    async fn decide(Json(body): Json<Value>) -> axum::response::Response {
        use axum::response::IntoResponse;
        match body["input"]["principal"]["id"].as_str() {
            Some("alice") => Json(json!({"result": true})).into_response(),
            Some("bob") => Json(json!({"result": false})).into_response(),
            Some("nobody") => Json(json!({})).into_response(),
            Some("weird") => Json(json!({"result": "yes"})).into_response(),
            Some("slow") => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Json(json!({"result": true})).into_response()
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/v1/data/guard/allow", post(decide));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

// Row 38: an OPA sidecar that is down, slow or answers nonsense fails closed.
#[cfg(feature = "opa")]
#[tokio::test]
async fn an_opa_sidecar_through_the_layer() {
    use tower_api_guard::policy::opa::OpaClient;

    let opa = OpaClient::new(&fake_opa().await, "guard/allow")
        .unwrap()
        .timeout(Duration::from_millis(300));
    let app = Router::new()
        .route("/documents/{id}", get(|| async { "doc" }))
        .route_layer(RequireLayer::policy(
            PolicyRequirement::new(Policy::new(opa)).resource("Document", "id"),
        ));
    for (subject, expected) in [
        ("alice", StatusCode::OK),
        ("bob", StatusCode::FORBIDDEN),
        ("nobody", StatusCode::FORBIDDEN),
        ("weird", StatusCode::SERVICE_UNAVAILABLE),
        ("slow", StatusCode::SERVICE_UNAVAILABLE),
        ("crash", StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let (status, _, _) = send(&app, "GET", "/documents/1", Some(who(subject))).await;
        assert_eq!(status, expected, "{subject}");
    }
}

// --- the route table's own matcher agrees with axum's router ---------------------------

mod matcher_agrees_with_axum {
    use super::*;
    use axum::extract::RawPathParams;
    use proptest::prelude::*;

    const TEMPLATES: [&str; 4] = [
        "/users/{id}/orders",
        "/users/me",
        "/files/{*path}",
        "/a/{x}/b/{y}",
    ];

    /// What axum's router makes of `path`: the matched route and its decoded parameters.
    async fn axum_match(path: &str) -> Option<String> {
        let mut router = Router::new();
        for template in TEMPLATES {
            let route = template.to_owned();
            router = router.route(
                template,
                get(move |params: RawPathParams| {
                    let route = route.clone();
                    async move {
                        let mut text = route;
                        for (k, v) in params.iter() {
                            text.push_str(&format!(" {k}={v}"));
                        }
                        text
                    }
                }),
            );
        }
        let request = Request::get(path).body(Body::empty()).ok()?;
        let response = router.oneshot(request).await.unwrap();
        if response.status() != StatusCode::OK {
            return None;
        }
        Some(calls::body_text(response).await)
    }

    /// What the route table alone makes of `path`.
    async fn table_match(path: &str) -> Option<String> {
        let mut table = RouteTable::new();
        for template in TEMPLATES {
            table = table
                .route(&format!("GET {template}"), Requirement::authenticated())
                .unwrap();
        }
        let svc = ServiceBuilder::new()
            .layer(RequireLayer::routes(table))
            .service_fn(|request: Request<()>| async move {
                let found = request.extensions().get::<RouteMatch>().cloned();
                let text = found.map_or(String::from("no route match"), |f| {
                    let mut text = f.route().to_owned();
                    for (k, v) in f.params() {
                        text.push_str(&format!(" {k}={v}"));
                    }
                    text
                });
                Ok::<_, Infallible>(Response::new(text))
            });
        let request = with_identity(Request::get(path).body(()).ok()?, who("x"));
        let response = svc.oneshot(request).await.unwrap();
        if response.status() != StatusCode::OK {
            return None;
        }
        Some(calls::body_text(response).await)
    }

    fn path() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            Just("users".to_owned()),
            Just("orders".to_owned()),
            Just("files".to_owned()),
            Just("me".to_owned()),
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just(String::new()),
            "[a-zA-Z0-9._~;=-]{1,6}",
            "(%[0-9a-fA-F]{2}|%[0-9a-fA-F]?|[a-z.]){1,5}",
        ];
        prop::collection::vec(segment, 1..6).prop_map(|segments| {
            let mut path = String::new();
            for s in segments {
                path.push('/');
                path.push_str(&s);
            }
            path
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn on_every_path(path in path()) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (ours, theirs) = runtime.block_on(async {
                (table_match(&path).await, axum_match(&path).await)
            });
            prop_assert_eq!(ours, theirs, "{}", path);
        }
    }
}
