//! The DPoP proof itself (RFC 9449 §4.3): parsed and checked strictly, in order of
//! cheapness, with the key of its header remembered by the header's exact text.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::htu;
use super::nonce::DpopNonces;
use crate::error::AuthError;
use crate::jwt::Algorithm;
use crate::jwt::jose;
use crate::jwt::keys::{JwtKey, KeySet, jwk_thumbprint};

/// The longest DPoP proof accepted, in bytes (an RSA-4096 `jwk` and signature fit).
pub const MAX_PROOF_LEN: usize = 8 * 1024;

/// The longest `jti` accepted, in bytes.
const MAX_JTI_LEN: usize = 256;

/// The proof's key, checked once per distinct header text: the `jwk` parsed into a key
/// that fits `alg`, and its RFC 7638 thumbprint.
pub(crate) struct ProofKey {
    key: JwtKey,
    alg: Algorithm,
    jkt: Box<str>,
}

/// Proof keys by the exact base64url text of the proof's header. A client sends the same
/// header (`typ`, `alg`, `jwk`) on every request, so a hit skips decoding, JSON parsing,
/// key parsing and the thumbprint. Only headers whose signature verified are remembered.
pub(crate) type HeaderCache = quick_cache::sync::Cache<Box<str>, Arc<ProofKey>>;

/// What the request says the proof must match.
pub(crate) struct Expected<'a> {
    pub method: &'a str,
    /// The request's external URI, normalised (see `htu::request_htu`).
    pub htu: &'a str,
    /// The access token the proof must carry the hash of.
    pub token: &'a str,
    pub now: f64,
}

/// The configuration a proof is checked against.
pub(crate) struct Rules<'a> {
    pub algorithms: &'a [Algorithm],
    /// `iat` must lie within `now ± window` seconds.
    pub window: f64,
    pub nonces: Option<&'a DpopNonces>,
    /// The issuer's keys (when available): a proof signed with one of them is refused.
    pub issuer_keys: Option<&'a KeySet>,
    pub cache: Option<&'a HeaderCache>,
}

/// A proof that passed every check that needs no token claims and no replay cache.
#[derive(Debug)]
pub(crate) struct Checked {
    /// The RFC 7638 thumbprint (base64url) of the proof's key, to match `cnf.jkt`.
    pub jkt: Box<str>,
    /// SHA-256 over the thumbprint and the `jti`, the key of the replay cache.
    pub replay_key: [u8; 32],
}

fn invalid(reason: &'static str) -> AuthError {
    AuthError::invalid_dpop_proof(reason)
}

