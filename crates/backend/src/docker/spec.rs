//! The container specifications of a bottle: what the agent's sandbox may
//! do (nothing on the network, no capabilities, limits on memory and
//! processes) and what the gate may do (reach its network, write only its
//! sockets and audit log).

use std::time::Duration;

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HealthConfig, HostConfig, ResourcesUlimits};
use bottle_contract::config::{EGRESS_SOCKET, GIT_SOCKET};
use bottle_manifest::plan::{AGENT_CA_PATH, AGENT_HOME, AGENT_UID, PROXY_PORT, TRUST_TMPFS};

use super::{
    BINARY, DockerPrepared, GATE_AUDIT_LOG, GATE_CONFIG_DIR, GATE_GIT_DIR, GATE_SUPERVISE_DIR,
    ROLE_LABEL, SOCKET_DIR,
};
use crate::BackendError;

/// Processes of a gate container.
const GATE_PIDS: i64 = 256;
/// Host threads a gVisor sandbox needs beyond the agent's processes.
const GVISOR_PIDS_HEADROOM: i64 = 512;
/// CPU weight of the agent (Docker's default is 1024): when the machine
/// is busy, the agent yields to its gate and to the rest of the host.
const AGENT_CPU_SHARES: i64 = 512;
/// CPU weight of the gates: an agent cannot starve its own way out.
const GATE_CPU_SHARES: i64 = 2048;
/// Open files of a gate process.
const GATE_NOFILE: i64 = 8192;
/// How often Docker checks a container's health, and how long it waits.
const HEALTH_INTERVAL_NS: i64 = 10_000_000_000;
const HEALTH_TIMEOUT_NS: i64 = 5_000_000_000;
const HEALTH_START_NS: i64 = 30_000_000_000;
const HEALTH_RETRIES: i64 = 3;

/// A health check running `bottle health ARGS` in the container.
fn health(args: &[String]) -> HealthConfig {
    let mut test = vec!["CMD".to_owned(), BINARY.to_owned(), "health".to_owned()];
    test.extend_from_slice(args);
    HealthConfig {
        test: Some(test),
        interval: Some(HEALTH_INTERVAL_NS),
        timeout: Some(HEALTH_TIMEOUT_NS),
        start_period: Some(HEALTH_START_NS),
        retries: Some(HEALTH_RETRIES),
        ..Default::default()
    }
}

fn nofile(limit: i64) -> Vec<ResourcesUlimits> {
    vec![ResourcesUlimits {
        name: Some("nofile".into()),
        soft: Some(limit),
        hard: Some(limit),
    }]
}

fn nano_cpus(cpus: f64) -> i64 {
    (cpus * 1e9) as i64
}

