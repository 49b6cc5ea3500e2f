//! Verification keys: [`JwtKey`], [`KeySet`], the [`KeySource`] trait and [`StaticKeys`].
//!
//! Keys only ever come from configuration: a PEM file, a JWK, a JWKS document, or (for
//! `HS*`) an explicitly configured shared secret. A token's `jku`, `jwk`, `x5u` and `x5c`
//! header parameters are never used and never fetched.
//!
//! Loading a JWKS document drops every key that cannot be used safely, with a `tracing`
//! warning naming the reason: `use` other than `sig`, `key_ops` without `verify`, an `alg`
//! we do not support or that does not fit the key, EC points that are not on their curve, RSA moduli under 2048 bits or even
//! exponents or exponents below 3, EC keys on curves other than P-256 / P-384 or with
//! coordinates of the wrong length, keys carrying private members, symmetric (`oct`) keys,
//! and every key whose `kid` appears twice.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use jsonwebtoken::DecodingKey;
use jsonwebtoken::crypto::CryptoProvider;
use serde_json::{Map, Value};

use super::Algorithm;
use super::jose;
use crate::error::{AuthError, ConfigError};

/// The jsonwebtoken crypto provider of the selected backend. Calling its factories
/// directly means merged features can never make jsonwebtoken pick (or panic about) one.
pub(crate) fn provider() -> &'static CryptoProvider {
    #[cfg(feature = "aws-lc-rs")]
    {
        &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER
    }
    #[cfg(all(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
    {
        &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER
    }
}

/// Install the selected backend as jsonwebtoken's process default, if none is installed
/// yet, so that code using jsonwebtoken directly in the same process cannot panic about an
/// ambiguous provider.
pub(crate) fn install_provider() {
    let _ = provider().install_default();
}

/// What kind of public key (or secret) this is, with what the algorithm check needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa { bits: usize },
    P256,
    P384,
    Ed25519,
    Hmac { len: usize },
}

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

struct KeyInner {
    kid: Option<String>,
    alg: Option<Algorithm>,
    kind: KeyKind,
    key: DecodingKey,
    /// The RFC 7638 SHA-256 thumbprint, for keys loaded from a JWK.
    thumbprint: Option<Arc<str>>,
    /// The public key parsed once per algorithm it fits (aws-lc-rs backend only).
    #[cfg(feature = "aws-lc-rs")]
    parsed: std::sync::Arc<[(Algorithm, aws_lc_rs::signature::ParsedPublicKey)]>,
}

/// One verification key, with an optional `kid` and an optional algorithm restriction.
///
/// `Debug` never prints key material.
#[derive(Clone)]
pub struct JwtKey(Arc<KeyInner>);

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.0.kid)
            .field("alg", &self.0.alg)
            .field("kind", &self.0.kind)
            .finish_non_exhaustive()
    }
}

fn bad_key(msg: &'static str) -> ConfigError {
    ConfigError::key(msg)
}

impl JwtKey {
    fn new(kind: KeyKind, key: DecodingKey) -> Self {
        JwtKey(Arc::new(KeyInner {
            kid: None,
            alg: None,
            kind,
            thumbprint: None,
            #[cfg(feature = "aws-lc-rs")]
            parsed: fast::parse(kind, &key).into(),
            key,
        }))
    }

    /// An RSA public key from PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`).
    ///
    /// # Errors
    /// When the PEM is not an RSA public key, or its modulus is under 2048 bits.
    pub fn from_rsa_pem(pem: &[u8]) -> Result<Self, ConfigError> {
        let der =
            DecodingKey::from_rsa_pem(pem).map_err(|_| bad_key("not an RSA public key PEM"))?;
        let der = der
            .try_get_as_bytes()
            .map_err(|_| bad_key("not an RSA public key PEM"))?;
        let (n, e) = (provider().key_utils.rsa_pub_components_from_public_key)(der)
            .map_err(|_| bad_key("not an RSA public key"))?;
        Self::from_rsa_components(&n, &e)
    }

