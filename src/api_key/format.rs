//! The key format: `{prefix}_{random}{checksum}`, generation from the OS RNG, the base62
//! CRC32 checksum, the offline checks on a presented key, rotation, and digests (SHA-256 or
//! HMAC-SHA256 under a pepper).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiKeyManager, ApiKeyRecord, NewKey, StoreError};
use crate::error::{AuthError, ConfigError};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Random characters in a key (62^22 > 2^130).
const RANDOM_LEN: usize = 22;
/// Checksum characters (62^6 > 2^32).
const CHECKSUM_LEN: usize = 6;
/// The longest key accepted, in bytes, before any other work.
pub const MAX_KEY_LEN: usize = 128;

fn base62_checksum(text: &str) -> [u8; CHECKSUM_LEN] {
    let mut n = u64::from(crc32fast::hash(text.as_bytes()));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// A key's digest: what stores keep and look up by. `Debug` shows a short prefix only.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From raw bytes (as read back from a store).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Lowercase hex, for storage.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &KeyDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({}…)", &self.to_hex()[..8])
    }
}

/// How digests are made.
#[derive(Clone)]
enum Hasher {
    Sha256,
    Hmac(Arc<[u8]>),
}

/// The key format: prefix, checksum and digest. See the [module docs](super).
#[derive(Clone)]
pub struct KeyFormat {
    prefix: Arc<str>,
    hasher: Hasher,
}

impl fmt::Debug for KeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hasher = match self.hasher {
            Hasher::Sha256 => "sha256",
            Hasher::Hmac(_) => "hmac-sha256",
        };
        f.debug_struct("KeyFormat")
            .field("prefix", &self.prefix)
            .field("digest", &hasher)
            .finish()
    }
}

/// The plaintext of a new key. Shown once; `Debug` hides it.
pub struct Plaintext(String);

impl Plaintext {
    /// The key. Give it to its owner once; it is not stored anywhere.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Plaintext(…)")
    }
}

