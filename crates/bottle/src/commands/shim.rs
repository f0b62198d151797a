//! `bottle shim`: pid 1 in the agent's sandbox.

use std::time::Duration;

use anyhow::anyhow;
use bottle_shim::{Forward, ShimConfig};

use crate::cli::ShimArgs;
use crate::{Failure, exit};

pub fn run(args: ShimArgs) -> Result<i32, Failure> {
    let forwards = args
        .forwards
        .iter()
        .map(|spec| {
            let (port, socket) = spec
                .split_once('=')
                .ok_or_else(|| anyhow!("--forward {spec:?}: expected PORT=SOCKET"))?;
            let port = port
                .parse()
                .map_err(|_| anyhow!("--forward {spec:?}: {port:?} is not a port"))?;
            Ok(Forward {
                port,
                socket: socket.into(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(|e| Failure::new(exit::USAGE, e))?;
    let user = match &args.user {
        None => None,
        Some(spec) => {
            let parsed = spec
                .split_once(':')
                .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
            Some(parsed.ok_or_else(|| {
                Failure::new(exit::USAGE, anyhow!("--user {spec:?}: expected UID:GID"))
            })?)
        }
    };
    Ok(bottle_shim::run(ShimConfig {
        forwards,
        ca: args.ca,
        user,
        gate_timeout: Duration::from_millis(args.gate_timeout_ms),
        command: args.command,
    }))
}
