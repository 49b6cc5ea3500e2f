//! Registered-claim validation and identity mapping.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::error::{AuthError, ReasonCode};
use crate::identity::{Identity, Source, claim_path};

/// A list of claim names (or paths) from any strings: the builders' settings.
pub(crate) fn strings<I, S>(items: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    items.into_iter().map(Into::into).collect()
}

/// The latest NumericDate accepted: 9999-12-31T23:59:59Z. Larger values (1e308, 2^64)
/// are malformed, not "far in the future".
pub(crate) const MAX_NUMERIC_DATE: f64 = 253_402_300_799.0;

pub(crate) struct ClaimRules<'a> {
    pub issuer: &'a str,
    pub audiences: &'a [String],
    pub leeway: f64,
    pub max_age: Option<Duration>,
    pub required: &'a [String],
    pub subject_claims: &'a [String],
    pub scope_claims: &'a [String],
    pub role_claims: &'a [String],
    pub tenant_claim: Option<&'a str>,
    pub plan_claim: Option<&'a str>,
    pub role_model: Option<&'a crate::identity::RoleModel>,
}

fn invalid(reason: &'static str) -> AuthError {
    AuthError::invalid_token(reason)
}

/// A NumericDate: a finite, non-negative JSON number no larger than [`MAX_NUMERIC_DATE`].
/// `Ok(None)` when absent; any other JSON type is an error, never "absent".
pub(crate) fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<f64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() && (0.0..=MAX_NUMERIC_DATE).contains(&v) => Ok(Some(v)),
            _ => Err(AuthError::invalid_token(format!("{name} is out of range"))),
        },
        Some(_) => Err(AuthError::invalid_token(format!("{name} is not a number"))),
    }
}

pub(crate) fn optional_string<'a>(
    claims: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(AuthError::invalid_token(format!("{name} is not a string"))),
    }
}

/// Validate the registered claims and build the identity.
pub(crate) fn validate(
    claims: Map<String, Value>,
    rules: &ClaimRules<'_>,
    now: f64,
) -> Result<Identity, AuthError> {
    let exp = numeric_date(&claims, "exp")?.ok_or_else(|| invalid("exp missing"))?;
    if now - rules.leeway >= exp {
        return Err(invalid("token expired").with_code(ReasonCode::Expired));
    }
    if let Some(nbf) = numeric_date(&claims, "nbf")?
        && now + rules.leeway < nbf
    {
        return Err(invalid("token not yet valid (nbf)").with_code(ReasonCode::NotYetValid));
    }
    let iat = numeric_date(&claims, "iat")?;
    if let Some(iat) = iat
        && iat > now + rules.leeway
    {
        return Err(invalid("token issued in the future (iat)").with_code(ReasonCode::NotYetValid));
    }
    if let Some(max_age) = rules.max_age {
        let iat = iat.ok_or_else(|| invalid("iat missing and a maximum age is set"))?;
        if now - iat > max_age.as_secs_f64() + rules.leeway {
            return Err(invalid("token older than the maximum age").with_code(ReasonCode::Expired));
        }
    }

    match optional_string(&claims, "iss")? {
        Some(iss) if iss == rules.issuer => {}
        Some(_) => return Err(invalid("iss does not match").with_code(ReasonCode::BadIssuer)),
        None => return Err(invalid("iss missing")),
    }

    let aud_ok = match claims.get("aud") {
        None => return Err(invalid("aud missing")),
        Some(Value::String(a)) => rules.audiences.iter().any(|x| x == a),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(invalid("aud is an empty array"));
            }
            let mut any = false;
            for item in items {
                let Value::String(a) = item else {
                    return Err(invalid("aud array holds a non-string"));
                };
                any |= rules.audiences.iter().any(|x| x == a);
            }
            any
        }
        Some(_) => return Err(invalid("aud is neither a string nor an array")),
    };
    if !aud_ok {
        return Err(invalid("aud does not match").with_code(ReasonCode::BadAudience));
    }
    let source = Source::Jwt {
        issuer: rules.issuer.to_owned(),
    };
    identity_from(claims, rules, source, Some(exp))
}

