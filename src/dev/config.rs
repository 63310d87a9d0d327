//! The dev mode's config: a TOML text (`creditgate-dev.toml`, next to this
//! file) read by [`Config::parse`], so it cannot drift from the format
//! every other config file uses.

use std::net::SocketAddr;
use std::path::Path;

use crate::config::{Config, ConfigError};

const TEXT: &str = include_str!("creditgate-dev.toml");
/// The name errors would carry (the text is built in, not a file).
const NAME: &str = "<dev mode config>";

/// What the dev mode fills into the text.
pub struct DevSettings<'a> {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub admin_token: &'a str,
    pub vendor_url: &'a str,
}

pub fn dev_config(settings: &DevSettings<'_>) -> Result<Config, ConfigError> {
    let listen = settings.listen.to_string();
    let admin_listen = settings.admin_listen.to_string();
    // Only these names resolve: the operator's environment plays no part.
    let env = |name: &str| match name {
        "CREDITGATE_DEV_LISTEN" => Some(listen.clone()),
        "CREDITGATE_DEV_ADMIN_LISTEN" => Some(admin_listen.clone()),
        "CREDITGATE_DEV_ADMIN_TOKEN" => Some(settings.admin_token.to_owned()),
        "CREDITGATE_DEV_VENDOR_URL" => Some(settings.vendor_url.to_owned()),
        _ => None,
    };
    Config::parse(TEXT, NAME, Path::new("."), &env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LedgerBackend;

    #[test]
    fn the_text_parses_with_the_settings_filled_in() {
        let config = dev_config(&DevSettings {
            listen: "127.0.0.1:18080".parse().unwrap(),
            admin_listen: "127.0.0.1:19090".parse().unwrap(),
            admin_token: "cgdev_test",
            vendor_url: "http://127.0.0.1:4321",
        })
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:18080");
        assert_eq!(config.admin.listen.to_string(), "127.0.0.1:19090");
        assert_eq!(config.admin.token.as_deref(), Some("cgdev_test"));
        assert!(matches!(config.ledger.backend, LedgerBackend::Memory));
        assert_eq!(config.upstreams["demo"].authority, "127.0.0.1:4321");
        let routes: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            routes,
            ["image-generate", "video-generate", "agents", "status"]
        );
        assert!(config.routes[2].settle.is_some());
        assert_eq!(
            config.plans.get(super::super::DEMO_PLAN).copied(),
            Some(100)
        );
        assert!(config.source.is_none(), "nothing to reload from");
    }
}
