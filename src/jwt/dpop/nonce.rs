//! Server nonces for DPoP proofs (RFC 9449 §8), stateless: a nonce names a time window and
//! carries an HMAC of it, so replicas that share the secret accept each other's nonces
//! without sharing any state.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use http::HeaderValue;
use sha2::Sha256;

use crate::error::ConfigError;

/// The default time a nonce stays current. A nonce is accepted while it is current and
/// for one more period after.
pub const DEFAULT_NONCE_PERIOD: Duration = Duration::from_secs(300);

/// The length of the HMAC tag kept in a nonce, in bytes.
const TAG_LEN: usize = 16;

const DOMAIN: &[u8] = b"tower-api-guard DPoP nonce v1";

/// Server-issued DPoP nonces (RFC 9449 §8): when configured, every proof must carry the
/// current nonce (or the previous one, for one more period); a proof without one gets
/// `401` with `error="use_dpop_nonce"` and the current nonce in `DPoP-Nonce`, and every
/// response the authenticator lets through carries the current nonce too, so a client
/// always has a fresh one.
///
/// A nonce is `base64url(window ‖ HMAC-SHA-256(secret, window)[..16])`, where `window` is
/// the current time divided by the period: nothing is stored, and replicas given the same
/// [secret](Self::with_secret) accept each other's nonces. The period follows the
/// authenticator's clock.
///
/// ```
/// use std::time::Duration;
/// use tower_api_guard::jwt::DpopNonces;
///
/// // One replica: a random secret.
/// let nonces = DpopNonces::new().unwrap();
/// // Several replicas: the same secret (32 bytes or more) on each.
/// let shared = DpopNonces::with_secret(&[7; 32]).unwrap()
///     .rotate_every(Duration::from_secs(60)).unwrap();
/// # let _ = (nonces, shared);
/// ```
#[derive(Clone)]
pub struct DpopNonces(Arc<Inner>);

struct Inner {
    mac: Hmac<Sha256>,
    period: u64,
    current: ArcSwapOption<(u64, HeaderValue)>,
}

impl fmt::Debug for DpopNonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopNonces")
            .field("period_secs", &self.0.period)
            .finish_non_exhaustive()
    }
}

