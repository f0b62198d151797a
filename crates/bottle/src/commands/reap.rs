//! `bottle reap IDENTITY`: started detached by a launcher that returned
//! before its bottle's network was gone; removes what is left.

use std::time::Duration;

use crate::{Failure, exit};

/// How long the reaper keeps trying before leaving the rest to `cleanup`.
const PATIENCE: Duration = Duration::from_secs(30);

pub fn run(identity: &str) -> Result<i32, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::SOFTWARE, e))?;
    runtime.block_on(bottle_backend::docker::reap(identity, PATIENCE))?;
    Ok(0)
}
