//! What every backend's agent sandbox gets, decided once: the agent's
//! environment and the shim's command line (pid 1 inside: the loopback
//! forwards to the gate's sockets, the wait for the gate, the drop to the
//! agent's user).

use std::time::Duration;

use bottle_contract::config::{EGRESS_SOCKET, GIT_SOCKET, SUPERVISE_SOCKET};
use bottle_manifest::plan::{GIT_PORT, PROXY_PORT, Plan, SUPERVISE_PORT};

use crate::BackendError;

/// The preload that makes Node's built-in `fetch` use the proxy
/// (`NODE_OPTIONS=--require=…`); every backend puts it in the sandbox.
pub const NODE_PROXY_JS: &str = include_str!("../../../images/agent/node-proxy.cjs");

/// The agent's environment: the plan's literals and bot-bottle's own
/// variables, and the host variables it forwards by name, read now
/// (never written to a file). With a terminal, `TERM` too.
pub fn agent_env(plan: &Plan, tty: bool) -> Result<Vec<(String, String)>, BackendError> {
    let mut env = Vec::new();
    for var in &plan.env {
        let value = match (&var.value, &var.host_var) {
            (Some(value), _) => value.clone(),
            (None, Some(host_var)) => std::env::var(host_var).map_err(|_| {
                BackendError::Other(std::io::Error::other(format!(
                    "the host variable {host_var} (for the agent's {}) is not set or not UTF-8: export it",
                    var.name
                )))
            })?,
            (None, None) => continue,
        };
        env.push((var.name.clone(), value));
    }
    if tty {
        env.push((
            "TERM".to_owned(),
            std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into()),
        ));
    }
    Ok(env)
}

/// How a backend runs the shim.
#[derive(Debug, Clone)]
pub struct ShimOptions<'a> {
    /// The `bottle` binary inside the sandbox.
    pub binary: &'a str,
    /// Where the gate's sockets are inside the sandbox.
    pub socket_dir: &'a str,
    pub gate_timeout: Duration,
    /// The CA to add to the trust stores (as root, before the drop).
    pub ca: Option<&'a str>,
    /// The agent's `UID:GID` to drop to; `None` when the sandbox starts
    /// as the agent already.
    pub user: Option<(u32, u32)>,
    /// RLIMIT_NPROC for the command, where the sandbox counts it for this
    /// bottle alone.
    pub nproc: Option<i64>,
    /// RLIMIT_DATA for the command, where no memory cgroup bounds it.
    pub data_limit: Option<u64>,
    /// RLIMIT_NOFILE for the command, where the sandbox's runtime does not
    /// set it.
    pub nofile: Option<u64>,
    /// Confine the command with Landlock.
    pub landlock: Option<Landlock>,
}

pub use bottle_shim::Landlock;

/// The shim's command line around `command`, from the shim's own typed
/// arguments (see [`bottle_shim::ShimArgs`]).
pub fn shim_argv(plan: &Plan, o: &ShimOptions<'_>, command: &[String]) -> Vec<String> {
    let forward = |port: u16, socket: &str| bottle_shim::Forward {
        port,
        socket: std::path::Path::new(o.socket_dir).join(socket),
    };
    let mut forwards = vec![forward(PROXY_PORT, EGRESS_SOCKET)];
    if !plan.git.is_empty() {
        forwards.push(forward(GIT_PORT, GIT_SOCKET));
    }
    if plan.supervise {
        forwards.push(forward(SUPERVISE_PORT, SUPERVISE_SOCKET));
    }
    let args = bottle_shim::ShimArgs {
        forwards,
        gate_timeout_ms: u64::try_from(o.gate_timeout.as_millis()).unwrap_or(u64::MAX),
        ca: o.ca.map(Into::into),
        user: o.user.map(|(uid, gid)| bottle_shim::User { uid, gid }),
        nproc: o.nproc.and_then(|n| u64::try_from(n).ok()),
        data_limit: o.data_limit,
        nofile: o.nofile,
        landlock: o.landlock,
        command: command.to_vec(),
    };
    let mut argv = vec![o.binary.to_owned(), "shim".to_owned()];
    argv.extend(args.to_args());
    argv
}