    /// An RSA public key from its big-endian modulus and exponent.
    ///
    /// # Errors
    /// When the modulus is under 2048 bits or even, or the exponent is even, below 3 or
    /// longer than 8 bytes.
    pub fn from_rsa_components(n: &[u8], e: &[u8]) -> Result<Self, ConfigError> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        let bits = n
            .first()
            .map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
        if bits < MIN_RSA_BITS {
            return Err(bad_key("RSA modulus shorter than 2048 bits"));
        }
        if n.last().is_some_and(|b| b & 1 == 0) {
            return Err(bad_key("RSA modulus is even"));
        }
        if e.is_empty() || e.len() > 8 || e.last().is_some_and(|b| b & 1 == 0) || e == [1] {
            return Err(bad_key("RSA exponent is not an odd number of at least 3"));
        }
        Ok(Self::new(
            KeyKind::Rsa { bits },
            DecodingKey::from_rsa_raw_components(n, e),
        ))
    }

    /// An EC public key (P-256 or P-384) from PEM (`PUBLIC KEY`).
    ///
    /// # Errors
    /// When the PEM is not a P-256 or P-384 public key.
    pub fn from_ec_pem(pem: &[u8]) -> Result<Self, ConfigError> {
        let key = DecodingKey::from_ec_pem(pem).map_err(|_| bad_key("not an EC public key PEM"))?;
        let point = key
            .try_get_as_bytes()
            .map_err(|_| bad_key("not an EC public key PEM"))?;
        Self::from_ec_point(point)
    }

    /// An EC public key from its uncompressed SEC1 point (`0x04 || x || y`), which must
    /// lie on its curve.
    fn from_ec_point(point: &[u8]) -> Result<Self, ConfigError> {
        let kind = match (point.first(), point.len()) {
            (Some(4), 65) => KeyKind::P256,
            (Some(4), 97) => KeyKind::P384,
            _ => {
                return Err(bad_key(
                    "EC key is not an uncompressed P-256 or P-384 point",
                ));
            }
        };
        if !ec_point_is_valid(kind, point) {
            return Err(bad_key("EC key is not a point on its curve"));
        }
        Ok(Self::new(kind, DecodingKey::from_ec_der(point)))
    }

    /// An Ed25519 public key from PEM (`PUBLIC KEY`).
    ///
    /// # Errors
    /// When the PEM is not an Ed25519 public key.
    pub fn from_ed_pem(pem: &[u8]) -> Result<Self, ConfigError> {
        let key =
            DecodingKey::from_ed_pem(pem).map_err(|_| bad_key("not an Ed25519 public key PEM"))?;
        let raw = key
            .try_get_as_bytes()
            .map_err(|_| bad_key("not an Ed25519 public key PEM"))?;
        Self::from_ed25519(raw)
    }

    fn from_ed25519(raw: &[u8]) -> Result<Self, ConfigError> {
        if raw.len() != 32 {
            return Err(bad_key("Ed25519 key is not 32 bytes"));
        }
        Ok(Self::new(KeyKind::Ed25519, DecodingKey::from_ed_der(raw)))
    }

    /// A shared secret for `HS256` / `HS384` / `HS512`. The secret must be at least as long
    /// as the hash: 32 bytes for HS256, 48 for HS384, 64 for HS512 (RFC 7518 §3.2); a
    /// shorter secret cannot verify the longer variants.
    ///
    /// This is the only way to get an HMAC key: a JWK set's `oct` keys are always dropped,
    /// and public keys are never used as HMAC secrets.
    ///
    /// # Errors
    /// When the secret is shorter than 32 bytes.
    pub fn hmac_secret(secret: &[u8]) -> Result<Self, ConfigError> {
        if secret.len() < 32 {
            return Err(bad_key("HMAC secret shorter than 32 bytes"));
        }
        Ok(Self::new(
            KeyKind::Hmac { len: secret.len() },
            DecodingKey::from_secret(secret),
        ))
    }

    /// One public JWK (a JSON object), checked as for a JWK set.
    ///
    /// # Errors
    /// When the JWK is not valid JSON or is not a usable public signature key.
    pub fn from_jwk_json(json: &[u8]) -> Result<Self, ConfigError> {
        let map =
            jose::parse_object(json).map_err(|_| bad_key("JWK is not a strict JSON object"))?;
        Self::from_jwk(&map).map_err(ConfigError::key)
    }

    /// Check and convert one JWK from a key set. The error is a static reason for logs.
    pub(crate) fn from_jwk(jwk: &Map<String, Value>) -> Result<Self, &'static str> {
        const PRIVATE: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
        if PRIVATE.iter().any(|m| jwk.contains_key(*m)) {
            return Err("JWK has private or symmetric key members");
        }
        let kty = jwk
            .get("kty")
            .and_then(Value::as_str)
            .ok_or("JWK has no kty")?;
        match jwk.get("use") {
            None => {}
            Some(Value::String(u)) if u == "sig" => {}
            Some(_) => return Err("JWK use is not sig"),
        }
        match jwk.get("key_ops") {
            None => {}
            Some(Value::Array(ops)) if ops.iter().any(|op| op == "verify") => {}
            Some(_) => return Err("JWK key_ops lacks verify"),
        }
        let alg = match jwk.get("alg") {
            None => None,
            Some(Value::String(a)) => Some(
                a.parse::<Algorithm>()
                    .map_err(|_| "JWK alg is not a supported signature algorithm")?,
            ),
            Some(_) => return Err("JWK alg is not a string"),
        };
        let kid = match jwk.get("kid") {
            None => None,
            Some(Value::String(k)) if k.len() <= jose::MAX_KID_LEN => Some(k.clone()),
            Some(_) => return Err("JWK kid is not a string of at most 256 bytes"),
        };
        let member = |name: &'static str| -> Result<Vec<u8>, &'static str> {
            let s = jwk
                .get(name)
                .and_then(Value::as_str)
                .ok_or("JWK lacks a key member")?;
            jose::decode_b64url(s).map_err(|_| "JWK member is not base64url")
        };
        let key = match kty {
            "RSA" => {
                JwtKey::from_rsa_components(&member("n")?, &member("e")?).map_err(|e| {
                    match e.message() {
                        m if m.contains("2048") => "RSA JWK shorter than 2048 bits",
                        m if m.contains("modulus") => "RSA JWK modulus is even",
                        _ => "RSA JWK exponent is unusable",
                    }
                })?
            }
            "EC" => {
                let (x, y) = (member("x")?, member("y")?);
                let len = match jwk.get("crv").and_then(Value::as_str) {
                    Some("P-256") => 32,
                    Some("P-384") => 48,
                    _ => return Err("EC JWK curve is not P-256 or P-384"),
                };
                if x.len() != len || y.len() != len {
                    return Err("EC JWK coordinates have the wrong length");
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                JwtKey::from_ec_point(&point).map_err(|_| "EC JWK point is malformed")?
            }
            "OKP" => {
                if jwk.get("crv").and_then(Value::as_str) != Some("Ed25519") {
                    return Err("OKP JWK curve is not Ed25519");
                }
                JwtKey::from_ed25519(&member("x")?).map_err(|_| "Ed25519 JWK is not 32 bytes")?
            }
            "oct" => return Err("symmetric JWK in a key set"),
            _ => return Err("JWK kty is not supported"),
        };
        let mut key = key;
        if let Some(alg) = alg {
            if !key.kind_fits(alg) {
                return Err("JWK alg does not fit its key type");
            }
            key = key.with_algorithm(alg);
        }
        if let Some(kid) = kid {
            key = key.with_kid(kid);
        }
        let mut inner = key.into_inner();
        inner.thumbprint = jwk_thumbprint(jwk).map(Arc::from);
        Ok(JwtKey(Arc::new(inner)))
    }

    /// The RFC 7638 SHA-256 thumbprint (base64url), for a key loaded from a JWK.
    pub(crate) fn thumbprint(&self) -> Option<&str> {
        self.0.thumbprint.as_deref()
    }

    /// Give the key a `kid`.
    #[must_use]
    pub fn with_kid(self, kid: impl Into<String>) -> Self {
        let mut inner = self.into_inner();
        inner.kid = Some(kid.into());
        JwtKey(Arc::new(inner))
    }

    /// Restrict the key to one algorithm. An algorithm that does not fit the key makes the
    /// key unusable (it then verifies nothing).
    #[must_use]
    pub fn with_algorithm(self, alg: Algorithm) -> Self {
        let mut inner = self.into_inner();
        inner.alg = Some(alg);
        JwtKey(Arc::new(inner))
    }

    fn into_inner(self) -> KeyInner {
        Arc::try_unwrap(self.0).unwrap_or_else(|arc| KeyInner {
            kid: arc.kid.clone(),
            alg: arc.alg,
            kind: arc.kind,
            key: arc.key.clone(),
            thumbprint: arc.thumbprint.clone(),
            #[cfg(feature = "aws-lc-rs")]
            parsed: arc.parsed.clone(),
        })
    }

    /// Whether both handles are the very same loaded key.
    pub(crate) fn same_key(&self, other: &JwtKey) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The `kid`, if any.
    pub fn kid(&self) -> Option<&str> {
        self.0.kid.as_deref()
    }

    /// The algorithm restriction, if any.
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.0.alg
    }

    /// Whether the key type fits `alg` (kty, curve, RSA size, HMAC secret length).
    fn kind_fits(&self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match (self.0.kind, alg) {
            (KeyKind::Rsa { bits }, RS256 | RS384 | RS512 | PS256 | PS384 | PS512) => {
                bits >= MIN_RSA_BITS
            }
            (KeyKind::P256, ES256) | (KeyKind::P384, ES384) | (KeyKind::Ed25519, EdDSA) => true,
            (KeyKind::Hmac { len }, HS256) => len >= 32,
            (KeyKind::Hmac { len }, HS384) => len >= 48,
            (KeyKind::Hmac { len }, HS512) => len >= 64,
            _ => false,
        }
    }

    /// Whether this key may verify a token signed with `alg`: the key type fits and the
    /// key's own algorithm restriction, if any, is `alg`.
    pub fn fits(&self, alg: Algorithm) -> bool {
        self.0.alg.is_none_or(|a| a == alg) && self.kind_fits(alg)
    }

    /// Check a raw JWS `signature` (the decoded third segment) over `message` (the
    /// signing input) with `alg`. `false` when the key does not [fit](Self::fits) `alg`,
    /// when the signature has the wrong form (e.g. DER instead of the fixed-length
    /// `R || S` for ECDSA) or does not verify.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        if !self.fits(alg) {
            return false;
        }
        #[cfg(feature = "aws-lc-rs")]
        if let Some((_, parsed)) = self.0.parsed.iter().find(|(a, _)| *a == alg) {
            return parsed.verify_sig(message, signature).is_ok();
        }
        let Ok(verifier) = (provider().verifier_factory)(&alg.to_jsonwebtoken(), &self.0.key)
        else {
            return false;
        };
        verifier.verify(message, &signature.to_vec()).is_ok()
    }
}

