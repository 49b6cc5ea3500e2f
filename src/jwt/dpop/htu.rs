//! The `htu` check of DPoP (RFC 9449 §4.3, items 8 and 9): a proof's `htu` claim must equal
//! the request's *external* URI without query and fragment, after RFC 3986 §6.2.2
//! syntax-based and §6.2.3 scheme-based normalisation.
//!
//! Both sides are normalised to the same text, `scheme://host[:port]/path`, so the check is
//! a plain string compare:
//!
//! - [`normalize_htu`] normalises the proof's claim (and refuses a query, a fragment,
//!   userinfo, a scheme other than `http`/`https`, whitespace or control characters);
//! - [`request_htu`] builds the expected value from the configured (or forwarded)
//!   [`ExternalOrigin`] and the request's path;
//! - [`forwarded_origin`] reads the origin a trusted proxy reports.
//!
//! The normalisation: scheme and host lowercased; the default port (80 for `http`, 443 for
//! `https`) and an empty port removed; an IPv6 literal written in its RFC 5952 form;
//! percent-encodings' hex digits uppercased and percent-encoded unreserved characters
//! (`ALPHA DIGIT - . _ ~`) decoded; dot segments removed (RFC 3986 §5.2.4); an empty path
//! written `/`. Characters that may not appear in a URI path (non-ASCII, `"`, `<`, `>`, `\`,
//! `^`, `` ` ``, `{`, `|`, `}`, `[`, `]`) are percent-encoded as UTF-8, on both sides, as a
//! client building the URI would.
//!
//! The parser is hand-written (no `url` crate, which follows WHATWG rather than RFC 3986),
//! never panics, and [`request_htu`] allocates one `String` of exactly the needed capacity.

use std::fmt::{self, Write as _};
use std::net::Ipv6Addr;
use std::str::FromStr;

use http::HeaderMap;

use crate::error::ConfigError;

/// The longest `htu` (and request URI) compared, in bytes.
const MAX_HTU_LEN: usize = 4096;

/// Uppercase hex digits for percent-encoding.
const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// A URI scheme the check accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    /// `http`, default port 80.
    Http,
    /// `https`, default port 443.
    Https,
}

impl Scheme {
    /// The scheme's lowercase name.
    fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    /// The scheme's default port.
    fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }

    /// `http` or `https`, in any case.
    fn from_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("http") {
            Some(Self::Http)
        } else if name.eq_ignore_ascii_case("https") {
            Some(Self::Https)
        } else {
            None
        }
    }
}

/// Why a URI, an origin or a request path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UriError {
    /// Longer than [`MAX_HTU_LEN`].
    TooLong,
    /// Whitespace or a control character.
    Whitespace,
    /// No scheme: a relative reference.
    NotAbsolute,
    /// A scheme other than `http` or `https`.
    Scheme,
    /// No `//` after the scheme.
    NoAuthority,
    /// `user@` or `user:password@` before the host.
    Userinfo,
    /// No host.
    EmptyHost,
    /// A character not allowed in a host name.
    BadHost,
    /// A bracketed host that is not an IPv6 address.
    BadIpLiteral,
    /// A port that is not a number in 1..=65535.
    BadPort,
    /// A `?`.
    Query,
    /// A `#`.
    Fragment,
    /// A `%` not followed by two hex digits.
    BadPercent,
    /// A path other than `/` (origins only).
    Path,
    /// A request path that does not start with `/`.
    RelativePath,
}

impl UriError {
    /// The reason when the proof's `htu` claim is refused.
    fn htu_reason(self) -> &'static str {
        match self {
            Self::TooLong => "htu is longer than 4096 bytes",
            Self::Whitespace => "htu contains whitespace or a control character",
            Self::NotAbsolute | Self::RelativePath => "htu is not an absolute URI",
            Self::Scheme => "htu scheme is not http or https",
            Self::NoAuthority => "htu has no authority",
            Self::Userinfo => "htu has userinfo",
            Self::EmptyHost => "htu has an empty host",
            Self::BadHost => "htu host has a character not allowed in a host",
            Self::BadIpLiteral => "htu host is not a valid IPv6 literal",
            Self::BadPort => "htu has an invalid port",
            Self::Query => "htu has a query",
            Self::Fragment => "htu has a fragment",
            Self::BadPercent => "htu has a malformed percent-encoding",
            Self::Path => "htu has an invalid path",
        }
    }

    /// The reason when the request's own path cannot be normalised.
    fn request_reason(self) -> &'static str {
        match self {
            Self::TooLong => "request URI is longer than 4096 bytes",
            Self::Whitespace => "request path contains whitespace or a control character",
            Self::BadPercent => "request path has a malformed percent-encoding",
            Self::Query | Self::Fragment => "request path has a query or fragment",
            _ => "request path is not an absolute path",
        }
    }

    /// The configuration message when an [`ExternalOrigin`] is refused.
    fn origin_message(self) -> &'static str {
        match self {
            Self::TooLong => "external origin is longer than 4096 bytes",
            Self::Whitespace => "external origin contains whitespace or a control character",
            Self::NotAbsolute | Self::NoAuthority | Self::RelativePath => {
                "external origin must be scheme://host[:port], e.g. https://api.example.com"
            }
            Self::Scheme => "external origin must start with http:// or https://",
            Self::Userinfo => "external origin must not have userinfo (user@ or user:password@)",
            Self::EmptyHost => "external origin has an empty host",
            Self::BadHost => "external origin host has a character not allowed in a host name",
            Self::BadIpLiteral => "external origin host is not a valid bracketed IPv6 address",
            Self::BadPort => "external origin port must be a number from 1 to 65535",
            Self::Query => "external origin must not have a query",
            Self::Fragment => "external origin must not have a fragment",
            Self::BadPercent => "external origin host has a malformed percent-encoding",
            Self::Path => "external origin must not have a path (only an optional trailing /)",
        }
    }
}

