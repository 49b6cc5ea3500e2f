//! [`InternalJwtIssuer`]: short-lived JWTs that tell upstream services who the caller is
//! (Ory Oathkeeper's `id_token` mutator).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::clock::{Clock, SystemClock};
use crate::error::ConfigError;
use crate::identity::Identity;
use crate::jwt::Algorithm;

/// The default lifetime of an internal JWT.
pub const DEFAULT_INTERNAL_JWT_LIFETIME: Duration = Duration::from_secs(60);

enum Signer {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

/// Mints short-lived JWTs for upstream services: `iss` the gateway, `aud` the upstream,
/// `iat`/`exp` (60 s by default), `sub`, `scope`, `roles`, `tenant`, signed with an ES256 or
/// EdDSA key generated at start (the private key never leaves the process). Upstreams verify
/// them like any issuer's, against [`jwks_json`](Self::jwks_json) served by the gateway.
///
/// Signing costs tens of microseconds, so a token is reused for the same identity (subject,
/// source, scopes, roles, tenant) while more than half its lifetime is left.
///
/// ```
/// use tower_api_guard::jwt::{Algorithm, JwtAuthenticator, StaticKeys};
/// use tower_api_guard::testing::caller;
/// use tower_api_guard::upstream::InternalJwtIssuer;
///
/// let gateway = InternalJwtIssuer::generate(Algorithm::ES256, "https://gw.example", "orders")
///     .unwrap();
/// let token = gateway.token_for(&caller("alice").scopes(["orders:read"]).build()).unwrap();
///
/// // An upstream service, with the JWK set the gateway serves:
/// let upstream = JwtAuthenticator::builder("https://gw.example", "orders")
///     .keys(StaticKeys::from_jwks_json(gateway.jwks_json().as_bytes()).unwrap())
///     .build()
///     .unwrap();
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// assert_eq!(upstream.verify(&token).await.unwrap().subject(), "alice");
/// # });
/// ```
#[derive(Clone)]
pub struct InternalJwtIssuer(Arc<Inner>);

struct Inner {
    issuer: String,
    audience: String,
    lifetime: Duration,
    kid: String,
    alg: Algorithm,
    signer: Signer,
    jwk: Map<String, Value>,
    clock: Arc<dyn Clock>,
    /// Tokens by a digest of the identity's content: the header value and its `exp`.
    minted: quick_cache::sync::Cache<[u8; 32], (HeaderValue, f64)>,
}

impl fmt::Debug for InternalJwtIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InternalJwtIssuer")
            .field("issuer", &self.0.issuer)
            .field("audience", &self.0.audience)
            .field("alg", &self.0.alg)
            .field("kid", &self.0.kid)
            .finish_non_exhaustive()
    }
}

