//! Threshold alerts (docs/alerts.md): the debit that takes an account's
//! 30-day `used` across a configured fraction of its allowance queues an
//! alert in the ledger, in the same atomic step (`ledger/alerts.rs`); this
//! module delivers them — never on the request path.
//!
//! - [`Hints`]: accounts whose debit just queued an alert, handed from the
//!   request path to the sender without waiting (a bounded set; the sender
//!   files them in the ledger's index);
//! - `sender.rs`: one task per instance that claims due alerts from the
//!   ledger (a lease: one sender at a time across a fleet) and POSTs them,
//!   signed, retrying with exponential backoff;
//! - `payload.rs`: the JSON body and the `X-Creditgate-Signature` header
//!   (HMAC-SHA256, `sign.rs`).

mod payload;
mod sender;
mod sign;

use std::collections::HashSet;
use std::sync::Mutex;

use tokio::sync::Notify;

pub use payload::{body, signature_header};
pub use sender::{spawn, Sender, POLL, SWEEP_EVERY};
pub use sign::hmac_sha256;

/// Hints waiting at most; beyond it a hint is dropped and the periodic
/// sweep finds the account instead.
const MAX_HINTS: usize = 10_000;

/// Accounts whose debit queued an alert, waiting for the sender to file
/// them in the ledger's index. Adding one never waits.
#[derive(Default)]
pub struct Hints {
    accounts: Mutex<HashSet<String>>,
    notify: Notify,
}

impl Hints {
    pub fn add(&self, account: &str) {
        {
            let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
            if accounts.len() >= MAX_HINTS || !accounts.insert(account.to_owned()) {
                return;
            }
        }
        self.notify.notify_one();
    }

    fn take(&self) -> Vec<String> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        accounts.drain().collect()
    }
}
