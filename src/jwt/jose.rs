//! Strict JOSE parsing: compact serialization, canonical base64url, strict JSON.
//!
//! Every function here returns a static reason on failure; the reason goes to logs via
//! [`AuthError::invalid_token`](crate::AuthError::invalid_token) and never contains token data.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// How deep JSON arrays and objects may nest in a header or claims set.
pub(crate) const MAX_JSON_DEPTH: usize = 32;
/// The longest `kid` accepted, in bytes.
pub(crate) const MAX_KID_LEN: usize = 256;

/// The three segments of a compact JWS.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Compact<'a> {
    pub header: &'a str,
    pub claims: &'a str,
    pub signature: &'a str,
    /// `header "." claims`: the JWS signing input.
    pub signing_input: &'a str,
}

/// Split a compact JWS into exactly three segments. The header and signature must not be
/// empty; an empty payload is a valid JWS (the JWT layer then rejects it as not a JSON
/// object).
pub(crate) fn split_compact(token: &str) -> Result<Compact<'_>, &'static str> {
    // `find` on a char is a memchr: a long token is scanned in wide steps.
    const NOT_THREE: &str = "token is not a three-segment compact JWS";
    let first = token.find('.').ok_or(NOT_THREE)?;
    let second = first + 1 + token[first + 1..].find('.').ok_or(NOT_THREE)?;
    let (header, claims, signature) = (
        &token[..first],
        &token[first + 1..second],
        &token[second + 1..],
    );
    if signature.contains('.') {
        return Err(NOT_THREE);
    }
    if header.is_empty() {
        return Err("empty header segment");
    }
    if signature.is_empty() {
        return Err("empty signature segment");
    }
    Ok(Compact {
        header,
        claims,
        signature,
        signing_input: &token[..second],
    })
}

/// Decode canonical base64url: the URL-safe alphabet only, no padding, no whitespace,
/// zero trailing bits.
pub(crate) fn decode_b64url(input: &str) -> Result<Vec<u8>, &'static str> {
    URL_SAFE_NO_PAD
        .decode(input)
        .map_err(|_| "segment is not canonical base64url")
}

/// Parse a JSON object strictly: duplicate member names (after unescaping) are rejected at
/// every depth, nesting is bounded by [`MAX_JSON_DEPTH`], the text must be valid UTF-8 and
/// hold nothing after the object.
pub(crate) fn parse_object(json: &[u8]) -> Result<Map<String, Value>, &'static str> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let value = Strict {
        depth: MAX_JSON_DEPTH,
    }
    .deserialize(&mut de)
    .map_err(|_| "segment is not strict JSON")?;
    de.end().map_err(|_| "trailing data after JSON")?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err("segment is not a JSON object"),
    }
}

pub(crate) struct Strict {
    pub(crate) depth: usize,
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.depth.checked_sub(1).ok_or_else(too_deep::<A::Error>)?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict { depth })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let depth = self.depth.checked_sub(1).ok_or_else(too_deep::<A::Error>)?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Strict { depth })?;
            if out.insert(key, value).is_some() {
                return Err(de::Error::custom("duplicate member name"));
            }
        }
        Ok(Value::Object(out))
    }
}

fn too_deep<E: de::Error>() -> E {
    E::custom("JSON nested too deeply")
}

/// The protected header, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// The `alg` value, as written (not yet checked against the allow-list).
    pub alg: String,
    /// The `kid`, an opaque lookup key of at most [`MAX_KID_LEN`] bytes.
    pub kid: Option<String>,
    /// The `typ`.
    pub typ: Option<String>,
}

