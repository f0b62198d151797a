//! The native backend: no daemon. The agent runs under bubblewrap in new
//! user, pid, network, ipc, uts, cgroup and mount namespaces, with only
//! loopback, no capabilities, a seccomp allowlist ([`seccomp`]) and
//! Landlock (applied by the shim, where the kernel has it). Each gate role
//! is a host process under bubblewrap too: its own mount namespace, which
//! sees the system directories read-only and only its own part of the
//! state directory, no capabilities, the host's network. They share the
//! directory of sockets, as with Docker; the shim is pid 1 inside.
//!
//! Limits: the kernel's cgroups are not used (this build does not take a
//! delegated cgroup v2 subtree); processes, writable memory per process
//! and open files are bounded by rlimits the shim sets, which the preflight
//! and `list` say.

mod agent;
pub mod attach;
use agent::{agent_env, trust_bundle};
mod bwrap;
mod etc;
mod gates;
mod processes;
pub mod seccomp;
mod session;
pub mod unprivileged;

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bottle_manifest::manifest::Runtime;
use bottle_manifest::plan::Plan;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::gate_config::{EGRESS_CONFIG_FILE, GIT_CONFIG_FILE, GatePaths, SOCKET_DIR};
use crate::process::Launcher;
use crate::state::BottleDir;
use crate::{
    AgentRun, Availability, Backend, BackendError, BackendName, Found, Gates, GatesReady, Part,
    Reporter, Role, Scope,
};
use processes::Processes;

/// The `bottle` binary inside the agent's sandbox (a tmpfs of its own).
const SHIM: &str = "/run/bot-bottle/bottle";
/// Where a native agent finds Claude Code (first on its `PATH`).
const CLAUDE_DIR: &str = "/run/bot-bottle/bin";
const CLAUDE_BINARY: &str = "/run/bot-bottle/bin/claude";
/// The `bottle` binary inside a gate's sandbox, where the git gate's
/// hooks expect it.
const GATE_BINARY: &str = "/usr/local/bin/bottle";
/// Node's proxy preload in the native sandbox (see
/// [`crate::sandbox::NODE_PROXY_JS`]).
const NATIVE_NODE_PRELOAD: &str = "/etc/bot-bottle/node-proxy.cjs";
/// The system trust bundle the agent's is made from.
const HOST_TRUST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Seconds an interrupted agent gets to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long `list` waits for a gate's socket to answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// The oldest bubblewrap with what the sandbox needs (`--disable-userns`).
const MIN_BWRAP: (u32, u32) = (0, 8);

/// Settings of the native backend that do not come from the plan.
#[derive(Debug, Clone)]
pub struct NativeSettings {
    /// How long the shim waits for the gate's sockets.
    pub gate_timeout: Duration,
    /// How bottles get Claude Code (the pinned binary, bound read-only).
    pub claude: crate::claude::Install,
}

/// The native backend.
#[derive(Debug)]
pub struct NativeBackend {
    settings: NativeSettings,
}

/// What `prepare` resolved.
#[derive(Debug, Clone)]
pub struct NativePrepared {
    plan: Plan,
    dir: BottleDir,
    bwrap: PathBuf,
}

/// What readying the agent's side made: its seccomp filters and, under a
/// root launcher, its host id.
#[derive(Debug)]
pub struct NativeAgent {
    filters: Vec<Vec<u8>>,
    /// Claude Code's binary on the host, bound at [`CLAUDE_BINARY`].
    claude: Option<PathBuf>,
    /// The host id the sandbox runs as when root launched it: being
    /// chosen (asking the name service takes milliseconds) while the
    /// gates start, then chosen.
    host_id: tokio::sync::Mutex<HostId>,
}

#[derive(Debug)]
enum HostId {
    Choosing(tokio::task::JoinHandle<Result<u32, BackendError>>),
    Chosen(Option<u32>),
}

