//! The only place that spells a Redis key.
//!
//! Every key of an account carries the account id as its hash tag
//! (`cg:{site-42}:w`), so each script touches one Redis Cluster slot. API key
//! lookups are keyed by the key's digest and live in their own slots; no
//! script ever needs one together with an account's keys.

use crate::hex;

/// The keys of one account, in the order the scripts expect them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountKeys {
    /// Hash: `plan`, `suspended` ("0"/"1"), `used`, `seen` and the account's
    /// route names by number (see `prelude.lua`).
    pub account: String,
    /// Sorted set, one member per debit within the history retention:
    /// member = the packed debit record, score = unix ms.
    pub window: String,
    /// Hash: a client-chosen request id → unix ms of its debit (ids the
    /// gateway generated are packed into the record and need no entry).
    pub ids: String,
    /// Hash: API key id → hex SHA-256 digest of the key.
    pub api_keys: String,
    /// Hash: the usage aggregates — credits and debits by UTC day and route,
    /// credits by the day they leave the window (see `prelude.lua`).
    pub usage: String,
    /// Hash: the account's queued threshold alerts, alert number → its
    /// record (docs/alerts.md); written by the debit in the same step.
    pub alerts: String,
    /// Hash: the account's prepaid grants — `<number>` → "credits remaining
    /// expires created voided", `<number>:note` (see `prelude.lua`).
    pub grants: String,
}

impl AccountKeys {
    pub fn new(account: &str) -> AccountKeys {
        debug_assert!(
            crate::account_id::is_valid(account),
            "account ids are validated before they reach the ledger"
        );
        // Built on every debit: plain pushes rather than the formatter.
        let key = |suffix: &str| {
            let mut key = String::with_capacity(account.len() + 8);
            key.push_str("cg:{");
            key.push_str(account);
            key.push_str("}:");
            key.push_str(suffix);
            key
        };
        AccountKeys {
            account: key("a"),
            window: key("w"),
            ids: key("i"),
            api_keys: key("k"),
            usage: key("u"),
            alerts: key("q"),
            grants: key("g"),
        }
    }
}

/// Sorted set of every account id (score 0, read in id order with
/// `ZRANGEBYLEX`). Its own key, so on a Redis Cluster it lives in one slot of
/// its own; written when an account is put, never on the request path.
pub const ACCOUNT_INDEX: &str = "cg:accounts";

/// Sorted set of the accounts with queued alerts, scored by when their
/// next alert is due (Redis clock, unix ms): where the alert senders look.
/// Its own slot on a Redis Cluster, so the debit cannot write it: the
/// gateway adds an account after a debit that queued an alert, off the
/// request path, and a periodic `SCAN` for [`ALERT_QUEUE_PATTERN`] is the
/// safety net (docs/alerts.md, "Fleet").
pub const ALERT_INDEX: &str = "cg:alerts";

/// String with an expiry: the gateway that holds it runs the periodic scan
/// for alert queues missing from [`ALERT_INDEX`] (one per fleet at a time).
pub const ALERT_SWEEP_LEASE: &str = "cg:alerts:sweep";

/// What `SCAN` matches to find every account's alert queue.
pub const ALERT_QUEUE_PATTERN: &str = "cg:{*}:q";

/// The account id of an alert queue key (`cg:{site-42}:q` → `site-42`).
pub fn account_of_alert_queue(key: &str) -> Option<&str> {
    key.strip_prefix("cg:{")?.strip_suffix("}:q")
}

/// What `SCAN` matches to find every account hash (rebuilding the index).
pub const ACCOUNT_HASH_PATTERN: &str = "cg:{*}:a";

/// The account id of an account hash key (`cg:{site-42}:a` → `site-42`).
pub fn account_of_hash_key(key: &str) -> Option<&str> {
    key.strip_prefix("cg:{")?.strip_suffix("}:a")
}

/// String: `<account>\t<key id>` for the API key with this digest.
pub fn api_key_lookup(digest: &[u8; 32]) -> String {
    format!("cg:key:{}", hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_formats_are_pinned() {
        let keys = AccountKeys::new("site-42");
        assert_eq!(keys.account, "cg:{site-42}:a");
        assert_eq!(keys.window, "cg:{site-42}:w");
        assert_eq!(keys.ids, "cg:{site-42}:i");
        assert_eq!(keys.api_keys, "cg:{site-42}:k");
        assert_eq!(keys.usage, "cg:{site-42}:u");
        assert_eq!(keys.alerts, "cg:{site-42}:q");
        assert_eq!(ALERT_INDEX, "cg:alerts");
        assert_eq!(ALERT_SWEEP_LEASE, "cg:alerts:sweep");
        assert_eq!(ALERT_QUEUE_PATTERN, "cg:{*}:q");
        assert_eq!(account_of_alert_queue(&keys.alerts), Some("site-42"));
        assert_eq!(account_of_alert_queue(&keys.account), None);
        assert_eq!(keys.grants, "cg:{site-42}:g");
        // Every key of an account shares its hash tag: one Cluster slot.
        for key in [
            &keys.window,
            &keys.ids,
            &keys.api_keys,
            &keys.usage,
            &keys.grants,
            &keys.alerts,
        ] {
            assert!(key.starts_with("cg:{site-42}:"), "{key}");
        }
        assert_eq!(ACCOUNT_INDEX, "cg:accounts");
        assert_eq!(account_of_hash_key(&keys.account), Some("site-42"));
        assert_eq!(account_of_hash_key(&keys.window), None);
        assert_eq!(
            api_key_lookup(&[0xab; 32]),
            format!("cg:key:{}", "ab".repeat(32))
        );
    }
}
