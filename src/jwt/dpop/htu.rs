//! STUB (replaced by the h/dpoputil branch): the `htu` check.

use crate::error::ConfigError;

/// The origin requests reach the server under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalOrigin {
    text: String,
}

impl ExternalOrigin {
    /// Parse `https://host[:port]`.
    ///
    /// # Errors
    /// Not an origin.
    pub fn parse(origin: &str) -> Result<Self, ConfigError> {
        let o = origin.trim_end_matches('/').to_ascii_lowercase();
        if !(o.starts_with("http://") || o.starts_with("https://")) {
            return Err(ConfigError::parse("not an http(s) origin"));
        }
        let o = o
            .strip_suffix(":443")
            .filter(|_| o.starts_with("https:"))
            .map(str::to_owned)
            .unwrap_or(o);
        Ok(Self { text: o })
    }
}

impl std::fmt::Display for ExternalOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

pub(crate) fn normalize_htu(htu: &str) -> Result<String, &'static str> {
    if htu.contains('?') {
        return Err("htu has a query");
    }
    if htu.contains('#') {
        return Err("htu has a fragment");
    }
    let (scheme, rest) = htu.split_once("://").ok_or("htu is not absolute")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let scheme = scheme.to_ascii_lowercase();
    let mut host = host.to_ascii_lowercase();
    if scheme == "https" && host.ends_with(":443") {
        host.truncate(host.len() - 4);
    }
    if scheme == "http" && host.ends_with(":80") {
        host.truncate(host.len() - 3);
    }
    Ok(format!("{scheme}://{host}{path}"))
}

pub(crate) fn request_htu(origin: &ExternalOrigin, path: &str) -> Result<String, &'static str> {
    Ok(format!("{origin}{path}"))
}

pub(crate) fn forwarded_origin(_headers: &http::HeaderMap) -> Option<ExternalOrigin> {
    None
}
