//! API keys: extraction from a request, hashing, and the key → account cache.
//!
//! Keys are stored only as SHA-256 digests. A lookup finds the stored digest
//! by the presented key's digest and then compares the two in constant time,
//! so a key is never compared byte by byte on a path an attacker can time.
//!
//! Looked-up keys are cached per worker for [`POSITIVE_TTL`] (unknown keys
//! for [`NEGATIVE_TTL`]), bounding how long another instance's revocation can
//! go unseen well under the 5 s the contract allows. The account's plan and
//! suspension are re-read inside every debit, so the cache never lets a
//! request spend on a stale plan. Each data-plane worker has its own cache;
//! a revocation through this instance's admin API reaches all of them before
//! their next lookup ([`Revocations`]).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// A key cache's map: keyed by SHA-256 digests, which are already uniformly
/// spread, so their first eight bytes are the hash (no SipHash per request).
type Entries = HashMap<[u8; 32], CachedLookup, BuildHasherDefault<DigestHasher>>;

#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its length, then its bytes: keep the bytes.
        if let Some(head) = bytes.get(..8) {
            self.0 = u64::from_le_bytes(head.try_into().unwrap_or_default());
        }
    }
}

/// How many revocations are remembered for caches that have not looked yet;
/// a cache further behind starts over.
const REVOCATION_LOG: usize = 1024;

/// Revocations on this instance, seen by every plane's [`KeyCache`]: an
/// account forgotten on one plane (the admin API) is forgotten by every
/// data-plane worker before its next lookup.
#[derive(Default)]
pub struct Revocations {
    /// Bumped once per revocation; a cache that saw a lower value looks
    /// in the log. Read (one load of a rarely written word) per lookup.
    epoch: AtomicU64,
    log: Mutex<VecDeque<(u64, String)>>,
}

impl Revocations {
    fn revoke(&self, account_id: &str) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = self.epoch.load(Ordering::SeqCst) + 1;
        if log.len() == REVOCATION_LOG {
            log.pop_front();
        }
        log.push_back((epoch, account_id.to_owned()));
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    fn current(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The accounts revoked after `seen`; `None` if the log no longer
    /// reaches back that far.
    fn since(&self, seen: u64) -> Option<Vec<String>> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.front().is_some_and(|(first, _)| *first > seen + 1) {
            return None;
        }
        Some(
            log.iter()
                .filter(|(epoch, _)| *epoch > seen)
                .map(|(_, account)| account.clone())
                .collect(),
        )
    }
}

/// One plane's cache in front of [`MeteredLedger::find_key`]. Each
/// data-plane worker has its own (its lock is never contended); they share
/// the instance's [`Revocations`].
pub struct KeyCache {
    entries: Mutex<Entries>,
    /// The revocation epoch this cache has applied.
    seen: AtomicU64,
    revocations: Arc<Revocations>,
}

impl Default for KeyCache {
    fn default() -> KeyCache {
        KeyCache::new(Arc::default())
    }
}

impl KeyCache {
    pub fn new(revocations: Arc<Revocations>) -> KeyCache {
        KeyCache {
            entries: Mutex::new(Entries::default()),
            seen: AtomicU64::new(revocations.current()),
            revocations,
        }
    }

    /// The owner of `key`, or `None` for an unknown key. Only a cache miss
    /// asks the ledger (and so only a miss is a timed ledger call).
    pub async fn authenticate(
        &self,
        ledger: &MeteredLedger,
        key: &str,
    ) -> Result<Option<Arc<KeyOwner>>, LedgerError> {
        let digest = digest(key);
        let epoch = self.revocations.current();
        if let Some(hit) = self.cached(&digest, epoch) {
            return Ok(hit);
        }
        let owner = ledger
            .find_key(&digest)
            .await?
            .filter(|owner| bool::from(owner.digest.ct_eq(&digest)))
            .map(Arc::new);
        // A revocation during the lookup may have come after the ledger
        // answered: use the answer once, do not keep it.
        if self.revocations.current() == epoch {
            self.store(digest, owner.clone());
        }
        Ok(owner)
    }

    fn cached(&self, digest: &[u8; 32], epoch: u64) -> Option<Option<Arc<KeyOwner>>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let seen = self.seen.load(Ordering::Relaxed);
        if seen != epoch {
            match self.revocations.since(seen) {
                Some(accounts) => {
                    for account in &accounts {
                        forget(&mut entries, account);
                    }
                }
                None => entries.clear(),
            }
            self.seen.store(epoch, Ordering::Relaxed);
        }
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

    /// Forgets everything about an account on every plane of the instance
    /// (after a revocation or an account change here, which must be seen at
    /// once everywhere).
    pub fn forget_account(&self, account_id: &str) {
        self.revocations.revoke(account_id);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        forget(&mut entries, account_id);
    }
}

fn forget(entries: &mut Entries, account_id: &str) {
    entries.retain(|_, entry| {
        entry
            .owner
            .as_ref()
            .is_none_or(|owner| owner.account_id != account_id)
    });
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

    fn owner(account: &str) -> Arc<KeyOwner> {
        Arc::new(KeyOwner {
            account_id: account.to_owned(),
            key_id: "key_1".to_owned(),
            digest: digest("k"),
            account: crate::ledger::AccountRecord {
                plan: "free".to_owned(),
                suspended: false,
            },
        })
    }

    #[test]
    fn a_revocation_on_one_plane_empties_every_planes_cache() {
        let revocations = Arc::new(Revocations::default());
        let admin = KeyCache::new(revocations.clone());
        let worker = KeyCache::new(revocations.clone());
        worker.store(digest("a"), Some(owner("acct-a")));
        worker.store(digest("b"), Some(owner("acct-b")));
        assert!(worker.cached(&digest("a"), revocations.current()).is_some());
        admin.forget_account("acct-a");
        let epoch = revocations.current();
        assert!(worker.cached(&digest("a"), epoch).is_none());
        assert!(worker.cached(&digest("b"), epoch).is_some());
    }

    #[test]
    fn a_cache_behind_the_revocation_log_starts_over() {
        let revocations = Arc::new(Revocations::default());
        let worker = KeyCache::new(revocations.clone());
        worker.store(digest("b"), Some(owner("acct-b")));
        for i in 0..REVOCATION_LOG + 1 {
            revocations.revoke(&format!("other-{i}"));
        }
        assert!(worker.cached(&digest("b"), revocations.current()).is_none());
    }
}
