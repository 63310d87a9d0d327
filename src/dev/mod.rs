//! `creditgate serve --dev`: a complete gateway to try on one machine, in
//! the spirit of `vault server -dev`.
//!
//! It runs the memory ledger with a built-in demo vendor behind every route,
//! creates the account [`DEMO_ACCOUNT`] with one API key, and everything it
//! needs to print (admin token, key, ready-to-paste requests) is in
//! [`DevGateway`]. Nothing of this runs outside dev mode: the demo vendor is
//! only started by [`start`], and only the `--dev` flag calls it.
//!
//! - [`config`]: the dev config, a TOML text read by the real parser.
//! - [`vendor`]: the demo vendor's loopback listener; [`reply`]: what it answers.
//! - [`banner`]: what `serve --dev` prints.
//!
//! Decisions (also in `docs/operations.md`): the admin token is random per
//! run (`cgdev_` + 128 random bits, printed), so a forgotten dev gateway is
//! not an open door even to other local users; the gateway listens on
//! loopback only and [`start`] refuses any other address.

pub mod banner;
pub mod config;
pub mod reply;
pub mod vendor;

use std::net::{Ipv4Addr, SocketAddr};

use crate::config::ConfigError;
use crate::ledger::{AccountRecord, LedgerError};
use crate::{RunningGateway, StartError};

pub use vendor::DemoVendor;

/// The account dev mode creates.
pub const DEMO_ACCOUNT: &str = "demo";
/// Its plan (100 credits per window), small enough to reach a 429 by hand.
pub const DEMO_PLAN: &str = "free";

/// Where the dev gateway listens (loopback only).
#[derive(Debug, Clone, Copy)]
pub struct DevOptions {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
}

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions {
            listen: (Ipv4Addr::LOCALHOST, 8080).into(),
            admin_listen: (Ipv4Addr::LOCALHOST, 9090).into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("dev mode listens on loopback only; {0} is not a loopback address")]
    NotLoopback(SocketAddr),
    #[error("cannot start the demo vendor: {0}")]
    Vendor(std::io::Error),
    #[error("the dev config is invalid (a bug):\n{0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot create the demo account: {0}")]
    Ledger(#[from] LedgerError),
}

/// A running dev gateway with its demo vendor, account and key.
pub struct DevGateway {
    pub running: RunningGateway,
    pub vendor: DemoVendor,
    pub admin_token: String,
    pub account: &'static str,
    pub plan: &'static str,
    pub allowance: u64,
    pub key_id: String,
    pub key: String,
}

impl DevGateway {
    /// Drains the gateway, then stops the demo vendor.
    pub async fn shutdown(self) {
        self.running.shutdown().await;
        drop(self.vendor);
    }
}

/// Starts the demo vendor and a memory-ledger gateway in front of it, and
/// creates [`DEMO_ACCOUNT`] with a fresh key.
pub async fn start(options: DevOptions) -> Result<DevGateway, DevError> {
    for addr in [options.listen, options.admin_listen] {
        if !addr.ip().is_loopback() {
            return Err(DevError::NotLoopback(addr));
        }
    }
    let vendor = DemoVendor::start().await.map_err(DevError::Vendor)?;
    let admin_token = format!("cgdev_{}", crate::hex::encode(&rand::random::<[u8; 16]>()));
    let config = config::dev_config(&config::DevSettings {
        listen: options.listen,
        admin_listen: options.admin_listen,
        admin_token: &admin_token,
        vendor_url: &vendor.url(),
    })?;
    let allowance = config.plans.get(DEMO_PLAN).copied().unwrap_or(0);
    let running = crate::start(config).await?;
    let ledger = &running.gateway.ledger;
    ledger
        .put_account(
            DEMO_ACCOUNT,
            &AccountRecord {
                plan: DEMO_PLAN.to_owned(),
                suspended: false,
            },
        )
        .await?;
    let (key_id, key) = crate::auth::generate_key();
    ledger
        .add_key(DEMO_ACCOUNT, &key_id, &crate::auth::digest(&key))
        .await?;
    tracing::info!(vendor = %vendor.addr(), account = DEMO_ACCOUNT, "dev mode: demo vendor, account and key ready");
    Ok(DevGateway {
        running,
        vendor,
        admin_token,
        account: DEMO_ACCOUNT,
        plan: DEMO_PLAN,
        allowance,
        key_id,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_addresses_other_than_loopback() {
        let outcome = start(DevOptions {
            listen: "0.0.0.0:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
        })
        .await;
        assert!(
            matches!(outcome, Err(DevError::NotLoopback(addr)) if addr.port() == 0),
            "{:?}",
            outcome.err()
        );
    }

    #[tokio::test]
    async fn creates_the_demo_account_with_a_key_that_authenticates() {
        let dev = start(DevOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
        })
        .await
        .unwrap();
        assert!(dev.admin_token.starts_with("cgdev_") && dev.admin_token.len() == 38);
        assert_eq!(dev.allowance, 100);
        let gateway = &dev.running.gateway;
        let account = gateway.ledger.get_account(DEMO_ACCOUNT).await.unwrap();
        assert_eq!(account.map(|a| a.plan).as_deref(), Some(DEMO_PLAN));
        let owner = gateway
            .ledger
            .find_key(&crate::auth::digest(&dev.key))
            .await
            .unwrap()
            .expect("the printed key is stored");
        assert_eq!(owner.account_id, DEMO_ACCOUNT);
        assert_eq!(owner.key_id, dev.key_id);
        dev.shutdown().await;
    }
}
