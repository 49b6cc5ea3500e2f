//! Wycheproof vectors (C2SP/wycheproof, Apache-2.0; copies in tests/data/wycheproof) run
//! against the signature layer: the JOSE JWS file through `verify_signature`, and the raw
//! signature files through `JwtKey::verify` for every algorithm this crate accepts.
#![cfg(feature = "jwt")]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use tower_api_guard::jwt::{Algorithm, JwtKey, KeySet, verify_signature};

fn load(name: &str) -> Value {
    let path = format!(
        "{}/tests/data/wycheproof/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn groups(doc: &Value) -> &Vec<Value> {
    doc["testGroups"].as_array().unwrap()
}

fn tests(group: &Value) -> &Vec<Value> {
    group["tests"].as_array().unwrap()
}

/// Vectors labelled valid that a strict verifier rejects, and why (SECURITY-CASES.md errata).
const STRICT_REJECTS: &[(u64, &str)] = &[
    (372, "payload segment contains '?': not base64url"),
    (373, "payload segment contains '?': not base64url"),
];
/// Vectors labelled invalid that are byte-identical to a valid one (errata).
const MISLABELLED_INVALID: &[u64] = &[367, 370];

#[test]
fn json_web_signature() {
    let doc = load("json_web_signature_test.json");
    let (mut accepted_valid, mut rejected_invalid, mut rejected_unsupported, mut strict) =
        (0, 0, 0, 0);
    for group in groups(&doc) {
        let mut jwk = group
            .get("public")
            .or(group.get("private"))
            .unwrap()
            .clone();
        let id_set: Vec<u64> = tests(group)
            .iter()
            .map(|t| t["tcId"].as_u64().unwrap())
            .collect();
        // Errata: tc346/350 are PS384 tokens under a key labelled PS256; tc347/351 use
        // "ES521" for ES512. Patch the key's alg as SECURITY-CASES.md says.
        if id_set.iter().any(|id| [346, 350].contains(id)) {
            jwk["alg"] = "PS384".into();
        }
        if id_set.iter().any(|id| [347, 351].contains(id)) {
            jwk["alg"] = "ES512".into();
        }
        let kty = jwk["kty"].as_str().unwrap();
        let (keys, supported) = if kty == "oct" {
            // HMAC keys never come from a JWK set: configure the secret explicitly.
            let k = URL_SAFE_NO_PAD.decode(jwk["k"].as_str().unwrap()).unwrap();
            match JwtKey::hmac_secret(&k) {
                Ok(key) => {
                    let key = match jwk["kid"].as_str() {
                        Some(kid) => key.with_kid(kid),
                        None => key,
                    };
                    (KeySet::new([key]), true)
                }
                Err(_) => (KeySet::default(), false),
            }
        } else {
            let set =
                KeySet::from_jwks_json(serde_json::json!({ "keys": [jwk] }).to_string().as_bytes())
                    .unwrap();
            let ok = !set.is_empty();
            (set, ok)
        };
        let algs: Vec<Algorithm> = match jwk.get("alg").and_then(Value::as_str) {
            Some(a) => a.parse().into_iter().collect(),
            None => Algorithm::ASYMMETRIC.to_vec(),
        };
        let algs = if algs.is_empty() {
            vec![Algorithm::RS256]
        } else {
            algs
        };
        for t in tests(group) {
            let id = t["tcId"].as_u64().unwrap();
            let jws = match &t["jws"] {
                Value::String(s) => s.clone(),
                // JSON serialization: never accepted.
                other => other.to_string(),
            };
            let got = verify_signature(&jws, &keys, &algs).is_ok();
            let labelled_valid = t["result"] == "valid" || MISLABELLED_INVALID.contains(&id);
            if let Some((_, why)) = STRICT_REJECTS.iter().find(|(i, _)| *i == id) {
                assert!(!got, "tc{id} should be rejected: {why}");
                strict += 1;
            } else if labelled_valid && !supported {
                assert!(!got, "tc{id}: key unsupported, must not verify");
                rejected_unsupported += 1;
            } else if labelled_valid {
                assert!(
                    got,
                    "tc{id} ({}) is valid but was rejected",
                    group["comment"]
                );
                accepted_valid += 1;
            } else {
                assert!(
                    !got,
                    "tc{id} ({}: {}) is invalid but was accepted",
                    group["comment"], t["comment"]
                );
                rejected_invalid += 1;
            }
        }
    }
    println!(
        "json_web_signature: {accepted_valid} valid accepted, {rejected_invalid} invalid rejected, \
         {rejected_unsupported} valid-but-unsupported rejected, {strict} strict rejections"
    );
    assert_eq!(
        accepted_valid + rejected_invalid + rejected_unsupported + strict,
        401
    );
    assert!(accepted_valid >= 40, "{accepted_valid}");
    assert!(rejected_invalid >= 340, "{rejected_invalid}");
}

fn key_of(group: &Value) -> Result<JwtKey, String> {
    let Some(jwk) = group.get("publicKeyJwk").or(group.get("keyJwk")) else {
        // Some groups only carry a PEM.
        let pem = group["publicKeyPem"]
            .as_str()
            .expect("group has a JWK or a PEM");
        let key = match group["type"].as_str() {
            Some(t) if t.starts_with("Ecdsa") => JwtKey::from_ec_pem(pem.as_bytes()),
            Some(t) if t.starts_with("Eddsa") => JwtKey::from_ed_pem(pem.as_bytes()),
            _ => JwtKey::from_rsa_pem(pem.as_bytes()),
        };
        return key.map_err(|e| e.to_string());
    };
    let mut jwk = jwk.clone();
    // Wycheproof JWKs carry kid "none" and sometimes an alg; the alg is set per file below.
    jwk.as_object_mut().unwrap().remove("alg");
    JwtKey::from_jwk_json(jwk.to_string().as_bytes()).map_err(|e| e.to_string())
}

/// Run a raw-signature file. `expect` maps a vector to whether it must verify.
fn raw_file(name: &str, alg: Algorithm, expect: impl Fn(&Value) -> bool) -> (usize, usize) {
    let doc = load(name);
    let (mut accepted, mut rejected) = (0, 0);
    for group in groups(&doc) {
        let key = key_of(group).unwrap_or_else(|e| panic!("{name}: key refused: {e}"));
        for t in tests(group) {
            let msg = hex::decode(t["msg"].as_str().unwrap()).unwrap();
            let sig = hex::decode(t["sig"].as_str().unwrap()).unwrap();
            let got = key.verify(alg, &msg, &sig);
            let want = expect(t);
            assert_eq!(
                got, want,
                "{name} tc{} ({}, flags {})",
                t["tcId"], t["comment"], t["flags"]
            );
            if got {
                accepted += 1;
            } else {
                rejected += 1;
            }
        }
    }
    println!("{name}: {accepted} accepted, {rejected} rejected");
    assert!(accepted + rejected > 50, "{name}: too few vectors ran");
    (accepted, rejected)
}

fn valid(t: &Value) -> bool {
    t["result"] == "valid"
}

/// "acceptable" vectors (legacy encodings such as a missing ASN.1 NULL in PKCS#1) are
/// rejected: a strict verifier has no reason to accept them.
fn strictly_valid(t: &Value) -> bool {
    t["result"] == "valid"
}

#[test]
fn ecdsa_p1363() {
    let (a, _) = raw_file(
        "ecdsa_secp256r1_sha256_p1363_test.json",
        Algorithm::ES256,
        valid,
    );
    assert!(a > 100);
    let (a, _) = raw_file(
        "ecdsa_secp384r1_sha384_p1363_test.json",
        Algorithm::ES384,
        valid,
    );
    assert!(a > 100);
}

#[test]
fn ecdsa_der_signatures_never_verify() {
    // JWS ECDSA signatures are fixed-length R || S; DER is a negative corpus.
    raw_file("ecdsa_secp256r1_sha256_test.json", Algorithm::ES256, |_| {
        false
    });
    raw_file("ecdsa_secp384r1_sha384_test.json", Algorithm::ES384, |_| {
        false
    });
}

#[test]
fn p521_is_not_supported() {
    let doc = load("ecdsa_secp521r1_sha512_p1363_test.json");
    let mut refused = 0;
    for group in groups(&doc) {
        assert!(key_of(group).is_err(), "a P-521 key must be refused");
        refused += 1;
    }
    assert!(refused > 0);
}

#[test]
fn rsa_pkcs1() {
    for (file, alg) in [
        ("rsa_signature_2048_sha256_test.json", Algorithm::RS256),
        ("rsa_signature_2048_sha384_test.json", Algorithm::RS384),
        ("rsa_signature_2048_sha512_test.json", Algorithm::RS512),
        ("rsa_signature_3072_sha256_test.json", Algorithm::RS256),
        ("rsa_signature_4096_sha256_test.json", Algorithm::RS256),
    ] {
        let (a, _) = raw_file(file, alg, strictly_valid);
        assert!(a > 0, "{file}");
    }
}

#[test]
fn rsa_pss() {
    for file in [
        "rsa_pss_2048_sha256_mgf1_32_test.json",
        "rsa_pss_3072_sha256_mgf1_32_test.json",
        "rsa_pss_4096_sha256_mgf1_32_test.json",
    ] {
        let (a, _) = raw_file(file, Algorithm::PS256, valid);
        assert!(a > 0, "{file}");
    }
    // Salt length 0 is not PS256 (whose salt is the hash length): every vector that is
    // valid for salt 0 must fail. The one vector re-signed with a 32-byte salt is a genuine
    // PS256 signature (labelled invalid only relative to salt 0) and must verify.
    let (accepted, rejected) = raw_file(
        "rsa_pss_2048_sha256_mgf1_0_test.json",
        Algorithm::PS256,
        |t| t["comment"] == "s_len changed to 32",
    );
    assert_eq!(accepted, 1);
    assert!(rejected > 100);
}

#[test]
fn ed25519() {
    let (a, _) = raw_file("ed25519_test.json", Algorithm::EdDSA, valid);
    assert!(a > 50);
}

#[test]
fn a_key_verifies_only_its_own_algorithm() {
    let doc = load("ed25519_test.json");
    let group = &groups(&doc)[0];
    let key = key_of(group).unwrap();
    let t = &tests(group)[0];
    let msg = hex::decode(t["msg"].as_str().unwrap()).unwrap();
    let sig = hex::decode(t["sig"].as_str().unwrap()).unwrap();
    assert!(key.verify(Algorithm::EdDSA, &msg, &sig));
    for alg in [Algorithm::ES256, Algorithm::RS256, Algorithm::HS256] {
        assert!(!key.verify(alg, &msg, &sig));
    }
}

#[test]
fn json_web_keys() {
    // Which public JWKs load. tc7 (ROCA) is skipped per SECURITY-CASES.md errata.
    let doc = load("json_web_key_test.json");
    let mut checked = 0;
    for group in groups(&doc) {
        for t in tests(group) {
            let id = t["tcId"].as_u64().unwrap();
            if id == 7 {
                continue;
            }
            let Some(jwk) = t.get("public").or(t.get("jwk")).or(group.get("public")) else {
                continue;
            };
            let loaded = JwtKey::from_jwk_json(jwk.to_string().as_bytes()).is_ok();
            if t["result"] == "invalid" {
                assert!(
                    !loaded,
                    "json_web_key tc{id} ({}) is invalid but loaded",
                    t["comment"]
                );
            }
            checked += 1;
        }
    }
    println!("json_web_key: {checked} checked");
}
