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
