//! Several issuers behind one authenticator: [`JwtIssuers`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::authenticator::{JwtCredential, JwtFuture};
use super::{JwtAuthenticator, jose};
use crate::auth::Authenticator;
use crate::error::{AuthError, ConfigError, ReasonCode};
use crate::extract::TokenExtractor;
use crate::head::RequestHead;

/// Routes each token by its (not yet verified) `iss` to the [`JwtAuthenticator`] of that
/// issuer, with that issuer's keys, audiences, algorithms and claim mapping. A token naming
/// an issuer that is not configured is rejected before any key is looked up or fetched.
///
/// Bearer tokens only: a DPoP-bound token (`cnf.jkt`) is refused by it, whatever the DPoP
/// settings of the routed authenticator; certificate-bound tokens work (the request's
/// client certificate is kept).
///
/// # Performance
/// Routing parses the token's claims once more than a single [`JwtAuthenticator`] does
/// (well under a microsecond for a typical token).
///
/// ```
/// # #[cfg(feature = "testing")] {
/// use tower_api_guard::jwt::{JwtAuthenticator, JwtIssuers};
/// use tower_api_guard::testing::TestIssuer;
///
/// let staff = TestIssuer::new("https://staff.example");
/// let partners = TestIssuer::new("https://partners.example");
/// let issuers = JwtIssuers::new([
///     JwtAuthenticator::builder("https://staff.example", "api").keys(staff.static_keys()).build().unwrap(),
///     JwtAuthenticator::builder("https://partners.example", "api").keys(partners.static_keys()).build().unwrap(),
/// ])
/// .unwrap();
/// # }
/// ```
#[derive(Clone)]
pub struct JwtIssuers {
    by_issuer: Arc<HashMap<String, JwtAuthenticator>>,
    extractor: TokenExtractor,
}

impl fmt::Debug for JwtIssuers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut issuers: Vec<&str> = self.by_issuer.keys().map(String::as_str).collect();
        issuers.sort_unstable();
        f.debug_struct("JwtIssuers")
            .field("issuers", &issuers)
            .finish_non_exhaustive()
    }
}

impl JwtIssuers {
    /// One authenticator per issuer. Tokens are read with the default extractor
    /// (`Authorization: Bearer`); change it with [`extractor`](Self::extractor).
    ///
    /// # Errors
    /// No authenticator, or two for the same issuer.
    pub fn new(
        authenticators: impl IntoIterator<Item = JwtAuthenticator>,
    ) -> Result<Self, ConfigError> {
        let mut by_issuer = HashMap::new();
        for auth in authenticators {
            let issuer = auth.issuer().to_owned();
            if by_issuer.insert(issuer, auth).is_some() {
                return Err(ConfigError::setting(
                    "two authenticators for the same issuer",
                ));
            }
        }
        if by_issuer.is_empty() {
            return Err(ConfigError::setting("no issuer configured"));
        }
        Ok(Self {
            by_issuer: Arc::new(by_issuer),
            extractor: TokenExtractor::default(),
        })
    }

    /// Where tokens are read from.
    #[must_use]
    pub fn extractor(mut self, extractor: TokenExtractor) -> Self {
        self.extractor = extractor;
        self
    }

    /// The authenticator for `token`'s unverified `iss`.
    fn route(&self, token: &str) -> Result<&JwtAuthenticator, AuthError> {
        let malformed =
            |r: &'static str| AuthError::invalid_token(r).with_code(ReasonCode::Malformed);
        let compact = jose::split_compact(token).map_err(malformed)?;
        let claims = jose::decode_b64url(compact.claims).map_err(malformed)?;
        let claims = jose::parse_object(&claims).map_err(malformed)?;
        match claims.get("iss") {
            Some(Value::String(iss)) => self.by_issuer.get(iss).ok_or_else(|| {
                AuthError::invalid_token("issuer not configured").with_code(ReasonCode::BadIssuer)
            }),
            Some(_) => Err(AuthError::invalid_token("iss is not a string")),
            None => Err(AuthError::invalid_token("iss missing")),
        }
    }

    /// Verify a token outside a layer.
    ///
    /// # Errors
    /// Exactly the rejections the layer would give.
    pub async fn verify(&self, token: &str) -> Result<crate::Identity, AuthError> {
        self.route(token)?.verify(token).await
    }
}

impl Authenticator for JwtIssuers {
    type Credential = JwtCredential;
    type Future = JwtFuture;

    fn extract(&self, head: &RequestHead<'_>) -> Result<Option<JwtCredential>, AuthError> {
        let token = self.extractor.extract(head.headers)?;
        Ok(token.map(|token| JwtCredential::bearer(token.to_owned(), head)))
    }

    fn authenticate(&self, credential: JwtCredential) -> JwtFuture {
        let Some((token, binding)) = credential.into_token() else {
            return JwtFuture::ready(Err(AuthError::invalid_token("no token")));
        };
        match self.route(&token) {
            Ok(auth) => auth.verify_token(token, false, binding),
            Err(e) => JwtFuture::ready(Err(e)),
        }
    }
}
