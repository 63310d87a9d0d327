//! `creditgate check`: validate a config file without starting anything.

use std::path::PathBuf;

use clap::Args;
use creditgate::config::LedgerBackend;
use serde_json::json;

use super::config_file;
use super::exit::Outcome;

#[derive(Args)]
#[command(after_help = concat!(
    "Examples:\n  \
     creditgate check --config config/creditgate.toml\n  \
     creditgate check            (the file serve would use)\n\n\
     On success prints {\"config\",\"found_by\",\"routes\",\"plans\",\"upstreams\",\"ledger\"}.\n\n",
    crate::exit_codes_help!()
))]
pub struct CheckArgs {
    /// Config file. Default: $CREDITGATE_CONFIG, then /etc/creditgate/creditgate.toml, then ./config/creditgate.toml.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub fn run(args: CheckArgs) -> Outcome {
    let (config, located) = config_file::load(args.config.as_deref())?;
    let ledger = match config.ledger.backend {
        LedgerBackend::Memory => "memory",
        LedgerBackend::Redis { .. } => "redis",
        LedgerBackend::RedisCluster { .. } => "redis cluster",
        LedgerBackend::RedisSentinel(_) => "redis sentinel",
    };
    let summary = json!({
        "config": located.path.display().to_string(),
        "found_by": located.origin.describe(),
        "routes": config.routes.len(),
        "plans": config.plans.len(),
        "upstreams": config.upstreams.len(),
        "ledger": ledger,
    });
    super::print_json(&summary)
}
