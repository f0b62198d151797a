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

pub use bottle_shim::{Landlock, ShimArgs, User};

/// The shim's arguments every backend starts from: a loopback forward to
/// each of the bottle's gate sockets in `socket_dir`, the wait for the
/// gate, and `command`; the backend sets what else its sandbox needs.
pub fn shim_args(
    plan: &Plan,
    socket_dir: &str,
    gate_timeout: Duration,
    command: &[String],
) -> ShimArgs {
    let forward = |port: u16, socket: &str| bottle_shim::Forward {
        port,
        socket: std::path::Path::new(socket_dir).join(socket),
    };
    let mut forwards = vec![forward(PROXY_PORT, EGRESS_SOCKET)];
    if !plan.git.is_empty() {
        forwards.push(forward(GIT_PORT, GIT_SOCKET));
    }
    if plan.supervise {
        forwards.push(forward(SUPERVISE_PORT, SUPERVISE_SOCKET));
    }
    ShimArgs {
        forwards,
        gate_timeout_ms: u64::try_from(gate_timeout.as_millis()).unwrap_or(u64::MAX),
        merge_json: plan
            .provision
            .home_merges()
            .into_iter()
            .map(|m| bottle_shim::MergeJson {
                source: m.source.into(),
                dest: m.dest.into(),
            })
            .collect(),
        ..ShimArgs::new(command.to_vec())
    }
}

/// `binary shim ARGS…`.
pub fn shim_argv(binary: &str, args: &ShimArgs) -> Vec<String> {
    let mut argv = vec![binary.to_owned(), "shim".to_owned()];
    argv.extend(args.to_args());
    argv
}