/// The public origin clients use to reach the API — `scheme://host[:port]` — against which
/// a DPoP proof's `htu` is checked when the server sits behind a proxy or load balancer
/// that changes the scheme, host or port.
///
/// The scheme is `http` or `https`; the host is lowercased (an IPv6 literal stays in
/// brackets, in its RFC 5952 form; a host name may only hold RFC 3986 reg-name characters);
/// the port is `None` when it is the scheme's default.
///
/// ```
/// use tower_api_guard::jwt::ExternalOrigin;
///
/// let origin = ExternalOrigin::parse("HTTPS://API.Example.com:443/").unwrap();
/// assert_eq!(origin.to_string(), "https://api.example.com");
/// assert_eq!(origin.port(), None);
///
/// let local = ExternalOrigin::parse("http://127.0.0.1:3000").unwrap();
/// assert_eq!((local.scheme(), local.host(), local.port()), ("http", "127.0.0.1", Some(3000)));
///
/// let v6 = ExternalOrigin::parse("https://[::1]:8443").unwrap();
/// assert_eq!(v6.to_string(), "https://[::1]:8443");
///
/// assert!(ExternalOrigin::parse("https://user@api.example.com").is_err());
/// assert!(ExternalOrigin::parse("https://api.example.com/v1").is_err());
/// assert!(ExternalOrigin::parse("ftp://api.example.com").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalOrigin {
    scheme: Scheme,
    host: Box<str>,
    port: Option<u16>,
    /// `scheme://host[:port]`, the prefix of every expected `htu`.
    serialized: Box<str>,
}

impl ExternalOrigin {
    /// Parses `scheme://host[:port]` with an optional trailing `/`. Refuses userinfo, a
    /// path other than `/`, a query, a fragment, a scheme other than `http`/`https`, an
    /// empty host and a port outside 1..=65535.
    pub fn parse(origin: &str) -> Result<Self, ConfigError> {
        Self::parse_inner(origin).map_err(|e| ConfigError::parse(e.origin_message()))
    }

    fn parse_inner(origin: &str) -> Result<Self, UriError> {
        if origin.len() > MAX_HTU_LEN {
            return Err(UriError::TooLong);
        }
        scan(origin)?;
        let (scheme, rest) = split_scheme(origin)?;
        let (authority, tail) = split_authority_end(rest);
        check_no_query(tail)?;
        if !(tail.is_empty() || tail == "/") {
            return Err(UriError::Path);
        }
        Self::from_authority(scheme, authority, None)
    }

    /// Builds the origin from a scheme and an authority (`host[:port]`). `fallback_port`
    /// is used when the authority has no (or an empty) port.
    fn from_authority(
        scheme: Scheme,
        authority: &str,
        fallback_port: Option<&str>,
    ) -> Result<Self, UriError> {
        let (host, port) = split_authority(authority)?;
        let port = match port {
            Some(p) if !p.is_empty() => Some(p),
            _ => fallback_port,
        };
        let port = parse_port(scheme, port)?;
        let mut serialized = String::with_capacity(scheme.as_str().len() + 3 + host.len() + 6);
        serialized.push_str(scheme.as_str());
        serialized.push_str("://");
        let host_start = serialized.len();
        write_host(&mut serialized, host)?;
        let host = serialized.get(host_start..).unwrap_or_default().into();
        write_port(&mut serialized, port);
        Ok(Self {
            scheme,
            host,
            port,
            serialized: serialized.into(),
        })
    }

    /// `"http"` or `"https"`.
    pub fn scheme(&self) -> &'static str {
        self.scheme.as_str()
    }

    /// The normalised host: lowercase, an IPv6 literal in brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, `None` when it is the scheme's default (80 for `http`, 443 for `https`).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The normalised origin, `scheme://host[:port]`, as [`Display`](fmt::Display) writes it.
    pub fn as_str(&self) -> &str {
        &self.serialized
    }
}

impl fmt::Display for ExternalOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.serialized)
    }
}

impl FromStr for ExternalOrigin {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Normalises a DPoP proof's `htu` claim to `scheme://host[:port]/path`, or says why it
/// is refused: not an absolute `http`/`https` URI with a host, a query (even an empty
/// `?`), a fragment, userinfo, whitespace or a control character, a malformed
/// percent-encoding, or more than 4096 bytes.
pub(crate) fn normalize_htu(htu: &str) -> Result<String, &'static str> {
    normalize(htu).map_err(UriError::htu_reason)
}

