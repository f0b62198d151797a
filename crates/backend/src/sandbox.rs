//! What every backend's agent sandbox gets, decided once: the agent's
//! environment and the shim's command line (pid 1 inside: the loopback
//! forwards to the gate's sockets, the wait for the gate, the drop to the
//! agent's user).

use std::time::Duration;

use bottle_gate::config::{EGRESS_SOCKET, GIT_SOCKET, SUPERVISE_SOCKET};
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

/// How much Landlock a sandbox needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landlock {
    /// Where the kernel has it.
    BestEffort,
    /// Not starting without it.
    Required,
}

/// The shim's command line, up to and including the `--` before the
/// agent's command.
pub fn shim_argv(plan: &Plan, o: &ShimOptions<'_>) -> Vec<String> {
    let forward = |port: u16, socket: &str| {
        [
            "--forward".to_owned(),
            format!("{port}={}/{socket}", o.socket_dir),
        ]
    };
    let mut argv = vec![o.binary.to_owned(), "shim".to_owned()];
    argv.extend(forward(PROXY_PORT, EGRESS_SOCKET));
    argv.extend([
        "--gate-timeout-ms".to_owned(),
        o.gate_timeout.as_millis().to_string(),
    ]);
    if let Some(ca) = o.ca {
        argv.extend(["--ca".to_owned(), ca.to_owned()]);
    }
    if let Some((uid, gid)) = o.user {
        argv.extend(["--user".to_owned(), format!("{uid}:{gid}")]);
    }
    if let Some(n) = o.nproc {
        argv.extend(["--nproc".to_owned(), n.to_string()]);
    }
    if let Some(bytes) = o.data_limit {
        argv.extend(["--data-limit".to_owned(), bytes.to_string()]);
    }
    if let Some(n) = o.nofile {
        argv.extend(["--nofile".to_owned(), n.to_string()]);
    }
    match o.landlock {
        Some(Landlock::BestEffort) => {
            argv.extend(["--landlock".to_owned(), "best-effort".to_owned()])
        }
        Some(Landlock::Required) => argv.extend(["--landlock".to_owned(), "required".to_owned()]),
        None => {}
    }
    if !plan.git.is_empty() {
        argv.extend(forward(GIT_PORT, GIT_SOCKET));
    }
    if plan.supervise {
        argv.extend(forward(SUPERVISE_PORT, SUPERVISE_SOCKET));
    }
    argv.push("--".to_owned());
    argv
}
