//! `creditgate alerts [--state failed]`: the threshold alerts queued in the
//! ledger, through a running gateway's admin API (`GET /admin/v1/alerts`,
//! docs/alerts.md, "Watching the queue"). Prints its JSON on stdout.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use http::Method;
use serde_json::Value;

use super::admin_api::{AdminApi, Call, CALL_TIMEOUT};
use super::exit::{Exit, Failure, Outcome};

#[derive(Args)]
#[command(after_help = concat!(
    "Examples:\n  \
     creditgate alerts\n  \
     creditgate alerts --state failed | jq -r '.items[] | [.account, .threshold, .last_error] | @tsv'\n\n",
    crate::exit_codes_help!()
))]
pub struct AlertsArgs {
    /// Which alerts: `pending` (waiting for delivery or being retried) or `failed` (given up on).
    #[arg(long, value_enum, default_value_t = State::Pending)]
    state: State,
    /// How many at most (1-1000; oldest crossing first).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: Option<u16>,
    /// Admin API base URL, e.g. http://127.0.0.1:9090. Default: http:// + admin.listen of the config file.
    #[arg(
        long,
        env = "CREDITGATE_ADMIN_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    admin_url: Option<String>,
    /// Admin bearer token. Default: admin.token of the config file.
    #[arg(
        long,
        env = "CREDITGATE_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// Config file to take the admin address and token from (only read when --admin-url and --token are not both given).
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum State {
    Pending,
    Failed,
}

fn call_for(args: &AlertsArgs) -> Call {
    let mut call = Call::new(Method::GET, &["admin", "v1", "alerts"]);
    let state = match args.state {
        State::Pending => "pending",
        State::Failed => "failed",
    };
    call.query.push(("state", state.to_owned()));
    if let Some(limit) = args.limit {
        call.query.push(("limit", limit.to_string()));
    }
    call
}

pub fn run(args: AlertsArgs) -> Outcome {
    let call = call_for(&args);
    let api = AdminApi::resolve(args.admin_url, args.token, args.config.as_deref(), true)?;
    let answer = api.send(&call, CALL_TIMEOUT)?;
    let body: Value = serde_json::from_slice(&answer.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer.body).into_owned()));
    if !answer.status.is_success() {
        return Err(Failure::new(
            Exit::Failed,
            format!("the admin API answered {}: {body}", answer.status),
        ));
    }
    super::print_json(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_names_the_state_and_the_limit() {
        let args = AlertsArgs {
            state: State::Failed,
            limit: Some(5),
            admin_url: None,
            token: None,
            config: None,
        };
        assert_eq!(
            call_for(&args).target(),
            "/admin/v1/alerts?state=failed&limit=5"
        );
    }
}
