//! Wycheproof vectors (C2SP/wycheproof @ dac1dd47, testvectors_v1, Apache-2.0; copies in
//! tests/data/wycheproof) run against the signature layer:
//!
//! - `json_web_signature_test.json` through [`verify_signature`] (strict JOSE parsing, key
//!   selection, algorithm allow-list, signature);
//! - `json_web_key_test.json` through [`JwtKey::from_jwk_json`], [`KeySet::from_jwks_json`]
//!   and [`JwtKey::hmac_secret`];
//! - the raw signature files through [`JwtKey::verify`], one `#[test]` per file.
//!
//! Mismatches are collected and reported all at once, so one run lists every vector on
//! which the library disagrees with the corpus (or with the decisions documented here).
#![cfg(feature = "jwt")]

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tower_api_guard::jwt::{Algorithm, JwtKey, KeySet, verify_signature};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn load(name: &str) -> Value {
    let path = format!(
        "{}/tests/data/wycheproof/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

fn groups(doc: &Value) -> &[Value] {
    doc["testGroups"].as_array().expect("testGroups array")
}

fn tests(group: &Value) -> &[Value] {
    group["tests"].as_array().expect("tests array")
}

fn tc_id(t: &Value) -> u64 {
    t["tcId"].as_u64().expect("tcId")
}

fn number_of_tests(doc: &Value) -> usize {
    usize::try_from(doc["numberOfTests"].as_u64().expect("numberOfTests")).unwrap()
}

fn find<'a>(list: &'a [(u64, &'static str)], id: u64) -> Option<&'a str> {
    list.iter().find(|(i, _)| *i == id).map(|(_, why)| *why)
}

/// Every algorithm this crate knows: the asymmetric defaults plus the HMAC family. Used
/// as a deliberately broad allow-list: the key's own `alg` restriction and type must then
/// do all the work.
fn all_algorithms() -> Vec<Algorithm> {
    let mut algs = Algorithm::ASYMMETRIC.to_vec();
    algs.extend([Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]);
    algs
}

/// Decode key material from the corpus. Lenient about trailing bits: the second `k` of
/// json_web_key tc4 ends in `…ge` where canonical base64url is `…gc`.
fn b64url(s: &str) -> Vec<u8> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    LENIENT.decode(s).expect("corpus base64url")
}

/// The `alg` a compact JWS's header names, if its header decodes at all.
fn header_alg(jws: &str) -> Option<String> {
    let header = URL_SAFE_NO_PAD.decode(jws.split('.').next()?).ok()?;
    let header: Value = serde_json::from_slice(&header).ok()?;
    header["alg"].as_str().map(str::to_owned)
}

/// An HMAC key as an application would configure it from a symmetric JWK: the decoded
/// `k` as a shared secret, with the JWK's `kid` and `alg`. `Ok(None)` when the JWK's `alg`
/// is not a JWS algorithm at all (e.g. `A256GCM`): nobody can configure that as an HMAC key.
fn hmac_key_from_oct_jwk(jwk: &Value) -> Result<Option<JwtKey>, String> {
    let secret = b64url(jwk["k"].as_str().expect("oct JWK has k"));
    let alg = match jwk.get("alg").and_then(Value::as_str) {
        None => None,
        Some(a) => match a.parse::<Algorithm>() {
            Ok(alg) => Some(alg),
            Err(_) => return Ok(None),
        },
    };
    let mut key = JwtKey::hmac_secret(&secret).map_err(|e| e.message().to_owned())?;
    if let Some(kid) = jwk.get("kid").and_then(Value::as_str) {
        key = key.with_kid(kid);
    }
    if let Some(alg) = alg {
        key = key.with_algorithm(alg);
    }
    Ok(Some(key))
}

fn assert_no_mismatch(file: &str, mismatches: &[String]) {
    assert!(
        mismatches.is_empty(),
        "{file}: {} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// json_web_signature_test.json
// ---------------------------------------------------------------------------------------

/// Labelled invalid, but byte-identical to the valid tc357 (docs/security-cases.md errata).
const JWS_RELABELLED_VALID: &[(u64, &str)] = &[
    (
        367,
        "\"invalidBase64Padding\" is byte-identical to valid tc357",
    ),
    (
        370,
        "\"invalidBase64PaddingInPayload\" is byte-identical to valid tc357",
    ),
];

/// Labelled valid, rejected on purpose by our strict verifier.
const JWS_STRICT_REJECTS: &[(u64, &str)] = &[
    (372, "header segment contains '?': not base64url"),
    (373, "payload segment contains '?': not base64url"),
];

/// The file's key `alg` is wrong for its token (errata): patched before loading.
const JWS_KEY_ALG_PATCHES: &[(u64, &str)] = &[
    (346, "PS384"), // RFC 7520 figure 20 is PS384; the file's key says PS256
    (350, "PS384"),
    (347, "ES512"), // RFC 7520 figure 27; the file says "ES521"
    (351, "ES512"),
];

/// A labelled-valid vector may only be "unsupported" when its `alg` is one this crate
/// deliberately does not implement.
const UNSUPPORTED_ALGS: &[&str] = &["ES512", "ES256K", "RSA-OAEP", "RSA1_5"];

/// Keys of one vector: the set to verify against and the per-vector allow-list (the key's
/// `alg`, or every asymmetric algorithm when the key names none). `Err` with the
/// library's reason when the key is refused.
fn jws_keys(
    jwk: &Value,
    mismatches: &mut Vec<String>,
    id: u64,
) -> Result<(KeySet, Vec<Algorithm>), String> {
    let set = if jwk["kty"] == "oct" {
        // A JWK set never yields an HMAC key ...
        let via_jwks = KeySet::from_jwks_json(json!({ "keys": [jwk] }).to_string().as_bytes())
            .expect("JWKS document parses");
        if !via_jwks.is_empty() {
            mismatches.push(format!("tc{id}: a JWK set yielded an HMAC key"));
        }
        // ... so the secret is configured explicitly, as an application would.
        let key = hmac_key_from_oct_jwk(jwk)?.ok_or("oct key alg is not a JWS algorithm")?;
        KeySet::new([key])
    } else {
        let single = JwtKey::from_jwk_json(jwk.to_string().as_bytes());
        let set = KeySet::from_jwks_json(json!({ "keys": [jwk] }).to_string().as_bytes())
            .expect("JWKS document parses");
        // The two loaders must agree on whether the key is usable.
        if single.is_ok() != (set.len() == 1) {
            mismatches.push(format!(
                "tc{id}: from_jwk_json ok={} but from_jwks_json kept {} keys",
                single.is_ok(),
                set.len()
            ));
        }
        single.map_err(|e| e.message().to_owned())?;
        set
    };
    let allow = match jwk.get("alg").and_then(Value::as_str) {
        None => Algorithm::ASYMMETRIC.to_vec(),
        Some(a) => match a.parse::<Algorithm>() {
            Ok(alg) => vec![alg],
            Err(_) => {
                mismatches.push(format!("tc{id}: a key with unsupported alg {a} loaded"));
                return Err(format!("key alg {a} unsupported"));
            }
        },
    };
    Ok((set, allow))
}

#[test]
fn json_web_signature() {
    let file = "json_web_signature_test.json";
    let doc = load(file);
    let everything = all_algorithms();
    let mut mismatches = Vec::new();
    let (mut valid_accepted, mut invalid_rejected, mut unsupported_rejected, mut strict_rejected) =
        (0usize, 0usize, 0usize, 0usize);
    let (mut json_serialization, mut refused_keys) = (0usize, Vec::<(u64, String)>::new());
    for group in groups(&doc) {
        let base_jwk = group
            .get("public")
            .or_else(|| group.get("private"))
            .expect("group has a key");
        for t in tests(group) {
            let id = tc_id(t);
            let mut jwk = base_jwk.clone();
            if let Some(alg) = find(JWS_KEY_ALG_PATCHES, id) {
                jwk["alg"] = alg.into();
            }
            // JSON serialization is never accepted: pass it as the text it is.
            let (jws, compact) = match &t["jws"] {
                Value::String(s) => (s.clone(), !s.trim_start().starts_with('{')),
                other => (other.to_string(), false),
            };
            let keys = jws_keys(&jwk, &mut mismatches, id);
            let (ok_narrow, ok_broad) = match &keys {
                Ok((set, allow)) => (
                    verify_signature(&jws, set, allow).map_err(|e| e.reason().to_owned()),
                    verify_signature(&jws, set, &everything).map_err(|e| e.reason().to_owned()),
                ),
                Err(why) => {
                    refused_keys.push((id, why.clone()));
                    (
                        Err(format!("key refused: {why}")),
                        Err("key refused".into()),
                    )
                }
            };
            // With a broad allow-list, the key's own alg and type must give the same answer.
            if ok_narrow.is_ok() != ok_broad.is_ok() {
                mismatches.push(format!(
                    "tc{id}: key-alg allow-list ok={} but broad allow-list ok={}",
                    ok_narrow.is_ok(),
                    ok_broad.is_ok()
                ));
            }
            let got = ok_narrow.is_ok();
            let why_rejected = ok_narrow.err().unwrap_or_default();
            let label = t["result"].as_str().expect("result");
            let what = format!("tc{id} ({}: {})", group["comment"], t["comment"]);

            if !compact || jws.split('.').count() == 5 {
                // JSON serialization / JWE: rejected whatever the label.
                json_serialization += 1;
                if got {
                    mismatches.push(format!("{what}: JSON serialization or JWE accepted"));
                }
                invalid_rejected += usize::from(label == "invalid" && !got);
                continue;
            }
            if let Some(why) = find(JWS_STRICT_REJECTS, id) {
                if got {
                    mismatches.push(format!("{what}: accepted, must be rejected: {why}"));
                } else {
                    strict_rejected += 1;
                }
                continue;
            }
            let valid = label == "valid" || find(JWS_RELABELLED_VALID, id).is_some();
            let alg = header_alg(&jws).unwrap_or_else(|| "<undecodable header>".into());
            let supported = keys.is_ok() && alg.parse::<Algorithm>().is_ok();
            match (valid, supported, got) {
                (true, true, true) => valid_accepted += 1,
                (true, true, false) => {
                    mismatches.push(format!("{what}: valid but rejected ({why_rejected})"));
                }
                (true, false, false) if UNSUPPORTED_ALGS.contains(&alg.as_str()) => {
                    unsupported_rejected += 1;
                }
                (true, false, false) => mismatches.push(format!(
                    "{what}: valid, rejected as unsupported, but alg {alg} should be supported \
                     ({why_rejected})"
                )),
                (true, false, true) => {
                    mismatches.push(format!("{what}: unsupported alg {alg} accepted"));
                }
                (false, _, false) => invalid_rejected += 1,
                (false, _, true) => mismatches.push(format!("{what}: INVALID ACCEPTED")),
            }
        }
    }
    println!(
        "{file}: {valid_accepted} valid accepted, {invalid_rejected} invalid rejected, \
         {unsupported_rejected} unsupported rejected, {strict_rejected} strict rejected \
         (labelled valid), {json_serialization} JSON serialization rejected; keys refused: {refused_keys:?}"
    );
    assert_no_mismatch(file, &mismatches);
    assert_eq!(
        valid_accepted + invalid_rejected + unsupported_rejected + strict_rejected,
        number_of_tests(&doc)
    );
    // 46 labelled valid + 2 relabelled (tc367, tc370) - 2 strict (tc372, tc373)
    // - 2 ES512 (tc347, tc351).
    assert_eq!(valid_accepted, 44);
    assert_eq!(invalid_rejected, 353);
    assert_eq!(unsupported_rejected, 2);
    assert_eq!(strict_rejected, 2);
    assert_eq!(json_serialization, 1);
    // ES512 (errata-patched "ES521"), then use "enc" and key_ops without "verify".
    let refused: Vec<u64> = refused_keys.iter().map(|(id, _)| *id).collect();
    assert_eq!(refused, [347, 351, 353, 354, 355, 356]);
}

// ---------------------------------------------------------------------------------------
// json_web_key_test.json
// ---------------------------------------------------------------------------------------

/// Not run (docs/security-cases.md errata).
const JWK_SKIPPED: &[(u64, &str)] = &[(
    7,
    "ROCA-weak 2056-bit modulus: no ROCA fingerprint check by design",
)];

/// Labelled valid, rejected on the JWK-set path on purpose.
const JWK_SET_STRICT: &[(u64, &str)] = &[
    (
        2,
        "HS256 keys in a JWK set: a JWK set never yields HMAC keys",
    ),
    (
        13,
        "HS256 key in a JWK set: a JWK set never yields HMAC keys",
    ),
    (
        14,
        "HS384 key in a JWK set: a JWK set never yields HMAC keys",
    ),
    (
        15,
        "HS512 key in a JWK set: a JWK set never yields HMAC keys",
    ),
];

/// Labelled invalid because of key-*set* semantics that do not exist once secrets are
/// configured one by one with `JwtKey::hmac_secret`.
const JWK_SECRET_PATH_ACCEPTS: &[(u64, &str)] = &[(
    1,
    "mixed HS256 + ES256 set: the explicitly configured HS256 secret verifies its own token",
)];

const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

#[test]
fn json_web_key() {
    let file = "json_web_key_test.json";
    let doc = load(file);
    let everything = all_algorithms();
    let mut mismatches = Vec::new();
    let (mut jwks_checked, mut set_runs, mut secret_runs, mut skipped) = (0usize, 0, 0, 0);
    let (mut set_strict, mut secret_refused) = (0usize, 0usize);
    for group in groups(&doc) {
        let set = group
            .get("public")
            .or_else(|| group.get("private"))
            .expect("group has a key set");
        let public_set = group.get("public").is_some();
        let entries = set["keys"].as_array().expect("keys array");
        let group_tests = tests(group);
        let first = group_tests.first().expect("group has tests");
        if find(JWK_SKIPPED, tc_id(first)).is_some() {
            skipped += group_tests.len();
            continue;
        }

        // 1. Each JWK alone. A public set's key loads exactly when the group's vectors are
        //    valid; a key carrying private or symmetric material never loads.
        for jwk in entries {
            let loaded = JwtKey::from_jwk_json(jwk.to_string().as_bytes());
            let secret = PRIVATE_MEMBERS.iter().any(|m| jwk.get(*m).is_some());
            let want = if public_set {
                group_tests.iter().all(|t| t["result"] == "valid")
            } else {
                !secret
            };
            if loaded.is_ok() != want {
                mismatches.push(format!(
                    "tc{} ({}): from_jwk_json ok={} want {want} ({:?})",
                    tc_id(first),
                    group["comment"],
                    loaded.is_ok(),
                    loaded.err().map(|e| e.message().to_owned())
                ));
            }
            jwks_checked += 1;
        }

        // 2. The whole set as a JWKS document.
        let key_set = KeySet::from_jwks_json(set.to_string().as_bytes()).expect("JWKS parses");
        for t in group_tests {
            let id = tc_id(t);
            let jws = t["jws"].as_str().expect("compact JWS");
            let got = verify_signature(jws, &key_set, &everything).is_ok();
            let want = t["result"] == "valid" && find(JWK_SET_STRICT, id).is_none();
            if got != want {
                mismatches.push(format!(
                    "tc{id} ({}: {}): JWKS path ok={got} want {want}",
                    group["comment"], t["comment"]
                ));
            }
            set_strict += usize::from(!got && find(JWK_SET_STRICT, id).is_some());
            set_runs += 1;
        }

        // 3. Symmetric keys configured one by one as shared secrets.
        let oct: Vec<&Value> = entries.iter().filter(|k| k["kty"] == "oct").collect();
        if oct.is_empty() {
            continue;
        }
        let mut keys = Vec::new();
        for jwk in oct {
            match hmac_key_from_oct_jwk(jwk) {
                Ok(Some(key)) => keys.push(key),
                Ok(None) => secret_refused += 1, // alg A256GCM / A256KW: not a JWS alg
                Err(_) => {
                    // Refused: only secrets under 32 bytes may be.
                    let len = b64url(jwk["k"].as_str().unwrap()).len();
                    if len >= 32 {
                        mismatches.push(format!(
                            "tc{}: hmac_secret refused a {len}-byte secret",
                            tc_id(first)
                        ));
                    }
                    secret_refused += 1;
                }
            }
        }
        let key_set = KeySet::new(keys);
        for t in group_tests {
            let id = tc_id(t);
            let jws = t["jws"].as_str().expect("compact JWS");
            let got = verify_signature(jws, &key_set, &everything).is_ok();
            let want = t["result"] == "valid" || find(JWK_SECRET_PATH_ACCEPTS, id).is_some();
            if got != want {
                mismatches.push(format!(
                    "tc{id} ({}: {}): shared-secret path ok={got} want {want}",
                    group["comment"], t["comment"]
                ));
            }
            secret_runs += 1;
        }
    }
    println!(
        "{file}: {jwks_checked} JWKs checked, {set_runs} JWS via JWK set ({set_strict} \
         HMAC-in-JWKS rejected by design), {secret_runs} JWS via shared secrets \
         ({secret_refused} secrets refused), {skipped} skipped (ROCA)"
    );
    assert_no_mismatch(file, &mismatches);
    assert_eq!(skipped, 1);
    assert_eq!(set_runs + skipped, number_of_tests(&doc));
    assert_eq!(set_strict, JWK_SET_STRICT.len());
    assert_eq!(jwks_checked, 27);
    assert_eq!(secret_runs, 15);
    // The 31-byte HS256 secret and three empty ones are refused; A256GCM / A256KW keys
    // are not JWS keys at all. The 47- and 63-byte secrets load but cannot verify
    // HS384 / HS512 (they need 48 / 64 bytes).
    assert_eq!(secret_refused, 6);
}

// ---------------------------------------------------------------------------------------
// Raw signature files
// ---------------------------------------------------------------------------------------

/// The group's key from its JWK (`publicKeyJwk`, or `keyJwk` in the RSA PKCS#1 files).
fn jwk_key(group: &Value) -> Option<Result<JwtKey, String>> {
    let jwk = group.get("publicKeyJwk").or_else(|| group.get("keyJwk"))?;
    Some(JwtKey::from_jwk_json(jwk.to_string().as_bytes()).map_err(|e| e.message().to_owned()))
}

/// The group's key from its PEM, with the loader for its type.
fn pem_key(group: &Value) -> Option<Result<JwtKey, String>> {
    let pem = group.get("publicKeyPem")?.as_str()?.as_bytes();
    let key = match group["type"].as_str().expect("group type") {
        "EcdsaVerify" | "EcdsaP1363Verify" => JwtKey::from_ec_pem(pem),
        "EddsaVerify" => JwtKey::from_ed_pem(pem),
        "RsassaPkcs1Verify" | "RsassaPssVerify" => JwtKey::from_rsa_pem(pem),
        other => panic!("unknown group type {other}"),
    };
    Some(key.map_err(|e| e.message().to_owned()))
}

#[derive(Debug, Default)]
struct Tally {
    accepted: usize,
    rejected: usize,
    /// "acceptable" vectors, decided by `expect`.
    acceptable: usize,
    /// Vectors also checked with the PEM form of the same key.
    cross_checked: usize,
}

/// Run one raw-signature file: every group's key must load (from its JWK, and from its
/// PEM when both exist, in which case both must give the same answer), and every vector
/// must come out as `expect` says.
fn run_raw(file: &str, alg: Algorithm, expect: impl Fn(&Value) -> bool) -> Tally {
    let doc = load(file);
    let mut tally = Tally::default();
    let mut mismatches = Vec::new();
    for group in groups(&doc) {
        let from_jwk = jwk_key(group);
        let from_pem = pem_key(group);
        let (primary, secondary) = match (from_jwk, from_pem) {
            (Some(j), pem) => (j, pem),
            (None, Some(p)) => (p, None),
            (None, None) => panic!("{file}: group without a key"),
        };
        let primary = match primary {
            Ok(k) => k,
            Err(e) => {
                mismatches.push(format!(
                    "{file}: key of group with tc{} refused: {e}",
                    tc_id(&tests(group)[0])
                ));
                continue;
            }
        };
        let secondary = match secondary {
            Some(Ok(k)) => Some(k),
            Some(Err(e)) => {
                mismatches.push(format!("{file}: PEM form of a loaded JWK refused: {e}"));
                None
            }
            None => None,
        };
        for t in tests(group) {
            let msg = hex::decode(t["msg"].as_str().expect("msg")).expect("msg hex");
            let sig = hex::decode(t["sig"].as_str().expect("sig")).expect("sig hex");
            let got = primary.verify(alg, &msg, &sig);
            let want = expect(t);
            let what = format!(
                "{file} tc{} ({}; {}; flags {})",
                tc_id(t),
                t["result"],
                t["comment"],
                t["flags"]
            );
            if got != want {
                mismatches.push(format!("{what}: verify={got}, want {want}"));
            }
            if let Some(pem) = &secondary {
                let also = pem.verify(alg, &msg, &sig);
                if also != got {
                    mismatches.push(format!("{what}: JWK key says {got}, PEM key says {also}"));
                }
                tally.cross_checked += 1;
            }
            tally.acceptable += usize::from(t["result"] == "acceptable");
            if got {
                tally.accepted += 1;
            } else {
                tally.rejected += 1;
            }
        }
    }
    println!("{file} ({alg}): {tally:?}");
    assert_no_mismatch(file, &mismatches);
    assert_eq!(
        tally.accepted + tally.rejected,
        number_of_tests(&doc),
        "{file}: not every vector ran"
    );
    tally
}

/// ECDSA P1363 and Ed25519 files have no "acceptable" vectors: valid ↔ verifies, exactly.
/// High-S ECDSA signatures are "valid" in Wycheproof and must verify (JWS has no low-S
/// rule; docs/security-cases.md row 20).
fn exactly_valid(t: &Value) -> bool {
    match t["result"].as_str() {
        Some("valid") => true,
        Some("invalid") => false,
        other => panic!("tc{}: no decision for result {other:?}", tc_id(t)),
    }
}

/// RSA PKCS#1 v1.5: the only "acceptable" vectors are flagged `MissingNull` (DigestInfo
/// without the ASN.1 NULL parameter). RFC 8017 §9.2 encodes the NULL and RFC 7518 §3.3
/// uses that encoding, so a strict verifier rejects them (as aws-lc and ring do). Any other
/// "acceptable" flag is undecided and fails the test.
fn pkcs1_valid(t: &Value) -> bool {
    match t["result"].as_str() {
        Some("acceptable") => {
            assert_eq!(
                t["flags"],
                json!(["MissingNull"]),
                "tc{}: undecided acceptable vector",
                tc_id(t)
            );
            false
        }
        _ => exactly_valid(t),
    }
}

#[test]
fn ecdsa_secp256r1_sha256_p1363() {
    let t = run_raw(
        "ecdsa_secp256r1_sha256_p1363_test.json",
        Algorithm::ES256,
        exactly_valid,
    );
    assert_eq!((t.accepted, t.rejected), (173, 89));
    assert!(t.cross_checked > 200);
}

#[test]
fn ecdsa_secp384r1_sha384_p1363() {
    let t = run_raw(
        "ecdsa_secp384r1_sha384_p1363_test.json",
        Algorithm::ES384,
        exactly_valid,
    );
    assert_eq!((t.accepted, t.rejected), (193, 87));
    assert!(t.cross_checked > 200);
}

/// JWS ECDSA signatures are fixed-length `R || S`; a DER-encoded signature never verifies,
/// whatever its label (a negative corpus, docs/security-cases.md row 19).
#[test]
fn ecdsa_secp256r1_sha256_der_never_verifies() {
    let t = run_raw("ecdsa_secp256r1_sha256_test.json", Algorithm::ES256, |_| {
        false
    });
    assert_eq!((t.accepted, t.rejected), (0, 484));
}

#[test]
fn ecdsa_secp384r1_sha384_der_never_verifies() {
    let t = run_raw("ecdsa_secp384r1_sha384_test.json", Algorithm::ES384, |_| {
        false
    });
    assert_eq!((t.accepted, t.rejected), (0, 504));
}

/// No ES512 in this crate: every P-521 key is refused by every loader, so none of the
/// file's vectors can verify.
#[test]
fn ecdsa_secp521r1_sha512_p1363_keys_are_refused() {
    let file = "ecdsa_secp521r1_sha512_p1363_test.json";
    let doc = load(file);
    let (mut refused_jwk, mut refused_pem, mut vectors) = (0usize, 0usize, 0usize);
    for group in groups(&doc) {
        let id = tc_id(&tests(group)[0]);
        if let Some(k) = jwk_key(group) {
            assert!(k.is_err(), "{file} tc{id}: P-521 JWK loaded");
            refused_jwk += 1;
        }
        let k = pem_key(group).expect("every group has a PEM");
        assert!(k.is_err(), "{file} tc{id}: P-521 PEM loaded");
        refused_pem += 1;
        vectors += tests(group).len();
    }
    println!(
        "{file}: {refused_pem} PEM keys and {refused_jwk} JWKs refused, covering {vectors} vectors"
    );
    assert_eq!((refused_pem, refused_jwk), (107, 98));
    assert_eq!(vectors, number_of_tests(&doc));
    assert!("ES512".parse::<Algorithm>().is_err());
}

#[test]
fn rsa_signature_2048_sha256() {
    let t = run_raw(
        "rsa_signature_2048_sha256_test.json",
        Algorithm::RS256,
        pkcs1_valid,
    );
    assert_eq!((t.accepted, t.rejected, t.acceptable), (9, 250, 1));
}

#[test]
fn rsa_signature_2048_sha384() {
    let t = run_raw(
        "rsa_signature_2048_sha384_test.json",
        Algorithm::RS384,
        pkcs1_valid,
    );
    assert_eq!((t.accepted, t.rejected, t.acceptable), (7, 251, 1));
}

#[test]
fn rsa_signature_2048_sha512() {
    let t = run_raw(
        "rsa_signature_2048_sha512_test.json",
        Algorithm::RS512,
        pkcs1_valid,
    );
    assert_eq!((t.accepted, t.rejected, t.acceptable), (8, 251, 1));
}

#[test]
fn rsa_signature_3072_sha256() {
    let t = run_raw(
        "rsa_signature_3072_sha256_test.json",
        Algorithm::RS256,
        pkcs1_valid,
    );
    assert_eq!((t.accepted, t.rejected, t.acceptable), (8, 251, 1));
}

#[test]
fn rsa_signature_4096_sha256() {
    let t = run_raw(
        "rsa_signature_4096_sha256_test.json",
        Algorithm::RS256,
        pkcs1_valid,
    );
    assert_eq!((t.accepted, t.rejected, t.acceptable), (7, 251, 1));
}

#[test]
fn rsa_pss_2048_sha256_mgf1_32() {
    let t = run_raw(
        "rsa_pss_2048_sha256_mgf1_32_test.json",
        Algorithm::PS256,
        exactly_valid,
    );
    assert_eq!((t.accepted, t.rejected), (63, 45));
}

#[test]
fn rsa_pss_3072_sha256_mgf1_32() {
    let t = run_raw(
        "rsa_pss_3072_sha256_mgf1_32_test.json",
        Algorithm::PS256,
        exactly_valid,
    );
    assert_eq!((t.accepted, t.rejected), (63, 45));
}

#[test]
fn rsa_pss_4096_sha256_mgf1_32() {
    let t = run_raw(
        "rsa_pss_4096_sha256_mgf1_32_test.json",
        Algorithm::PS256,
        exactly_valid,
    );
    assert_eq!((t.accepted, t.rejected), (63, 45));
}

/// Salt length 0 is not PS256 (RFC 7518 §3.5: salt length = hash length, 32): every
/// salt-0 signature, "valid" ones included, must fail. The one exception is tc69, "s_len
/// changed to 32": it is labelled invalid only relative to this file's salt length 0, and
/// is a genuine PS256 signature (checked independently with Python `cryptography`,
/// `PSS(MGF1(SHA256), salt_length=32)`), so a correct PS256 verifier accepts it.
#[test]
fn rsa_pss_2048_sha256_mgf1_0_is_not_ps256() {
    let t = run_raw(
        "rsa_pss_2048_sha256_mgf1_0_test.json",
        Algorithm::PS256,
        |t| tc_id(t) == 69,
    );
    assert_eq!((t.accepted, t.rejected), (1, 102));
}

#[test]
fn ed25519() {
    let t = run_raw("ed25519_test.json", Algorithm::EdDSA, exactly_valid);
    assert_eq!((t.accepted, t.rejected), (88, 63));
    assert!(t.cross_checked > 100);
}
