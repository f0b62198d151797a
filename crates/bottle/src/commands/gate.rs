//! `bottle gate`: the per-bottle daemon (runs inside the gate container).

use bottle_gate::GateConfig;

use crate::{Failure, exit};
use bottle_gate::GateArgs;

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
    bottle_gate::run(&args.config, config, secrets).map_err(|e| Failure::new(exit::SOFTWARE, e))?;
    Ok(0)
}

/// `bottle git-hook pre-receive`: the git gate's push policy, run by git.
pub fn hook(name: &str) -> Result<i32, Failure> {
    use bottle_gate::git::{CONFIG_ENV, ENTRY_ENV};
    if name != "pre-receive" {
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!("unknown hook {name:?}"),
        ));
    }
    let (Some(config), Some(entry)) = (std::env::var_os(CONFIG_ENV), std::env::var(ENTRY_ENV).ok())
    else {
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!("{CONFIG_ENV} and {ENTRY_ENV} must be set (the gate sets them)"),
        ));
    };
    Ok(bottle_gate::git::hook::pre_receive(
        std::path::Path::new(&config),
        &entry,
        std::io::stdin().lock(),
    ))
}