fn normalize(htu: &str) -> Result<String, UriError> {
    if htu.len() > MAX_HTU_LEN {
        return Err(UriError::TooLong);
    }
    let extra = scan(htu)?;
    let (scheme, rest) = split_scheme(htu)?;
    let (authority, path) = split_authority_end(rest);
    check_no_query(path)?;
    let (host, port) = split_authority(authority)?;
    let port = parse_port(scheme, port)?;
    // +1: an empty path becomes "/".
    let mut out = String::with_capacity(htu.len() + extra + 1);
    out.push_str(scheme.as_str());
    out.push_str("://");
    write_host(&mut out, host)?;
    write_port(&mut out, port);
    write_path(&mut out, path)?;
    Ok(out)
}

/// The `htu` a proof for this request must carry: `origin` followed by the request URI's
/// path (`http::Uri::path()`), normalised exactly as [`normalize_htu`] normalises the
/// equivalent absolute URI, so the check is a plain string compare. An empty path is `/`;
/// a path that does not start with `/` (such as `*`) is refused.
pub(crate) fn request_htu(origin: &ExternalOrigin, path: &str) -> Result<String, &'static str> {
    let prefix = origin.as_str();
    let len = prefix.len() + path.len();
    if len > MAX_HTU_LEN {
        return Err(UriError::TooLong.request_reason());
    }
    let extra = scan(path).map_err(UriError::request_reason)?;
    if path.contains(['?', '#']) {
        return Err(UriError::Query.request_reason());
    }
    let mut out = String::with_capacity(len + extra + 1);
    out.push_str(prefix);
    write_path(&mut out, path).map_err(UriError::request_reason)?;
    Ok(out)
}

/// The origin a trusted proxy reports, or `None` when it reports none or something
/// malformed (the caller then uses the configured origin). Call it only when the TCP peer
/// is a trusted proxy: any client can send these headers.
///
/// - RFC 7239 `Forwarded`: `proto=` and `host=` (token or quoted-string values) of the
///   **last** element of the last `Forwarded` line. When a `Forwarded` header is present,
///   it alone decides: no fallback to `X-Forwarded-*`, which the proxy may not sanitise.
/// - Otherwise `X-Forwarded-Proto` and `X-Forwarded-Host` (both required), plus
///   `X-Forwarded-Port` when the host has no port; each the **last** comma-separated value
///   of its last line.
///
/// Why the last: each proxy *appends* its element (or value) to what it received, and a
/// client can pre-fill the header with anything it likes. The leftmost values are thus
/// attacker-controlled; only the last was written by the proxy that connects to us.
pub(crate) fn forwarded_origin(headers: &HeaderMap) -> Option<ExternalOrigin> {
    if let Some(line) = headers.get_all(http::header::FORWARDED).iter().next_back() {
        return from_forwarded(line.to_str().ok()?);
    }
    let proto = last_list_value(headers, "x-forwarded-proto")?;
    let host = last_list_value(headers, "x-forwarded-host")?;
    let scheme = Scheme::from_name(proto)?;
    let port = last_list_value(headers, "x-forwarded-port");
    ExternalOrigin::from_authority(scheme, host, port).ok()
}

/// The last comma-separated value of the last `name` line, trimmed; `None` when absent,
/// not visible ASCII, or empty.
fn last_list_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let line = headers.get_all(name).iter().next_back()?.to_str().ok()?;
    let value = line.rsplit(',').next()?.trim_matches([' ', '\t']);
    (!value.is_empty()).then_some(value)
}

/// The origin in the last element of one `Forwarded` line.
fn from_forwarded(line: &str) -> Option<ExternalOrigin> {
    let element = last_forwarded_element(line)?;
    let mut proto = None;
    let mut host = None;
    for pair in split_unquoted(element, b';')? {
        let pair = pair.trim_matches([' ', '\t']);
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=')?;
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return None;
        }
        let value = forwarded_value(value)?;
        let slot = if name.eq_ignore_ascii_case("proto") {
            &mut proto
        } else if name.eq_ignore_ascii_case("host") {
            &mut host
        } else {
            continue;
        };
        if slot.replace(value).is_some() {
            return None; // RFC 7239 §4: a parameter at most once per element
        }
    }
    let scheme = Scheme::from_name(proto?)?;
    ExternalOrigin::from_authority(scheme, host?, None).ok()
}

/// The text after the last comma outside quoted strings; `None` on unbalanced quotes or
/// an empty last element.
fn last_forwarded_element(line: &str) -> Option<&str> {
    let element = split_unquoted(line, b',')?.next_back()?;
    let element = element.trim_matches([' ', '\t']);
    (!element.is_empty()).then_some(element)
}

/// Splits `text` at `sep` bytes outside quoted strings (with `\` escapes). `None` when a
/// quoted string is not closed.
fn split_unquoted(text: &str, sep: u8) -> Option<std::vec::IntoIter<&str>> {
    let bytes = text.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes.get(i) {
            Some(b'\\') if quoted => i += 1,
            Some(b'"') => quoted = !quoted,
            Some(&b) if b == sep && !quoted => {
                parts.push(text.get(start..i)?);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if quoted {
        return None;
    }
    parts.push(text.get(start..)?);
    Some(parts.into_iter())
}

/// A `Forwarded` parameter value: a quoted string without escapes (unquoted), or an
/// unquoted run of visible characters without `"`. `None` otherwise.
fn forwarded_value(value: &str) -> Option<&str> {
    if let Some(inner) = value.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        if inner.contains(['"', '\\']) {
            return None;
        }
        return Some(inner);
    }
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
        return None;
    }
    Some(value)
}