impl fmt::Display for Plaintext {
    /// Prints the key: only for showing it to its owner once.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for Plaintext {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

fn random_base62(len: usize) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).map_err(|e| ConfigError::unavailable("the OS RNG failed", e))?;
        // Rejection sampling: 248 = 62 * 4, so bytes below it map uniformly.
        for &b in &buf {
            if b < 248 && out.len() < len {
                out.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

impl KeyFormat {
    /// Keys with this prefix (letters, digits and `_`, 1–32 bytes), digested with SHA-256.
    ///
    /// # Errors
    /// An empty, over-long or ill-formed prefix.
    pub fn new(prefix: &str) -> Result<Self, ConfigError> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(ConfigError::setting(
                "key prefix must be 1-32 letters, digits or '_'",
            ));
        }
        Ok(Self {
            prefix: prefix.into(),
            hasher: Hasher::Sha256,
        })
    }

    /// Digest with HMAC-SHA256 under a server-side secret (at least 32 bytes), so a leaked
    /// table of digests cannot be checked against guessed keys.
    ///
    /// # Errors
    /// A pepper shorter than 32 bytes.
    pub fn with_pepper(mut self, pepper: &[u8]) -> Result<Self, ConfigError> {
        if pepper.len() < 32 {
            return Err(ConfigError::key("pepper shorter than 32 bytes"));
        }
        self.hasher = Hasher::Hmac(pepper.into());
        Ok(self)
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Make a key: the plaintext (shown once) and the record to store.
    ///
    /// # Errors
    /// When the OS RNG fails.
    pub fn generate(&self, key: NewKey) -> Result<(Plaintext, ApiKeyRecord), ConfigError> {
        self.generate_at(key, SystemTime::now())
    }

    /// [`generate`](Self::generate) with an explicit creation time (tests, clocks).
    ///
    /// # Errors
    /// When the OS RNG fails.
    pub fn generate_at(
        &self,
        key: NewKey,
        now: SystemTime,
    ) -> Result<(Plaintext, ApiKeyRecord), ConfigError> {
        let body = format!("{}_{}", self.prefix, random_base62(RANDOM_LEN)?);
        let checksum = base62_checksum(&body);
        let plaintext = format!(
            "{body}{}",
            std::str::from_utf8(&checksum).expect("base62 is ASCII")
        );
        let record = ApiKeyRecord {
            id: format!("key_{}", random_base62(16)?),
            digest: self.digest(&plaintext),
            display: format!("{}_{}…", self.prefix, &body[self.prefix.len() + 1..][..4]),
            owner: key.owner,
            name: key.name,
            scopes: key.scopes,
            roles: key.roles,
            created_at: now,
            expires_at: key.expires_at,
            revoked_at: None,
            plan: key.plan,
            metadata: key.metadata,
            last_used_at: None,
        };
        Ok((Plaintext(plaintext), record))
    }

    /// Rotate the key `id`: a new key with the same owner, scopes, roles, plan and metadata
    /// is created, and the old one is revoked from `now + grace` on, so clients can switch
    /// over. Returns the new key's plaintext (shown once) and record.
    ///
    /// # Errors
    /// No key with that id, or a store failure.
    pub async fn rotate(
        &self,
        store: &dyn ApiKeyManager,
        id: &str,
        now: SystemTime,
        grace: Duration,
    ) -> Result<(Plaintext, ApiKeyRecord), StoreError> {
        let old = store
            .find_by_id(id)
            .await?
            .ok_or_else(|| StoreError::new("no key with that id"))?;
        let mut new = NewKey::new(old.owner.clone(), old.name.clone())
            .scopes(old.scopes.clone())
            .roles(old.roles.clone())
            .metadata(old.metadata.clone());
        if let Some(plan) = &old.plan {
            new = new.plan(plan.clone());
        }
        if let Some(at) = old.expires_at {
            new = new.expires_at(at);
        }
        let (plaintext, record) = self
            .generate_at(new, now)
            .map_err(|e| StoreError::new("the OS RNG failed").with_source(e))?;
        store.create(&record).await?;
        store.revoke(id, now + grace).await?;
        Ok((plaintext, record))
    }

    /// Check a presented key offline: length cap, prefix, alphabet and checksum.
    ///
    /// # Errors
    /// `invalid_token` (401) with the reason; no store is asked.
    pub fn check(&self, key: &str) -> Result<(), AuthError> {
        let invalid = AuthError::invalid_token;
        if key.len() > MAX_KEY_LEN {
            return Err(invalid("API key longer than the cap"));
        }
        let expected_len = self.prefix.len() + 1 + RANDOM_LEN + CHECKSUM_LEN;
        if key.len() != expected_len || !key.is_ascii() {
            return Err(invalid("API key has the wrong length"));
        }
        let Some(rest) = key
            .strip_prefix(&*self.prefix)
            .and_then(|r| r.strip_prefix('_'))
        else {
            return Err(invalid("API key has the wrong prefix"));
        };
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid("API key has characters outside base62"));
        }
        let (body, checksum) = key.split_at(key.len() - CHECKSUM_LEN);
        if base62_checksum(body).as_slice() != checksum.as_bytes() {
            return Err(invalid("API key checksum does not match"));
        }
        Ok(())
    }

    /// The digest of a key (call [`check`](Self::check) first).
    pub fn digest(&self, key: &str) -> KeyDigest {
        let bytes = &key.as_bytes()[..key.len().min(MAX_KEY_LEN)];
        match &self.hasher {
            Hasher::Sha256 => KeyDigest(Sha256::digest(bytes).into()),
            Hasher::Hmac(pepper) => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(pepper)
                    .expect("HMAC takes keys of any length");
                mac.update(bytes);
                KeyDigest(mac.finalize().into_bytes().into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_pass_their_own_check_and_one_character_changes_fail() {
        let format = KeyFormat::new("sk_live").unwrap();
        let (key, record) = format.generate(NewKey::new("o", "n")).unwrap();
        assert!(key.starts_with("sk_live_"));
        assert_eq!(key.len(), "sk_live_".len() + RANDOM_LEN + CHECKSUM_LEN);
        format.check(&key).unwrap();
        assert_eq!(record.digest, format.digest(&key));
        assert!(record.display.starts_with("sk_live_") && record.display.ends_with('…'));
        assert!(!record.display.contains(&key[12..]));
        // Every single-character substitution is caught offline.
        let bytes = key.as_bytes();
        let mut caught = 0;
        for i in "sk_live_".len()..bytes.len() {
            for &c in BASE62 {
                if c == bytes[i] {
                    continue;
                }
                let mut changed = bytes.to_vec();
                changed[i] = c;
                let changed = String::from_utf8(changed).unwrap();
                assert!(format.check(&changed).is_err(), "{i}");
                caught += 1;
            }
        }
        assert_eq!(caught, (RANDOM_LEN + CHECKSUM_LEN) * 61);
        assert!(!format!("{key:?}").contains(&key[8..]));
    }

    #[test]
    fn malformed_keys_are_rejected_offline() {
        let format = KeyFormat::new("sk_live").unwrap();
        let (key, _) = format.generate(NewKey::new("o", "n")).unwrap();
        for bad in [
            String::new(),
            "sk_live_".into(),
            key.replace("sk_live", "sk_test"),
            format!("{key}x"),
            key[..key.len() - 1].to_owned(),
            "x".repeat(10_000),
            key.replacen('_', "-", 1),
            format!("{}é", &key[..key.len() - 2]),
        ] {
            assert!(format.check(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_unique_and_digests_depend_on_the_pepper() {
        let plain = KeyFormat::new("k").unwrap();
        let peppered = KeyFormat::new("k").unwrap().with_pepper(&[7; 32]).unwrap();
        assert!(KeyFormat::new("k").unwrap().with_pepper(&[7; 31]).is_err());
        let (a, _) = plain.generate(NewKey::new("o", "n")).unwrap();
        let (b, _) = plain.generate(NewKey::new("o", "n")).unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(plain.digest(&a), peppered.digest(&a));
        assert!(plain.digest(&a).ct_eq(&plain.digest(&a)));
        assert!(!plain.digest(&a).ct_eq(&plain.digest(&b)));
        for bad in ["", "has space", "dash-no", &"p".repeat(33)] {
            assert!(KeyFormat::new(bad).is_err());
        }
    }
}