/// Check `proof` against the request and the rules, in this order: form (size, compact
/// JWS, canonical base64url, strict JSON), header (`typ`, `alg`, `jwk`), signature, `htm`,
/// `htu`, `iat`, `nonce`, `ath`. Binding to the token (`cnf.jkt`) and the replay check come
/// after the token is verified.
pub(crate) fn check(
    proof: &str,
    expected: &Expected<'_>,
    rules: &Rules<'_>,
) -> Result<Checked, AuthError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(invalid("proof longer than the cap"));
    }
    let compact = jose::split_compact(proof).map_err(invalid)?;
    let (key, hit) = match rules.cache.and_then(|c| c.get(compact.header)) {
        Some(key) => (key, true),
        None => (
            Arc::new(proof_key(compact.header, rules.algorithms)?),
            false,
        ),
    };
    let signature = jose::decode_b64url(compact.signature).map_err(invalid)?;
    if !key
        .key
        .verify(key.alg, compact.signing_input.as_bytes(), &signature)
    {
        return Err(invalid("proof signature does not verify"));
    }
    if let Some(cache) = rules.cache.filter(|_| !hit) {
        cache.insert(compact.header.into(), key.clone());
    }
    if rules
        .issuer_keys
        .is_some_and(|set| set.keys().iter().any(|k| k.thumbprint() == Some(&*key.jkt)))
    {
        return Err(invalid("proof signed with a key of the token issuer"));
    }
    let claims = jose::decode_b64url(compact.claims).map_err(invalid)?;
    let claims = jose::parse_object(&claims).map_err(invalid)?;
    let text = |name: &str| -> Result<Option<&str>, AuthError> {
        match claims.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid("proof claim is not a string")),
        }
    };
    if text("htm")?.ok_or_else(|| invalid("proof has no htm"))? != expected.method {
        return Err(invalid("htm does not match the request method"));
    }
    let htu = text("htu")?.ok_or_else(|| invalid("proof has no htu"))?;
    if htu::normalize_htu(htu).map_err(invalid)? != expected.htu {
        return Err(invalid("htu does not match the request URI"));
    }
    let iat = match claims.get("iat") {
        Some(Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| invalid("proof iat is not finite"))?,
        Some(_) => return Err(invalid("proof iat is not a number")),
        None => return Err(invalid("proof has no iat")),
    };
    if (iat - expected.now).abs() > rules.window {
        return Err(invalid(if iat < expected.now {
            "proof iat too old"
        } else {
            "proof iat in the future"
        }));
    }
    let jti = text("jti")?.ok_or_else(|| invalid("proof has no jti"))?;
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(invalid("proof jti is empty or too long"));
    }
    if let Some(nonces) = rules.nonces {
        match text("nonce")? {
            None => return Err(AuthError::use_dpop_nonce("proof has no nonce")),
            Some(nonce) if !nonces.check(nonce, expected.now) => {
                return Err(AuthError::use_dpop_nonce("proof nonce is stale or unknown"));
            }
            Some(_) => {}
        }
    }
    let ath = text("ath")?.ok_or_else(|| invalid("proof has no ath"))?;
    let token_hash: [u8; 32] = Sha256::digest(expected.token.as_bytes()).into();
    let matches = URL_SAFE_NO_PAD
        .decode(ath)
        .is_ok_and(|ath| ath.ct_eq(&token_hash).into());
    if !matches {
        return Err(invalid("ath does not match the access token"));
    }
    let mut replay = Sha256::new();
    replay.update(key.jkt.as_bytes());
    replay.update([0]);
    replay.update(jti.as_bytes());
    Ok(Checked {
        jkt: key.jkt.clone(),
        replay_key: replay.finalize().into(),
    })
}

/// Decode and check the proof's header: strict JSON, no `crit` or `b64`, `typ` exactly
/// `dpop+jwt`, `alg` asymmetric and allowed, `jwk` a public key of a supported type that
/// fits `alg` and holds no private member.
fn proof_key(header: &str, algorithms: &[Algorithm]) -> Result<ProofKey, AuthError> {
    let bytes = jose::decode_b64url(header).map_err(invalid)?;
    let map = jose::parse_object(&bytes).map_err(invalid)?;
    let parsed = jose::parse_header(&map).map_err(invalid)?;
    if parsed.typ.as_deref() != Some("dpop+jwt") {
        return Err(invalid("proof typ is not dpop+jwt"));
    }
    if parsed.alg.eq_ignore_ascii_case("none") {
        return Err(invalid("proof alg none"));
    }
    let alg: Algorithm = parsed
        .alg
        .parse()
        .map_err(|_| invalid("proof alg not supported"))?;
    if alg.is_hmac() {
        return Err(invalid("proof alg is symmetric"));
    }
    if !algorithms.contains(&alg) {
        return Err(invalid("proof alg not allowed"));
    }
    let Some(Value::Object(jwk)) = map.get("jwk") else {
        return Err(invalid("proof header has no jwk object"));
    };
    let key = JwtKey::from_jwk(jwk).map_err(|reason| {
        invalid(if reason.contains("private") {
            "proof jwk has a private or symmetric member"
        } else {
            "proof jwk is not a usable public key"
        })
    })?;
    if !key.fits(alg) {
        return Err(invalid("proof jwk does not fit alg"));
    }
    let jkt = jwk_thumbprint(jwk).ok_or_else(|| invalid("proof jwk has no thumbprint"))?;
    Ok(ProofKey {
        key,
        alg,
        jkt: jkt.into(),
    })
}

/// `base64url(SHA-256(token))`, the `ath` of a proof for `token`.
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
pub(crate) fn ath(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}