/// An RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Refuses whitespace and control characters; returns how many bytes percent-encoding
/// may add (2 per byte that is not allowed raw in a path).
fn scan(text: &str) -> Result<usize, UriError> {
    let mut extra = 0;
    if text.is_ascii() {
        for b in text.bytes() {
            if b <= b' ' || b == 0x7f {
                return Err(UriError::Whitespace);
            }
            if !is_path_char(b) && b != b'%' {
                extra += 2;
            }
        }
        return Ok(extra);
    }
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            return Err(UriError::Whitespace);
        }
        if !c.is_ascii() {
            extra += 2 * c.len_utf8();
        } else if !is_path_char(c as u8) && c != '%' {
            extra += 2;
        }
    }
    Ok(extra)
}

/// Splits `scheme:` off an absolute URI and checks that `//` follows.
fn split_scheme(uri: &str) -> Result<(Scheme, &str), UriError> {
    let (name, rest) = uri.split_once(':').ok_or(UriError::NotAbsolute)?;
    let mut chars = name.bytes();
    let valid = chars.next().is_some_and(|b| b.is_ascii_alphabetic())
        && chars.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !valid {
        return Err(UriError::NotAbsolute);
    }
    let scheme = Scheme::from_name(name).ok_or(UriError::Scheme)?;
    let rest = rest.strip_prefix("//").ok_or(UriError::NoAuthority)?;
    Ok((scheme, rest))
}

/// Splits what follows `scheme://` into the authority and the rest (path, query,
/// fragment).
fn split_authority_end(rest: &str) -> (&str, &str) {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest.split_at(end)
}

/// Refuses a `?` or `#` in what follows the authority.
fn check_no_query(tail: &str) -> Result<(), UriError> {
    match tail.bytes().find(|b| matches!(b, b'?' | b'#')) {
        Some(b'?') => Err(UriError::Query),
        Some(_) => Err(UriError::Fragment),
        None => Ok(()),
    }
}

/// Splits an authority into its raw host and raw port text (`Some("")` for `host:`).
fn split_authority(authority: &str) -> Result<(&str, Option<&str>), UriError> {
    if authority.contains('@') {
        return Err(UriError::Userinfo);
    }
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']').ok_or(UriError::BadIpLiteral)?;
        let (host, rest) = authority.split_at(close + 1);
        let port = match rest.strip_prefix(':') {
            Some(port) => Some(port),
            None if rest.is_empty() => None,
            None => return Err(UriError::BadHost),
        };
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UriError::EmptyHost);
    }
    Ok((host, port))
}

/// Parses the raw port; an absent or empty port and the scheme's default are `None`.
fn parse_port(scheme: Scheme, port: Option<&str>) -> Result<Option<u16>, UriError> {
    let Some(port) = port.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UriError::BadPort);
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(UriError::BadPort),
        Ok(p) if p == scheme.default_port() => Ok(None),
        Ok(p) => Ok(Some(p)),
    }
}

/// Writes `:port` for a non-default port.
fn write_port(out: &mut String, port: Option<u16>) {
    if let Some(port) = port {
        // Writing to a String cannot fail.
        let _ = write!(out, ":{port}");
    }
}

/// Writes the normalised host: an IPv6 literal in its RFC 5952 form, or a reg-name
/// lowercased with unreserved percent-encodings decoded and the others' hex uppercased.
fn write_host(out: &mut String, host: &str) -> Result<(), UriError> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(UriError::BadIpLiteral)?;
        let addr: Ipv6Addr = inner.parse().map_err(|_| UriError::BadIpLiteral)?;
        // Writing to a String cannot fail.
        let _ = write!(out, "[{addr}]");
        return Ok(());
    }
    let bytes = host.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let (hi, lo) = percent_digits(bytes, i)?;
            let decoded = (hi << 4) | lo;
            if is_unreserved(decoded) {
                out.push(char::from(decoded.to_ascii_lowercase()));
            } else {
                push_encoded(out, decoded);
            }
            i += 3;
        } else if is_unreserved(b) || is_sub_delim(b) {
            out.push(char::from(b.to_ascii_lowercase()));
            i += 1;
        } else {
            return Err(UriError::BadHost);
        }
    }
    Ok(())
}

/// Writes the normalised path: empty becomes `/`, dot segments removed (RFC 3986 §5.2.4)
/// after each segment's percent-encodings are normalised. `path` is empty or starts with
/// `/` and holds no `?` or `#`.
fn write_path(out: &mut String, path: &str) -> Result<(), UriError> {
    let start = out.len();
    if path.is_empty() {
        out.push('/');
        return Ok(());
    }
    let rest = path.strip_prefix('/').ok_or(UriError::RelativePath)?;
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        let segment_start = out.len();
        out.push('/');
        write_segment(out, segment)?;
        let written = out.get(segment_start + 1..).unwrap_or_default();
        let dots = match written {
            "." => 1,
            ".." => 2,
            _ => continue,
        };
        out.truncate(segment_start);
        if dots == 2 {
            // Remove the previous output segment and its leading "/".
            let cut = out
                .get(start..)
                .and_then(|p| p.rfind('/'))
                .map_or(start, |i| start + i);
            out.truncate(cut);
        }
        if last {
            out.push('/');
        }
    }
    if out.len() == start {
        out.push('/');
    }
    Ok(())
}

