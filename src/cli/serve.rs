//! `creditgate serve`: run the gateway from its config file until SIGTERM or
//! SIGINT (SIGHUP reloads the file); with `--dev`, a throwaway gateway with a
//! demo vendor on loopback (see `creditgate::dev`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use creditgate::dev::{self, DevOptions};
use creditgate::RunningGateway;

use super::config_file;
use super::exit::{Exit, Failure, Outcome};

#[derive(Args)]
#[command(after_help = concat!(
    "Examples:\n  \
     creditgate serve --dev                  try it: demo vendor, account and key, loopback only\n  \
     creditgate serve --config /etc/creditgate/creditgate.toml\n  \
     CREDITGATE_CONFIG=./my.toml creditgate serve\n\n\
     Signals: SIGTERM/SIGINT drain in-flight requests and stop; SIGHUP reloads the config file.\n\n",
    crate::exit_codes_help!()
))]
pub struct ServeArgs {
    /// Config file. Default: $CREDITGATE_CONFIG, then /etc/creditgate/creditgate.toml, then ./config/creditgate.toml.
    #[arg(long, short, value_name = "FILE", conflicts_with = "dev")]
    config: Option<PathBuf>,
    /// Dev mode: memory ledger, a built-in demo vendor, a demo account and key, a random admin token; prints ready-to-paste requests. Listens on 127.0.0.1 only; reads no config file.
    #[arg(long)]
    dev: bool,
    /// Dev mode's data-plane address (loopback only; port 0 picks a free one).
    #[arg(
        long,
        requires = "dev",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080"
    )]
    listen: SocketAddr,
    /// Dev mode's admin-plane address (loopback only; port 0 picks a free one).
    #[arg(
        long,
        requires = "dev",
        value_name = "ADDR",
        default_value = "127.0.0.1:9090"
    )]
    admin_listen: SocketAddr,
}

pub fn run(args: ServeArgs) -> Outcome {
    if args.dev {
        return run_dev(DevOptions {
            listen: args.listen,
            admin_listen: args.admin_listen,
        });
    }
    let (config, located) = config_file::load(args.config.as_deref())?;
    tracing::info!(config = %located.path.display(), found_by = located.origin.describe(), "config loaded");
    let runtime = runtime()?;
    runtime.block_on(async move {
        let running = creditgate::start(config)
            .await
            .map_err(|error| Failure::new(Exit::Failed, error.to_string()))?;
        running
            .gateway
            .metrics
            .count_dropped_log_lines(super::dropped_log_lines);
        wait_for_signals(&running).await?;
        tracing::info!("shutting down: draining in-flight requests");
        running.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}

fn run_dev(options: DevOptions) -> Outcome {
    for addr in [options.listen, options.admin_listen] {
        if !addr.ip().is_loopback() {
            return Err(Failure::new(
                Exit::Usage,
                format!("dev mode listens on loopback only; {addr} is not a loopback address"),
            ));
        }
    }
    let runtime = runtime()?;
    runtime.block_on(async move {
        let dev = dev::start(options).await.map_err(|error| {
            let hint = match error {
                dev::DevError::Start(creditgate::StartError::Bind { .. }) => {
                    "\n(another process has the port: pass --listen 127.0.0.1:0 \
                     --admin-listen 127.0.0.1:0 to pick free ones)"
                }
                _ => "",
            };
            Failure::new(Exit::Failed, format!("{error}{hint}"))
        })?;
        dev.running
            .gateway
            .metrics
            .count_dropped_log_lines(super::dropped_log_lines);
        // The banner is for a terminal; a closed stdout must not stop the gateway.
        let _ = super::print_out(&dev::banner::render(&dev));
        wait_for_signals(&dev.running).await?;
        tracing::info!("dev mode: stopping; everything it held is forgotten");
        dev.shutdown().await;
        Ok(())
    })
}

/// The runtime of the admin plane and the signal handlers: one thread. The
/// data plane runs on `server.workers` threads of its own (`worker.rs`).
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Exit::Failed, format!("cannot start the async runtime: {e}")))
}

/// Returns on SIGTERM or SIGINT; reloads the config on SIGHUP.
async fn wait_for_signals(running: &RunningGateway) -> Outcome {
    use tokio::signal::unix::{signal, SignalKind};
    let install = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| {
            Failure::new(
                Exit::Failed,
                format!("cannot install the {name} handler: {e}"),
            )
        })
    };
    let mut terminate = install(SignalKind::terminate(), "SIGTERM")?;
    let mut interrupt = install(SignalKind::interrupt(), "SIGINT")?;
    let mut hangup = install(SignalKind::hangup(), "SIGHUP")?;
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
