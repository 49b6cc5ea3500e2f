//! A fake OpenID issuer for tests: key pairs, token minting and a loopback JWKS server.
//!
//! [`TestIssuer`] generates fresh key pairs (with `aws-lc-rs`, whatever JWT backend is
//! selected), publishes their public halves as a JWK set, mints signed tokens with
//! [`TestIssuer::token`], signs arbitrary header and claims text with
//! [`TestIssuer::sign_raw`], and can serve its JWK set and a discovery document over HTTP on
//! `127.0.0.1` with [`TestIssuer::serve`].
//!
//! Never use it in production: its keys live in memory and are regenerated every run.
//!
//! For tests of guards and limiters, where the credential is beside the point, put an
//! [`Identity`] on the request directly: [`caller`] starts one, [`with_identity`] puts it on
//! a request, [`IdentityLayer`] puts a fixed one on every request of a stack.
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::time::Duration;
//! use tower_api_guard::jwt::{Algorithm, JwtAuthenticator};
//! use tower_api_guard::testing::TestIssuer;
//!
//! let issuer = TestIssuer::new("https://issuer.example");
//! let jwt = JwtAuthenticator::builder("https://issuer.example", "my-api")
//!     .keys(issuer.static_keys())
//!     .build()
//!     .unwrap();
//!
//! let token = issuer
//!     .token()
//!     .subject("alice")
//!     .audience("my-api")
//!     .scope("items:read items:write")
//!     .expires_in(Duration::from_secs(60))
//!     .mint();
//! let identity = jwt.verify(&token).await.unwrap();
//! assert_eq!(identity.subject(), "alice");
//!
//! // Any key type, any claim.
//! let es256 = issuer.token().algorithm(Algorithm::ES256).audience("my-api").mint();
//! assert!(jwt.verify(&es256).await.is_ok());
//! let expired = issuer.token().audience("my-api").claim("exp", 1_000.into()).mint();
//! assert!(jwt.verify(&expired).await.is_err());
//!
//! // A real HTTP endpoint for the JWK set.
//! let served = issuer.serve().await.unwrap();
//! assert!(served.jwks_url().starts_with("http://127.0.0.1:"));
//! assert_eq!(served.requests(), 0);
//! # });
//! ```

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    self as sig, EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair as _,
    RsaSignatureEncoding,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{Request, Response};
use serde_json::{Map, Value, json};

use crate::clock::{Clock, SystemClock};
use crate::gate::{Check, Gate, GateLayer, LayerKind, NeverWaits, Step, Verdict};
use crate::identity::{Identity, IdentityBuilder, Source};
use crate::jwt::{Algorithm, StaticKeys};

/// How long minted tokens live by default, in seconds.
const DEFAULT_TTL_SECS: u64 = 300;