/// The agent's container running `image` with `command` (the plan's, or
/// after a capability block its own image and resume command), with the
/// provisioned files (host path, path inside) mounted read-only.
///
/// Its root filesystem is read-only; it may write only `/tmp` (a tmpfs of
/// `resources.tmp`), its home and `/workspace` (volumes). The trust stores
/// are written at start into a root-owned tmpfs (`/run/bot-bottle`) by the
/// shim, before it drops to the agent's uid.
pub fn agent_container(
    p: &DockerPrepared,
    image: &str,
    command: &[String],
    provisioned: &[(std::path::PathBuf, String)],
    runtime: Option<String>,
    terminal: crate::Terminal,
    gate_timeout: Duration,
) -> Result<ContainerCreateBody, BackendError> {
    let detached = terminal == crate::Terminal::Detached;
    let tty = detached || super::session::is_interactive();
    let env: Vec<String> = crate::sandbox::agent_env(&p.plan, tty)?
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    // Under gVisor the sandbox has a kernel of its own: its host pids
    // cgroup counts the sandbox's threads, not the agent's processes, and
    // a process count past it stops the whole sandbox. There the agent's
    // processes are bounded by RLIMIT_NPROC, which that kernel counts for
    // this bottle alone, and the host limit leaves room for the sandbox.
    let gvisor = runtime.as_deref() == Some("runsc");
    let shim = crate::sandbox::ShimArgs {
        ca: Some(AGENT_CA_PATH.into()),
        user: Some(crate::sandbox::User {
            uid: AGENT_UID,
            gid: AGENT_UID,
        }),
        nproc: gvisor
            .then(|| u64::try_from(p.plan.resources.pids).ok())
            .flatten(),
        // The command is the container's own (`cmd`), after the `--`.
        ..crate::sandbox::shim_args(&p.plan, SOCKET_DIR, gate_timeout, &[])
    };
    let entrypoint = crate::sandbox::shim_argv(BINARY, &shim);
    let mut labels = p.labels.clone();
    labels.insert(ROLE_LABEL.into(), "agent".into());
    let resources = &p.plan.resources;
    let memory = i64::try_from(resources.memory_bytes).unwrap_or(i64::MAX);
    let mut binds = vec![
        format!("{}:{SOCKET_DIR}:ro", p.dir.socket_dir().display()),
        format!("{}:{AGENT_CA_PATH}:ro", p.dir.ca_cert().display()),
        format!("{}:{}", p.workspace_volume, p.plan.workdir),
        format!("{}:{AGENT_HOME}", p.home_volume),
    ];
    for (host, inside) in provisioned {
        binds.push(format!("{}:{inside}:ro", host.display()));
    }
    let tmpfs = HashMap::from([
        (
            "/tmp".to_owned(),
            format!("rw,nosuid,nodev,size={},mode=1777", resources.tmp_bytes),
        ),
        (
            TRUST_TMPFS.to_owned(),
            "rw,nosuid,nodev,noexec,size=8m,mode=0755".to_owned(),
        ),
    ]);
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
        // The launcher's input ends the command's; a detached agent's
        // input stays open for whoever attaches (and detaches) next.
        stdin_once: Some(!detached),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        labels: Some(labels),
        // Healthy while the shim's forward reaches the gate; checked as
        // the agent's uid, never as root.
        healthcheck: Some(health(&[
            "--user".to_owned(),
            format!("{AGENT_UID}:{AGENT_UID}"),
            "--tcp".to_owned(),
            PROXY_PORT.to_string(),
        ])),
        host_config: Some(HostConfig {
            // No interface but loopback: the gate's sockets are the only way out.
            network_mode: Some("none".into()),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(vec!["SETUID".into(), "SETGID".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            readonly_rootfs: Some(true),
            tmpfs: Some(tmpfs),
            pids_limit: Some(if gvisor {
                resources.pids.saturating_add(GVISOR_PIDS_HEADROOM)
            } else {
                resources.pids
            }),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: resources.cpus.map(nano_cpus),
            cpu_shares: Some(AGENT_CPU_SHARES),
            // Processes are bounded by the pids cgroup above, per bottle.
            // RLIMIT_NPROC is not set: it counts a uid's processes on the
            // whole host, so one bottle could starve every other.
            ulimits: Some(nofile(i64::try_from(resources.nofile).unwrap_or(i64::MAX))),
            // Read-only: the agent may connect to the sockets, not replace them.
            binds: Some(binds),
            runtime,
            init: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Limits every gate container shares: CPU, weight, open files; memory as
/// the plan says (the git gate's `factor` times it).
fn gate_limits(p: &DockerPrepared, factor: i64) -> HostConfig {
    let memory = i64::try_from(p.plan.resources.gate_memory_bytes)
        .unwrap_or(i64::MAX)
        .saturating_mul(factor);
    HostConfig {
        network_mode: Some(p.gate_network.clone()),
        readonly_rootfs: Some(true),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        pids_limit: Some(GATE_PIDS),
        memory: Some(memory),
        memory_swap: Some(memory),
        nano_cpus: Some(nano_cpus(p.plan.resources.gate_cpus)),
        cpu_shares: Some(GATE_CPU_SHARES),
        ulimits: Some(nofile(GATE_NOFILE)),
        init: Some(false),
        ..Default::default()
    }
}

/// One gate process's container: `role` (its label), the configuration
/// file in its directory, the socket its health check asks, its mounts
/// besides the shared ones, and a multiple of the gate memory.
struct GateSpec<'a> {
    role: &'a str,
    config_file: &'a str,
    socket: &'a str,
    config_dir: std::path::PathBuf,
    binds: Vec<String>,
    memory_factor: i64,
    secrets_on_stdin: bool,
}

fn gate_body(p: &DockerPrepared, spec: GateSpec<'_>) -> ContainerCreateBody {
    let mut labels = p.labels.clone();
    labels.insert(ROLE_LABEL.into(), spec.role.into());
    let mut binds = vec![
        format!("{}:{GATE_CONFIG_DIR}:ro", spec.config_dir.display()),
        format!("{}:{SOCKET_DIR}", p.dir.socket_dir().display()),
        format!("{}:{GATE_AUDIT_LOG}", p.dir.audit_log().display()),
    ];
    binds.extend(spec.binds);
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    ContainerCreateBody {
        image: Some(p.plan.images.gate.clone()),
        cmd: Some(
            bottle_contract::GateArgs {
                config: std::path::Path::new(GATE_CONFIG_DIR).join(spec.config_file),
            }
            .to_args(),
        ),
        // The launching user: what the gate writes on the host is theirs.
        user: Some(format!("{uid}:{gid}")),
        labels: Some(labels),
        // Route secrets arrive on stdin (see `start_gate`).
        open_stdin: Some(spec.secrets_on_stdin),
        stdin_once: Some(spec.secrets_on_stdin),
        attach_stdin: Some(spec.secrets_on_stdin),
        env: Some(vec!["RUST_LOG=info".into()]),
        healthcheck: Some(health(&[
            "--socket".to_owned(),
            format!("{SOCKET_DIR}/{}", spec.socket),
        ])),
        host_config: Some(HostConfig {
            binds: Some(binds),
            ..gate_limits(p, spec.memory_factor)
        }),
        ..Default::default()
    }
}

/// The egress gate's container: the CA, the route secrets (on stdin), the
/// control socket and, with supervise, the requests — never the SSH keys.
pub fn gate_container(p: &DockerPrepared) -> ContainerCreateBody {
    // Requests and the control socket: the gate's, the person's and the
    // launcher's, never mounted into the agent's sandbox.
    let binds = vec![format!(
        "{}:{GATE_SUPERVISE_DIR}",
        p.dir.supervise_dir().display()
    )];
    gate_body(
        p,
        GateSpec {
            role: "gate",
            config_file: crate::gate_config::EGRESS_CONFIG_FILE,
            socket: EGRESS_SOCKET,
            config_dir: p.dir.gate_dir(),
            binds,
            memory_factor: 1,
            secrets_on_stdin: !p.plan.egress.routes.is_empty(),
        },
    )
}

/// The git gate's container: the git role alone, with the SSH keys, the
/// mirrors and the sockets' directory — never the CA or the route secrets.
/// git packs and checks objects: it gets twice the egress gate's memory.
pub fn git_container(p: &DockerPrepared) -> ContainerCreateBody {
    gate_body(
        p,
        GateSpec {
            role: "git",
            config_file: crate::gate_config::GIT_CONFIG_FILE,
            socket: GIT_SOCKET,
            config_dir: p.dir.git_gate_dir(),
            binds: vec![format!("{}:{GATE_GIT_DIR}", p.dir.git_dir().display())],
            memory_factor: 2,
            secrets_on_stdin: false,
        },
    )
}
