//! Exit codes, one per kind of failure, so scripts can tell "the API said
//! no" from "nothing answered" from "no config". Listed in `--help`, the
//! README and `docs/operations.md`; keep the three in step with [`Exit`].

use std::fmt;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The admin API refused the call; `serve` could not start or stopped on
    /// an error; `probe` found the gateway unhealthy or unreachable.
    Failed = 1,
    /// Bad input: an argument (clap uses 2 for its own usage errors too) or
    /// a config file with errors; nothing was sent or started.
    Usage = 2,
    /// No config file where it was looked for.
    NoConfig = 3,
    /// The admin API could not be reached or did not answer in time.
    Unreachable = 4,
}

/// The exit codes as `--help` shows them.
#[macro_export]
macro_rules! exit_codes_help {
    () => {
        "Exit codes:\n  \
         0  success (JSON on stdout)\n  \
         1  the admin API refused the call (its problem+json on stderr); serve could not start;\n     \
            probe: the gateway is not healthy or not reachable (probe only exits 0 or 1)\n  \
         2  bad input: unknown command or flag, a missing or malformed argument (such as an\n     \
            account id that breaks the rule), or an invalid config file (every error is\n     \
            listed with its key path); nothing was sent\n  \
         3  no config file found (the places searched are listed)\n  \
         4  the admin API cannot be reached or did not answer within 10 s"
    };
}

/// A failed command: its exit code and what to tell the operator.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What every command returns.
pub type Outcome = Result<(), Failure>;

pub fn exit_code(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("creditgate: {failure}");
            ExitCode::from(failure.exit as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_lists_every_code() {
        let help = exit_codes_help!();
        for exit in [Exit::Failed, Exit::Usage, Exit::NoConfig, Exit::Unreachable] {
            let line = format!("\n  {}  ", exit as u8);
            assert!(help.contains(&line), "{exit:?} missing from:\n{help}");
        }
    }
}
