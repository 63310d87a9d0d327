//! Live reload (SIGHUP, `POST /admin/v1/reload`): re-read the config file and
//! swap in a new snapshot on every plane (each data-plane worker and the
//! admin plane) — routes, costs, plans, upstreams, admin token.
//!
//! Listeners, TLS, connection limits and timers, and the ledger are fixed
//! for the life of the process; a reload that changes them applies
//! everything else and logs which settings wait for a restart. An invalid
//! file changes nothing (docs/configuration.md, "Reload").

use crate::config::Config;
use crate::state::Gateway;

/// Reloads from the file the gateway was started with. `Ok` carries the
/// route names now served; `Err` every problem found (nothing changed).
pub fn reload_from_file(gateway: &Gateway) -> Result<Vec<String>, Vec<String>> {
    let Some(path) = gateway.config_path.as_deref() else {
        gateway.metrics.reload("error");
        return Err(vec![
            "this gateway was not started from a config file; nothing to reload".to_owned(),
        ]);
    };
    let result = Config::load(path)
        .map_err(|error| {
            error
                .to_string()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .and_then(|config| apply(gateway, config).map_err(|error| vec![error]));
    match &result {
        Ok(routes) => {
            gateway.metrics.reload("success");
            tracing::info!(path = %path.display(), routes = routes.len(), "config reloaded");
        }
        Err(errors) => {
            gateway.metrics.reload("error");
            tracing::error!(path = %path.display(), "config reload rejected; the running config is unchanged:\n{}", errors.join("\n"));
        }
    }
    result
}

/// Swaps in `config`, keeping the process-wide settings of the running one.
pub fn apply(gateway: &Gateway, config: Config) -> Result<Vec<String>, String> {
    let current = gateway.snapshot();
    let fixed = [
        (
            "server.listen",
            current.config.server.listen != config.server.listen,
        ),
        ("server.tls", current.config.server.tls != config.server.tls),
        (
            "server.header_read_timeout / idle_timeout",
            (
                current.config.server.header_read_timeout,
                current.config.server.idle_timeout,
            ) != (
                config.server.header_read_timeout,
                config.server.idle_timeout,
            ),
        ),
        (
            "server.workers",
            current.config.server.workers != config.server.workers,
        ),
        (
            "server.drain_timeout",
            current.config.server.drain_timeout != config.server.drain_timeout,
        ),
        (
            "admin.listen",
            current.config.admin.listen != config.admin.listen,
        ),
        (
            "server.max_headers / max_header_bytes / max_connections",
            (
                current.config.server.max_headers,
                current.config.server.max_header_bytes,
                current.config.server.max_connections,
            ) != (
                config.server.max_headers,
                config.server.max_header_bytes,
                config.server.max_connections,
            ),
        ),
        ("ledger", current.config.ledger != config.ledger),
    ];
    for (key, changed) in fixed {
        if changed {
            tracing::warn!(
                key,
                "changed in the config file; takes effect after a restart"
            );
        }
    }
    let mut config = config;
    config.server.listen = current.config.server.listen;
    config.server.tls = current.config.server.tls.clone();
    config.server.header_read_timeout = current.config.server.header_read_timeout;
    config.server.idle_timeout = current.config.server.idle_timeout;
    config.server.workers = current.config.server.workers;
    config.server.drain_timeout = current.config.server.drain_timeout;
    config.server.max_headers = current.config.server.max_headers;
    config.server.max_header_bytes = current.config.server.max_header_bytes;
    config.server.max_connections = current.config.server.max_connections;
    config.admin.listen = current.config.admin.listen;
    config.ledger = current.config.ledger.clone();
    let routes = config.routes.iter().map(|r| r.name.clone()).collect();
    gateway.replace_config(config)?;
    Ok(routes)
}