impl InternalJwtIssuer {
    /// A fresh key for `alg` (ES256 or EdDSA), tokens for `audience` from `issuer`.
    ///
    /// # Errors
    /// Another algorithm, an empty issuer or audience, or a failed key generation.
    pub fn generate(
        alg: Algorithm,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let (issuer, audience) = (issuer.into(), audience.into());
        if issuer.is_empty() || audience.is_empty() {
            return Err(ConfigError::setting(
                "an internal JWT needs an issuer and an audience",
            ));
        }
        let failed = |_| ConfigError::key("internal JWT key generation failed");
        let (signer, mut jwk) = match alg {
            Algorithm::ES256 => {
                let pair =
                    EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(failed)?;
                // Uncompressed SEC1 point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                let Some((x, y)) = point.get(1..).map(|xy| xy.split_at(32)) else {
                    return Err(ConfigError::key("unexpected EC public key"));
                };
                let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)});
                (Signer::Es256(pair), jwk)
            }
            Algorithm::EdDSA => {
                let pair = Ed25519KeyPair::generate().map_err(failed)?;
                let jwk =
                    json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())});
                (Signer::EdDsa(pair), jwk)
            }
            _ => {
                return Err(ConfigError::setting(
                    "internal JWTs are signed with ES256 or EdDSA",
                ));
            }
        };
        let Value::Object(map) = &mut jwk else {
            return Err(ConfigError::key("unexpected JWK"));
        };
        let thumbprint = crate::jwt::keys::jwk_thumbprint(map)
            .ok_or_else(|| ConfigError::key("no thumbprint for the internal key"))?;
        let kid = format!("internal-{}", &thumbprint[..16]);
        map.insert("kid".into(), kid.clone().into());
        map.insert("alg".into(), alg.as_str().into());
        map.insert("use".into(), "sig".into());
        Ok(Self(Arc::new(Inner {
            issuer,
            audience,
            lifetime: DEFAULT_INTERNAL_JWT_LIFETIME,
            kid,
            alg,
            signer,
            jwk: map.clone(),
            clock: Arc::new(SystemClock),
            minted: quick_cache::sync::Cache::new(10_000),
        })))
    }

    fn inner_mut(&mut self) -> Option<&mut Inner> {
        Arc::get_mut(&mut self.0)
    }

    /// How long a token lives (default 60 s, whole seconds, between 1 s and 1 hour).
    ///
    /// # Errors
    /// A lifetime outside that range, or an issuer already shared (set it before cloning).
    pub fn lifetime(mut self, lifetime: Duration) -> Result<Self, ConfigError> {
        if !(1..=3600).contains(&lifetime.as_secs()) {
            return Err(ConfigError::setting(
                "an internal JWT lives between 1 second and 1 hour",
            ));
        }
        let inner = self
            .inner_mut()
            .ok_or_else(|| ConfigError::setting("set the lifetime before sharing the issuer"))?;
        inner.lifetime = Duration::from_secs(lifetime.as_secs());
        Ok(self)
    }

    /// Use this clock (tests use [`ManualClock`](crate::clock::ManualClock)).
    ///
    /// # Errors
    /// An issuer already shared (set it before cloning).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Result<Self, ConfigError> {
        let inner = self
            .inner_mut()
            .ok_or_else(|| ConfigError::setting("set the clock before sharing the issuer"))?;
        inner.clock = clock;
        Ok(self)
    }

    /// The public JWK set upstreams verify with: `{"keys":[…]}`, public members only.
    pub fn jwks_json(&self) -> String {
        json!({ "keys": [Value::Object(self.0.jwk.clone())] }).to_string()
    }

    /// A token for `identity` (reused while more than half its lifetime is left).
    ///
    /// # Errors
    /// Signing failed (it does not, short of a broken RNG).
    pub fn token_for(&self, identity: &Identity) -> Result<String, ConfigError> {
        let value = self
            .bearer_for(identity)
            .ok_or_else(|| ConfigError::key("internal JWT signing failed"))?;
        let text = value.to_str().unwrap_or_default();
        Ok(text.strip_prefix("Bearer ").unwrap_or(text).to_owned())
    }

    /// `Bearer <token>` for `identity`, as a header value.
    pub(crate) fn bearer_for(&self, identity: &Identity) -> Option<HeaderValue> {
        let inner = &*self.0;
        let now = inner.clock.now_unix();
        let key = digest(identity);
        if let Some((value, exp)) = inner.minted.get(&key)
            && exp - now > inner.lifetime.as_secs_f64() / 2.0
        {
            return Some(value);
        }
        let iat = now.floor();
        let exp = iat + inner.lifetime.as_secs_f64();
        let mut claims = json!({
            "iss": inner.issuer,
            "aud": inner.audience,
            "sub": identity.subject(),
            "iat": iat as u64,
            "exp": exp as u64,
            "scope": identity.scopes().iter().collect::<Vec<_>>().join(" "),
            "roles": identity.roles().iter().collect::<Vec<_>>(),
            "src": identity.source().to_string(),
        });
        if let (Some(tenant), Value::Object(map)) = (identity.tenant(), &mut claims) {
            map.insert("tenant".into(), tenant.into());
        }
        let header = json!({"alg": inner.alg.as_str(), "typ": "JWT", "kid": inner.kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = match &inner.signer {
            Signer::Es256(pair) => pair
                .sign(&SystemRandom::new(), input.as_bytes())
                .ok()?
                .as_ref()
                .to_vec(),
            Signer::EdDsa(pair) => pair.sign(input.as_bytes()).as_ref().to_vec(),
        };
        let value = HeaderValue::from_str(&format!("Bearer {input}.{}", b64(&signature))).ok()?;
        inner.minted.insert(key, (value.clone(), exp));
        Some(value)
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What a token says about an identity, digested (length-prefixed parts).
fn digest(identity: &Identity) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut part = |s: &str| {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    };
    part(identity.subject());
    part(&identity.source().to_string());
    part(identity.tenant().unwrap_or(""));
    for scope in identity.scopes().iter() {
        part(scope);
    }
    part("\u{0}roles");
    for role in identity.roles().iter() {
        part(role);
    }
    h.finalize().into()
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::jwt::{JwtAuthenticator, StaticKeys};
    use crate::testing::caller;

    fn verifier(
        gateway: &InternalJwtIssuer,
        clock: Arc<ManualClock>,
        aud: &str,
    ) -> JwtAuthenticator {
        JwtAuthenticator::builder("https://gw.example", aud)
            .keys(StaticKeys::from_jwks_json(gateway.jwks_json().as_bytes()).unwrap())
            .clock(clock)
            .leeway(Duration::ZERO)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn tokens_verify_upstream_are_reused_for_half_their_life_and_expire() {
        for alg in [Algorithm::ES256, Algorithm::EdDSA] {
            let clock = Arc::new(ManualClock::at_unix(1_800_000_000));
            let gateway = InternalJwtIssuer::generate(alg, "https://gw.example", "orders")
                .unwrap()
                .lifetime(Duration::from_secs(60))
                .unwrap()
                .clock(clock.clone())
                .unwrap();
            let alice = caller("alice")
                .scopes(["orders:read"])
                .roles(["buyer"])
                .build();
            let token = gateway.token_for(&alice).unwrap();
            let upstream = verifier(&gateway, clock.clone(), "orders");
            let id = upstream.verify(&token).await.unwrap();
            assert_eq!(id.subject(), "alice");
            assert!(id.has_scope("orders:read") && id.has_role("buyer"));
            // Another audience refuses it.
            assert!(
                verifier(&gateway, clock.clone(), "billing")
                    .verify(&token)
                    .await
                    .is_err()
            );
            // Reused within half its lifetime, re-minted after.
            clock.advance(Duration::from_secs(29));
            assert_eq!(gateway.token_for(&alice).unwrap(), token);
            clock.advance(Duration::from_secs(2));
            let renewed = gateway.token_for(&alice).unwrap();
            assert_ne!(renewed, token);
            // Another identity, another token.
            let bob = caller("bob")
                .scopes(["orders:read"])
                .roles(["buyer"])
                .build();
            assert_ne!(gateway.token_for(&bob).unwrap(), renewed);
            let more = caller("alice")
                .scopes(["orders:read", "orders:write"])
                .roles(["buyer"])
                .build();
            assert_ne!(gateway.token_for(&more).unwrap(), renewed);
            // Expired: refused.
            clock.advance(Duration::from_secs(31));
            assert!(upstream.verify(&token).await.is_err(), "{alg}");
        }
    }

    #[test]
    fn an_independent_library_verifies_it_and_the_jwks_is_public_only() {
        // Both backends are on under --all-features: choose jsonwebtoken's provider.
        crate::jwt::keys::install_provider();
        let gateway =
            InternalJwtIssuer::generate(Algorithm::ES256, "https://gw.example", "orders").unwrap();
        let token = gateway.token_for(&caller("alice").build()).unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&gateway.jwks_json()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&["orders"]);
        validation.set_issuer(&["https://gw.example"]);
        let data = jsonwebtoken::decode::<Value>(&token, &key, &validation).unwrap();
        assert_eq!(data.claims["sub"], "alice");
        let jwks: Value = serde_json::from_str(&gateway.jwks_json()).unwrap();
        let jwk = jwks["keys"][0].as_object().unwrap();
        assert!(!jwk.contains_key("d"));
        assert_eq!(jwk["kid"], jwks["keys"][0]["kid"]);
    }

    #[test]
    fn bad_settings_are_refused() {
        let ok = || InternalJwtIssuer::generate(Algorithm::EdDSA, "https://gw", "up").unwrap();
        assert!(InternalJwtIssuer::generate(Algorithm::RS256, "https://gw", "up").is_err());
        assert!(InternalJwtIssuer::generate(Algorithm::ES256, "", "up").is_err());
        assert!(ok().lifetime(Duration::ZERO).is_err());
        assert!(ok().lifetime(Duration::from_secs(3601)).is_err());
        let shared = ok();
        let _clone = shared.clone();
        assert!(
            shared.lifetime(Duration::from_secs(30)).is_err(),
            "already shared"
        );
    }
}
