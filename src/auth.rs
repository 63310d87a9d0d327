//! API keys: extraction from a request, hashing, and the key → account cache.
//!
//! Keys are stored only as SHA-256 digests. A lookup finds the stored digest
//! by the presented key's digest and then compares the two in constant time,
//! so a key is never compared byte by byte on a path an attacker can time.
//!
//! Looked-up keys are cached per instance for [`POSITIVE_TTL`] (unknown keys
//! for [`NEGATIVE_TTL`]), bounding how long another instance's revocation can
//! go unseen well under the 5 s the contract allows. The account's plan and
//! suspension are re-read inside every debit, so the cache never lets a
//! request spend on a stale plan.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderMap;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{ErrorKind, GatewayError};
use crate::ledger::{KeyOwner, LedgerError, MeteredLedger};

pub const POSITIVE_TTL: Duration = Duration::from_secs(2);
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// Beyond this many cached keys the cache starts over; a flood of random
/// keys can then cost Redis lookups but never memory.
const MAX_CACHED_KEYS: usize = 100_000;

/// A key presented by a client, as found in `Authorization: Bearer` or `X-Api-Key`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            let token = token.trim();
            return (!token.is_empty()).then_some(token);
        }
        return None;
    }
    let token = headers.get("x-api-key")?.to_str().ok()?.trim();
    (!token.is_empty()).then_some(token)
}

/// The account behind a request's API key (`Authorization: Bearer` or
/// `X-Api-Key`): 401 `unauthenticated` when there is none or it is unknown,
/// 503 `ledger_unavailable` when the ledger cannot tell.
pub async fn authenticate(
    keys: &KeyCache,
    ledger: &MeteredLedger,
    headers: &HeaderMap,
) -> Result<Arc<KeyOwner>, GatewayError> {
    let unauthenticated = || {
        GatewayError::new(
            ErrorKind::Unauthenticated,
            "send a valid API key as `Authorization: Bearer <key>` or `X-Api-Key: <key>`",
        )
    };
    let key = presented_key(headers).ok_or_else(unauthenticated)?;
    keys.authenticate(ledger, key)
        .await
        .map_err(GatewayError::ledger_unavailable)?
        .ok_or_else(unauthenticated)
}

pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new API key and its id: `cg_` + 32 random bytes in hex; the id is public.
pub fn generate_key() -> (String, String) {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let mut id = [0u8; 8];
    rand::rng().fill_bytes(&mut id);
    (
        format!("key_{}", crate::hex::encode(&id)),
        format!("cg_{}", crate::hex::encode(&secret)),
    )
}

struct CachedLookup {
    fetched: Instant,
    /// Shared, so a hit costs a reference count rather than three strings.
    owner: Option<Arc<KeyOwner>>,
}

/// Per-instance cache in front of [`MeteredLedger::find_key`].
#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<[u8; 32], CachedLookup>>,
}

impl KeyCache {
    /// The owner of `key`, or `None` for an unknown key. Only a cache miss
    /// asks the ledger (and so only a miss is a timed ledger call).
    pub async fn authenticate(
        &self,
        ledger: &MeteredLedger,
        key: &str,
    ) -> Result<Option<Arc<KeyOwner>>, LedgerError> {
        let digest = digest(key);
        if let Some(hit) = self.cached(&digest) {
            return Ok(hit);
        }
        let owner = ledger
            .find_key(&digest)
            .await?
            .filter(|owner| bool::from(owner.digest.ct_eq(&digest)))
            .map(Arc::new);
        self.store(digest, owner.clone());
        Ok(owner)
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Option<Arc<KeyOwner>>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(digest)?;
        let ttl = if entry.owner.is_some() {
            POSITIVE_TTL
        } else {
            NEGATIVE_TTL
        };
        (entry.fetched.elapsed() < ttl).then(|| entry.owner.clone())
    }

    fn store(&self, digest: [u8; 32], owner: Option<Arc<KeyOwner>>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_CACHED_KEYS {
            entries.clear();
        }
        entries.insert(
            digest,
            CachedLookup {
                fetched: Instant::now(),
                owner,
            },
        );
    }

    /// Forgets everything about an account (after a revocation or an account
    /// change on this instance, which must be seen at once here).
    pub fn forget_account(&self, account_id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, entry| {
            entry
                .owner
                .as_ref()
                .is_none_or(|owner| owner.account_id != account_id)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn bearer_and_x_api_key_are_accepted() {
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "bearer  abc ")])),
            Some("abc")
        );
        assert_eq!(
            presented_key(&headers(&[("x-api-key", "xyz")])),
            Some("xyz")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearer ")])),
            None
        );
        assert_eq!(presented_key(&headers(&[])), None);
    }

    #[test]
    fn generated_keys_are_unique_and_shaped() {
        let (id1, key1) = generate_key();
        let (id2, key2) = generate_key();
        assert_ne!(key1, key2);
        assert_ne!(id1, id2);
        assert!(key1.starts_with("cg_") && key1.len() == 3 + 64);
        assert!(id1.starts_with("key_") && id1.len() == 4 + 16);
    }

    #[test]
    fn digest_is_sha256() {
        assert_eq!(
            crate::hex::encode(&digest("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
