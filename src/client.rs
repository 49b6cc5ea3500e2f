//! The client's address and the trusted-proxy list: for limits on anonymous traffic and failed
//! authentications, and for the forwarding headers that DPoP and client certificates believe.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use http::{Extensions, HeaderMap};
use ipnet::IpNet;

use crate::error::ConfigError;

/// Finds the client's address: the TCP peer, or — only when the peer is a configured
/// trusted proxy — the rightmost untrusted hop of `X-Forwarded-For` / `Forwarded`. A
/// spoofed header from an untrusted peer is ignored. IPv6 addresses are grouped by /56 by
/// default (one customer's allocation), IPv4 by /32.
///
/// The peer address is read from the request's extensions: axum's
/// `ConnectInfo<SocketAddr>` (serve with `into_make_service_with_connect_info`), or a plain
/// `SocketAddr` that your server inserted.
///
/// ```
/// use std::net::SocketAddr;
/// use tower_api_guard::ClientAddr;
///
/// let client = ClientAddr::new().trusted_proxies(["10.0.0.0/8"]).unwrap();
/// let mut headers = http::HeaderMap::new();
/// headers.insert("x-forwarded-for", "203.0.113.7, 10.0.0.2".parse().unwrap());
/// let peer: SocketAddr = "10.0.0.1:4000".parse().unwrap();
/// assert_eq!(client.resolve(peer.ip(), &headers).to_string(), "203.0.113.7");
/// ```
#[derive(Debug, Clone)]
pub struct ClientAddr {
    trusted: Arc<[IpNet]>,
    v6_prefix: u8,
}

impl Default for ClientAddr {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientAddr {
    /// No trusted proxies; IPv6 grouped by /56.
    pub fn new() -> Self {
        Self {
            trusted: Arc::from([]),
            v6_prefix: 56,
        }
    }

    /// Networks whose forwarding headers are believed (CIDR, e.g. `10.0.0.0/8`).
    ///
    /// # Errors
    /// A malformed network.
    pub fn trusted_proxies<I, S>(mut self, networks: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nets: Result<Vec<IpNet>, _> = networks
            .into_iter()
            .map(|n| {
                let n = n.as_ref();
                n.parse::<IpNet>()
                    .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
            })
            .collect();
        self.trusted = nets
            .map_err(|_| ConfigError::parse("a trusted proxy is not an address or CIDR network"))?
            .into();
        Ok(self)
    }

    /// Group IPv6 addresses by this prefix length (default 56; 128 to not group).
    ///
    /// # Errors
    /// A prefix longer than 128 bits.
    pub fn ipv6_prefix(mut self, prefix: u8) -> Result<Self, ConfigError> {
        if prefix > 128 {
            return Err(ConfigError::setting("an IPv6 prefix is at most 128 bits"));
        }
        self.v6_prefix = prefix;
        Ok(self)
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// Whether the request's TCP peer (see [`peer`](Self::peer)) is a configured trusted
    /// proxy, whose forwarding headers may be believed. `false` when the peer is unknown.
    pub fn peer_is_trusted(&self, extensions: &Extensions) -> bool {
        self.peer(extensions).is_some_and(|ip| self.trusted(ip))
    }

    /// The client's address, given the TCP peer and the request headers.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusted(peer) {
            return peer;
        }
        let mut hops: Vec<IpAddr> = Vec::new();
        for value in headers.get_all("forwarded") {
            let Ok(value) = value.to_str() else { continue };
            for element in value.split(',') {
                for pair in element.split(';') {
                    let Some((k, v)) = pair.trim().split_once('=') else {
                        continue;
                    };
                    if k.trim().eq_ignore_ascii_case("for")
                        && let Some(ip) = parse_hop(v.trim().trim_matches('"'))
                    {
                        hops.push(ip);
                    }
                }
            }
        }
        if hops.is_empty() {
            for value in headers.get_all("x-forwarded-for") {
                let Ok(value) = value.to_str() else { continue };
                hops.extend(value.split(',').filter_map(|h| parse_hop(h.trim())));
            }
        }
        // Rightmost untrusted hop; if every hop is trusted, the leftmost one.
        hops.iter()
            .rev()
            .find(|ip| !self.trusted(**ip))
            .or(hops.first())
            .copied()
            .unwrap_or(peer)
    }

