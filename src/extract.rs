//! Where credentials are read from, strictly.
//!
//! A [`TokenExtractor`] reads a token from an ordered list of [`TokenSource`]s:
//! `Authorization: Bearer` (the default), a custom header, or a cookie. It insists on
//! exactly one credential:
//!
//! * two `Authorization` headers, the same cookie twice, or a token in two configured
//!   places is `400 invalid_request`;
//! * `Bearer` with an empty token, or a token with characters outside RFC 6750's
//!   `b64token` alphabet, is `400 invalid_request`;
//! * a token longer than the cap (default 8 KiB) is `401 invalid_token`, decided before
//!   any decoding;
//! * another scheme (`Basic …`) is no credential of this kind: `401` without an error code
//!   when nothing else authenticates the request;
//! * tokens in the query string (`?access_token=`) are never read.
//!
//! ```
//! use tower_api_guard::extract::{TokenExtractor, TokenSource};
//!
//! let extractor = TokenExtractor::new([TokenSource::Bearer, TokenSource::Cookie("session".into())]);
//! let mut headers = http::HeaderMap::new();
//! headers.insert("authorization", "bearer abc.def.ghi".parse().unwrap());
//! assert_eq!(extractor.extract(&headers).unwrap(), Some("abc.def.ghi"));
//!
//! headers.insert("cookie", "theme=dark; session=abc.def.ghi".parse().unwrap());
//! assert!(extractor.extract(&headers).is_err()); // two credentials
//! ```

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName};

use crate::error::AuthError;

/// The default cap on a token's length, in bytes.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;

/// One place a token may be read from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`, scheme matched case-insensitively.
    Bearer,
    /// The whole value of a header, e.g. `X-Access-Token`.
    Header(HeaderName),
    /// A cookie by name.
    Cookie(String),
}

/// Reads exactly one token from the configured sources. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct TokenExtractor {
    sources: Vec<TokenSource>,
    max_len: usize,
}

impl Default for TokenExtractor {
    fn default() -> Self {
        Self::new([TokenSource::Bearer])
    }
}

impl TokenExtractor {
    /// Read from `sources`, in order.
    pub fn new(sources: impl IntoIterator<Item = TokenSource>) -> Self {
        Self {
            sources: sources.into_iter().collect(),
            max_len: DEFAULT_MAX_TOKEN_LEN,
        }
    }

    /// Change the length cap (bytes).
    #[must_use]
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// The length cap, in bytes.
    pub fn max_token_len(&self) -> usize {
        self.max_len
    }

    /// The sources.
    pub fn sources(&self) -> &[TokenSource] {
        &self.sources
    }

    /// Whether the `Authorization` header is the only source (the default).
    #[cfg(feature = "jwt")]
    pub(crate) fn authorization_only(&self) -> bool {
        matches!(self.sources.as_slice(), [TokenSource::Bearer])
    }

    /// The token, `None` when no source holds one.
    ///
    /// # Errors
    /// `invalid_request` (400) for ambiguous or malformed credentials, `invalid_token`
    /// (401) for an over-long token.
    pub fn extract<'h>(&self, headers: &'h HeaderMap) -> Result<Option<&'h str>, AuthError> {
        let mut found = None;
        for source in &self.sources {
            // `checked`: the token is already known to be a b64token within the cap.
            let (token, checked) = match source {
                TokenSource::Bearer => match bearer_fast(headers, self.max_len) {
                    Some(token) => (Some(token), true),
                    None => (bearer(headers)?, false),
                },
                TokenSource::Header(name) => (single_header(headers, name)?, false),
                TokenSource::Cookie(name) => (cookie(headers, name)?, false),
            };
            if let Some(token) = token {
                if found.is_some() {
                    return Err(AuthError::invalid_request(
                        "credential in more than one place",
                    ));
                }
                found = Some((token, checked));
            }
        }
        let Some((token, checked)) = found else {
            return Ok(None);
        };
        if !checked {
            if token.len() > self.max_len {
                return Err(AuthError::invalid_token("token longer than the cap")
                    .with_code(crate::error::ReasonCode::TooLarge));
            }
            check_b64token(token)?;
        }
        Ok(Some(token))
    }
}

impl TokenExtractor {
    /// The token of the one `Authorization: Bearer <token>` header within the length cap,
    /// **unchecked** otherwise, when bearer is this extractor's only source (the default);
    /// `None` in every other case. Only for a caller that then matches the bytes exactly
    /// against a token that [`extract`](Self::extract) returned before, which is what makes
    /// skipping the alphabet check sound: the verified-token cache.
    #[cfg(feature = "jwt")]
    pub(crate) fn plain_bearer_unchecked<'h>(&self, headers: &'h HeaderMap) -> Option<&'h [u8]> {
        if !matches!(self.sources.as_slice(), [TokenSource::Bearer]) {
            return None;
        }
        bearer_bytes(headers, self.max_len).filter(|token| !token.is_empty())
    }
}

