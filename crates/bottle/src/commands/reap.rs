//! `bottle reap IDENTITY`: the bottle's guardian. The launcher starts it
//! detached; it waits for the launcher to be gone (however it ended) and
//! removes whatever of the bottle is left.

use std::time::Duration;

use bottle_backend::lifecycle;
use bottle_backend::registry::AnyBackend;

use crate::{Failure, exit};

/// How long the reaper keeps trying before leaving the rest to `cleanup`.
const PATIENCE: Duration = Duration::from_secs(30);

pub fn run(
    identity: &str,
    backend: crate::cli::BackendName,
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
    let global = crate::settings::Global::resolve()?;
    let settings = crate::settings::Start::resolve(Some(backend), &global)?;
    let backend = AnyBackend::new(backend.into(), &settings.backends);
    super::runtime()?.block_on(lifecycle::reap(
        &backend, identity, launcher, state, PATIENCE,
    ))?;
    Ok(0)
}
