//! The DPoP proof itself (RFC 9449 §4.3): parsed and checked strictly, in order of
//! cheapness, with the key of its header remembered by the header's exact text.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de;
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
    /// Its SHA-256, when already known (a token from the verified-token cache).
    pub token_hash: Option<[u8; 32]>,
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
    let claims = Claims::parse(&claims).map_err(invalid)?;
    if text(&claims.htm)?.ok_or_else(|| invalid("proof has no htm"))? != expected.method {
        return Err(invalid("htm does not match the request method"));
    }
    let htu = text(&claims.htu)?.ok_or_else(|| invalid("proof has no htu"))?;
    // The expected value is normalised (and has no query or fragment); a claim written the
    // same way needs no normalising.
    if htu != expected.htu && htu::normalize_htu(htu).map_err(invalid)? != expected.htu {
        return Err(invalid("htu does not match the request URI"));
    }
    let iat = match claims.iat {
        Field::Num(n) => n,
        Field::Absent => return Err(invalid("proof has no iat")),
        _ => return Err(invalid("proof iat is not a number")),
    };
    if (iat - expected.now).abs() > rules.window {
        return Err(invalid(if iat < expected.now {
            "proof iat too old"
        } else {
            "proof iat in the future"
        }));
    }
    let jti = text(&claims.jti)?.ok_or_else(|| invalid("proof has no jti"))?;
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(invalid("proof jti is empty or too long"));
    }
    if let Some(nonces) = rules.nonces {
        match text(&claims.nonce)? {
            None => return Err(AuthError::use_dpop_nonce("proof has no nonce")),
            Some(nonce) if !nonces.check(nonce, expected.now) => {
                return Err(AuthError::use_dpop_nonce("proof nonce is stale or unknown"));
            }
            Some(_) => {}
        }
    }
    let ath = text(&claims.ath)?.ok_or_else(|| invalid("proof has no ath"))?;
    let token_hash: [u8; 32] = match expected.token_hash {
        Some(hash) => hash,
        None => Sha256::digest(expected.token.as_bytes()).into(),
    };
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

/// A string claim, `None` when absent.
fn text<'f>(field: &'f Field<'_>) -> Result<Option<&'f str>, AuthError> {
    match field {
        Field::Absent => Ok(None),
        Field::Str(s) => Ok(Some(s)),
        _ => Err(invalid("proof claim is not a string")),
    }
}

/// One claim the check reads.
#[derive(Debug, Default, PartialEq)]
enum Field<'a> {
    #[default]
    Absent,
    Str(Cow<'a, str>),
    Num(f64),
    /// `true`, `false`, `null`, an array or an object: the wrong type for every claim read.
    Other,
}

/// The claims of a proof, read in one strict pass without building a JSON tree: strings
/// borrowed from the payload unless escaped, duplicate member names (after unescaping)
/// rejected, every other member checked as strictly as by `jose::parse_object` (nesting,
/// duplicates inside) and dropped.
#[derive(Debug, Default)]
struct Claims<'a> {
    htm: Field<'a>,
    htu: Field<'a>,
    iat: Field<'a>,
    jti: Field<'a>,
    ath: Field<'a>,
    nonce: Field<'a>,
}

impl<'a> Claims<'a> {
    fn parse(json: &'a [u8]) -> Result<Self, &'static str> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let claims = de::Deserializer::deserialize_any(&mut de, ClaimsVisitor)
            .map_err(|_| "proof claims are not a strict JSON object")?;
        de.end().map_err(|_| "trailing data after JSON")?;
        Ok(claims)
    }
}

struct ClaimsVisitor;

impl<'de> de::Visitor<'de> for ClaimsVisitor {
    type Value = Claims<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Claims<'de>, A::Error> {
        let mut claims = Claims::default();
        let mut seen: Vec<Cow<'de, str>> = Vec::with_capacity(8);
        while let Some(key) = map.next_key_seed(Text)? {
            if seen.contains(&key) {
                return Err(de::Error::custom("duplicate member name"));
            }
            let slot = match &*key {
                "htm" => Some(&mut claims.htm),
                "htu" => Some(&mut claims.htu),
                "iat" => Some(&mut claims.iat),
                "jti" => Some(&mut claims.jti),
                "ath" => Some(&mut claims.ath),
                "nonce" => Some(&mut claims.nonce),
                _ => None,
            };
            match slot {
                Some(slot) => *slot = map.next_value_seed(FieldSeed)?,
                None => {
                    map.next_value_seed(jose::Strict {
                        depth: jose::MAX_JSON_DEPTH - 1,
                    })?;
                }
            }
            seen.push(key);
        }
        Ok(claims)
    }
}