/// The private half of one key.
enum Signer {
    Rsa(RsaKeyPair, &'static RsaSignatureEncoding),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// One key pair with its public JWK.
struct IssuerKey {
    alg: Algorithm,
    kid: String,
    signer: Signer,
    /// The public JWK, with `kid`, `alg` and `use`.
    jwk: Map<String, Value>,
    /// The SubjectPublicKeyInfo DER of the public key.
    spki: Option<Vec<u8>>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl IssuerKey {
    /// Generate a key for `alg`.
    ///
    /// # Panics
    /// For HMAC algorithms, or when key generation fails.
    fn generate(alg: Algorithm) -> Self {
        let kid = alg.as_str().to_ascii_lowercase();
        let rsa = |encoding: &'static RsaSignatureEncoding| {
            let pair = RsaKeyPair::generate(KeySize::Rsa2048)
                .expect("TestIssuer: RSA-2048 key generation failed");
            let parts = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
            let mut jwk = Map::new();
            jwk.insert("kty".into(), "RSA".into());
            jwk.insert("n".into(), b64(&parts.n).into());
            jwk.insert("e".into(), b64(&parts.e).into());
            let spki = pair.public_key().as_der().ok().map(|d| d.as_ref().to_vec());
            (Signer::Rsa(pair, encoding), jwk, spki)
        };
        let ec = |signing: &'static EcdsaSigningAlgorithm, crv: &str, len: usize| {
            let pair =
                EcdsaKeyPair::generate(signing).expect("TestIssuer: EC key generation failed");
            // Uncompressed SEC1 point: 0x04 || x || y.
            let point = pair.public_key().as_ref();
            assert_eq!(point.len(), 1 + 2 * len, "unexpected EC point length");
            let mut jwk = Map::new();
            jwk.insert("kty".into(), "EC".into());
            jwk.insert("crv".into(), crv.into());
            jwk.insert("x".into(), b64(&point[1..=len]).into());
            jwk.insert("y".into(), b64(&point[1 + len..]).into());
            let spki = pair.public_key().as_der().ok().map(|d| d.as_ref().to_vec());
            (Signer::Ec(pair), jwk, spki)
        };
        let (signer, jwk, spki) = match alg {
            Algorithm::RS256 => rsa(&sig::RSA_PKCS1_SHA256),
            Algorithm::RS384 => rsa(&sig::RSA_PKCS1_SHA384),
            Algorithm::RS512 => rsa(&sig::RSA_PKCS1_SHA512),
            Algorithm::PS256 => rsa(&sig::RSA_PSS_SHA256),
            Algorithm::PS384 => rsa(&sig::RSA_PSS_SHA384),
            Algorithm::PS512 => rsa(&sig::RSA_PSS_SHA512),
            Algorithm::ES256 => ec(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32),
            Algorithm::ES384 => ec(&sig::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48),
            Algorithm::EdDSA => {
                let pair =
                    Ed25519KeyPair::generate().expect("TestIssuer: Ed25519 key generation failed");
                let mut jwk = Map::new();
                jwk.insert("kty".into(), "OKP".into());
                jwk.insert("crv".into(), "Ed25519".into());
                jwk.insert("x".into(), b64(pair.public_key().as_ref()).into());
                let spki = pair.public_key().as_der().ok().map(|d| d.as_ref().to_vec());
                (Signer::Ed(pair), jwk, spki)
            }
            other => panic!(
                "TestIssuer does not support {other}: it only holds asymmetric keys \
                 (RS*, PS*, ES256, ES384, EdDSA)"
            ),
        };
        let mut jwk = jwk;
        jwk.insert("kid".into(), kid.clone().into());
        jwk.insert("alg".into(), alg.as_str().into());
        jwk.insert("use".into(), "sig".into());
        IssuerKey {
            alg,
            kid,
            signer,
            jwk,
            spki,
        }
    }

    /// Sign `message` (the JWS signing input).
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        match &self.signer {
            Signer::Rsa(pair, encoding) => {
                let mut out = vec![0; pair.public_modulus_len()];
                pair.sign(*encoding, &SystemRandom::new(), message, &mut out)
                    .expect("TestIssuer: RSA signing failed");
                out
            }
            Signer::Ec(pair) => pair
                .sign(&SystemRandom::new(), message)
                .expect("TestIssuer: ECDSA signing failed")
                .as_ref()
                .to_vec(),
            Signer::Ed(pair) => pair.sign(message).as_ref().to_vec(),
        }
    }

    /// A compact JWS of `header` and `claims`, exactly as given.
    fn compact(&self, header: &str, claims: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        let signature = self.sign(input.as_bytes());
        format!("{input}.{}", b64(&signature))
    }
}