/// Check the protected header.
///
/// * `alg` is required and must be a string;
/// * `crit` is rejected whatever its value: this verifier understands no extension;
/// * `b64` is rejected (RFC 7797 unencoded payloads are never accepted);
/// * `kid`, `typ`, `cty` must be strings when present; `kid` is length-capped;
/// * `jku`, `jwk`, `x5u`, `x5c`, `x5t` are ignored: keys only ever come from configuration.
pub(crate) fn parse_header(map: &Map<String, Value>) -> Result<Header, &'static str> {
    if map.contains_key("crit") {
        return Err("header has crit");
    }
    if map.contains_key("b64") {
        return Err("header has b64");
    }
    let alg = match map.get("alg") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("header alg is not a string"),
        None => return Err("header has no alg"),
    };
    let kid = match map.get("kid") {
        None => None,
        Some(Value::String(s)) if s.len() <= MAX_KID_LEN => Some(s.clone()),
        Some(Value::String(_)) => return Err("header kid too long"),
        Some(_) => return Err("header kid is not a string"),
    };
    let typ = match map.get("typ") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("header typ is not a string"),
    };
    if map.get("cty").is_some_and(|v| !v.is_string()) {
        return Err("header cty is not a string");
    }
    Ok(Header { alg, kid, typ })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn split() {
        assert!(split_compact("a.b.c").is_ok());
        assert!(
            split_compact("a..c").is_ok(),
            "empty payload is a valid JWS"
        );
        let c = split_compact("aa.bb.cc").unwrap();
        assert_eq!(c.signing_input, "aa.bb");
        for bad in [
            "a.b",
            "a.b.c.d",
            "a.b.c.d.e",
            ".b.c",
            "a.b.",
            "",
            "abc",
            "{\"a\":1}",
        ] {
            assert!(split_compact(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64url_is_canonical() {
        assert_eq!(decode_b64url("eyJhIjoxfQ").unwrap(), br#"{"a":1}"#);
        for bad in [
            "eyJhIjoxfQ==", // padding
            "eyJhIjoxfQ=",
            "ey+hIjoxfQ", // standard alphabet
            "ey/hIjoxfQ",
            "eyJh Ijo", // whitespace
            "eyJhIjoxfQ\n",
            "eyJhIjoxfR", // non-zero trailing bits ('R' vs 'Q')
            "a",          // impossible length
            "é",
        ] {
            assert!(decode_b64url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn strict_json() {
        assert!(parse_object(br#"{"a":1,"b":{"c":[1,2]}}"#).is_ok());
        for bad in [
            &br#"{"alg":"RS256","alg":"none"}"#[..],
            br#"{"a":{"b":1,"b":2}}"#,
            br#"{"alg":1,"\u0061lg":2}"#,
            br#"[1]"#,
            br#""str""#,
            br#"1"#,
            br#"null"#,
            br#"{"a":1} x"#,
            br#"{"a":1}{"#,
            br#"{"a":1e999}"#,
            b"{\"a\":\"\xff\"}",
            br#"{"a":"\ud800"}"#,
            br#"{'a':1}"#,
            b"",
        ] {
            assert!(
                parse_object(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // trailing whitespace is fine JSON
        assert!(parse_object(b"{\"a\":1} ").is_ok());
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(MAX_JSON_DEPTH - 1),
            "]".repeat(MAX_JSON_DEPTH - 1)
        );
        assert!(parse_object(ok.as_bytes()).is_ok());
        let deep = format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        assert!(parse_object(deep.as_bytes()).is_err());
        let huge = format!("{{\"a\":{}", "[".repeat(100_000));
        assert!(parse_object(huge.as_bytes()).is_err());
    }

    #[test]
    fn header_rules() {
        let h = |s: &str| parse_header(&parse_object(s.as_bytes()).unwrap());
        assert_eq!(
            h(r#"{"alg":"RS256","kid":"k","typ":"JWT","jku":"https://evil","x5c":["x"]}"#).unwrap(),
            Header {
                alg: "RS256".into(),
                kid: Some("k".into()),
                typ: Some("JWT".into())
            }
        );
        for bad in [
            r#"{"kid":"k"}"#,
            r#"{"alg":null}"#,
            r#"{"alg":["RS256"]}"#,
            r#"{"alg":"RS256","crit":["exp"]}"#,
            r#"{"alg":"RS256","crit":[]}"#,
            r#"{"alg":"RS256","crit":"b64"}"#,
            r#"{"alg":"RS256","b64":false}"#,
            r#"{"alg":"RS256","b64":true}"#,
            r#"{"alg":"RS256","kid":null}"#,
            r#"{"alg":"RS256","kid":true}"#,
            r#"{"alg":"RS256","kid":0}"#,
            r#"{"alg":"RS256","typ":1}"#,
            r#"{"alg":"RS256","cty":{}}"#,
        ] {
            assert!(h(bad).is_err(), "{bad}");
        }
        let long = format!(
            r#"{{"alg":"RS256","kid":"{}"}}"#,
            "a".repeat(MAX_KID_LEN + 1)
        );
        assert!(h(&long).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_object(&bytes);
            if let Ok(s) = std::str::from_utf8(&bytes) {
                let _ = decode_b64url(s);
                let _ = split_compact(s);
            }
        }

        #[test]
        fn random_json_headers_never_panic(s in "\\{(\"[a-z]{1,4}\":(null|true|[0-9]{1,3}|\"[A-Za-z0-9]{0,8}\"|\\[\\]|\\{\\}),?){0,6}\\}") {
            if let Ok(map) = parse_object(s.as_bytes()) {
                let _ = parse_header(&map);
            }
        }
    }
}