/// One value of `name`, or `None`; two values is an ambiguous request.
#[cfg_attr(not(feature = "api-key"), allow(dead_code))]
pub(crate) fn one_value<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h http::HeaderValue>, AuthError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(AuthError::invalid_request("header repeated"));
    }
    Ok(first)
}

/// `HeaderValue::to_str`'s rule (visible ASCII or tab), written without branches so that
/// it vectorizes over a whole token: it runs on every request.
pub(crate) fn visible_ascii(value: &http::HeaderValue) -> Result<&str, AuthError> {
    let bytes = value.as_bytes();
    let mut invisible = 0u8;
    for &b in bytes {
        invisible |= u8::from(!((b.wrapping_sub(0x20) < 0x5f) | (b == b'\t')));
    }
    let visible = invisible == 0;
    match (visible, std::str::from_utf8(bytes)) {
        (true, Ok(text)) => Ok(text),
        _ => Err(AuthError::invalid_request(
            "credential header is not visible ASCII",
        )),
    }
}

/// The common case in one pass: exactly one `Authorization: Bearer <b64token>` (scheme in
/// any case, one space) within `max_len`. `None` means *not that simple*: [`bearer`] and
/// the checks after it then decide, with their exact errors. A b64token is visible ASCII,
/// so the alphabet check stands in for [`visible_ascii`].
fn bearer_fast(headers: &HeaderMap, max_len: usize) -> Option<&str> {
    let token = bearer_bytes(headers, max_len)?;
    let padding = token.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &token[..token.len() - padding];
    if body.is_empty() || !all_b64token(body) {
        return None;
    }
    std::str::from_utf8(token).ok()
}

/// The bytes after `Bearer ` (scheme in any case, one space) of the one `Authorization`
/// header, within `max_len`, unchecked; `None` when the request is not that simple.
fn bearer_bytes(headers: &HeaderMap, max_len: usize) -> Option<&[u8]> {
    let value = one_value(headers, &AUTHORIZATION).ok()??;
    let bytes = value.as_bytes();
    let (scheme, token) = (bytes.get(..7)?, bytes.get(7..)?);
    (scheme.eq_ignore_ascii_case(b"bearer ") && token.len() <= max_len).then_some(token)
}

fn bearer(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let Some(value) = one_value(headers, &AUTHORIZATION)? else {
        return Ok(None);
    };
    let value = visible_ascii(value)?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme is not our credential.
        return Ok(None);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() {
        return Err(AuthError::invalid_request("empty bearer token"));
    }
    Ok(Some(token))
}

