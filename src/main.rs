//! The `creditgate` command: `serve`, `check`, and account management.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use creditgate::config::Config;

#[derive(Parser)]
#[command(name = "creditgate", version, about = "A credit-enforcing API gateway")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, short, default_value = "config/creditgate.toml")]
        config: PathBuf,
    },
    /// Validate a config file; lists every error and exits non-zero if any.
    Check {
        #[arg(long, short, default_value = "config/creditgate.toml")]
        config: PathBuf,
    },
    /// Manage accounts and keys through a running gateway's admin API.
    Account(AccountArgs),
}

#[derive(clap::Args)]
struct AccountArgs {
    /// Admin API base URL; default: `http://` + `admin.listen` from --config.
    #[arg(long, env = "CREDITGATE_ADMIN_URL", global = true)]
    admin_url: Option<String>,
    /// Admin token; default: `admin.token` from --config.
    #[arg(
        long,
        env = "CREDITGATE_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    token: Option<String>,
    /// Config file to take the admin address and token from.
    #[arg(long, short, default_value = "config/creditgate.toml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    action: AccountAction,
}

#[derive(Subcommand)]
enum AccountAction {
    /// Create or update an account.
    Put {
        id: String,
        #[arg(long)]
        plan: Option<String>,
        #[arg(long)]
        suspended: Option<bool>,
    },
    /// Show an account with its balance.
    Show { id: String },
    /// Create an API key (printed once).
    KeyAdd { id: String },
    /// Revoke an API key.
    KeyRevoke { id: String, key_id: String },
    /// Show debits, newest first.
    History {
        id: String,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        before: Option<String>,
    },
    /// Refund one debit by request id.
    Refund { id: String, request_id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(config) => {
                println!(
                    "{}: ok ({} routes, {} plans, {} upstreams, ledger {})",
                    config
                        .source
                        .as_deref()
                        .unwrap_or(&config_path_fallback())
                        .display(),
                    config.routes.len(),
                    config.plans.len(),
                    config.upstreams.len(),
                    match config.ledger.backend {
                        creditgate::config::LedgerBackend::Memory => "memory",
                        creditgate::config::LedgerBackend::Redis { .. } => "redis",
                        creditgate::config::LedgerBackend::RedisCluster { .. } => "redis cluster",
                    }
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                eprintln!("{} error(s)", error.issues.len());
                ExitCode::from(2)
            }
        },
        Command::Account(args) => match account(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(error) => {
                eprintln!("creditgate: {error:#}");
                ExitCode::from(2)
            }
        },
        Command::Serve { config } => match serve(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("creditgate: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn config_path_fallback() -> PathBuf {
    PathBuf::from("config")
}

fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path).map_err(|error| anyhow::anyhow!("{error}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let running = creditgate::start(config).await?;
        wait_for_signals(&running).await?;
        tracing::info!("shutting down: draining in-flight requests");
        running.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Returns on SIGTERM or SIGINT; reloads the config on SIGHUP.
async fn wait_for_signals(running: &creditgate::RunningGateway) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the config file");
                let _ = creditgate::reload::reload_from_file(&running.gateway);
            }
        }
    }
}

/// Runs one admin API call; `Ok(false)` when the API refused it.
fn account(args: AccountArgs) -> anyhow::Result<bool> {
    use http::Method;
    use serde_json::json;

    let (base_url, token) = match (args.admin_url, args.token) {
        (Some(url), Some(token)) => (url, token),
        (url, token) => {
            let config = Config::load(&args.config).map_err(|error| {
                anyhow::anyhow!("{error}\n(pass --admin-url and --token to skip the config file)")
            })?;
            let url = url.unwrap_or_else(|| format!("http://{}", config.admin.listen));
            let token = token.or(config.admin.token).context(
                "no admin token: pass --token, set CREDITGATE_ADMIN_TOKEN or admin.token",
            )?;
            (url, token)
        }
    };
    let base_url = base_url.trim_end_matches('/').to_owned();
    let (method, path, body) = match args.action {
        AccountAction::Put {
            id,
            plan,
            suspended,
        } => {
            let mut body = serde_json::Map::new();
            if let Some(plan) = plan {
                body.insert("plan".into(), plan.into());
            }
            if let Some(suspended) = suspended {
                body.insert("suspended".into(), suspended.into());
            }
            (
                Method::PUT,
                format!("/admin/v1/accounts/{id}"),
                Some(body.into()),
            )
        }
        AccountAction::Show { id } => (Method::GET, format!("/admin/v1/accounts/{id}"), None),
        AccountAction::KeyAdd { id } => {
            (Method::POST, format!("/admin/v1/accounts/{id}/keys"), None)
        }
        AccountAction::KeyRevoke { id, key_id } => (
            Method::DELETE,
            format!("/admin/v1/accounts/{id}/keys/{key_id}"),
            None,
        ),
        AccountAction::History { id, limit, before } => {
            let mut query = Vec::new();
            if let Some(limit) = limit {
                query.push(format!("limit={limit}"));
            }
            if let Some(before) = before {
                query.push(format!("before={before}"));
            }
            let query = if query.is_empty() {
                String::new()
            } else {
                format!("?{}", query.join("&"))
            };
            (
                Method::GET,
                format!("/admin/v1/accounts/{id}/history{query}"),
                None,
            )
        }
        AccountAction::Refund { id, request_id } => (
            Method::POST,
            format!("/admin/v1/accounts/{id}/refunds"),
            Some(json!({ "request_id": request_id })),
        ),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (status, text) = runtime.block_on(admin_call(
        method,
        &format!("{base_url}{path}"),
        &token,
        body,
    ))?;
    if (200..300).contains(&status) {
        if !text.is_empty() {
            println!("{text}");
        }
        Ok(true)
    } else {
        eprintln!("{status}: {text}");
        Ok(false)
    }
}

async fn admin_call(
    method: http::Method,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, String)> {
    use http_body_util::{BodyExt, Full};

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .context("building the request")?;
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(10), client.request(request))
            .await
            .context("the admin API did not answer within 10 s")?
            .with_context(|| format!("cannot reach the admin API at {url}"))?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    // Pretty-print JSON so operators can read it; pass anything else through.
    let text = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|json| serde_json::to_string_pretty(&json).ok())
        .unwrap_or(text);
    Ok((status, text))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CREDITGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
