//! `bottle reap IDENTITY`: the bottle's guardian. The launcher starts it
//! detached; it waits for the launcher to be gone (however it ended) and
//! removes whatever of the bottle is left.

use std::time::Duration;

use bottle_backend::lifecycle;
use bottle_backend::registry::AnyBackend;

use crate::Failure;

/// How long the reaper keeps trying before leaving the rest to `cleanup`.
const PATIENCE: Duration = Duration::from_secs(30);

pub fn run(args: lifecycle::ReapArgs) -> Result<i32, Failure> {
    let global = crate::settings::Global::resolve()?;
    let settings = crate::settings::Start::resolve(None, &global)?;
    let backend = AnyBackend::new(args.backend, &settings.backends);
    super::runtime()?.block_on(lifecycle::reap(
        &backend,
        &args.identity,
        args.launcher,
        args.state.as_deref(),
        PATIENCE,
    ))?;
    Ok(0)
}