/// The token of the one `Authorization: <scheme> <token>` header (scheme in any case), or
/// `None` for another scheme or no header; checked like a bearer token: visible ASCII, not
/// empty, within `max_len`, in the `b64token` alphabet. For `DPoP` (RFC 9449 §7.1).
#[cfg(feature = "jwt")]
pub(crate) fn scheme_token<'h>(
    headers: &'h HeaderMap,
    scheme: &str,
    max_len: usize,
) -> Result<Option<&'h str>, AuthError> {
    let Some(value) = one_value(headers, &AUTHORIZATION)? else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    // Another scheme (`Bearer …` beside DPoP, on every bearer request): not ours, and
    // whoever reads it next checks its characters.
    let first_word = bytes.split(|&b| b == b' ').next().unwrap_or_default();
    if !first_word.eq_ignore_ascii_case(scheme.as_bytes()) {
        return Ok(None);
    }
    // The common case in one pass, as `bearer_fast`: `<scheme> <b64token>` within the cap
    // (a b64token is visible ASCII, so the alphabet check stands in for `visible_ascii`).
    if let (Some(found), Some(b' '), Some(token)) = (
        bytes.get(..scheme.len()),
        bytes.get(scheme.len()),
        bytes.get(scheme.len() + 1..),
    ) && found.eq_ignore_ascii_case(scheme.as_bytes())
        && token.len() <= max_len
    {
        let padding = token.iter().rev().take_while(|&&b| b == b'=').count();
        let body = &token[..token.len() - padding];
        if !body.is_empty()
            && all_b64token(body)
            && let Ok(token) = std::str::from_utf8(token)
        {
            return Ok(Some(token));
        }
    }
    let value = visible_ascii(value)?;
    let (found, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !found.eq_ignore_ascii_case(scheme) {
        return Ok(None);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() {
        return Err(AuthError::invalid_request("empty token"));
    }
    if token.len() > max_len {
        return Err(AuthError::invalid_token("token longer than the cap")
            .with_code(crate::error::ReasonCode::TooLarge));
    }
    check_b64token(token)?;
    Ok(Some(token))
}

fn single_header<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h str>, AuthError> {
    let Some(value) = one_value(headers, name)? else {
        return Ok(None);
    };
    let token = visible_ascii(value)?.trim();
    if token.is_empty() {
        return Err(AuthError::invalid_request("empty credential header"));
    }
    Ok(Some(token))
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, AuthError> {
    let mut found = None;
    for value in headers.get_all(COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            let Some((k, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if k.trim() == name {
                if found.is_some() {
                    return Err(AuthError::invalid_request("cookie repeated"));
                }
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                if v.is_empty() {
                    return Err(AuthError::invalid_request("empty credential cookie"));
                }
                found = Some(v);
            }
        }
    }
    Ok(found)
}

/// Whether `b` is in RFC 6750's `b64token` alphabet (without the trailing `=`). Written
/// without branches or tables so that the check over a whole token vectorizes: it runs on
/// every request.
#[inline]
fn b64token_byte(b: u8) -> bool {
    let lower = b | 0x20;
    (lower.wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

/// Whether every byte is in the `b64token` alphabet. The byte accumulator (not a `bool`
/// fold, which stays scalar) lets the loop vectorize: a 600-byte token in tens of
/// instructions instead of thousands.
#[inline]
fn all_b64token(bytes: &[u8]) -> bool {
    let mut outside = 0u8;
    for &b in bytes {
        outside |= u8::from(!b64token_byte(b));
    }
    outside == 0
}

/// RFC 6750 `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn check_b64token(token: &str) -> Result<(), AuthError> {
    let body = token.trim_end_matches('=');
    if !body.is_empty() && all_b64token(body.as_bytes()) {
        Ok(())
    } else {
        Err(AuthError::invalid_request(
            "token has characters outside the b64token alphabet",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "jwt")]
    #[test]
    fn scheme_token_fast_and_slow_paths_agree() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value.parse().unwrap());
            scheme_token(&headers, "DPoP", 16)
                .map(|t| t.map(str::to_owned))
                .map_err(|e| e.kind())
        };
        let some = |t: &str| Ok(Some(t.to_owned()));
        use crate::error::AuthErrorKind::{InvalidRequest, InvalidToken};
        assert_eq!(with("DPoP abc.def"), some("abc.def"));
        assert_eq!(with("dpop abc=="), some("abc=="));
        assert_eq!(with("DPoP   abc"), some("abc"), "extra spaces: slow path");
        assert_eq!(with("Bearer abc"), Ok(None));
        assert_eq!(with("DPoPabc"), Ok(None));
        assert_eq!(with("DPoP "), Err(InvalidRequest));
        assert_eq!(with("DPoP a b"), Err(InvalidRequest));
        assert_eq!(with("DPoP =="), Err(InvalidRequest));
        assert_eq!(with("DPoP a\tb"), Err(InvalidRequest));
        assert_eq!(with(&format!("DPoP {}", "a".repeat(17))), Err(InvalidToken));
        let mut two = HeaderMap::new();
        two.append(AUTHORIZATION, "DPoP a".parse().unwrap());
        two.append(AUTHORIZATION, "DPoP b".parse().unwrap());
        assert_eq!(
            scheme_token(&two, "DPoP", 16).map_err(|e| e.kind()),
            Err(InvalidRequest)
        );
    }

    #[test]
    fn visible_ascii_agrees_with_header_value_to_str_on_every_byte() {
        for b in 0..=255u8 {
            let Ok(value) = http::HeaderValue::from_bytes(&[b'a', b, b'z']) else {
                continue;
            };
            assert_eq!(
                visible_ascii(&value).is_ok(),
                value.to_str().is_ok(),
                "byte {b:#x}"
            );
        }
    }
    use crate::AuthErrorKind;

    /// The general path alone: `bearer`, the cap, then the alphabet.
    fn slow_path(h: &HeaderMap, max_len: usize) -> Result<Option<&str>, AuthError> {
        let Some(token) = bearer(h)? else {
            return Ok(None);
        };
        if token.len() > max_len {
            return Err(AuthError::invalid_token("token longer than the cap")
                .with_code(crate::error::ReasonCode::TooLarge));
        }
        check_b64token(token)?;
        Ok(Some(token))
    }

    proptest::proptest! {
        /// The one-pass path only ever answers what the general path answers, and answers
        /// for every well-formed `Bearer <b64token>`.
        #[test]
        fn bearer_fast_agrees_with_the_general_path(
            scheme in "(Bearer|bearer|BEARER|Basic|Bearer |Bearer\t|Bear)",
            token in r"[A-Za-z0-9._~+/=\- \t!\x7f]{0,24}",
            max_len in 0usize..30,
        ) {
            let Ok(value) = http::HeaderValue::from_str(&format!("{scheme} {token}")) else {
                return Ok(());
            };
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, value);
            let slow = slow_path(&h, max_len);
            match bearer_fast(&h, max_len) {
                Some(fast) => proptest::prop_assert_eq!(slow.ok().flatten(), Some(fast)),
                None => {
                    let simple = scheme.eq_ignore_ascii_case("bearer") && !token.starts_with(' ');
                    proptest::prop_assert!(!(simple && slow.as_ref().is_ok_and(Option::is_some)),
                        "the fast path refused a plain bearer token the general path accepts");
                }
            }
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn kind(r: Result<Option<&str>, AuthError>) -> Option<AuthErrorKind> {
        r.err().map(|e| e.kind())
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let x = TokenExtractor::default();
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let h = headers(&[("authorization", &format!("{scheme} a.b.c"))]);
            assert_eq!(x.extract(&h).unwrap(), Some("a.b.c"));
        }
    }

    #[test]
    fn other_schemes_and_query_are_missing() {
        let x = TokenExtractor::default();
        assert_eq!(
            x.extract(&headers(&[("authorization", "Basic dXNlcjpwYXNz")]))
                .unwrap(),
            None
        );
        assert_eq!(
            x.extract(&headers(&[("authorization", "Bearerabc")]))
                .unwrap(),
            None
        );
        assert_eq!(x.extract(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn ambiguity_is_invalid_request() {
        let x = TokenExtractor::new([TokenSource::Bearer, TokenSource::Cookie("at".into())]);
        let two = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(kind(x.extract(&two)), Some(AuthErrorKind::InvalidRequest));
        let both = headers(&[("authorization", "Bearer a"), ("cookie", "at=b")]);
        assert_eq!(kind(x.extract(&both)), Some(AuthErrorKind::InvalidRequest));
        let dup_cookie = headers(&[("cookie", "at=a; at=b")]);
        assert_eq!(
            kind(x.extract(&dup_cookie)),
            Some(AuthErrorKind::InvalidRequest)
        );
        let cookie_only = headers(&[("cookie", "x=1; at=a.b.c")]);
        assert_eq!(x.extract(&cookie_only).unwrap(), Some("a.b.c"));
    }

    #[test]
    fn empty_and_bad_characters_are_invalid_request() {
        let x = TokenExtractor::new([
            TokenSource::Bearer,
            TokenSource::Header(HeaderName::from_static("x-token")),
        ]);
        for bad in [
            "Bearer",
            "Bearer ",
            "Bearer   ",
            "Bearer a b",
            "Bearer a,b",
            "Bearer a\"b",
            "Bearer ====",
            "Bearer a=b",
        ] {
            assert_eq!(
                kind(x.extract(&headers(&[("authorization", bad)]))),
                Some(AuthErrorKind::InvalidRequest),
                "{bad:?}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            http::HeaderValue::from_bytes(b"Bearer a\xffb").unwrap(),
        );
        assert_eq!(kind(x.extract(&h)), Some(AuthErrorKind::InvalidRequest));
        assert_eq!(
            kind(x.extract(&headers(&[("x-token", "")]))),
            Some(AuthErrorKind::InvalidRequest)
        );
        assert_eq!(
            x.extract(&headers(&[("x-token", "abc~+/=")])).unwrap(),
            Some("abc~+/=")
        );
    }

    #[test]
    fn b64token_alphabet_is_exact() {
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            assert_eq!(b64token_byte(b), expected, "byte {b:#04x}");
        }
    }

    #[test]
    fn length_cap_before_decoding() {
        let x = TokenExtractor::default().max_len(16);
        let long = format!("Bearer {}", "a".repeat(17));
        assert_eq!(
            kind(x.extract(&headers(&[("authorization", &long)]))),
            Some(AuthErrorKind::InvalidToken)
        );
        let ok = format!("Bearer {}", "a".repeat(16));
        assert!(
            x.extract(&headers(&[("authorization", &ok)]))
                .unwrap()
                .is_some()
        );
        let huge = format!("Bearer {}", "a".repeat(100_000));
        assert_eq!(
            kind(TokenExtractor::default().extract(&headers(&[("authorization", &huge)]))),
            Some(AuthErrorKind::InvalidToken)
        );
    }
}
