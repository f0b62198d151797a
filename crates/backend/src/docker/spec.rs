//! The container specifications of a bottle: what the agent's sandbox may
//! do (nothing on the network, no capabilities, limits on memory and
//! processes) and what the gate may do (reach its network, write only its
//! sockets and audit log).

use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bottle_gate::config::{EGRESS_SOCKET, GIT_SOCKET, SUPERVISE_SOCKET};
use bottle_manifest::plan::{AGENT_CA_PATH, AGENT_HOME, GIT_PORT, PROXY_PORT, SUPERVISE_PORT};

use super::{
    AGENT_UID, BINARY, DockerPrepared, GATE_AUDIT_LOG, GATE_CONFIG_DIR, GATE_GIT_DIR,
    GATE_SUPERVISE_DIR, ROLE_LABEL, SOCKET_DIR,
};
use crate::BackendError;

/// Limits of the gate container: a proxy needs little.
const GATE_MEMORY_BYTES: i64 = 256 << 20;
const GATE_PIDS: i64 = 256;
/// Limits of the git gate's container: git packs and checks objects.
const GIT_GATE_MEMORY_BYTES: i64 = 512 << 20;

/// The agent's container running `image` with `command` (the plan's, or
/// after a capability block its own image and resume command).
pub fn agent_container(
    p: &DockerPrepared,
    image: &str,
    command: &[String],
    runtime: Option<String>,
    tty: bool,
    gate_timeout: Duration,
) -> Result<ContainerCreateBody, BackendError> {
    let mut env = Vec::new();
    for var in &p.plan.env {
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
        env.push(format!("{}={value}", var.name));
    }
    if tty {
        env.push(format!(
            "TERM={}",
            std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into())
        ));
    }
    let mut entrypoint = vec![
        BINARY.to_owned(),
        "shim".to_owned(),
        "--forward".to_owned(),
        format!("{PROXY_PORT}={SOCKET_DIR}/{EGRESS_SOCKET}"),
        "--gate-timeout-ms".to_owned(),
        gate_timeout.as_millis().to_string(),
        "--ca".to_owned(),
        AGENT_CA_PATH.to_owned(),
        "--user".to_owned(),
        AGENT_UID.to_owned(),
    ];
    if !p.plan.git.is_empty() {
        entrypoint.extend([
            "--forward".to_owned(),
            format!("{GIT_PORT}={SOCKET_DIR}/{GIT_SOCKET}"),
        ]);
    }
    if p.plan.supervise {
        entrypoint.extend([
            "--forward".to_owned(),
            format!("{SUPERVISE_PORT}={SOCKET_DIR}/{SUPERVISE_SOCKET}"),
        ]);
    }
    entrypoint.push("--".to_owned());
    let mut labels = p.labels.clone();
    labels.insert(ROLE_LABEL.into(), "agent".into());
    let memory = i64::try_from(p.plan.resources.memory_bytes).unwrap_or(i64::MAX);
    Ok(ContainerCreateBody {
        image: Some(image.to_owned()),
        entrypoint: Some(entrypoint),
        cmd: Some(command.to_vec()),
        // The shim starts as root to add the CA to the trust stores, then
        // drops to the agent's uid (losing every capability) before the
        // command starts. Only SETUID and SETGID, for that drop, remain.
        user: Some("0:0".into()),
        working_dir: Some(p.plan.workdir.clone()),
        hostname: Some("bottle".into()),
        env: Some(env),
        tty: Some(tty),
        open_stdin: Some(true),
        stdin_once: Some(true),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        labels: Some(labels),
        host_config: Some(HostConfig {
            // No interface but loopback: the gate's sockets are the only way out.
            network_mode: Some("none".into()),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(vec!["SETUID".into(), "SETGID".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            pids_limit: Some(p.plan.resources.pids),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: p.plan.resources.cpus.map(|c| (c * 1e9) as i64),
            // Read-only: the agent may connect to the sockets, not replace them.
            binds: Some(vec![
                format!("{}:{SOCKET_DIR}:ro", p.dir.socket_dir().display()),
                format!("{}:{AGENT_CA_PATH}:ro", p.dir.ca_cert().display()),
                format!("{}:{}", p.workspace_volume, p.plan.workdir),
                format!("{}:{AGENT_HOME}", p.home_volume),
            ]),
            runtime,
            init: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub fn gate_container(p: &DockerPrepared) -> ContainerCreateBody {
    let secrets_on_stdin = !p.plan.egress.routes.is_empty();
    let mut labels = p.labels.clone();
    labels.insert(ROLE_LABEL.into(), "gate".into());
    let mut binds = vec![
        format!("{}:{GATE_CONFIG_DIR}:ro", p.dir.gate_dir().display()),
        format!("{}:{SOCKET_DIR}", p.dir.socket_dir().display()),
        format!("{}:{GATE_AUDIT_LOG}", p.dir.audit_log().display()),
    ];
    if p.plan.supervise {
        // Requests and the control socket: the gate's and the person's,
        // never mounted into the agent's sandbox.
        binds.push(format!(
            "{}:{GATE_SUPERVISE_DIR}",
            p.dir.supervise_dir().display()
        ));
    }
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    ContainerCreateBody {
        image: Some(p.plan.images.gate.clone()),
        cmd: Some(vec![
            "--config".into(),
            format!(
                "{GATE_CONFIG_DIR}/{}",
                crate::gate_config::EGRESS_CONFIG_FILE
            ),
        ]),
        // The launching user: what the gate writes on the host is theirs.
        user: Some(format!("{uid}:{gid}")),
        labels: Some(labels),
        // Route secrets arrive on stdin (see `start_gate`).
        open_stdin: Some(secrets_on_stdin),
        stdin_once: Some(secrets_on_stdin),
        attach_stdin: Some(secrets_on_stdin),
        env: Some(vec!["RUST_LOG=info".into()]),
        host_config: Some(HostConfig {
            network_mode: Some(p.gate_network.clone()),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            pids_limit: Some(GATE_PIDS),
            memory: Some(GATE_MEMORY_BYTES),
            memory_swap: Some(GATE_MEMORY_BYTES),
            binds: Some(binds),
            init: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The git gate's container: the git role alone, with the SSH keys, the
/// mirrors and the sockets' directory — never the CA or the route secrets.
pub fn git_container(p: &DockerPrepared) -> ContainerCreateBody {
    let mut labels = p.labels.clone();
    labels.insert(ROLE_LABEL.into(), "git".into());
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    ContainerCreateBody {
        image: Some(p.plan.images.gate.clone()),
        cmd: Some(vec![
            "--config".into(),
            format!("{GATE_CONFIG_DIR}/{}", crate::gate_config::GIT_CONFIG_FILE),
        ]),
        user: Some(format!("{uid}:{gid}")),
        labels: Some(labels),
        env: Some(vec!["RUST_LOG=info".into()]),
        host_config: Some(HostConfig {
            network_mode: Some(p.gate_network.clone()),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            pids_limit: Some(GATE_PIDS),
            memory: Some(GIT_GATE_MEMORY_BYTES),
            memory_swap: Some(GIT_GATE_MEMORY_BYTES),
            binds: Some(vec![
                format!("{}:{GATE_CONFIG_DIR}:ro", p.dir.git_gate_dir().display()),
                format!("{}:{SOCKET_DIR}", p.dir.socket_dir().display()),
                format!("{}:{GATE_AUDIT_LOG}", p.dir.audit_log().display()),
                format!("{}:{GATE_GIT_DIR}", p.dir.git_dir().display()),
            ]),
            init: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}
