//! `bottle gate`: the per-bottle daemon (runs inside the gate container).

use bottle_gate::GateConfig;

use crate::cli::GateArgs;
use crate::{Failure, exit};

pub fn run(args: GateArgs) -> Result<i32, Failure> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    bottle_gate::install_crypto_provider();
    let config = GateConfig::load(&args.config).map_err(|e| Failure::new(exit::CONFIG, e))?;
    let secrets = bottle_gate::read_secrets(&config).map_err(|e| Failure::new(exit::CONFIG, e))?;
    bottle_gate::run(config, secrets).map_err(|e| Failure::new(exit::SOFTWARE, e))?;
    Ok(0)
}