impl NativeAgent {
    /// The host id, once chosen; `None` when the launcher is not root.
    async fn host_id(&self) -> Result<Option<u32>, BackendError> {
        let mut state = self.host_id.lock().await;
        let id = match &mut *state {
            HostId::Chosen(id) => *id,
            HostId::Choosing(handle) => Some(handle.await.map_err(std::io::Error::other)??),
        };
        *state = HostId::Chosen(id);
        Ok(id)
    }
}

/// The native backend's part of a bottle's state directory.
pub(crate) fn native_dir(dir: &BottleDir) -> PathBuf {
    dir.root.join("native")
}

fn home_dir(dir: &BottleDir) -> PathBuf {
    native_dir(dir).join("home")
}

fn workspace_dir(dir: &BottleDir) -> PathBuf {
    native_dir(dir).join("workspace")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BackendError + '_ {
    move |source| BackendError::Io {
        path: path.to_owned(),
        source,
    }
}

fn private_dir(path: &Path) -> Result<(), BackendError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_err(path))
}

/// Writes a file the sandbox reads (never a secret: the directories
/// around it are private), readable by the agent's uid whatever the
/// launcher's umask.
pub(super) fn write(path: &Path, bytes: &[u8]) -> Result<(), BackendError> {
    if let Some(parent) = path.parent() {
        private_dir(parent)?;
    }
    crate::state::write_file(path, bytes, 0o644)
}

/// A program on `PATH`.
fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

fn refused(what: &str, why: impl Into<String>) -> BackendError {
    BackendError::Refused {
        backend: BackendName::Native,
        what: what.to_owned(),
        why: why.into(),
    }
}