/// Build the identity from claims whose time, issuer and audience were checked: the
/// subject (configured claims in order), scopes, roles, tenant, plan and role model of
/// `rules`. Shared by JWTs and introspection responses.
pub(crate) fn identity_from(
    claims: Map<String, Value>,
    rules: &ClaimRules<'_>,
    source: Source,
    exp: Option<f64>,
) -> Result<Identity, AuthError> {
    for name in ["sub", "jti", "client_id", "azp"] {
        optional_string(&claims, name)?;
    }
    for name in rules.required {
        if claim_path_map(&claims, name).is_none() {
            return Err(AuthError::invalid_token(format!(
                "required claim missing: {}",
                printable(name)
            )));
        }
    }

    let mut subject = None;
    for name in rules.subject_claims {
        match claim_path_map(&claims, name) {
            None => continue,
            Some(Value::String(s)) if !s.is_empty() => {
                subject = Some(s.clone());
                break;
            }
            Some(_) => return Err(invalid("subject claim is not a non-empty string")),
        }
    }
    let subject = subject.ok_or_else(|| invalid("no subject claim"))?;

    let mut scopes: Vec<String> = Vec::new();
    for name in rules.scope_claims {
        match claim_path_map(&claims, name) {
            None => {}
            Some(Value::String(s)) => {
                scopes.extend(s.split(' ').filter(|s| !s.is_empty()).map(str::to_owned))
            }
            // The registered `scope` claim is one space-delimited string (RFC 8693 §4.2,
            // RFC 9068 §2.2.3); only other scope claims (`scp`, `permissions`) may be arrays.
            Some(Value::Array(_)) if name == "scope" => {
                return Err(invalid("scope is not a space-delimited string"));
            }
            Some(Value::Array(items)) => {
                for item in items {
                    let Value::String(s) = item else {
                        return Err(invalid("scope array holds a non-string"));
                    };
                    scopes.push(s.clone());
                }
            }
            Some(_) => return Err(invalid("scope claim is neither a string nor an array")),
        }
    }

    let mut roles: Vec<String> = Vec::new();
    for path in rules.role_claims {
        match claim_path_map(&claims, path) {
            None => {}
            Some(Value::String(s)) => roles.push(s.clone()),
            Some(Value::Array(items)) => {
                for item in items {
                    let Value::String(s) = item else {
                        return Err(invalid("role array holds a non-string"));
                    };
                    roles.push(s.clone());
                }
            }
            Some(_) => return Err(invalid("role claim is neither a string nor an array")),
        }
    }

    let tenant = string_at(&claims, rules.tenant_claim, "tenant claim is not a string")?;
    let plan = string_at(&claims, rules.plan_claim, "plan claim is not a string")?;

    let mut builder = Identity::builder(subject, source)
        .scopes(scopes)
        .roles(roles);
    if let Some(exp) = exp {
        builder = builder.expires_at(UNIX_EPOCH + Duration::from_secs_f64(exp));
    }
    if let Some(t) = tenant {
        builder = builder.tenant(t);
    }
    if let Some(p) = plan {
        builder = builder.plan(p);
    }
    if let Some(model) = rules.role_model {
        builder = builder.role_model(model);
    }
    Ok(builder.claims(Value::Object(claims)).build())
}

fn string_at(
    claims: &Map<String, Value>,
    path: Option<&str>,
    err: &'static str,
) -> Result<Option<String>, AuthError> {
    match path.and_then(|p| claim_path_map(claims, p)) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(err)),
    }
}

fn claim_path_map<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let (first, rest) = path.split_once('.')?;
    claim_path(claims.get(first)?, rest)
}