impl DpopNonces {
    /// Nonces under a random secret (one replica), rotating every
    /// [`DEFAULT_NONCE_PERIOD`].
    ///
    /// # Errors
    /// When the operating system's random number generator fails.
    pub fn new() -> Result<Self, ConfigError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|_| ConfigError::setting("the OS random number generator failed"))?;
        Self::with_secret(&secret)
    }

    /// Nonces under `secret`, shared by every replica (at least 32 bytes).
    ///
    /// # Errors
    /// A secret shorter than 32 bytes.
    pub fn with_secret(secret: &[u8]) -> Result<Self, ConfigError> {
        if secret.len() < 32 {
            return Err(ConfigError::key(
                "a DPoP nonce secret needs at least 32 bytes",
            ));
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|_| ConfigError::key("unusable DPoP nonce secret"))?;
        Ok(Self(Arc::new(Inner {
            mac,
            period: DEFAULT_NONCE_PERIOD.as_secs(),
            current: ArcSwapOption::empty(),
        })))
    }

    /// How long a nonce stays current (whole seconds, at least 1 s and at most a day).
    ///
    /// # Errors
    /// A period under one second or over a day.
    pub fn rotate_every(self, period: Duration) -> Result<Self, ConfigError> {
        let secs = period.as_secs();
        if !(1..=86_400).contains(&secs) {
            return Err(ConfigError::setting(
                "a DPoP nonce period is between 1 second and 1 day",
            ));
        }
        let inner = Inner {
            mac: self.0.mac.clone(),
            period: secs,
            current: ArcSwapOption::empty(),
        };
        Ok(Self(Arc::new(inner)))
    }

    fn window(&self, now: f64) -> u64 {
        // Times before 1970 or beyond u64 saturate; `as` on a float saturates.
        (now.max(0.0) as u64) / self.0.period
    }

    fn tag(&self, window: u64) -> [u8; 32] {
        let mut mac = self.0.mac.clone();
        mac.update(DOMAIN);
        mac.update(&window.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The nonce current at `now` (unix seconds), as a header value. Computed once per
    /// period and then shared.
    pub(crate) fn current(&self, now: f64) -> HeaderValue {
        let window = self.window(now);
        if let Some(current) = &*self.0.current.load()
            && current.0 == window
        {
            return current.1.clone();
        }
        let mut raw = [0u8; 8 + TAG_LEN];
        raw[..8].copy_from_slice(&window.to_be_bytes());
        raw[8..].copy_from_slice(&self.tag(window)[..TAG_LEN]);
        let text = URL_SAFE_NO_PAD.encode(raw);
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        self.0
            .current
            .store(Some(Arc::new((window, value.clone()))));
        value
    }

    /// Whether `nonce` is the current or the previous nonce at `now`. The tag is compared
    /// in constant time.
    pub(crate) fn check(&self, nonce: &str, now: f64) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        let Ok(raw) = <[u8; 8 + TAG_LEN]>::try_from(raw.as_slice()) else {
            return false;
        };
        let mut window = [0u8; 8];
        window.copy_from_slice(&raw[..8]);
        let window = u64::from_be_bytes(window);
        let now = self.window(now);
        if window != now && Some(window) != now.checked_sub(1) {
            return false;
        }
        let mut mac = self.0.mac.clone();
        mac.update(DOMAIN);
        mac.update(&window.to_be_bytes());
        mac.verify_truncated_left(&raw[8..]).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_accepted_for_its_period_and_the_next_only() {
        let nonces = DpopNonces::with_secret(&[1; 32])
            .unwrap()
            .rotate_every(Duration::from_secs(60))
            .unwrap();
        let t = 1_800_000_000.0;
        let first = nonces.current(t);
        let text = first.to_str().unwrap().to_owned();
        assert_eq!(nonces.current(t + 1.0), first, "one nonce per period");
        assert!(nonces.check(&text, t));
        let next = nonces.current(t + 60.0);
        assert_ne!(next, first, "rotates");
        assert!(
            nonces.check(&text, t + 60.0),
            "the previous one still passes"
        );
        assert!(
            !nonces.check(&text, t + 120.0),
            "two periods later it is stale"
        );
        assert!(!nonces.check(&text, t - 60.0), "not before its period");
    }

    #[test]
    fn replicas_sharing_a_secret_agree_and_others_do_not() {
        let a = DpopNonces::with_secret(&[2; 32]).unwrap();
        let b = DpopNonces::with_secret(&[2; 32]).unwrap();
        let other = DpopNonces::with_secret(&[3; 32]).unwrap();
        let t = 1_800_000_000.0;
        let nonce = a.current(t);
        let nonce = nonce.to_str().unwrap();
        assert!(b.check(nonce, t));
        assert!(!other.check(nonce, t));
    }

    #[test]
    fn forged_and_malformed_nonces_fail() {
        let nonces = DpopNonces::new().unwrap();
        let t = 1_800_000_000.0;
        let good = nonces.current(t).to_str().unwrap().to_owned();
        let mut raw = URL_SAFE_NO_PAD.decode(&good).unwrap();
        raw[23] ^= 1;
        for bad in [
            URL_SAFE_NO_PAD.encode(&raw),
            String::new(),
            "not base64!".into(),
            good[..good.len() - 2].to_owned(),
            format!("{good}AA"),
        ] {
            assert!(!nonces.check(&bad, t), "{bad}");
        }
        assert!(DpopNonces::with_secret(&[0; 31]).is_err());
        assert!(nonces.clone().rotate_every(Duration::ZERO).is_err());
        assert!(nonces.rotate_every(Duration::from_secs(86_401)).is_err());
    }
}