/// A fake OpenID issuer for tests.
///
/// Holds one freshly generated key pair per algorithm, each with `kid` equal to the
/// lowercase algorithm name (`"rs256"`, `"es256"`, `"eddsa"`, ...). Cloning is cheap and
/// clones share the keys.
#[derive(Clone)]
pub struct TestIssuer {
    issuer: Arc<str>,
    keys: Arc<[IssuerKey]>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestIssuer")
            .field("issuer", &self.issuer)
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl TestIssuer {
    /// Issuer with one key for each of RS256 (RSA 2048), ES256 and EdDSA; kids `"rs256"`,
    /// `"es256"`, `"eddsa"`. Tokens are signed with RS256 unless
    /// [`TokenBuilder::algorithm`] says otherwise.
    pub fn new(issuer: impl Into<String>) -> Self {
        Self::with_algorithms(
            issuer,
            &[Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
        )
    }

    /// Issuer with one key per listed algorithm: a distinct RSA-2048 key for each of
    /// RS256/384/512 and PS256/384/512, a P-256 key for ES256, a P-384 key for ES384 and an
    /// Ed25519 key for EdDSA. Each key's `kid` is the lowercase algorithm name. The first
    /// algorithm is the default for [`token`](Self::token); repeated algorithms are ignored.
    ///
    /// # Panics
    /// When `algs` is empty or lists an `HS*` algorithm (a JWK set never holds shared
    /// secrets, so the test issuer does not support them).
    pub fn with_algorithms(issuer: impl Into<String>, algs: &[Algorithm]) -> Self {
        assert!(
            !algs.is_empty(),
            "TestIssuer::with_algorithms needs at least one algorithm"
        );
        let mut keys: Vec<IssuerKey> = Vec::with_capacity(algs.len());
        for &alg in algs {
            if !keys.iter().any(|k| k.alg == alg) {
                keys.push(IssuerKey::generate(alg));
            }
        }
        Self {
            issuer: issuer.into().into(),
            keys: keys.into(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Use this clock for the `iat` and `exp` defaults of minted tokens (default:
    /// [`SystemClock`]).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The issuer (`iss`) of minted tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The algorithms this issuer has keys for, the default first.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        self.keys.iter().map(|k| k.alg).collect()
    }

    /// The `kid` of the key for `alg`, if the issuer has one.
    pub fn kid(&self, alg: Algorithm) -> Option<&str> {
        self.key(alg).map(|k| k.kid.as_str())
    }

    fn key(&self, alg: Algorithm) -> Option<&IssuerKey> {
        self.keys.iter().find(|k| k.alg == alg)
    }

    fn key_or_panic(&self, alg: Algorithm) -> &IssuerKey {
        self.key(alg).unwrap_or_else(|| {
            panic!(
                "TestIssuer has no {alg} key (it has {:?}); create it with \
                 TestIssuer::with_algorithms",
                self.algorithms()
            )
        })
    }

    /// The public JWK set: `{"keys":[...]}` with `kty`, `crv`/`x`/`y` or `n`/`e`, `kid`,
    /// `alg` and `"use":"sig"` for each key. Never contains private members.
    pub fn jwks_json(&self) -> String {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| Value::Object(k.jwk.clone()))
            .collect();
        json!({ "keys": keys }).to_string()
    }

    /// The issuer's keys as [`StaticKeys`], i.e.
    /// `StaticKeys::from_jwks_json(self.jwks_json().as_bytes())`.
    pub fn static_keys(&self) -> StaticKeys {
        StaticKeys::from_jwks_json(self.jwks_json().as_bytes())
            .expect("TestIssuer: its own JWK set does not load")
    }

    /// The SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`) of the key for `alg`, or
    /// `None` when the issuer has no key for `alg`.
    pub fn public_key_pem(&self, alg: Algorithm) -> Option<String> {
        let der = self.key(alg)?.spki.as_ref()?;
        let body = STANDARD.encode(der);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        Some(pem)
    }

    /// Start minting a token.
    ///
    /// Defaults: header `{"alg": <default alg>, "typ": "JWT", "kid": <its kid>}`, claims
    /// `{"iss": <issuer>, "sub": "test-subject", "iat": now, "exp": now + 300}` with `now`
    /// in whole seconds from the issuer's clock, read here.
    pub fn token(&self) -> TokenBuilder {
        let now = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut claims = Map::new();
        claims.insert("iss".into(), self.issuer().into());
        claims.insert("sub".into(), "test-subject".into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), now.saturating_add(DEFAULT_TTL_SECS).into());
        TokenBuilder {
            issuer: self.clone(),
            alg: self.keys[0].alg,
            now,
            header_ops: Vec::new(),
            claims,
        }
    }

    /// Sign header and claims JSON text exactly as given (no parsing, no reordering) with
    /// the key for `alg`: `base64url(header) "." base64url(claims) "." base64url(signature)`.
    /// For tests of malformed, duplicate-member or otherwise hostile tokens.
    ///
    /// # Panics
    /// When the issuer has no key for `alg`.
    pub fn sign_raw(&self, alg: Algorithm, header_json: &str, claims_json: &str) -> String {
        self.key_or_panic(alg).compact(header_json, claims_json)
    }

    /// Like [`sign_raw`](Self::sign_raw), with the key whose `kid` is `kid` (and that key's
    /// own algorithm), or `None` when there is no such key.
    pub fn sign_raw_with_kid(
        &self,
        kid: &str,
        header_json: &str,
        claims_json: &str,
    ) -> Option<String> {
        let key = self.keys.iter().find(|k| k.kid == kid)?;
        Some(key.compact(header_json, claims_json))
    }

    /// Serve the JWK set at `GET /jwks.json` and a discovery document
    /// `{"issuer": <issuer>, "jwks_uri": <url of jwks.json>}` at
    /// `GET /.well-known/openid-configuration`, on `127.0.0.1` with a free port.
    ///
    /// The server runs as a task on the current Tokio runtime until the returned
    /// [`ServedIssuer`] is dropped. It serves the JWK set as it is now. Every request
    /// (including those answered 404) is counted, see [`ServedIssuer::requests`].
    ///
    /// # Errors
    /// When binding the listener fails.
    ///
    /// # Panics
    /// When called outside a Tokio runtime.
    pub async fn serve(&self) -> std::io::Result<ServedIssuer> {
        use axum::http::{StatusCode, header};
        use axum::routing::get;

        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let jwks: Arc<str> = self.jwks_json().into();
        let discovery: Arc<str> = json!({
            "issuer": self.issuer(),
            "jwks_uri": format!("{base_url}/jwks.json"),
        })
        .to_string()
        .into();
        let requests = Arc::new(AtomicUsize::new(0));

        let json_route = |body: Arc<str>, count: Arc<AtomicUsize>| {
            get(move || {
                count.fetch_add(1, Ordering::SeqCst);
                let body = body.to_string();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            })
        };
        let count = requests.clone();
        let router = axum::Router::new()
            .route("/jwks.json", json_route(jwks, requests.clone()))
            .route(
                "/.well-known/openid-configuration",
                json_route(discovery, requests.clone()),
            )
            .fallback(move || {
                count.fetch_add(1, Ordering::SeqCst);
                async { StatusCode::NOT_FOUND }
            });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(ServedIssuer {
            addr,
            requests,
            task,
        })
    }
}

/// A running JWKS server started by [`TestIssuer::serve`]. The server stops when this is
/// dropped.
pub struct ServedIssuer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for ServedIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServedIssuer")
            .field("addr", &self.addr)
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

impl ServedIssuer {
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of the JWK set: `http://127.0.0.1:<port>/jwks.json`.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks.json", self.base_url())
    }

    /// The URL of the discovery document:
    /// `http://127.0.0.1:<port>/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.base_url())
    }

    /// The server's socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many HTTP requests the server has answered so far (any path).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for ServedIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A change to the default header, applied in order at [`TokenBuilder::mint`].
enum HeaderOp {
    Set(String, Value),
    Remove(String),
}

/// Builds and signs one token. Created by [`TestIssuer::token`]; finish with
/// [`mint`](Self::mint).
#[must_use = "a TokenBuilder does nothing until `mint` is called"]
pub struct TokenBuilder {
    issuer: TestIssuer,
    alg: Algorithm,
    now: u64,
    header_ops: Vec<HeaderOp>,
    claims: Map<String, Value>,
}

impl fmt::Debug for TokenBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBuilder")
            .field("alg", &self.alg)
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

impl TokenBuilder {
    /// Set `sub`.
    pub fn subject(self, sub: impl Into<String>) -> Self {
        self.claim("sub", Value::String(sub.into()))
    }

    /// Set `aud` to one string.
    pub fn audience(self, aud: impl Into<String>) -> Self {
        self.claim("aud", Value::String(aud.into()))
    }

    /// Set `aud` to an array of strings.
    pub fn audiences<I, S>(self, auds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.claim("aud", strings(auds))
    }

    /// Set `scope` (space-delimited, e.g. `"items:read items:write"`).
    pub fn scope(self, scope: impl Into<String>) -> Self {
        self.claim("scope", Value::String(scope.into()))
    }

    /// Set `roles` to an array of strings.
    pub fn roles<I, S>(self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.claim("roles", strings(roles))
    }

    /// Set `iss` (default: the issuer's).
    pub fn issuer(self, iss: impl Into<String>) -> Self {
        self.claim("iss", Value::String(iss.into()))
    }

    /// Set `exp` to the issue time plus `d` (whole seconds).
    pub fn expires_in(self, d: Duration) -> Self {
        let exp = self.now.saturating_add(d.as_secs());
        self.claim("exp", exp.into())
    }

    /// Set any claim to any JSON value, replacing the default or an earlier value (this
    /// also overrides `iss`, `sub`, `iat`, `exp`, ...).
    pub fn claim(mut self, name: impl Into<String>, value: Value) -> Self {
        self.claims.insert(name.into(), value);
        self
    }

    /// Remove a claim, including a default one (`iss`, `sub`, `iat`, `exp`).
    pub fn without_claim(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// Bind the token to a DPoP key: `cnf.jkt` is the key's thumbprint (RFC 9449 §6).
    pub fn dpop_bound(self, key: &DpopKey) -> Self {
        self.claim("cnf", json!({ "jkt": key.thumbprint() }))
    }

    /// Bind the token to a client certificate: `cnf["x5t#S256"]` is `x5t_s256` (RFC 8705
    /// §3.1), e.g. [`ClientCertificate::x5t_s256`](crate::ClientCertificate::x5t_s256).
    pub fn certificate_bound(self, x5t_s256: impl Into<String>) -> Self {
        self.claim("cnf", json!({ "x5t#S256": x5t_s256.into() }))
    }

    /// Sign with the issuer's key for `alg`; the header's `alg` and `kid` follow unless
    /// set explicitly with [`header`](Self::header).
    ///
    /// [`mint`](Self::mint) panics when the issuer has no key for `alg`.
    pub fn algorithm(mut self, alg: Algorithm) -> Self {
        self.alg = alg;
        self
    }

    /// Set any header parameter to any JSON value. Applied after the `alg`, `typ` and `kid`
    /// defaults, so it can override them (the signature still uses the key chosen with
    /// [`algorithm`](Self::algorithm)).
    pub fn header(mut self, name: impl Into<String>, value: Value) -> Self {
        self.header_ops.push(HeaderOp::Set(name.into(), value));
        self
    }

    /// Remove a header parameter, including a default one (`alg`, `typ`, `kid`).
    pub fn without_header(mut self, name: &str) -> Self {
        self.header_ops.push(HeaderOp::Remove(name.to_owned()));
        self
    }

    /// Sign and return the compact JWS.
    ///
    /// # Panics
    /// When [`algorithm`](Self::algorithm) named an algorithm the issuer has no key for.
    #[must_use]
    pub fn mint(self) -> String {
        let key = self.issuer.key_or_panic(self.alg);
        let mut header = Map::new();
        header.insert("alg".into(), key.alg.as_str().into());
        header.insert("typ".into(), "JWT".into());
        header.insert("kid".into(), key.kid.clone().into());
        for op in self.header_ops {
            match op {
                HeaderOp::Set(name, value) => {
                    header.insert(name, value);
                }
                HeaderOp::Remove(name) => {
                    header.remove(&name);
                }
            }
        }
        let header = Value::Object(header).to_string();
        let claims = Value::Object(self.claims).to_string();
        key.compact(&header, &claims)
    }
}

impl TestIssuer {
    /// A fresh client key pair for DPoP proofs (RFC 9449), on this issuer's clock.
    ///
    /// # Panics
    /// For HMAC algorithms, or when key generation fails.
    pub fn dpop_key(&self, alg: Algorithm) -> DpopKey {
        DpopKey {
            keys: Arc::from([IssuerKey::generate(alg)]),
            index: 0,
            clock: self.clock.clone(),
        }
    }

    /// This issuer's own signing key for `alg` used as a DPoP key: for tests that a proof
    /// signed with a key of the token issuer is refused.
    ///
    /// # Panics
    /// When the issuer has no key for `alg`.
    pub fn issuer_key_as_dpop_key(&self, alg: Algorithm) -> DpopKey {
        let index = self
            .keys
            .iter()
            .position(|k| k.alg == alg)
            .unwrap_or_else(|| panic!("TestIssuer has no {alg} key"));
        DpopKey {
            keys: self.keys.clone(),
            index,
            clock: self.clock.clone(),
        }
    }
}

/// A client's DPoP key pair: mints proofs with [`proof`](Self::proof); bind a token to it
/// with [`TokenBuilder::dpop_bound`]. Made by [`TestIssuer::dpop_key`].
///
/// ```
/// use tower_api_guard::jwt::Algorithm;
/// use tower_api_guard::testing::TestIssuer;
///
/// let issuer = TestIssuer::new("https://issuer.example");
/// let client = issuer.dpop_key(Algorithm::ES256);
/// let token = issuer.token().audience("my-api").dpop_bound(&client).mint();
/// let proof = client
///     .proof("GET", "https://api.example.com/items")
///     .access_token(&token)
///     .mint();
/// // Send: `Authorization: DPoP <token>` and `DPoP: <proof>`.
/// assert_eq!(proof.split('.').count(), 3);
/// ```
#[derive(Clone)]
pub struct DpopKey {
    keys: Arc<[IssuerKey]>,
    index: usize,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopKey")
            .field("alg", &self.key().alg)
            .field("jkt", &self.thumbprint())
            .finish()
    }
}

impl DpopKey {
    fn key(&self) -> &IssuerKey {
        &self.keys[self.index]
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.key().alg
    }

    /// The public JWK with only its required members (`kty`, `crv`, `x`, `y` / `n`, `e`),
    /// as a proof's header carries it.
    pub fn public_jwk(&self) -> Value {
        let jwk = &self.key().jwk;
        let required: &[&str] = match jwk.get("kty").and_then(Value::as_str) {
            Some("RSA") => &["kty", "n", "e"],
            Some("EC") => &["kty", "crv", "x", "y"],
            _ => &["kty", "crv", "x"],
        };
        Value::Object(
            required
                .iter()
                .filter_map(|m| Some(((*m).to_owned(), jwk.get(*m)?.clone())))
                .collect(),
        )
    }

    /// The RFC 7638 SHA-256 thumbprint of the public key, base64url: a bound token's
    /// `cnf.jkt`.
    pub fn thumbprint(&self) -> String {
        let jwk = match self.public_jwk() {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        crate::jwt::keys::jwk_thumbprint(&jwk).unwrap_or_default()
    }

    /// Start a proof for a request with `method` to `url` (`htu`: give it without query
    /// and fragment). Defaults: header `{"typ":"dpop+jwt","alg":…,"jwk":…}`, claims
    /// `{"jti": <random>, "htm", "htu", "iat": now}` on the issuer's clock.
    pub fn proof(&self, method: &str, url: &str) -> ProofBuilder {
        let now = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).expect("TestIssuer: the RNG failed");
        let mut header = Map::new();
        header.insert("typ".into(), "dpop+jwt".into());
        header.insert("alg".into(), self.algorithm().as_str().into());
        header.insert("jwk".into(), self.public_jwk());
        let mut claims = Map::new();
        claims.insert("jti".into(), b64(&jti).into());
        claims.insert("htm".into(), method.into());
        claims.insert("htu".into(), url.into());
        claims.insert("iat".into(), now.into());
        ProofBuilder {
            key: self.clone(),
            header,
            claims,
        }
    }
}

/// Builds and signs one DPoP proof. Created by [`DpopKey::proof`]; finish with
/// [`mint`](Self::mint).
#[must_use = "a ProofBuilder does nothing until `mint` is called"]
pub struct ProofBuilder {
    key: DpopKey,
    header: Map<String, Value>,
    claims: Map<String, Value>,
}

impl fmt::Debug for ProofBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProofBuilder")
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

impl ProofBuilder {
    /// Set `ath` to the hash of `token`, the access token sent with the proof.
    pub fn access_token(self, token: &str) -> Self {
        let ath = crate::jwt::dpop::ath(token);
        self.claim("ath", ath.into())
    }

    /// Set `nonce` (a server nonce from a `DPoP-Nonce` header).
    pub fn nonce(self, nonce: impl Into<String>) -> Self {
        self.claim("nonce", Value::String(nonce.into()))
    }

    /// Set `jti`.
    pub fn jti(self, jti: impl Into<String>) -> Self {
        self.claim("jti", Value::String(jti.into()))
    }

    /// Set `iat` to the current time plus `offset_secs` (negative: in the past).
    pub fn issued_at_offset(self, offset_secs: i64) -> Self {
        let iat = self
            .claims
            .get("iat")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .saturating_add(offset_secs);
        self.claim("iat", iat.into())
    }

    /// Set any claim to any JSON value.
    pub fn claim(mut self, name: impl Into<String>, value: Value) -> Self {
        self.claims.insert(name.into(), value);
        self
    }

    /// Remove a claim, including a default one.
    pub fn without_claim(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// Set any header parameter to any JSON value (e.g. a `jwk` with a private member).
    pub fn header(mut self, name: impl Into<String>, value: Value) -> Self {
        self.header.insert(name.into(), value);
        self
    }

    /// Remove a header parameter, including a default one.
    pub fn without_header(mut self, name: &str) -> Self {
        self.header.remove(name);
        self
    }

    /// Sign with the client key and return the compact JWS.
    #[must_use]
    pub fn mint(self) -> String {
        let header = Value::Object(self.header).to_string();
        let claims = Value::Object(self.claims).to_string();
        self.key.key().compact(&header, &claims)
    }
}

fn strings<I, S>(items: I) -> Value
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Value::Array(items.into_iter().map(|s| Value::String(s.into())).collect())
}

/// Start an [`Identity`] for `subject` from [`Source::Custom`] with mechanism `"test"`: the
/// caller of a guard or limiter test that is not about credentials.
///
/// ```
/// use tower_api_guard::Source;
/// use tower_api_guard::testing::caller;
///
/// let alice = caller("alice").scopes(["items:read"]).build();
/// assert_eq!(alice.subject(), "alice");
/// assert_eq!(alice.source(), &Source::Custom { mechanism: "test".into() });
/// assert!(alice.has_scope("items:read"));
/// ```
pub fn caller(subject: impl Into<String>) -> IdentityBuilder {
    Identity::builder(
        subject,
        Source::Custom {
            mechanism: "test".into(),
        },
    )
}

/// `request` with `identity` in its extensions, as an authentication layer would have left
/// it: guards, limiters and handlers behind see this caller, and no credential is needed.
///
/// ```
/// # #[cfg(feature = "authz")]
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use http::{Request, Response, StatusCode};
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_api_guard::authz::RequireLayer;
/// use tower_api_guard::testing::{caller, with_identity};
///
/// let svc = ServiceBuilder::new()
///     .layer(RequireLayer::all_scopes(["items:write"]))
///     .service_fn(|_req: Request<()>| async {
///         Ok::<_, std::convert::Infallible>(Response::new(String::new()))
///     });
///
/// let writer = caller("alice").scopes(["items:write"]).build();
/// let reader = caller("bob").scopes(["items:read"]).build();
/// let call = |identity| svc.clone().oneshot(with_identity(Request::new(()), identity));
/// assert_eq!(call(writer).await.unwrap().status(), StatusCode::OK);
/// assert_eq!(call(reader).await.unwrap().status(), StatusCode::FORBIDDEN);
/// # });
/// ```
pub fn with_identity<B>(mut request: Request<B>, identity: Identity) -> Request<B> {
    request.extensions_mut().insert(identity);
    request
}

/// A layer that puts one fixed [`Identity`] on every request, in place of an authentication
/// layer: for a stack whose requests are built elsewhere (a tonic client, a router under
/// test), where [`with_identity`] cannot reach the request.
///
/// It never rejects. Like every layer of this crate it is a [`GateLayer`], so a renderer
/// set on it with [`with_renderer`](GateLayer::with_renderer) reaches the layers behind it.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use http::{Request, Response};
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_api_guard::Identity;
/// use tower_api_guard::testing::{IdentityLayer, caller};
///
/// let svc = ServiceBuilder::new()
///     .layer(IdentityLayer::new(caller("alice").build()))
///     .service_fn(|req: Request<()>| async move {
///         let who = req.extensions().get::<Identity>().unwrap().subject().to_owned();
///         let res = Response::builder().header("x-caller", who).body(()).unwrap();
///         Ok::<_, std::convert::Infallible>(res)
///     });
/// let res = svc.oneshot(Request::new(())).await.unwrap();
/// assert_eq!(res.headers()["x-caller"], "alice");
/// # });
/// ```
pub type IdentityLayer = GateLayer<InsertIdentity>;

/// The service made by [`IdentityLayer`].
pub type WithIdentity<S> = Gate<InsertIdentity, S>;

/// The check of [`IdentityLayer`]: insert the identity, allow.
#[derive(Clone, Debug)]
pub struct InsertIdentity {
    identity: Identity,
}

impl IdentityLayer {
    /// Put `identity` on every request.
    pub fn new(identity: Identity) -> Self {
        GateLayer::from_check(InsertIdentity { identity })
    }
}

impl<S> WithIdentity<S> {
    /// Wrap `inner`.
    pub fn new(inner: S, identity: Identity) -> Self {
        tower_layer::Layer::layer(&IdentityLayer::new(identity), inner)
    }

    /// A layer; same as [`IdentityLayer::new`].
    pub fn layer(identity: Identity) -> IdentityLayer {
        IdentityLayer::new(identity)
    }
}

impl Check for InsertIdentity {
    type Ticket = ();
    type Wait = NeverWaits;
    // It stands where authentication stands, and never rejects.
    const LAYER: LayerKind = LayerKind::Auth;

    fn check<B>(&self, request: &mut Request<B>) -> Step<(), NeverWaits> {
        request.extensions_mut().insert(self.identity.clone());
        Step::Allow(())
    }

    fn resume<B>(&self, never: Infallible, _request: &mut Request<B>) -> Verdict<()> {
        match never {}
    }

    fn finish<R>((): (), _response: &mut Response<R>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{DecodingKey, Validation};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn install() {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    }

    /// Verify with plain jsonwebtoken and a JWK from `jwks`.
    fn verify_with(jwks: &str, token: &str, alg: Algorithm, aud: &str) -> Value {
        install();
        let header = jsonwebtoken::decode_header(token).unwrap();
        let set: JwkSet = serde_json::from_str(jwks).unwrap();
        let jwk = set.find(header.kid.as_deref().unwrap()).unwrap();
        let key = DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = Validation::new(alg.to_jsonwebtoken());
        validation.set_audience(&[aud]);
        jsonwebtoken::decode::<Value>(token, &key, &validation)
            .unwrap_or_else(|e| panic!("{alg}: {e}"))
            .claims
    }

    fn parts(token: &str) -> (Value, Value) {
        let mut it = token.split('.');
        let mut next = || {
            let bytes = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        };
        let h = next();
        (h, next())
    }

    #[test]
    fn default_issuer_signs_rs256_es256_eddsa() {
        let issuer = TestIssuer::new("https://issuer.example");
        assert_eq!(
            issuer.algorithms(),
            [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]
        );
        let jwks = issuer.jwks_json();
        for (alg, kid) in [
            (Algorithm::RS256, "rs256"),
            (Algorithm::ES256, "es256"),
            (Algorithm::EdDSA, "eddsa"),
        ] {
            let token = issuer.token().algorithm(alg).audience("api").mint();
            let (header, _) = parts(&token);
            assert_eq!(header["alg"], alg.as_str());
            assert_eq!(header["kid"], kid);
            assert_eq!(header["typ"], "JWT");
            let claims = verify_with(&jwks, &token, alg, "api");
            assert_eq!(claims["iss"], "https://issuer.example");
            assert_eq!(claims["sub"], "test-subject");
        }
        // Default algorithm is RS256.
        let (header, _) = parts(&issuer.token().mint());
        assert_eq!(header["alg"], "RS256");
    }

    #[test]
    fn every_asymmetric_algorithm_verifies() {
        let algs = [
            Algorithm::PS256,
            Algorithm::ES384,
            Algorithm::RS384,
            Algorithm::PS512,
        ];
        let issuer = TestIssuer::with_algorithms("iss", &algs);
        let jwks = issuer.jwks_json();
        for alg in algs {
            let token = issuer.token().algorithm(alg).audience("api").mint();
            verify_with(&jwks, &token, alg, "api");
        }
        // The first algorithm is the default.
        let token = issuer.token().audience("api").mint();
        verify_with(&jwks, &token, Algorithm::PS256, "api");
        // ES384 signatures are fixed-length R||S.
        let token = issuer.token().algorithm(Algorithm::ES384).mint();
        let sig = URL_SAFE_NO_PAD
            .decode(token.rsplit('.').next().unwrap())
            .unwrap();
        assert_eq!(sig.len(), 96);
    }

    #[test]
    fn jwks_has_no_private_members_and_loads() {
        let issuer = TestIssuer::with_algorithms("iss", &Algorithm::ASYMMETRIC);
        let jwks: Value = serde_json::from_str(&issuer.jwks_json()).unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 9);
        for key in keys {
            let key = key.as_object().unwrap();
            for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
                assert!(!key.contains_key(private), "{key:?}");
            }
            assert_eq!(key["use"], "sig");
            let alg: Algorithm = key["alg"].as_str().unwrap().parse().unwrap();
            assert_eq!(key["kid"], alg.as_str().to_ascii_lowercase());
        }
        assert_eq!(issuer.static_keys().key_set().len(), 9);
    }

    #[test]
    fn public_key_pem_loads() {
        use crate::jwt::JwtKey;
        let issuer = TestIssuer::new("iss");
        let rsa = issuer.public_key_pem(Algorithm::RS256).unwrap();
        assert!(rsa.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        JwtKey::from_rsa_pem(rsa.as_bytes()).unwrap();
        JwtKey::from_ec_pem(issuer.public_key_pem(Algorithm::ES256).unwrap().as_bytes()).unwrap();
        JwtKey::from_ed_pem(issuer.public_key_pem(Algorithm::EdDSA).unwrap().as_bytes()).unwrap();
        assert!(issuer.public_key_pem(Algorithm::ES384).is_none());
    }

    #[test]
    fn claims_and_header_builders() {
        let clock = Arc::new(ManualClock::at_unix(1_700_000_000));
        let issuer = TestIssuer::new("iss").clock(clock);
        let token = issuer
            .token()
            .subject("alice")
            .audiences(["a", "b"])
            .scope("x y")
            .roles(["admin"])
            .issuer("other")
            .expires_in(Duration::from_secs(60))
            .claim("nbf", 5.into())
            .without_claim("iat")
            .header("kid", "custom".into())
            .algorithm(Algorithm::ES256)
            .header("cty", "x".into())
            .without_header("typ")
            .mint();
        let (header, claims) = parts(&token);
        assert_eq!(header, json!({"alg": "ES256", "kid": "custom", "cty": "x"}));
        assert_eq!(
            claims,
            json!({
                "iss": "other", "sub": "alice", "aud": ["a", "b"], "scope": "x y",
                "roles": ["admin"], "exp": 1_700_000_060u64, "nbf": 5
            })
        );
        let (_, claims) = parts(&issuer.token().mint());
        assert_eq!(claims["iat"], 1_700_000_000u64);
        assert_eq!(claims["exp"], 1_700_000_300u64);
        // Overriding the header alg does not change the signing key.
        let token = issuer.token().header("alg", "RS512".into()).mint();
        assert_eq!(parts(&token).0["alg"], "RS512");
    }

    #[test]
    fn sign_raw_signs_text_verbatim() {
        let issuer = TestIssuer::new("iss");
        let header = r#"{"alg":"EdDSA","kid":"eddsa","kid":"eddsa"}"#;
        let claims = r#"{"sub":"a","sub":"b"}"#;
        let token = issuer.sign_raw(Algorithm::EdDSA, header, claims);
        let mut it = token.split('.');
        assert_eq!(
            URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap(),
            header.as_bytes()
        );
        assert_eq!(
            URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap(),
            claims.as_bytes()
        );
        let same_key = issuer.sign_raw_with_kid("eddsa", header, claims).unwrap();
        // Ed25519 is deterministic.
        assert_eq!(token, same_key);
        assert!(issuer.sign_raw_with_kid("nope", header, claims).is_none());
    }

    #[test]
    #[should_panic(expected = "has no ES384 key")]
    fn minting_with_a_missing_key_panics() {
        let _ = TestIssuer::new("iss")
            .token()
            .algorithm(Algorithm::ES384)
            .mint();
    }

    #[test]
    #[should_panic(expected = "does not support HS256")]
    fn hmac_is_rejected() {
        let _ = TestIssuer::with_algorithms("iss", &[Algorithm::HS256]);
    }

    async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn serve_answers_jwks_and_discovery_and_counts() {
        let issuer = TestIssuer::new("https://issuer.example");
        let served = issuer.serve().await.unwrap();
        let addr = served.local_addr();
        assert_eq!(served.base_url(), format!("http://{addr}"));
        assert_eq!(served.jwks_url(), format!("http://{addr}/jwks.json"));
        assert_eq!(served.requests(), 0);

        let (status, jwks) = http_get(addr, "/jwks.json").await;
        assert_eq!(status, 200);
        assert_eq!(jwks, issuer.jwks_json());
        let token = issuer.token().audience("api").mint();
        verify_with(&jwks, &token, Algorithm::RS256, "api");

        let (status, discovery) = http_get(addr, "/.well-known/openid-configuration").await;
        assert_eq!(status, 200);
        let discovery: Value = serde_json::from_str(&discovery).unwrap();
        assert_eq!(
            discovery,
            json!({"issuer": "https://issuer.example", "jwks_uri": served.jwks_url()})
        );

        let (status, _) = http_get(addr, "/nope").await;
        assert_eq!(status, 404);
        assert_eq!(served.requests(), 3);

        drop(served);
        tokio::task::yield_now().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err() || http_get_fails(addr).await);
    }

    /// After the server stops, a connection may still be accepted by the OS backlog
    /// briefly; a request must then fail to get an answer.
    async fn http_get_fails(addr: SocketAddr) -> bool {
        let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
            return true;
        };
        let _ = stream
            .write_all(b"GET /jwks.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        response.is_empty()
    }
}
