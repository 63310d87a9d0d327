//! The `creditgate` command: `serve` (and `serve --dev`), `check`, `account`
//! and `probe`. The command line lives in `cli/`, one module per
//! subcommand; the gateway itself is the library.
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let _log = cli::init_logging(cli.log_format);
    cli::exit::exit_code(cli::run(cli))
}
