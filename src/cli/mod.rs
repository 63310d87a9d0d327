//! The `creditgate` command line: one module per subcommand, each owning
//! its arguments and its `run`. Every command returns an [`exit::Outcome`];
//! failures carry their exit code ([`exit::Exit`]).

pub mod account;
pub mod admin_api;
pub mod alerts;
pub mod check;
pub mod config_file;
pub mod exit;
pub mod probe;
pub mod serve;

use std::io::IsTerminal;
use std::sync::OnceLock;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "creditgate",
    version,
    about = "A credit-enforcing API gateway: per-account sliding 30-day credit windows in front of paid vendors.",
    after_help = concat!(
        "Examples:\n  \
         creditgate serve --dev                        try it on this machine (nothing else to install)\n  \
         creditgate serve --config /etc/creditgate/creditgate.toml\n  \
         creditgate check --config my.toml\n  \
         creditgate account put site-42 --plan pro\n  \
         creditgate probe --ready\n\n\
         Config file (serve, check, account, probe): --config FILE, else $CREDITGATE_CONFIG,\n\
         else /etc/creditgate/creditgate.toml, else ./config/creditgate.toml.\n\n",
        crate::exit_codes_help!()
    )
)]
pub struct Cli {
    /// Log format on stderr (filter with CREDITGATE_LOG, a tracing filter; default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway (with --dev: a throwaway demo on loopback).
    Serve(serve::ServeArgs),
    /// Validate a config file: every error with its key path, all at once.
    Check(check::CheckArgs),
    /// Manage accounts and API keys through a running gateway's admin API.
    Account(account::AccountArgs),
    /// List the threshold alerts queued in the ledger (pending, or failed) through the admin API.
    Alerts(alerts::AlertsArgs),
    /// Health probe for containers: GET /healthz (or /readyz) of the admin API; exit 0 on 200, else 1.
    Probe(probe::ProbeArgs),
}

pub fn run(cli: Cli) -> exit::Outcome {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Check(args) => check::run(args),
        Command::Account(args) => account::run(args),
        Command::Alerts(args) => alerts::run(args),
        Command::Probe(args) => probe::run(args),
    }
}

/// Writes `text` and a newline on stdout. A reader that went away (`| head`)
/// is not an error worth a panic: the output was simply not wanted.
pub fn print_out(text: &str) -> exit::Outcome {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(exit::Failure::new(
            exit::Exit::Failed,
            format!("cannot write to stdout: {error}"),
        )),
        _ => Ok(()),
    }
}

/// [`print_out`] of `value` as indented JSON.
pub fn print_json(value: &serde_json::Value) -> exit::Outcome {
    print_out(&serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()))
}

/// Log lines waiting for the writer thread at most; past that, lines are
/// dropped (and counted) rather than making a request wait.
const LOG_QUEUE_LINES: usize = 16 * 1024;

/// The log writer's count of dropped lines, for the metrics.
static LOG_DROPS: OnceLock<tracing_appender::non_blocking::ErrorCounter> = OnceLock::new();

/// Logs to stderr through a bounded queue drained by one thread, which
/// writes what has queued in one go. A request never waits for the log:
/// when the queue is full, lines are dropped and counted in
/// `creditgate_log_lines_dropped_total` (docs/operations.md, "Logs").
/// Keep the guard until exit: dropping it writes out what is queued.
pub fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("creditgate-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let _ = LOG_DROPS.set(writer.error_counter());
    let filter = tracing_subscriber::EnvFilter::try_from_env("CREDITGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: a file or a collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}

/// Lines the log writer dropped so far.
pub fn dropped_log_lines() -> u64 {
    LOG_DROPS
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_argument_has_a_description() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (no description)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "creditgate", &mut missing);
        assert!(missing.is_empty(), "undocumented: {missing:?}");
    }

    #[test]
    fn every_subcommand_shows_an_example() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
                let after = sub
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                if !after.contains("Example") {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "creditgate", &mut missing);
        assert!(missing.is_empty(), "no example: {missing:?}");
    }
}