/// Public keys parsed once, for the aws-lc-rs backend.
///
/// jsonwebtoken's aws-lc provider rebuilds the public key from its bytes on every
/// verification. The verification algorithms here are the very ones that provider uses
/// (`RSA_PKCS1_2048_8192_*`, `RSA_PSS_2048_8192_*`, `ECDSA_P*_FIXED`, `ED25519`), so the
/// accepted signatures are identical; only the per-request key parsing is gone. HMAC keys
/// and the rust-crypto backend go through jsonwebtoken's provider.
#[cfg(feature = "aws-lc-rs")]
mod fast {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::PublicKeyComponents;
    use aws_lc_rs::signature::{self as sig, ParsedPublicKey, VerificationAlgorithm};
    use jsonwebtoken::{DecodingKey, DecodingKeyKind};

    use super::{Algorithm, KeyKind};

    pub(super) fn parse(kind: KeyKind, key: &DecodingKey) -> Vec<(Algorithm, ParsedPublicKey)> {
        let algs: &[(Algorithm, &'static dyn VerificationAlgorithm)] = match kind {
            KeyKind::Rsa { .. } => &[
                (Algorithm::RS256, &sig::RSA_PKCS1_2048_8192_SHA256),
                (Algorithm::RS384, &sig::RSA_PKCS1_2048_8192_SHA384),
                (Algorithm::RS512, &sig::RSA_PKCS1_2048_8192_SHA512),
                (Algorithm::PS256, &sig::RSA_PSS_2048_8192_SHA256),
                (Algorithm::PS384, &sig::RSA_PSS_2048_8192_SHA384),
                (Algorithm::PS512, &sig::RSA_PSS_2048_8192_SHA512),
            ],
            KeyKind::P256 => &[(Algorithm::ES256, &sig::ECDSA_P256_SHA256_FIXED)],
            KeyKind::P384 => &[(Algorithm::ES384, &sig::ECDSA_P384_SHA384_FIXED)],
            KeyKind::Ed25519 => &[(Algorithm::EdDSA, &sig::ED25519)],
            KeyKind::Hmac { .. } => &[],
        };
        let bytes: Vec<u8> = match key.kind() {
            DecodingKeyKind::SecretOrDer(der) => der.clone(),
            DecodingKeyKind::RsaModulusExponent { n, e } => {
                match (PublicKeyComponents { n, e }).as_der() {
                    Ok(der) => der.as_ref().to_vec(),
                    Err(_) => return Vec::new(),
                }
            }
        };
        algs.iter()
            .filter_map(|&(alg, va)| ParsedPublicKey::new(va, &bytes).ok().map(|p| (alg, p)))
            .collect()
    }
}

/// The RFC 7638 SHA-256 thumbprint (base64url, no padding) of a public JWK that
/// [`JwtKey::from_jwk`] accepted: the required members in lexicographic order, no
/// whitespace. The member values were checked there (canonical base64url, a known curve),
/// so none needs escaping.
pub(crate) fn jwk_thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let s = |name: &str| jwk.get(name).and_then(Value::as_str);
    let canonical = match s("kty")? {
        "RSA" => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, s("e")?, s("n")?),
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            s("crv")?,
            s("x")?,
            s("y")?
        ),
        "OKP" => format!(r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#, s("crv")?, s("x")?),
        _ => return None,
    };
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(canonical)))
}