/// A configured claim name, safe for a log line.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: f64 = 1_700_000_000.0;

    fn rules() -> ClaimRules<'static> {
        static AUD: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["api".into()]);
        static SUB: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["sub".into(), "client_id".into()]);
        static SCOPE: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["scope".into(), "scp".into()]);
        static ROLES: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["roles".into(), "realm_access.roles".into()]);
        ClaimRules {
            issuer: "https://iss",
            audiences: &AUD,
            leeway: 60.0,
            max_age: None,
            required: &[],
            subject_claims: &SUB,
            scope_claims: &SCOPE,
            role_claims: &ROLES,
            tenant_claim: Some("tid"),
            plan_claim: None,
            role_model: None,
        }
    }

    fn base() -> Map<String, Value> {
        let Value::Object(m) = json!({"iss": "https://iss", "aud": "api", "sub": "alice", "exp": NOW + 100.0, "iat": NOW})
        else {
            unreachable!()
        };
        m
    }

    fn with(k: &str, v: Value) -> Map<String, Value> {
        let mut m = base();
        m.insert(k.into(), v);
        m
    }

    fn without(k: &str) -> Map<String, Value> {
        let mut m = base();
        m.remove(k);
        m
    }

    fn check(m: Map<String, Value>) -> Result<Identity, AuthError> {
        validate(m, &rules(), NOW)
    }

    #[test]
    fn accepts_base() {
        let id = check(base()).unwrap();
        assert_eq!(id.subject(), "alice");
        assert_eq!(
            id.expires_at(),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_100))
        );
    }

    #[test]
    fn exp_rules() {
        assert!(check(without("exp")).is_err());
        for bad in [
            json!("never"),
            json!("9999999999"),
            json!(null),
            json!(true),
            json!([]),
            json!({}),
            json!(-1),
            json!(1e308),
            json!(18446744073709551615u64),
            json!(253402300800i64),
        ] {
            assert!(check(with("exp", bad.clone())).is_err(), "{bad}");
        }
        // leeway: 59 s past exp is still fine, 60 s is not
        assert!(check(with("exp", json!(NOW - 59.0))).is_ok());
        assert!(check(with("exp", json!(NOW - 60.0))).is_err());
        assert!(check(with("exp", json!(NOW + 0.5))).is_ok()); // fractional allowed
    }

    #[test]
    fn nbf_iat_rules() {
        assert!(check(with("nbf", json!(NOW + 59.0))).is_ok());
        assert!(check(with("nbf", json!(NOW + 61.0))).is_err());
        assert!(check(with("nbf", json!("9999999999"))).is_err());
        assert!(check(with("iat", json!(NOW + 61.0))).is_err());
        assert!(check(with("iat", json!(null))).is_err());
        let mut r = rules();
        r.max_age = Some(Duration::from_secs(600));
        let mut m = with("iat", json!(NOW - 600.0 - 61.0));
        assert!(validate(m.clone(), &r, NOW).is_err());
        m.insert("iat".into(), json!(NOW - 600.0));
        assert!(validate(m, &r, NOW).is_ok());
        assert!(validate(without("iat"), &r, NOW).is_err());
    }

    #[test]
    fn iss_and_aud() {
        assert!(check(without("iss")).is_err());
        for bad in ["https://iss/", "HTTPS://ISS", "https://iss2", ""] {
            assert!(check(with("iss", json!(bad))).is_err());
        }
        assert!(check(with("iss", json!(["https://iss"]))).is_err());
        assert!(check(without("aud")).is_err());
        assert!(check(with("aud", json!([]))).is_err());
        assert!(check(with("aud", json!("other"))).is_err());
        assert!(check(with("aud", json!(["other", "api"]))).is_ok());
        assert!(check(with("aud", json!(["api", 1]))).is_err());
        assert!(check(with("aud", json!(1))).is_err());
        assert!(check(with("aud", json!("API"))).is_err());
    }

    #[test]
    fn types_of_registered_claims() {
        for name in ["sub", "jti", "client_id"] {
            assert!(check(with(name, json!(1))).is_err(), "{name}");
            assert!(check(with(name, json!(null))).is_err(), "{name}");
        }
        assert!(check(with("roles", json!({"a": 1}))).is_err());
        assert!(check(with("tid", json!(7))).is_err());
    }

    #[test]
    fn scope_is_a_string_and_scp_a_string_or_array() {
        // RFC 8693 §4.2 / RFC 9068 §2.2.3: `scope` is one space-delimited string.
        for bad in [
            json!(["a", "b"]),
            json!([]),
            json!(["a b"]),
            json!(5),
            json!(null),
            json!({"a": true}),
        ] {
            let err = check(with("scope", bad.clone())).unwrap_err();
            assert_eq!(err.kind(), crate::AuthErrorKind::InvalidToken, "{bad}");
        }
        let id = check(with("scope", json!("a b"))).unwrap();
        assert_eq!(id.scopes().iter().collect::<Vec<_>>(), ["a", "b"]);
        // `scp` (Entra ID, Okta) may be either form, but only of strings.
        let id = check(with("scp", json!(["a", "b"]))).unwrap();
        assert_eq!(id.scopes().iter().collect::<Vec<_>>(), ["a", "b"]);
        let id = check(with("scp", json!("a b"))).unwrap();
        assert_eq!(id.scopes().iter().collect::<Vec<_>>(), ["a", "b"]);
        for bad in [json!(["a", 1]), json!(5), json!(null)] {
            assert!(check(with("scp", bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn subject_fallback() {
        let mut m = without("sub");
        assert!(check(m.clone()).is_err());
        m.insert("client_id".into(), json!("svc-1"));
        assert_eq!(check(m).unwrap().subject(), "svc-1");
        assert!(check(with("sub", json!(""))).is_err());
    }

    #[test]
    fn identity_mapping() {
        let mut m = with("scope", json!("items:read  items:write"));
        m.insert("scp".into(), json!(["extra"]));
        m.insert("realm_access".into(), json!({"roles": ["admin"]}));
        m.insert("roles".into(), json!("viewer"));
        m.insert("tid".into(), json!("acme"));
        let id = check(m).unwrap();
        assert_eq!(
            id.scopes().iter().collect::<Vec<_>>(),
            ["extra", "items:read", "items:write"]
        );
        assert!(id.has_role("admin") && id.has_role("viewer"));
        assert_eq!(id.tenant(), Some("acme"));
        assert_eq!(id.claim("realm_access.roles"), Some(&json!(["admin"])));
    }

    #[test]
    fn required_claims() {
        let req = vec!["jti".to_owned()];
        let mut r = rules();
        r.required = &req;
        assert!(validate(base(), &r, NOW).is_err());
        assert!(validate(with("jti", json!("x")), &r, NOW).is_ok());
    }
}