/// `bubblewrap 0.8.0` → (0, 8).
fn bwrap_version(text: &str) -> Option<(u32, u32)> {
    let version = text.split_whitespace().last()?;
    let mut parts = version.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Whether the kernel offers Landlock (as its list of security modules
/// says).
fn landlock_offered() -> Option<bool> {
    std::fs::read_to_string("/sys/kernel/security/lsm")
        .ok()
        .map(|lsm| lsm.split(',').any(|m| m.trim() == "landlock"))
}

impl NativeBackend {
    pub fn new(settings: NativeSettings) -> NativeBackend {
        NativeBackend { settings }
    }

    /// bubblewrap, its version line, and whether it can make the sandbox's
    /// namespaces here.
    async fn probe(&self) -> Result<(PathBuf, String), (String, String)> {
        if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            return Err((
                "this build's seccomp allowlist is for x86_64 Linux".into(),
                "run bot-bottle on x86_64 Linux, or use the docker backend".into(),
            ));
        }
        let Some(bwrap) = which("bwrap") else {
            return Err((
                "bwrap (bubblewrap) is not on PATH".into(),
                "install it: apt-get install bubblewrap".into(),
            ));
        };
        let out = tokio::process::Command::new(&bwrap)
            .arg("--version")
            .output()
            .await
            .map_err(|e| {
                (
                    format!("{} does not run: {e}", bwrap.display()),
                    "reinstall bubblewrap".into(),
                )
            })?;
        let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        match bwrap_version(&line) {
            Some(v) if v >= MIN_BWRAP => {}
            _ => {
                return Err((
                    format!(
                        "{} is {line:?}; the sandbox needs bubblewrap 0.8 or newer",
                        bwrap.display()
                    ),
                    "install bubblewrap 0.8 or newer (Debian 12 and Ubuntu 24.04 have it)".into(),
                ));
            }
        }
        if !Path::new(HOST_TRUST_BUNDLE).is_file() {
            return Err((
                format!("{HOST_TRUST_BUNDLE} is missing: the agent's trust bundle is made from it"),
                "install it: apt-get install ca-certificates".into(),
            ));
        }
        let mut probe = bwrap::Args::default();
        probe.isolation(true).system(None);
        probe.args(["--", "true"]);
        let out = tokio::process::Command::new(&bwrap)
            .args(probe.into_vec())
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| (e.to_string(), "reinstall bubblewrap".into()))?;
        if !out.status.success() {
            return Err((
                format!(
                    "bwrap cannot make the sandbox's namespaces here: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1; on Ubuntu also kernel.apparmor_restrict_unprivileged_userns=0)".into(),
            ));
        }
        Ok((bwrap, line))
    }
}

/// Every native sandbox's seccomp filters, compiled.
fn filters() -> Result<Vec<Vec<u8>>, BackendError> {
    let compiled = |f: Result<Vec<u8>, seccomp::FilterError>| {
        f.map_err(|e| BackendError::Other(std::io::Error::other(e)))
    };
    Ok(vec![
        compiled(seccomp::allowlist())?,
        compiled(seccomp::no_clone3())?,
    ])
}

impl Backend for NativeBackend {
    type Prepared = NativePrepared;
    type Agent = NativeAgent;

    fn name(&self) -> BackendName {
        BackendName::Native
    }

    async fn availability(&self) -> Availability {
        match self.probe().await {
            Ok((_, version)) => Availability::Usable {
                detail: format!(
                    "{version}; Landlock {}; limits by rlimits",
                    match landlock_offered() {
                        Some(true) => "offered by the kernel",
                        Some(false) => "not in this kernel",
                        None => "unknown (no securityfs)",
                    }
                ),
            },
            Err((reason, fix)) => Availability::Unusable { reason, fix },
        }
    }

    async fn describe_runtime(&self, plan: &Plan) -> Result<String, BackendError> {
        let (_, version) =
            self.probe()
                .await
                .map_err(|(reason, fix)| BackendError::Unavailable {
                    backend: BackendName::Native,
                    reason,
                    fix,
                })?;
        Ok(format!(
            "{version}: new user, pid, network, ipc, uts, cgroup and mount namespaces, no capabilities, seccomp allowlist (Docker's default), Landlock {}; limits by rlimits (no delegated cgroup v2 is used): {} processes{}, {} MiB writable memory per process, {} open files; no CPU limit",
            match landlock_offered() {
                Some(false) => "(not in this kernel)",
                _ => "where the kernel has it",
            },
            plan.resources.pids,
            if nix::unistd::getuid().is_root() {
                " (launched by root, the agent runs as a host uid of its own)".to_owned()
            } else {
                String::new()
            },
            plan.resources.memory_bytes >> 20,
            plan.resources.nofile,
        ))
    }

    fn prepare(&self, plan: &Plan) -> Result<NativePrepared, BackendError> {
        if let Some(network) = &plan.gate_network {
            return Err(refused(
                "gate_network",
                format!(
                    "{network:?} names a Docker network; a native bottle's gate uses the host's network (add the services' ranges to allow_private instead), or start with --backend docker"
                ),
            ));
        }
        if plan.runtime == Runtime::Runsc {
            return Err(refused(
                "runtime runsc",
                "gVisor is a Docker runtime; remove \"runtime\" or start with --backend docker",
            ));
        }
        if !plan.images.agent_is_default {
            return Err(refused(
                "image",
                format!(
                    "{:?} is a container image; a native bottle runs the host's own system directories: remove \"image\" or start with --backend docker",
                    plan.images.agent
                ),
            ));
        }
        if let Some(own) = &plan.images.bottle {
            return Err(refused(
                "an approved image change",
                format!(
                    "{} is a container image; resume this bottle with the docker backend",
                    own.tag
                ),
            ));
        }
        if !plan.git.is_empty() {
            for program in ["git", "ssh"] {
                if which(program).is_none() {
                    return Err(BackendError::Unavailable {
                        backend: BackendName::Native,
                        reason: format!(
                            "the git gate runs the host's {program}, which is not on PATH"
                        ),
                        fix: "install it: apt-get install git openssh-client".into(),
                    });
                }
            }
        }
        Ok(NativePrepared {
            plan: plan.clone(),
            dir: BottleDir::new(&plan.state_dir),
            bwrap: which("bwrap").unwrap_or_else(|| PathBuf::from("bwrap")),
        })
    }

    fn gate_paths(&self) -> GatePaths {
        GatePaths::standard()
    }

    async fn run_gates(
        &self,
        p: &NativePrepared,
        gates: Gates,
        ready: &GatesReady,
        reporter: &dyn Reporter,
    ) -> Result<String, BackendError> {
        let Gates {
            mut egress,
            git,
            secrets,
        } = gates;
        // The gate refuses an image change at once, and says why.
        if let Some(supervise) = egress.supervise.as_mut() {
            supervise.image_changes = Some(
                "this bottle runs on the native backend, which runs the host's own system directories and has no image to change".to_owned(),
            );
        }
        p.dir.write_json(&p.dir.gate_config(), &egress)?;
        if let Some(git) = &git {
            p.dir.write_json(&p.dir.git_gate_config(), git)?;
        }
        private_dir(&native_dir(&p.dir))?;
        let mut egress_gate = self.spawn_gate(p, Role::Gate, secrets)?;
        let mut git_gate = git
            .as_ref()
            .map(|_| self.spawn_gate(p, Role::Git, Vec::new()))
            .transpose()?;
        ready.mark();
        reporter.detail("gate started");
        let git_ended = async {
            match git_gate.as_mut() {
                Some(child) => (child.wait().await, Role::Git, "pushes and fetches"),
                None => std::future::pending().await,
            }
        };
        let (status, role, what) = tokio::select! {
            status = egress_gate.wait() => (status, Role::Gate, "requests"),
            ended = git_ended => ended,
        };
        let status = match status {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        };
        let log =
            std::fs::read_to_string(native_dir(&p.dir).join(format!("{}.log", role.as_str())))
                .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        Ok(format!(
            "the {} gate stopped ({status}): the bottle has no way out there now; its {what} fail until the command ends{}",
            if role == Role::Git { "git" } else { "egress" },
            if tail.is_empty() {
                String::new()
            } else {
                format!(
                    "; its last lines:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            }
        ))
    }

    async fn ready_agent(
        &self,
        p: &NativePrepared,
        reporter: &dyn Reporter,
    ) -> Result<NativeAgent, BackendError> {
        private_dir(&home_dir(&p.dir))?;
        private_dir(&workspace_dir(&p.dir))?;
        let mut bundle =
            std::fs::read(HOST_TRUST_BUNDLE).map_err(io_err(Path::new(HOST_TRUST_BUNDLE)))?;
        if !bundle.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        let ca = p.dir.ca_cert();
        bundle.extend(std::fs::read(&ca).map_err(io_err(&ca))?);
        write(&trust_bundle(&p.dir), &bundle)?;
        // Launched by root, the sandbox runs as an unprivileged host uid
        // of the bottle's own (see `unprivileged`): chosen off the
        // launcher's thread while the gates start, and given its files
        // once they are all there.
        let host_id = if nix::unistd::getuid().is_root() {
            let (dir, identity) = (p.dir.clone(), p.plan.identity.clone());
            HostId::Choosing(tokio::task::spawn_blocking(move || {
                unprivileged::host_id(&dir, &identity)
            }))
        } else {
            HostId::Chosen(None)
        };
        let filters = filters()?;
        if self.settings.claude == crate::claude::Install::Npm {
            reporter.step(
                "native: BOTTLE_INSTALL_CLAUDE=npm applies to images only; this bottle has no Claude Code of bot-bottle's (unset it for the pinned one)",
            );
        }
        let claude = self.settings.claude.ensure(reporter).await?.map(|c| c.path);
        reporter.detail("agent sandbox: bubblewrap, seccomp, Landlock");
        Ok(NativeAgent {
            filters,
            claude,
            host_id: tokio::sync::Mutex::new(host_id),
        })
    }

    async fn run_agent(
        &self,
        p: &NativePrepared,
        agent: &NativeAgent,
        run: AgentRun<'_>,
        reporter: &dyn Reporter,
    ) -> Result<i32, BackendError> {
        if let Some(own) = run.own_image {
            return Err(refused(
                "an approved image change",
                format!("{} is a container image", own.tag),
            ));
        }
        if let Some(workspace) = p.plan.workspace.as_ref().filter(|_| run.first) {
            let started = Instant::now();
            let copied = session::copy_in(workspace, &workspace_dir(&p.dir)).await?;
            reporter.step(&crate::workspace::describe_copy(
                &copied,
                workspace,
                started.elapsed(),
            ));
        }
        if let Some(skills) = crate::provision::skills(&p.plan.provision)? {
            session::unpack(skills, &home_dir(&p.dir))?;
        }
        let host_id = agent.host_id().await?;
        if let Some(id) = host_id {
            let dir = p.dir.clone();
            tokio::task::spawn_blocking(move || {
                unprivileged::give(&home_dir(&dir), id)?;
                unprivileged::give(&workspace_dir(&dir), id)
            })
            .await
            .map_err(std::io::Error::other)??;
        }
        run.gates_ready.wait().await;
        // A terminal of the launcher's is never handed in: when any of
        // its streams is one, or the bottle is detached, the sandbox gets
        // a terminal of its own.
        let detached = run.terminal == crate::Terminal::Detached;
        let tty = detached || session::any_terminal();
        let fds = session::filter_fds(&agent.filters)?;
        let raw: Vec<i32> = fds.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
        let args = self.agent_args(p, agent, &run, &raw)?;
        let (program, args) = if let Some(id) = host_id {
            let staged = unprivileged::stage(&p.bwrap, args, &raw, id)?;
            let mut argv = vec![std::ffi::OsString::from(unprivileged::SUBCOMMAND)];
            argv.extend(staged.to_args());
            (std::env::current_exe()?, argv)
        } else {
            (p.bwrap.clone(), args)
        };
        let env = agent_env(&p.plan, tty)?;
        let terminal = match (tty, detached) {
            (_, true) => session::Tty::Detached,
            (true, false) => session::Tty::Launcher,
            (false, false) => session::Tty::None,
        };
        let code = session::run(&program, &args, env, terminal, &p.dir, fds, run.timing).await?;
        Ok(code)
    }

    async fn rebuild(
        &self,
        _plan: &Plan,
        _change: &crate::capability::ImageChange,
        _reporter: &dyn Reporter,
    ) -> Result<(), BackendError> {
        Err(refused(
            "an image change",
            "a native bottle runs the host's own system directories and has no image to change; install what it needs on the host, or use the docker backend",
        ))
    }

    async fn stop_agent(&self, _identity: &str, dir: &BottleDir) -> Result<bool, BackendError> {
        let Some(sandbox) = Processes::read(dir).alive(Role::Agent) else {
            return Ok(false);
        };
        // The shim passes SIGTERM on to the command; bubblewrap's end
        // takes the sandbox with it.
        if let Some(shim) = processes::child_of(sandbox.pid) {
            let _ = kill(Pid::from_raw(shim as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while sandbox.is_alive() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if sandbox.is_alive() {
            let _ = kill(Pid::from_raw(sandbox.pid as i32), Signal::SIGKILL);
        }
        Ok(true)
    }

    async fn teardown(
        &self,
        _identity: &str,
        dir: &BottleDir,
        scope: Scope<'_>,
    ) -> Result<(), BackendError> {
        let record = Processes::read(dir);
        let mine = scope.launcher.is_none_or(|l| l == record.launcher);
        if mine {
            // A gate stopped by SIGTERM writes what its audit log still
            // has queued; one killed outright would lose the last few
            // milliseconds of decisions.
            let gates: Vec<Launcher> = record
                .each()
                .filter(|(role, p)| *role != Role::Agent && p.is_alive())
                .map(|(_, p)| p)
                .collect();
            // Sent again every few milliseconds: a gate that has only just
            // started may not catch it yet (as pid 1 it drops what it does
            // not catch).
            let deadline = Instant::now() + crate::GATE_STOP_GRACE;
            let mut tick = 0u32;
            while gates.iter().any(Launcher::is_alive) && Instant::now() < deadline {
                if tick.is_multiple_of(20) {
                    // Only to a gate still there: a pid that is gone may
                    // be another process's by now.
                    for gate in gates.iter().filter(|g| g.is_alive()) {
                        if let Some(server) = processes::child_of(gate.pid) {
                            let _ = kill(Pid::from_raw(server as i32), Signal::SIGTERM);
                        }
                    }
                }
                tick += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let alive: Vec<Launcher> = record
                .each()
                .map(|(_, p)| p)
                .filter(Launcher::is_alive)
                .collect();
            for p in &alive {
                let _ = kill(Pid::from_raw(p.pid as i32), Signal::SIGKILL);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while alive.iter().any(Launcher::is_alive) {
                if Instant::now() >= deadline {
                    return Err(BackendError::Other(std::io::Error::other(format!(
                        "{}: a process of the bottle outlived SIGKILL (run `bottle cleanup` to retry)",
                        dir.root.display()
                    ))));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let path = processes::path(dir);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(BackendError::Io { path, source: e });
                }
                _ => {}
            }
        }
        if scope.data {
            let native = native_dir(dir);
            crate::state::remove_tree(&native).map_err(|source| BackendError::Io {
                path: native.clone(),
                source,
            })?;
        }
        Ok(())
    }

    async fn enumerate(&self, state_root: &Path) -> Result<BTreeMap<String, Found>, BackendError> {
        let mut out = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(state_root) else {
            return Ok(out);
        };
        for entry in entries.flatten() {
            let dir = BottleDir::new(entry.path());
            if !processes::path(&dir).is_file() {
                continue;
            }
            let record = Processes::read(&dir);
            let mut found = Found::new(BackendName::Native);
            found.launcher = Some(record.launcher.clone()).filter(|l| !l.is_empty());
            found.state_dir = Some(dir.root.clone());
            for (role, process) in record.each() {
                let running = process.is_alive();
                // As Docker's health checks ask: does the role's socket
                // answer?
                let socket = match role {
                    Role::Gate => Some(bottle_contract::config::EGRESS_SOCKET),
                    Role::Git => Some(bottle_contract::config::GIT_SOCKET),
                    Role::Agent => None,
                };
                let health = match socket {
                    Some(name) if running => {
                        let path = dir.socket_dir().join(name);
                        let answered = tokio::task::spawn_blocking(move || {
                            crate::health::socket(&path, HEALTH_TIMEOUT)
                        })
                        .await
                        .map_err(std::io::Error::other)?;
                        Some(
                            if answered.is_ok() {
                                "healthy"
                            } else {
                                "unhealthy"
                            }
                            .to_owned(),
                        )
                    }
                    _ => None,
                };
                found.parts.push(Part {
                    kind: "process",
                    name: format!("{} (pid {})", role.as_str(), process.pid),
                    role: Some(role),
                    running,
                    health,
                });
            }
            out.insert(entry.file_name().to_string_lossy().into_owned(), found);
        }
        Ok(out)
    }

    fn attach_argv(&self, identity: &str, dir: &BottleDir) -> Result<Vec<String>, BackendError> {
        let socket = native_dir(dir).join(attach::SOCKET);
        if !socket.exists() {
            return Err(refused(
                "attaching a terminal",
                format!(
                    "{identity}'s agent has no terminal to attach to: it is not running, or its launcher was started without one"
                ),
            ));
        }
        let mut argv = vec![
            std::env::current_exe()?.display().to_string(),
            attach::SUBCOMMAND.to_owned(),
        ];
        argv.extend(attach::AttachArgs { socket }.to_args());
        Ok(argv)
    }

    async fn leftovers(&self) -> Vec<String> {
        Vec::new()
    }

    async fn remove_leftovers(&self, _leftovers: &[String]) {}
}