/// Whether `point` is a valid public point (on the curve, not the identity).
#[cfg(feature = "aws-lc-rs")]
fn ec_point_is_valid(kind: KeyKind, point: &[u8]) -> bool {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ParsedPublicKey};
    let alg = match kind {
        KeyKind::P256 => &ECDSA_P256_SHA256_FIXED,
        KeyKind::P384 => &ECDSA_P384_SHA384_FIXED,
        _ => return false,
    };
    ParsedPublicKey::new(alg, point).is_ok()
}

/// Whether `point` is a valid public point (on the curve, not the identity).
#[cfg(all(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
fn ec_point_is_valid(kind: KeyKind, point: &[u8]) -> bool {
    match kind {
        KeyKind::P256 => p256::PublicKey::from_sec1_bytes(point).is_ok(),
        KeyKind::P384 => p384::PublicKey::from_sec1_bytes(point).is_ok(),
        _ => false,
    }
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[start..]
}

/// An immutable set of verification keys, indexed by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<JwtKey>,
    by_kid: HashMap<String, usize>,
}

/// The most keys without a `kid` tried for one token that names none.
pub const MAX_KIDLESS_CANDIDATES: usize = 4;

impl KeySet {
    /// A key set from keys. Keys sharing a `kid` are all dropped (a lookup by that `kid`
    /// would be ambiguous), with a warning.
    pub fn new(keys: impl IntoIterator<Item = JwtKey>) -> Self {
        let keys: Vec<JwtKey> = keys.into_iter().collect();
        let mut count: HashMap<&str, usize> = HashMap::new();
        for k in &keys {
            if let Some(kid) = k.kid() {
                *count.entry(kid).or_default() += 1;
            }
        }
        let duplicated: Vec<String> = count
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(k, _)| k.to_owned())
            .collect();
        let keys: Vec<JwtKey> = keys
            .into_iter()
            .filter(|k| {
                let dup = k
                    .kid()
                    .is_some_and(|kid| duplicated.iter().any(|d| d == kid));
                if dup {
                    tracing::warn!(reason = "duplicate kid", "dropping key from key set");
                }
                !dup
            })
            .collect();
        let by_kid = keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| k.kid().map(|kid| (kid.to_owned(), i)))
            .collect();
        KeySet { keys, by_kid }
    }

    /// Parse a JWKS document (`{"keys": [...]}`), dropping unusable keys with a warning.
    ///
    /// # Errors
    /// When the document is not a strict JSON object with a `keys` array. A document whose
    /// keys are all unusable parses to an empty set.
    pub fn from_jwks_json(json: &[u8]) -> Result<Self, ConfigError> {
        let doc = jose::parse_object(json)
            .map_err(|_| ConfigError::key("JWKS is not a strict JSON object"))?;
        let Some(Value::Array(entries)) = doc.get("keys") else {
            return Err(ConfigError::key("JWKS has no keys array"));
        };
        let mut keys = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::Object(jwk) = entry else {
                tracing::warn!(reason = "JWK is not an object", "dropping key from key set");
                continue;
            };
            match JwtKey::from_jwk(jwk) {
                Ok(key) => keys.push(key),
                Err(reason) => {
                    let kid = jwk.get("kid").and_then(Value::as_str).unwrap_or("");
                    let kid: String = kid.chars().take(64).filter(|c| !c.is_control()).collect();
                    tracing::warn!(reason, kid = %kid, "dropping key from key set");
                }
            }
        }
        Ok(KeySet::new(keys))
    }

    /// The keys.
    pub fn keys(&self) -> &[JwtKey] {
        &self.keys
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&JwtKey> {
        self.by_kid.get(kid).map(|&i| &self.keys[i])
    }

    /// Keys that may verify a token with this `kid` (or none) and `alg`: the key with that
    /// `kid` if it fits `alg`; for a token without `kid`, up to
    /// [`MAX_KIDLESS_CANDIDATES`] keys that fit `alg`.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a JwtKey> + 'a {
        let by_kid = kid.and_then(|kid| self.get(kid)).into_iter();
        let kidless = self
            .keys
            .iter()
            .filter(move |_| kid.is_none())
            .filter(move |k| k.fits(alg))
            .take(MAX_KIDLESS_CANDIDATES);
        by_kid.filter(move |k| k.fits(alg)).chain(kidless)
    }
}