/// Writes one path segment with normalised percent-encodings; bytes not allowed raw in a
/// path are percent-encoded.
fn write_segment(out: &mut String, segment: &str) -> Result<(), UriError> {
    let bytes = segment.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let (hi, lo) = percent_digits(bytes, i)?;
            let decoded = (hi << 4) | lo;
            if is_unreserved(decoded) {
                out.push(char::from(decoded));
            } else {
                push_encoded(out, decoded);
            }
            i += 3;
        } else {
            if is_path_char(b) {
                out.push(char::from(b));
            } else {
                push_encoded(out, b);
            }
            i += 1;
        }
    }
    Ok(())
}

/// The two hex digits after the `%` at `i`.
fn percent_digits(bytes: &[u8], i: usize) -> Result<(u8, u8), UriError> {
    let digit = |j: usize| {
        bytes
            .get(j)
            .and_then(|&b| char::from(b).to_digit(16))
            .map(|d| d as u8)
            .ok_or(UriError::BadPercent)
    };
    Ok((digit(i + 1)?, digit(i + 2)?))
}

/// Writes `%XX` with uppercase hex.
fn push_encoded(out: &mut String, b: u8) {
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0x0f)]));
}

/// RFC 3986 `unreserved`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `sub-delims`.
fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// A byte allowed raw in a path segment (RFC 3986 `pchar` without `pct-encoded`).
fn is_path_char(b: u8) -> bool {
    is_unreserved(b) || is_sub_delim(b) || matches!(b, b':' | b'@' | b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(s: &str) -> String {
        normalize_htu(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn origin(s: &str) -> ExternalOrigin {
        ExternalOrigin::parse(s).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    /// Pairs that must normalise to the same text (and that text, when it matters).
    const EQUAL: &[(&str, &str)] = &[
        (
            "HTTPS://API.Example.COM:443/a/%7euser/./b/../c",
            "https://api.example.com/a/~user/c",
        ),
        ("https://h/a%2fb", "https://h/a%2Fb"),
        ("http://h:80", "http://h/"),
        ("http://h", "http://h/"),
        ("http://h:", "http://h/"),
        ("https://h:443/", "https://h/"),
        ("https://h:00443/x", "https://h/x"),
        ("https://h:8443/x", "https://h:8443/x"),
        ("http://h:443/", "http://h:443/"),
        ("https://h/%41%62%2D%2e%5F%7E", "https://h/Ab-._~"),
        ("https://h/%3a%40%c3%bc", "https://h/%3A%40%C3%BC"),
        ("https://h/ü", "https://h/%C3%BC"),
        ("https://h/a|b{c}", "https://h/a%7Cb%7Bc%7D"),
        ("https://h/a/b/..", "https://h/a/"),
        ("https://h/a/.", "https://h/a/"),
        ("https://h/..", "https://h/"),
        ("https://h/../../a", "https://h/a"),
        ("https://h/a/%2E%2e/b", "https://h/b"),
        ("https://h/a//..", "https://h/a/"),
        ("https://h/a//b", "https://h/a//b"),
        ("https://h/a/.../b", "https://h/a/.../b"),
        ("https://h/a/..b/c", "https://h/a/..b/c"),
        ("https://h/a/b/../../../c/./d", "https://h/c/d"),
        ("https://%41pi.EXAMPLE.com/", "https://api.example.com/"),
        ("https://[::1]:8443/x", "https://[::1]:8443/x"),
        ("https://[0:0:0:0:0:0:0:1]/x", "https://[::1]/x"),
        ("https://[2001:DB8::A]:443", "https://[2001:db8::a]/"),
        ("http://127.0.0.1:3000/p", "http://127.0.0.1:3000/p"),
        ("https://h/$&'()*+,;=:@", "https://h/$&'()*+,;=:@"),
        ("https://h//", "https://h//"),
    ];

    /// Pairs that must not normalise to the same text.
    const DIFFERENT: &[(&str, &str)] = &[
        ("https://h:443/", "http://h:443/"),
        ("https://h/a", "https://h/A"),
        ("https://h/a", "https://h/a/"),
        ("https://h/a%2Fb", "https://h/a/b"),
        ("https://h:8443/", "https://h/"),
        ("https://h/%25", "https://h/%2525"),
    ];

    /// `htu` values that are refused, with the reason.
    const REFUSED: &[(&str, &str)] = &[
        ("https://h/a?b=c", "htu has a query"),
        ("https://h/a?", "htu has a query"),
        ("https://h?", "htu has a query"),
        ("https://h/a#f", "htu has a fragment"),
        ("https://h#", "htu has a fragment"),
        ("https://user@h/a", "htu has userinfo"),
        ("https://user:pw@h/a", "htu has userinfo"),
        ("ftp://h/a", "htu scheme is not http or https"),
        ("wss://h/a", "htu scheme is not http or https"),
        ("/a/b", "htu is not an absolute URI"),
        ("a/b", "htu is not an absolute URI"),
        ("//h/a", "htu is not an absolute URI"),
        ("", "htu is not an absolute URI"),
        ("https:/h/a", "htu has no authority"),
        ("https:h", "htu has no authority"),
        ("https:///a", "htu has an empty host"),
        ("https://", "htu has an empty host"),
        ("https://:443/a", "htu has an empty host"),
        ("https://h/%zz", "htu has a malformed percent-encoding"),
        ("https://h/%4", "htu has a malformed percent-encoding"),
        ("https://h/%", "htu has a malformed percent-encoding"),
        ("https://h%4/", "htu has a malformed percent-encoding"),
        (
            "https://h/a b",
            "htu contains whitespace or a control character",
        ),
        (
            " https://h/",
            "htu contains whitespace or a control character",
        ),
        (
            "https://h/\t",
            "htu contains whitespace or a control character",
        ),
        (
            "https://h/\n",
            "htu contains whitespace or a control character",
        ),
        (
            "https://h/\0",
            "htu contains whitespace or a control character",
        ),
        (
            "https://h/\x7f",
            "htu contains whitespace or a control character",
        ),
        (
            "https://h/\u{85}",
            "htu contains whitespace or a control character",
        ),
        (
            "https://h/\u{a0}",
            "htu contains whitespace or a control character",
        ),
        ("https://h:x/", "htu has an invalid port"),
        ("https://h:0/", "htu has an invalid port"),
        ("https://h:65536/", "htu has an invalid port"),
        ("https://h:-1/", "htu has an invalid port"),
        ("https://h:1:2/", "htu has an invalid port"),
        ("https://[::1/", "htu host is not a valid IPv6 literal"),
        ("https://[::g]/", "htu host is not a valid IPv6 literal"),
        ("https://[v1.x]/", "htu host is not a valid IPv6 literal"),
        (
            "https://[fe80::1%25eth0]/",
            "htu host is not a valid IPv6 literal",
        ),
        (
            "https://[::1]x/",
            "htu host has a character not allowed in a host",
        ),
        (
            "https://hö/",
            "htu host has a character not allowed in a host",
        ),
        (
            "https://h<x>/",
            "htu host has a character not allowed in a host",
        ),
        (
            "https://a]b/",
            "htu host has a character not allowed in a host",
        ),
    ];

    /// Origins (written as `ExternalOrigin::parse` accepts them) and paths combined in the
    /// request/claim comparison.
    const ORIGINS: &[&str] = &[
        "https://api.example.com",
        "HTTPS://API.Example.COM:443/",
        "http://h:80",
        "http://127.0.0.1:3000",
        "https://[::1]:8443",
        "https://h:8443",
    ];
    const PATHS: &[&str] = &[
        "",
        "/",
        "/a/%7euser/./b/../c",
        "/a%2fb",
        "/..",
        "/a/b/..",
        "/a//b",
        "/%41%c3%bc",
        "/ü/a|b",
        "//x/y",
        "/a:b@c",
    ];

    #[test]
    fn equal_pairs_normalise_to_the_same_text() {
        for (a, b) in EQUAL {
            assert_eq!(norm(a), norm(b), "{a} vs {b}");
            assert_eq!(norm(a), *b, "{a}");
        }
    }

    #[test]
    fn different_pairs_stay_different() {
        for (a, b) in DIFFERENT {
            assert_ne!(norm(a), norm(b), "{a} vs {b}");
        }
    }

    #[test]
    fn refusals_give_their_reason() {
        for (htu, reason) in REFUSED {
            assert_eq!(normalize_htu(htu), Err(*reason), "{htu:?}");
        }
    }

    #[test]
    fn too_long_is_refused() {
        let ok = format!("https://h/{}", "a".repeat(MAX_HTU_LEN - 10));
        assert_eq!(ok.len(), MAX_HTU_LEN);
        assert!(normalize_htu(&ok).is_ok());
        let long = format!("{ok}a");
        assert_eq!(normalize_htu(&long), Err("htu is longer than 4096 bytes"));
    }

    #[test]
    fn request_htu_matches_the_normalised_claim() {
        for o in ORIGINS {
            let parsed = origin(o);
            for p in PATHS {
                let expected = normalize_htu(&format!("{parsed}{p}")).unwrap();
                assert_eq!(request_htu(&parsed, p).unwrap(), expected, "{o} + {p}");
            }
        }
        let api = origin("https://api.example.com");
        assert_eq!(
            request_htu(&api, "/a/%7euser/./b/../c").unwrap(),
            norm("HTTPS://API.Example.COM:443/a/%7euser/./b/../c")
        );
    }

    #[test]
    fn request_htu_reserves_exactly_enough() {
        let api = origin("https://api.example.com");
        for p in PATHS {
            let s = request_htu(&api, p).unwrap();
            assert!(s.capacity() <= api.as_str().len() + p.len() * 3 + 1, "{p}");
            let (extra, cap) = (scan(p).unwrap(), s.capacity());
            assert_eq!(cap, api.as_str().len() + p.len() + extra + 1, "{p}");
        }
    }

    #[test]
    fn request_htu_refusals() {
        let api = origin("https://api.example.com");
        for p in ["*", "a/b", "/a%zz", "/a b", "/a?b", "/a#b", "/\u{0}"] {
            assert!(request_htu(&api, p).is_err(), "{p:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_HTU_LEN));
        assert_eq!(
            request_htu(&api, &long),
            Err("request URI is longer than 4096 bytes")
        );
    }

    #[test]
    fn request_htu_from_http_uri_paths() {
        let api = origin("https://api.example.com");
        for (uri, expected) in [
            ("/a/./b?x=1", "https://api.example.com/a/b"),
            ("https://other.example/%7Ex", "https://api.example.com/~x"),
            ("/caf%C3%A9", "https://api.example.com/caf%C3%A9"),
        ] {
            let uri: http::Uri = uri.parse().unwrap();
            assert_eq!(request_htu(&api, uri.path()).unwrap(), expected);
        }
    }

    #[test]
    fn origin_parse_accepts_and_normalises() {
        for (input, display, host, port) in [
            (
                "https://api.example.com",
                "https://api.example.com",
                "api.example.com",
                None,
            ),
            (
                "https://API.example.com/",
                "https://api.example.com",
                "api.example.com",
                None,
            ),
            (
                "http://127.0.0.1:3000",
                "http://127.0.0.1:3000",
                "127.0.0.1",
                Some(3000),
            ),
            (
                "https://[::1]:8443",
                "https://[::1]:8443",
                "[::1]",
                Some(8443),
            ),
            ("https://[::1]", "https://[::1]", "[::1]", None),
            ("http://h:80/", "http://h", "h", None),
            ("https://h:80", "https://h:80", "h", Some(80)),
            ("https://h:", "https://h", "h", None),
        ] {
            let o = origin(input);
            assert_eq!(o.to_string(), display, "{input}");
            assert_eq!(o.as_str(), display, "{input}");
            assert_eq!(o.host(), host, "{input}");
            assert_eq!(o.port(), port, "{input}");
            assert_eq!(input.parse::<ExternalOrigin>().unwrap(), o);
        }
        assert_eq!(origin("HTTP://h").scheme(), "http");
    }

    #[test]
    fn origin_parse_refusals() {
        for (input, message) in [
            ("https://user@h", "userinfo"),
            ("https://u:p@h", "userinfo"),
            ("https://h/v1", "path"),
            ("https://h//", "path"),
            ("https://h?", "query"),
            ("https://h/?a", "query"),
            ("https://h#f", "fragment"),
            ("ftp://h", "http:// or https://"),
            ("h", "scheme://host"),
            ("api.example.com:443", "http:// or https://"),
            ("https:h", "scheme://host"),
            ("https://", "empty host"),
            ("https://:8443", "empty host"),
            ("https://h:0", "port"),
            ("https://h:99999", "port"),
            ("https://h:8x", "port"),
            ("https://[::1", "IPv6"),
            ("https://h_%zz", "percent"),
            ("https://h!\"", "host"),
            ("https://h /", "whitespace"),
        ] {
            let err = ExternalOrigin::parse(input).unwrap_err();
            assert!(
                err.to_string().contains(message),
                "{input}: {err} lacks {message}"
            );
        }
    }

    #[test]
    fn forwarded_uses_the_last_element() {
        let h = headers(&[(
            "forwarded",
            "for=1.2.3.4;host=evil.example;proto=http, for=10.0.0.1;host=api.example.com;proto=https",
        )]);
        assert_eq!(
            forwarded_origin(&h),
            Some(origin("https://api.example.com"))
        );

        // Several lines: the last line's last element.
        let h = headers(&[
            ("forwarded", "host=evil.example;proto=http"),
            (
                "forwarded",
                "for=x;host=a.example, for=y;Host=API.example.com;PROTO=HTTPS",
            ),
        ]);
        assert_eq!(
            forwarded_origin(&h),
            Some(origin("https://api.example.com"))
        );

        // A quoted host with a port; a comma inside a quoted value does not split.
        let h = headers(&[(
            "forwarded",
            r#"for="[2001:db8::1]:4711";host="evil, x";proto=http, host="api.example.com:8443";proto=https;for="_p, q""#,
        )]);
        assert_eq!(
            forwarded_origin(&h),
            Some(origin("https://api.example.com:8443"))
        );

        let h = headers(&[("forwarded", r#"host="[::1]:8443";proto="https""#)]);
        assert_eq!(forwarded_origin(&h), Some(origin("https://[::1]:8443")));
    }

    #[test]
    fn forwarded_malformed_is_none() {
        for value in [
            "host=api.example.com",        // no proto
            "proto=https",                 // no host
            "host=a;proto=https, ",        // empty last element
            "host=a;proto=https, for=x",   // last element lacks both
            "host=a;host=b;proto=https",   // duplicate
            "host=a;proto=ftp",            // scheme
            "host=\"a;proto=https",        // unbalanced quote
            "host=\"a\\\"b\";proto=https", // escape in a used value
            "host=user@a;proto=https",     // userinfo
            "host=a:0;proto=https",        // port
            "host=;proto=https",           // empty value
            "host=a/b;proto=https",        // path
            "host;proto=https",            // no '='
            "h(st=a;proto=https",          // bad name
        ] {
            let h = headers(&[("forwarded", value)]);
            assert_eq!(forwarded_origin(&h), None, "{value}");
        }
        // A Forwarded header decides alone, even when X-Forwarded-* would do.
        let h = headers(&[
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example.com"),
        ]);
        assert_eq!(forwarded_origin(&h), None);
        assert_eq!(forwarded_origin(&HeaderMap::new()), None);
    }

    #[test]
    fn x_forwarded_fallback() {
        let h = headers(&[
            ("x-forwarded-proto", "http, https"),
            ("x-forwarded-host", "evil.example, API.example.com"),
        ]);
        assert_eq!(
            forwarded_origin(&h),
            Some(origin("https://api.example.com"))
        );

        let h = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example.com"),
            ("x-forwarded-port", "80, 8443"),
        ]);
        assert_eq!(
            forwarded_origin(&h),
            Some(origin("https://api.example.com:8443"))
        );

        // The host's own port wins over X-Forwarded-Port.
        let h = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example.com:9443"),
            ("x-forwarded-port", "8443"),
        ]);
        assert_eq!(
            forwarded_origin(&h),
            Some(origin("https://api.example.com:9443"))
        );

        // The last line counts.
        let h = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-host", "api.example.com"),
            ("x-forwarded-port", "443"),
        ]);
        assert_eq!(
            forwarded_origin(&h),
            Some(origin("https://api.example.com"))
        );

        for pairs in [
            &[("x-forwarded-host", "api.example.com")][..],
            &[("x-forwarded-proto", "https")][..],
            &[("x-forwarded-proto", "ftp"), ("x-forwarded-host", "a")][..],
            &[("x-forwarded-proto", "https"), ("x-forwarded-host", "a, ")][..],
            &[("x-forwarded-proto", "https"), ("x-forwarded-host", "u@a")][..],
            &[("x-forwarded-proto", "https"), ("x-forwarded-host", "a/b")][..],
            &[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "a"),
                ("x-forwarded-port", "x"),
            ][..],
        ] {
            assert_eq!(forwarded_origin(&headers(pairs)), None, "{pairs:?}");
        }
    }

    #[test]
    fn non_utf8_header_is_none() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::FORWARDED,
            http::HeaderValue::from_bytes(b"host=\xc3\xa9;proto=https").unwrap(),
        );
        assert_eq!(forwarded_origin(&h), None);
    }

    /// Paths built from segments likely to exercise the normaliser.
    fn path_strategy() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            Just(String::new()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just("%2e".to_owned()),
            Just("%2E%2e".to_owned()),
            "[a-zA-Z0-9._~!$&'()*+,;=:@-]{1,6}",
            "(%[0-9a-fA-F]{2}){1,3}",
            "[a-zé|{}\\[\\]ü]{1,4}",
        ];
        proptest::collection::vec(segment, 0..8).prop_map(|segs| {
            let mut p = String::new();
            for s in segs {
                p.push('/');
                p.push_str(&s);
            }
            p
        })
    }

    proptest! {
        #[test]
        fn normalize_never_panics_and_is_idempotent(s in any::<String>()) {
            if let Ok(n) = normalize_htu(&s) {
                prop_assert_eq!(normalize_htu(&n), Ok(n.clone()));
            }
        }

        #[test]
        fn normalize_uri_like_is_idempotent(
            s in "(?i)(https?|ftp)://[a-z0-9.%:@\\[\\]-]{0,12}(/[a-z0-9._~%!$&'()*+,;=:@/|{} -]{0,24})?[?#]?"
        ) {
            if let Ok(n) = normalize_htu(&s) {
                prop_assert_eq!(normalize_htu(&n), Ok(n.clone()));
            }
        }

        #[test]
        fn request_htu_equals_normalised_absolute_uri(
            o in proptest::sample::select(ORIGINS),
            p in path_strategy(),
        ) {
            let o = origin(o);
            let expected = normalize_htu(&format!("{o}{p}"));
            prop_assert!(expected.is_ok(), "{:?}", expected);
            prop_assert_eq!(request_htu(&o, &p).ok(), expected.ok());
        }

        #[test]
        fn generated_uris_normalise_idempotently_and_match_request_htu(
            scheme in "[hH][tT][tT][pP][sS]?",
            host in "[a-zA-Z0-9.-]{1,10}|\\[::[0-9a-fA-F]{1,4}\\]",
            port in proptest::option::of(0u32..70_000),
            p in path_strategy(),
        ) {
            let port_text = port.map(|p| format!(":{p}")).unwrap_or_default();
            let uri = format!("{scheme}://{host}{port_text}{p}");
            let valid_port = port.is_none_or(|p| (1..=65_535).contains(&p));
            match normalize_htu(&uri) {
                Ok(n) => {
                    prop_assert!(valid_port);
                    prop_assert_eq!(normalize_htu(&n), Ok(n.clone()));
                    let o = origin(&format!("{scheme}://{host}{port_text}"));
                    prop_assert_eq!(request_htu(&o, &p), Ok(n));
                }
                Err(e) => prop_assert!(!valid_port, "{}: {}", uri, e),
            }
        }

        #[test]
        fn request_htu_never_panics(p in any::<String>()) {
            let o = origin("https://api.example.com");
            let _ = request_htu(&o, &p);
        }
    }
}