    /// The peer address from the request's extensions.
    pub fn peer(&self, extensions: &Extensions) -> Option<IpAddr> {
        #[cfg(feature = "axum")]
        if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
            return Some(info.0.ip());
        }
        extensions.get::<SocketAddr>().map(SocketAddr::ip)
    }

    /// The rate-limit key for a client address (IPv6 grouped by prefix).
    pub fn key(&self, ip: IpAddr) -> String {
        self.key_in(ip, &mut KeyBuf::default()).to_owned()
    }

    /// The key, written into `buf` (no allocation: the brute-force guard asks for every
    /// request).
    #[cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
    pub(crate) fn key_in<'b>(&self, ip: IpAddr, buf: &'b mut KeyBuf) -> &'b str {
        use std::fmt::Write;
        // At most "ip:" + 39 (IPv6) + "/128": the buffer always holds it.
        let v4 = |buf: &mut KeyBuf, v4: std::net::Ipv4Addr| {
            // By hand: `Display` for an address costs ten times more, on every request.
            let mut digits = itoa::Buffer::new();
            let [a, b, c, d] = v4.octets();
            buf.push("ip:");
            buf.push(digits.format(a));
            for octet in [b, c, d] {
                buf.push(".");
                buf.push(digits.format(octet));
            }
            Ok(())
        };
        let _ = match ip {
            IpAddr::V4(addr) => v4(buf, addr),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(addr) => v4(buf, addr),
                None => {
                    let bits = u128::from(v6);
                    let mask = if self.v6_prefix == 0 {
                        0
                    } else {
                        u128::MAX << (128 - u32::from(self.v6_prefix))
                    };
                    write!(buf, "ip:{}/{}", Ipv6Addr::from(bits & mask), self.v6_prefix)
                }
            },
        };
        buf.as_str()
    }
}

/// A client key on the stack.
#[cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
pub(crate) struct KeyBuf {
    bytes: [u8; 64],
    len: usize,
}

impl Default for KeyBuf {
    fn default() -> Self {
        Self {
            bytes: [0; 64],
            len: 0,
        }
    }
}

impl KeyBuf {
    /// Append `s` (the buffer holds any key; a longer one is cut, never a panic).
    fn push(&mut self, s: &str) {
        let _ = std::fmt::Write::write_str(self, s);
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for KeyBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// One hop: an address, `[v6]`, `[v6]:port` or `v4:port`. Obfuscated (`_hidden`) and
/// `unknown` hops are skipped.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = hop.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    hop.strip_prefix('[')
        .and_then(|h| h.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn spoofed_headers_from_untrusted_peers_are_ignored() {
        let c = ClientAddr::new().trusted_proxies(["10.0.0.0/8"]).unwrap();
        let spoof = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            c.resolve("198.51.100.9".parse().unwrap(), &spoof)
                .to_string(),
            "198.51.100.9"
        );
        assert_eq!(
            ClientAddr::new()
                .resolve("10.0.0.1".parse().unwrap(), &spoof)
                .to_string(),
            "10.0.0.1"
        );
    }

    #[test]
    fn rightmost_untrusted_hop() {
        let c = ClientAddr::new()
            .trusted_proxies(["10.0.0.0/8", "192.0.2.1"])
            .unwrap();
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        // The client could have written anything on the left; the first untrusted hop from
        // the right is what our proxies saw.
        let h = headers(&[(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.7, 192.0.2.1, 10.1.1.1",
        )]);
        assert_eq!(c.resolve(peer, &h).to_string(), "203.0.113.7");
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.8"),
        ]);
        assert_eq!(c.resolve(peer, &h).to_string(), "203.0.113.8");
        let h = headers(&[(
            "forwarded",
            r#"for=6.6.6.6, for="[2001:db8::1]:443";proto=https, for=10.0.0.3"#,
        )]);
        assert_eq!(c.resolve(peer, &h).to_string(), "2001:db8::1");
        let h = headers(&[("x-forwarded-for", "10.2.2.2, 10.3.3.3")]);
        assert_eq!(c.resolve(peer, &h).to_string(), "10.2.2.2");
        let h = headers(&[("x-forwarded-for", "garbage, unknown")]);
        assert_eq!(c.resolve(peer, &h), peer);
    }

    #[test]
    fn ipv6_grouping() {
        let c = ClientAddr::new();
        let a: IpAddr = "2001:db8:aa:bb01::1".parse().unwrap();
        let b: IpAddr = "2001:db8:aa:bbff:ffff::2".parse().unwrap();
        let other: IpAddr = "2001:db8:aa:cc00::1".parse().unwrap();
        assert_eq!(c.key(a), c.key(b));
        assert_ne!(c.key(a), c.key(other));
        assert_eq!(c.key(a), "ip:2001:db8:aa:bb00::/56");
        assert_ne!(
            ClientAddr::new().ipv6_prefix(128).unwrap().key(a),
            ClientAddr::new().ipv6_prefix(128).unwrap().key(b)
        );
        assert_eq!(c.key("::ffff:192.0.2.5".parse().unwrap()), "ip:192.0.2.5");
        assert_eq!(c.key("192.0.2.5".parse().unwrap()), "ip:192.0.2.5");
        assert!(ClientAddr::new().trusted_proxies(["not-a-net"]).is_err());
    }

    #[test]
    fn an_ipv6_prefix_over_128_bits_is_refused() {
        assert!(ClientAddr::new().ipv6_prefix(129).is_err());
        assert!(ClientAddr::new().ipv6_prefix(0).is_ok());
    }

    #[test]
    fn ipv4_keys_are_written_as_display_writes_them() {
        let c = ClientAddr::new();
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "192.0.2.57",
            "1.22.103.4",
        ] {
            let ip: std::net::Ipv4Addr = text.parse().unwrap();
            assert_eq!(c.key(IpAddr::V4(ip)), format!("ip:{ip}"));
            let mapped = IpAddr::V6(ip.to_ipv6_mapped());
            assert_eq!(c.key(mapped), format!("ip:{ip}"));
        }
    }
}