/// A future resolving to a refreshed key set.
pub type KeySetFuture = Pin<Box<dyn Future<Output = Result<Arc<KeySet>, AuthError>> + Send>>;

/// Where a [`JwtAuthenticator`](super::JwtAuthenticator) gets its keys.
///
/// The verifier reads [`current`](Self::current) on every request, so it must be cheap
/// (a snapshot, no lock held across I/O). When a token names a `kid` that the current set
/// does not hold, the verifier asks [`refresh_for_unknown_kid`](Self::refresh_for_unknown_kid)
/// once; a source that cannot refresh (like [`StaticKeys`]) returns `None` and the token is
/// rejected at once.
pub trait KeySource: Send + Sync + fmt::Debug + 'static {
    /// The keys usable now.
    ///
    /// # Errors
    /// [`AuthError::unavailable`] when the source holds no usable key set (503).
    fn current(&self) -> Result<Arc<KeySet>, AuthError>;

    /// A token names `kid`, which the current set lacks. Return a future with a refreshed
    /// set, or `None` when no refresh is possible or allowed now (rate-limited).
    fn refresh_for_unknown_kid(&self, kid: &str) -> Option<KeySetFuture> {
        let _ = kid;
        None
    }

    /// Checked once when the authenticator is built (no I/O): a source that can never
    /// verify anything (an empty static set) is a configuration error.
    ///
    /// # Errors
    /// When the source is unusable.
    fn check(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// The source's state, for a readiness endpoint. The default reports the size of the
    /// [current](Self::current) set.
    fn status(&self) -> super::KeySourceStatus {
        super::KeySourceStatus::fixed(self.current().map_or(0, |set| set.len()))
    }
}

