//! The deployment files: the image's config parses with the real parser and
//! takes everything deployment-specific from the environment, the image's
//! HEALTHCHECK command works against a gateway running that config, and the
//! compose Redis is configured for a ledger. (The image itself is built by
//! `docker build`, which CI does not run; hadolint checks the Dockerfile.)

use std::path::Path;

use creditgate::config::{Config, LedgerBackend};

use super::cli::{creditgate, json_out, stderr};
use crate::support::process::{GatewayProcess, TempDir};
use crate::support::redis::RedisServer;

const IMAGE_CONFIG: &str = include_str!("../../deploy/creditgate.toml");
const DOCKERFILE: &str = include_str!("../../Dockerfile");
const COMPOSE: &str = include_str!("../../deploy/compose.yaml");

const VARIABLES: &[&str] = &[
    "CREDITGATE_ADMIN_TOKEN",
    "CREDITGATE_REDIS_URL",
    "IMAGES_VENDOR_URL",
    "IMAGES_VENDOR_KEY",
    "VIDEO_VENDOR_URL",
    "VIDEO_VENDOR_KEY",
    "AGENTS_VENDOR_URL",
    "AGENTS_VENDOR_KEY",
];

fn environment(redis_url: &str) -> Vec<(&'static str, String)> {
    VARIABLES
        .iter()
        .map(|name| {
            let value = match *name {
                "CREDITGATE_REDIS_URL" => redis_url.to_owned(),
                name if name.ends_with("_URL") => "https://vendor.invalid".to_owned(),
                name => format!("value-of-{name}"),
            };
            (*name, value)
        })
        .collect()
}

#[test]
fn the_image_config_listens_everywhere_and_takes_its_secrets_from_the_environment() {
    let env = environment("redis://redis:6379/0");
    let lookup = |name: &str| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
    let config = Config::parse(
        IMAGE_CONFIG,
        "deploy/creditgate.toml",
        Path::new("."),
        &lookup,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.admin.listen.to_string(), "0.0.0.0:9090");
    assert_eq!(
        config.admin.token.as_deref(),
        Some("value-of-CREDITGATE_ADMIN_TOKEN")
    );
    assert!(
        matches!(&config.ledger.backend, LedgerBackend::Redis { url } if url.contains("redis:6379")),
        "{:?}",
        config.ledger.backend
    );
    for upstream in config.upstreams.values() {
        assert_eq!(upstream.authority, "vendor.invalid");
        assert!(upstream
            .headers
            .iter()
            .any(|(_, value)| value.to_str().is_ok_and(|v| v.contains("value-of-"))));
    }

    // Nothing set: every variable is named, all at once.
    let error = Config::parse(
        IMAGE_CONFIG,
        "deploy/creditgate.toml",
        Path::new("."),
        &|_| None,
    )
    .expect_err("the image config needs its variables");
    let text = error.to_string();
    for name in VARIABLES {
        assert!(text.contains(name), "{name} is not named:\n{text}");
    }
}

/// The JSON array of the Dockerfile's `HEALTHCHECK … CMD [...]`.
fn healthcheck_command() -> Vec<String> {
    let start = DOCKERFILE.find("HEALTHCHECK").expect("a HEALTHCHECK");
    let rest = &DOCKERFILE[start..];
    let array = &rest[rest.find("CMD [").expect("exec-form CMD") + 4..];
    let array = &array[..=array.find(']').expect("]")];
    serde_json::from_str(array).expect("a JSON array")
}

#[test]
fn the_dockerfile_is_pinned_unprivileged_and_checks_health_with_the_binary() {
    for line in DOCKERFILE.lines().filter(|l| l.starts_with("FROM ")) {
        let image = line.split_whitespace().nth(1).unwrap();
        let tag = image.split_once(':').map(|(_, tag)| tag).unwrap_or("");
        assert!(
            tag.chars().any(|c| c.is_ascii_digit()) && !tag.contains("latest"),
            "unpinned base: {line}"
        );
    }
    let user = DOCKERFILE
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    assert!(
        user.split(':')
            .all(|id| id.parse::<u32>().is_ok_and(|id| id > 0)),
        "USER {user}"
    );
    assert!(DOCKERFILE.contains("COPY deploy/creditgate.toml /etc/creditgate/creditgate.toml"));
    assert!(DOCKERFILE.contains("ENV CREDITGATE_CONFIG=/etc/creditgate/creditgate.toml"));
    let command = healthcheck_command();
    assert_eq!(
        command[..2],
        ["/usr/local/bin/creditgate", "probe"],
        "{command:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_command_passes_against_the_image_config_and_fails_without_a_gateway() {
    let redis = RedisServer::start();
    let env = environment(&redis.url());
    let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (*n, v.as_str())).collect();
    // The image's config, on loopback ports instead of every interface.
    let toml = IMAGE_CONFIG
        .replace("0.0.0.0:8080", "{DATA}")
        .replace("0.0.0.0:9090", "{ADMIN}");
    let dir = TempDir::new("deploy-probe");
    let gateway = GatewayProcess::start(&dir, &toml, &env);
    let config_path = gateway.config_path.to_str().unwrap().to_owned();
    let mut with_config = env.clone();
    with_config.push(("CREDITGATE_CONFIG", &config_path));

    let command = healthcheck_command();
    let args: Vec<&str> = command[1..].iter().map(String::as_str).collect();
    let healthy = json_out(&creditgate(&args, &with_config, dir.path()));
    assert_eq!(healthy["status"], "ok");
    let mut ready = args.clone();
    ready.push("--ready");
    let ready = json_out(&creditgate(&ready, &with_config, dir.path()));
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["ledger"], "redis");

    drop(gateway);
    let down = creditgate(&args, &with_config, dir.path());
    assert_eq!(down.status.code(), Some(1), "{}", stderr(&down));
}

#[test]
fn the_compose_redis_keeps_debits() {
    let redis = &COMPOSE[COMPOSE.find("\n  redis:").expect("a redis service")..];
    for setting in [
        "- --appendonly\n      - \"yes\"",
        "- --appendfsync\n      - everysec",
        "- --maxmemory-policy\n      - noeviction",
    ] {
        assert!(redis.contains(setting), "compose redis lacks {setting:?}");
    }
    assert!(COMPOSE.contains("CREDITGATE_REDIS_URL: redis://redis:6379/0"));
    assert!(
        COMPOSE.contains("\"127.0.0.1:9090:9090\""),
        "the admin plane must stay on the host"
    );
}
