//! `bottle reap IDENTITY`: the bottle's guardian. The launcher starts it
//! detached; it waits for the launcher to be gone (however it ended) and
//! removes whatever of the bottle is left.

use std::time::Duration;

use crate::{Failure, exit};

/// How long the reaper keeps trying before leaving the rest to `cleanup`.
const PATIENCE: Duration = Duration::from_secs(30);

pub fn run(
    identity: &str,
    launcher: Option<&str>,
    state: Option<&std::path::Path>,
) -> Result<i32, Failure> {
    let launcher = launcher
        .map(|l| {
            l.parse().map_err(|e: String| {
                Failure::new(exit::USAGE, anyhow::anyhow!("--launcher {l:?}: {e}"))
            })
        })
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::SOFTWARE, e))?;
    runtime.block_on(bottle_backend::docker::reap(
        identity, launcher, state, PATIENCE,
    ))?;
    Ok(0)
}