/// Keys given at start-up. Never refreshed.
///
/// ```
/// use tower_api_guard::jwt::{JwtKey, KeySource, StaticKeys};
///
/// let jwks = br#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1",
///     "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
/// let keys = StaticKeys::from_jwks_json(jwks).unwrap();
/// assert_eq!(keys.current().unwrap().len(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct StaticKeys {
    set: Arc<KeySet>,
}

impl StaticKeys {
    /// From keys.
    pub fn new(keys: impl IntoIterator<Item = JwtKey>) -> Self {
        Self {
            set: Arc::new(KeySet::new(keys)),
        }
    }

    /// From a JWKS document. See [`KeySet::from_jwks_json`].
    ///
    /// # Errors
    /// When the document does not parse.
    pub fn from_jwks_json(json: &[u8]) -> Result<Self, ConfigError> {
        Ok(Self {
            set: Arc::new(KeySet::from_jwks_json(json)?),
        })
    }

    /// The key set.
    pub fn key_set(&self) -> &Arc<KeySet> {
        &self.set
    }
}

impl From<KeySet> for StaticKeys {
    fn from(set: KeySet) -> Self {
        Self { set: Arc::new(set) }
    }
}

impl KeySource for StaticKeys {
    fn current(&self) -> Result<Arc<KeySet>, AuthError> {
        Ok(self.set.clone())
    }

