//! `creditgate probe`: a health check for containers that need no curl —
//! GET the admin plane's `/healthz` (or `/readyz`) and exit 0 on a 200, 1
//! otherwise. Only 0 and 1: Docker reserves 2 for its own use.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use http::Method;

use super::admin_api::{AdminApi, Call};
use super::exit::{Exit, Failure, Outcome};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    creditgate probe                         liveness: /healthz of admin.listen in the config\n  \
    creditgate probe --ready                 readiness: /readyz (503 while the ledger is unreachable)\n  \
    creditgate probe --admin-url http://127.0.0.1:9090\n\n\
    Exit codes: 0 healthy (the JSON answer on stdout); 1 anything else (the reason on stderr).")]
pub struct ProbeArgs {
    /// Admin API base URL. Default: http:// + admin.listen of the config file (0.0.0.0 is dialled as 127.0.0.1).
    #[arg(
        long,
        env = "CREDITGATE_ADMIN_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    admin_url: Option<String>,
    /// Config file to take admin.listen from (not read with --admin-url). Default: $CREDITGATE_CONFIG, then /etc/creditgate/creditgate.toml, then ./config/creditgate.toml.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check readiness (/readyz: config loaded and ledger reachable) instead of liveness (/healthz).
    #[arg(long)]
    ready: bool,
    /// Give up after this long (humantime: 500ms, 3s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s", value_name = "DURATION")]
    timeout: Duration,
}

pub fn run(args: ProbeArgs) -> Outcome {
    probe(args).map_err(|failure| Failure::new(Exit::Failed, failure.message))
}

fn probe(args: ProbeArgs) -> Outcome {
    let api = AdminApi::resolve(args.admin_url, None, args.config.as_deref(), false)?;
    let endpoint = if args.ready { "readyz" } else { "healthz" };
    let answer = api.send(&Call::new(Method::GET, &[endpoint]), args.timeout)?;
    let body = String::from_utf8_lossy(&answer.body);
    if answer.status == http::StatusCode::OK {
        super::print_out(body.trim_end())
    } else {
        Err(Failure::new(
            Exit::Failed,
            format!("{}/{endpoint} answered {}: {body}", api.base, answer.status),
        ))
    }
}