/// A string, borrowed when it holds no escape.
struct Text;

impl<'de> de::DeserializeSeed<'de> for Text {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> de::Visitor<'de> for Text {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A claim's value: a string, a finite number, or anything else (checked strictly, then
/// dropped).
struct FieldSeed;

impl<'de> de::DeserializeSeed<'de> for FieldSeed {
    type Value = Field<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> de::Visitor<'de> for FieldSeed {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Owned(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Field::Num(v as f64))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Field::Num(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if v.is_finite() {
            Ok(Field::Num(v))
        } else {
            Err(E::custom("non-finite number"))
        }
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let strict = jose::Strict {
            depth: jose::MAX_JSON_DEPTH - 1,
        };
        de::Visitor::visit_seq(strict, seq)?;
        Ok(Field::Other)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let strict = jose::Strict {
            depth: jose::MAX_JSON_DEPTH - 1,
        };
        de::Visitor::visit_map(strict, map)?;
        Ok(Field::Other)
    }
}

/// `base64url(SHA-256(token))`, the `ath` of a proof for `token`.
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
pub(crate) fn ath(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn claims_are_read_strictly() {
        let ok = Claims::parse(
            br#"{"htm":"GET","htu":"https://a/b","iat":1.5,"jti":"x","ath":"y","nonce":"n","other":{"deep":[1,{"a":2}]}}"#,
        )
        .unwrap();
        assert_eq!(ok.htm, Field::Str("GET".into()));
        assert_eq!(ok.iat, Field::Num(1.5));
        // Escapes are unescaped, and an escaped duplicate is still a duplicate.
        let escaped = Claims::parse(br#"{"h\u0074m":"G\u0045T"}"#).unwrap();
        assert_eq!(escaped.htm, Field::Str("GET".into()));
        assert_eq!(
            Claims::parse(br#"{"htm":true,"iat":"1"}"#).unwrap().htm,
            Field::Other
        );
        for bad in [
            &br#"{"htm":"GET","htm":"POST"}"#[..],
            br#"{"htm":"GET","h\u0074m":"POST"}"#,
            br#"{"x":1,"x":2}"#,
            br#"{"x":{"a":1,"a":2}}"#,
            br#"{"htm":{"a":1,"a":2}}"#,
            br#"{"htm":[{"a":1,"a":2}]}"#,
            br#"{"iat":1e999}"#,
            br#"{"a":1} x"#,
            br#"["htm"]"#,
            br#""htm""#,
            b"{\"htm\":\"\xff\"}",
            b"",
        ] {
            assert!(
                Claims::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = format!("{{\"x\":{}1{}}}", "[".repeat(40), "]".repeat(40));
        assert!(Claims::parse(deep.as_bytes()).is_err());
    }

    /// Small JSON objects that may repeat a member name at any depth, as text.
    fn json_object() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec!["htm", "htu", "iat", "jti", "a", "b"]);
        let leaf = prop_oneof![
            Just("1".to_owned()),
            Just("\"s\"".to_owned()),
            Just("null".to_owned()),
            Just("1e999".to_owned()),
            Just("[1,2]".to_owned()),
        ];
        let value = leaf.prop_recursive(3, 16, 4, move |inner| {
            prop::collection::vec((key.clone(), inner), 0..4).prop_map(|members| {
                let members: Vec<String> = members
                    .iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect();
                format!("{{{}}}", members.join(","))
            })
        });
        value.prop_filter("an object", |v| v.starts_with('{'))
    }

    proptest! {
        /// The one-pass reader accepts exactly what the strict tree parser accepts.
        #[test]
        fn claims_reader_agrees_with_the_strict_parser(json in json_object()) {
            prop_assert_eq!(
                Claims::parse(json.as_bytes()).is_ok(),
                jose::parse_object(json.as_bytes()).is_ok(),
                "{}", json
            );
        }

        /// No input makes the reader panic.
        #[test]
        fn claims_reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = Claims::parse(&bytes);
        }
    }
}