    fn status(&self) -> super::KeySourceStatus {
        super::KeySourceStatus::fixed(self.set.len())
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.set.is_empty() {
            Err(ConfigError::key("the key set holds no usable key"))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {

    /// RFC 7638 §3.1: the example RSA key and its SHA-256 thumbprint; and one for each other
    /// key type, as jwcrypto computes them (tests/data/dpop/interop.json).
    #[test]
    fn thumbprints_follow_rfc_7638() {
        let rfc = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        let map = rfc.as_object().unwrap();
        assert_eq!(
            jwk_thumbprint(map).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
        let key = JwtKey::from_jwk(map).unwrap();
        assert_eq!(
            key.thumbprint(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dpop/interop.json");
        let fixtures: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut kinds = std::collections::BTreeSet::new();
        for case in fixtures["cases"].as_array().unwrap() {
            let jwk = case["client_jwk"].as_object().unwrap();
            if jwk["kty"] == "oct" {
                continue;
            }
            kinds.insert(jwk["kty"].as_str().unwrap().to_owned());
            assert_eq!(
                jwk_thumbprint(jwk).as_deref(),
                case["expected_jkt"].as_str(),
                "{}",
                case["name"]
            );
        }
        assert_eq!(kinds.len(), 3, "RSA, EC and OKP: {kinds:?}");
    }
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    // RFC 7515 A.3 (P-256) and RFC 8037 A.2 (Ed25519) public keys.
    const P256_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const P256_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn rsa_n(bits: usize) -> String {
        let mut n = vec![0xffu8; bits / 8];
        n[0] = 0xc5;
        URL_SAFE_NO_PAD.encode(n)
    }

    fn jwk(v: serde_json::Value) -> Result<JwtKey, &'static str> {
        let serde_json::Value::Object(m) = v else {
            unreachable!()
        };
        JwtKey::from_jwk(&m)
    }

    fn ec() -> serde_json::Value {
        json!({"kty": "EC", "crv": "P-256", "x": P256_X, "y": P256_Y, "kid": "ec"})
    }

    #[test]
    fn accepts_good_keys() {
        let k = jwk(ec()).unwrap();
        assert!(k.fits(Algorithm::ES256));
        assert!(!k.fits(Algorithm::ES384));
        assert!(!k.fits(Algorithm::RS256));
        assert!(!k.fits(Algorithm::HS256));
        let k = jwk(json!({"kty": "OKP", "crv": "Ed25519", "x": ED_X})).unwrap();
        assert!(k.fits(Algorithm::EdDSA) && !k.fits(Algorithm::ES256));
        let k = jwk(json!({"kty": "RSA", "n": rsa_n(2048), "e": "AQAB", "alg": "PS256", "use": "sig", "key_ops": ["verify"]})).unwrap();
        assert!(k.fits(Algorithm::PS256));
        assert!(!k.fits(Algorithm::RS256), "alg restriction");
        assert!(!k.fits(Algorithm::PS512), "alg restriction");
    }

    #[test]
    fn drops_unusable_keys() {
        let mut bad = vec![
            json!({"kty": "RSA", "n": rsa_n(2040), "e": "AQAB"}),
            json!({"kty": "RSA", "n": rsa_n(1024), "e": "AQAB"}),
            json!({"kty": "RSA", "n": rsa_n(2048), "e": "AQ"}), // e = 1
            json!({"kty": "RSA", "n": rsa_n(2048), "e": "AAE"}), // e = 1 with a leading zero
            json!({"kty": "RSA", "n": rsa_n(2048), "e": "Ag"}), // e = 2 (even)
            json!({"kty": "RSA", "n": rsa_n(2048), "e": "AQAB", "d": "AQAB"}),
            json!({"kty": "RSA", "n": rsa_n(2048), "e": "AQAB", "alg": "RSA-OAEP"}),
            json!({"kty": "RSA", "n": rsa_n(2048), "e": "AQAB", "alg": "ES256"}),
            json!({"kty": "RSA", "n": rsa_n(2048), "e": "AQAB", "alg": "none"}),
            json!({"kty": "EC", "crv": "P-256", "x": P256_X, "y": P256_X}), // off the curve
            json!({"kty": "EC", "crv": "P-384", "x": P256_X, "y": P256_Y}), // wrong length
            json!({"kty": "EC", "crv": "P-521", "x": P256_X, "y": P256_Y}),
            json!({"kty": "EC", "crv": "secp256k1", "x": P256_X, "y": P256_Y}),
            json!({"kty": "OKP", "crv": "X25519", "x": ED_X}),
            json!({"kty": "OKP", "crv": "Ed448", "x": ED_X}),
            json!({"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}),
            json!({"kty": "oct", "alg": "HS256"}),
            json!({"kty": "XYZ"}),
            json!({}),
            json!({"kty": 1}),
        ];
        for (k, v) in [
            ("use", json!("enc")),
            ("use", json!(1)),
            ("key_ops", json!(["sign"])),
            ("key_ops", json!("verify")),
            ("kid", json!(1)),
            ("kid", json!("k".repeat(300))),
            ("x", json!("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU=")),
            ("d", json!("x")),
        ] {
            let mut e = ec();
            e[k] = v;
            bad.push(e);
        }
        for b in bad {
            assert!(jwk(b.clone()).is_err(), "{b}");
        }
    }

    #[test]
    fn jwks_parsing_keeps_good_keys_and_drops_duplicate_kids() {
        let doc = json!({"keys": [
            ec(),
            {"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": "dup"},
            {"kty": "EC", "crv": "P-256", "x": P256_X, "y": P256_Y, "kid": "dup"},
            {"kty": "oct", "k": "AAAA", "kid": "hmac"},
            {"kty": "RSA", "n": rsa_n(1024), "e": "AQAB", "kid": "small"},
            "not an object",
        ]});
        let set = KeySet::from_jwks_json(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.get("ec").is_some());
        assert!(set.get("dup").is_none());
        assert!(set.get("hmac").is_none());
        for bad in [
            &b"{}"[..],
            b"[]",
            b"{\"keys\":{}}",
            b"not json",
            b"{\"keys\":[],\"keys\":[]}",
        ] {
            assert!(KeySet::from_jwks_json(bad).is_err());
        }
        assert!(KeySet::from_jwks_json(b"{\"keys\":[]}").unwrap().is_empty());
    }

    #[test]
    fn candidates_by_kid_and_alg() {
        let ed = jwk(json!({"kty": "OKP", "crv": "Ed25519", "x": ED_X})).unwrap();
        let set = KeySet::new([jwk(ec()).unwrap(), ed]);
        assert_eq!(set.candidates(Some("ec"), Algorithm::ES256).count(), 1);
        assert_eq!(set.candidates(Some("ec"), Algorithm::EdDSA).count(), 0);
        assert_eq!(set.candidates(None, Algorithm::EdDSA).count(), 1);
        assert_eq!(set.candidates(None, Algorithm::ES256).count(), 1);
        assert_eq!(set.candidates(None, Algorithm::RS256).count(), 0);
        assert_eq!(set.candidates(Some("nope"), Algorithm::ES256).count(), 0);
    }

    #[test]
    fn hmac_secrets() {
        assert!(JwtKey::hmac_secret(&[7; 31]).is_err());
        let k = JwtKey::hmac_secret(&[7; 32]).unwrap();
        assert!(k.fits(Algorithm::HS256));
        assert!(
            !k.fits(Algorithm::HS384) && !k.fits(Algorithm::HS512) && !k.fits(Algorithm::RS256)
        );
        assert!(
            JwtKey::hmac_secret(&[7; 64])
                .unwrap()
                .fits(Algorithm::HS512)
        );
        assert!(!format!("{k:?}").contains("7, 7"));
    }

    #[test]
    fn pem_loading() {
        assert!(JwtKey::from_rsa_pem(b"not a pem").is_err());
        assert!(
            JwtKey::from_ec_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .is_err()
        );
        assert!(JwtKey::from_ed_pem(b"").is_err());
    }
}
