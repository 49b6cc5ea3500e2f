//! OIDC discovery (`/.well-known/openid-configuration`) with the RFC 8414 fallback
//! (`/.well-known/oauth-authorization-server`): finds the JWKS URL once, and checks that
//! the document names the configured issuer exactly.

use serde_json::Value;

use super::fetch::{FetchError, FetchResponse, fetch};
use super::{Inner, Location};
use crate::jwt::jose;

/// The JWKS URL, found through discovery the first time when configured so.
pub(super) async fn jwks_url(inner: &Inner) -> Result<String, FetchError> {
    if let Some(url) = inner
        .jwks_url
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
    {
        return Ok(url);
    }
    let Location::Discovery(issuer) = &inner.location else {
        return Err(FetchError::new("no JWKS URL"));
    };
    let url = discover(inner, issuer).await.inspect_err(|_| {
        crate::metrics::event(crate::metrics::Event::DiscoveryFailure);
    })?;
    *inner.jwks_url.lock().unwrap_or_else(|e| e.into_inner()) = Some(url.clone());
    Ok(url)
}

/// The discovery URLs for `issuer`: OIDC first, then RFC 8414 (well-known segment inserted
/// before the issuer's path).
pub(crate) fn discovery_urls(issuer: &str) -> Vec<String> {
    let trimmed = issuer.trim_end_matches('/');
    let mut urls = vec![format!("{trimmed}/.well-known/openid-configuration")];
    if let Some(scheme_end) = trimmed.find("://") {
        let after = &trimmed[scheme_end + 3..];
        let (host, path) = after.split_at(after.find('/').unwrap_or(after.len()));
        urls.push(format!(
            "{}://{host}/.well-known/oauth-authorization-server{path}",
            &trimmed[..scheme_end]
        ));
    }
    urls
}

async fn discover(inner: &Inner, issuer: &str) -> Result<String, FetchError> {
    let mut last = FetchError::new("discovery failed");
    for url in discovery_urls(issuer) {
        let body = match fetch(inner, url, None).await {
            Ok(FetchResponse::Modified { body, .. }) => body,
            Ok(FetchResponse::NotModified { .. }) => {
                last = FetchError::new("discovery answered 304 to a plain request");
                continue;
            }
            Err(e) => {
                last = e;
                continue;
            }
        };
        let doc = jose::parse_object(&body)
            .map_err(|_| FetchError::new("discovery document is not a strict JSON object"))?;
        match doc.get("issuer") {
            Some(Value::String(s)) if s == issuer => {}
            _ => return Err(FetchError::new("discovery document names another issuer")),
        }
        return match doc.get("jwks_uri") {
            Some(Value::String(u)) if u.starts_with("https://") || u.starts_with("http://") => {
                Ok(u.clone())
            }
            _ => Err(FetchError::new("discovery document has no usable jwks_uri")),
        };
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_url_forms() {
        assert_eq!(
            discovery_urls("https://id.example/realms/main/"),
            [
                "https://id.example/realms/main/.well-known/openid-configuration",
                "https://id.example/.well-known/oauth-authorization-server/realms/main",
            ]
        );
        assert_eq!(
            discovery_urls("https://id.example"),
            [
                "https://id.example/.well-known/openid-configuration",
                "https://id.example/.well-known/oauth-authorization-server",
            ]
        );
    }
}
