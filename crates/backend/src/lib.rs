//! Where bottles run. Every backend implements [`Backend`], the lifecycle
//! of DESIGN.md §2 for a bottle's whole life: availability, a runtime
//! description, prepare (pure), the gates and the agent of a launch, stop,
//! rebuild for an image change, enumerate, attach, cleanup and reap. What
//! is the same for every backend (signals, state writes, the guardian, the
//! restart after a capability block, the gate's configuration, the order
//! of provisioning) lives once, in [`lifecycle`], above them; the
//! [`registry`] maps names to backends.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod capability;
pub mod claude;
pub mod docker;
pub mod fake;
pub mod gate_config;
pub mod health;
pub mod lifecycle;
pub mod native;
pub mod process;
pub mod provision;
pub mod registry;
pub mod sandbox;
pub mod secrets;
pub mod state;
pub mod terminal;
pub mod workspace;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use bottle_contract::config::GateConfig;
use bottle_manifest::plan::Plan;
use bottle_manifest::provision::GrantedImage;

use crate::state::BottleDir;

/// Exit status when the launcher was interrupted by a signal: 128 + signal.
pub fn signal_exit_code(signal: i32) -> i32 {
    128 + signal
}

/// Errors of a backend, each saying what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("the Docker engine is not reachable ({0}): start it, or set DOCKER_HOST to its socket")]
    DockerUnavailable(String),
    #[error("docker: {context}: {message}")]
    Docker { context: String, message: String },
    #[error(
        "base image {image} is missing: run scripts/base-image to make it (or set BOTTLE_BASE_IMAGE)"
    )]
    BaseImageMissing { image: String },
    #[error("building {image} failed: {message}\n{log}")]
    Build {
        image: String,
        message: String,
        log: String,
    },
    #[error(
        "image {image} is missing: build it, or remove \"image\" from the bottle to use the default"
    )]
    ImageMissing { image: String },
    #[error(
        "runtime runsc (gVisor) was requested but the Docker engine has no runsc runtime: install gVisor and register it, or set \"runtime\": \"auto\""
    )]
    RuntimeMissing,
    #[error(
        "gate network {name:?} does not exist: create it (docker network create {name}) or remove gate_network"
    )]
    NetworkMissing { name: String },
    #[error("the gate did not start: {0}")]
    GateFailed(String),
    #[error("the secret of the route to {route}: {message}")]
    Secret { route: String, message: String },
    #[error(
        "a container named {name:?} exists already: remove it, or unset BOTTLE_CONTAINER to let bot-bottle name the container"
    )]
    NameTaken { name: String },
    #[error("the bottle's CA: {0}")]
    Ca(String),
    #[error(
        "{identity} is running already: another launcher holds it (bottle list active shows it; stop that one first)"
    )]
    Held { identity: String },
    #[error(
        "the agent runs as uid {uid} in the bottle, and so do you: an agent that escaped would be you; start bottles as another user"
    )]
    AgentUidIsYours { uid: u32 },
    #[error("{}: {source}", .path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{backend}: {what} is not possible on this backend: {why}")]
    Refused {
        backend: BackendName,
        what: String,
        why: String,
    },
    #[error("{backend} is not usable here: {reason}: {fix}")]
    Unavailable {
        backend: BackendName,
        reason: String,
        fix: String,
    },
    #[error("{0}")]
    Claude(String),
    #[error("{0}")]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Other(#[from] std::io::Error),
}

/// How long a bottle's gates have, on every backend, to write out their
/// audit logs after SIGTERM before they are killed at teardown.
pub const GATE_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// What kind of failure a [`BackendError`] is, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The backend cannot be used here (an engine, a tool, an image missing).
    Unavailable,
    /// What the bottle asks is not possible as configured.
    Config,
    /// bot-bottle failed while working.
    Software,
}

impl BackendError {
    pub fn kind(&self) -> ErrorKind {
        use BackendError as E;
        match self {
            E::DockerUnavailable(_)
            | E::Unavailable { .. }
            | E::BaseImageMissing { .. }
            | E::RuntimeMissing
            | E::Claude(_)
            | E::ImageMissing { .. } => ErrorKind::Unavailable,
            E::NetworkMissing { .. }
            | E::NameTaken { .. }
            | E::Held { .. }
            | E::Refused { .. }
            | E::State(_) => ErrorKind::Config,
            _ => ErrorKind::Software,
        }
    }

    pub(crate) fn docker(context: impl Into<String>, err: impl std::fmt::Display) -> BackendError {
        BackendError::Docker {
            context: context.into(),
            message: err.to_string(),
        }
    }
}

/// Where a backend reports progress (stderr, through the binary's printer).
pub trait Reporter: Send + Sync {
    /// A step a person may want to know about ("building image …").
    fn step(&self, message: &str);
    /// A detail shown only when verbose.
    fn detail(&self, message: &str);
}

/// How a launched bottle ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The command exited with this status.
    Exited(i32),
    /// The launcher got this signal and tore the bottle down.
    Interrupted(i32),
}

impl Outcome {
    /// The launcher's own exit status for this outcome.
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Exited(code) => code,
            Outcome::Interrupted(signal) => signal_exit_code(signal),
        }
    }
}

/// The backends of this build.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendName {
    /// Containers through the Docker Engine API.
    Docker,
    /// bubblewrap namespaces with seccomp and Landlock; no daemon.
    Native,
}

impl BackendName {
    /// Every backend, in the order `doctor` and `list` show them.
    pub const ALL: &[BackendName] = &[BackendName::Docker, BackendName::Native];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendName::Docker => "docker",
            BackendName::Native => "native",
        }
    }
}

impl std::fmt::Display for BackendName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackendName {
    type Err = String;

    fn from_str(s: &str) -> Result<BackendName, String> {
        BackendName::ALL
            .iter()
            .copied()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a backend of this build: use {}",
                    BackendName::ALL
                        .iter()
                        .map(|b| b.as_str())
                        .collect::<Vec<_>>()
                        .join(" or ")
                )
            })
    }
}

/// Whether a backend can run bottles on this host now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Usable {
        /// What it runs on (`docker engine 20.10.24`, `bubblewrap 0.8.0`).
        detail: String,
    },
    Unusable {
        /// What is missing ("the engine does not answer at …").
        reason: String,
        /// What to install or change.
        fix: String,
    },
}

impl Availability {
    pub fn is_usable(&self) -> bool {
        matches!(self, Availability::Usable { .. })
    }
}

/// A part a bottle's process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The agent's sandbox.
    Agent,
    /// The egress gate (and supervise).
    Gate,
    /// The git gate.
    Git,
}

impl Role {
    pub const ALL: &[Role] = &[Role::Agent, Role::Gate, Role::Git];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Gate => "gate",
            Role::Git => "git",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.iter().copied().find(|r| r.as_str() == s)
    }
}

/// One thing a backend holds for a bottle (a container, a network, a
/// volume, a process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// `container`, `network`, `volume`, `process`.
    pub kind: &'static str,
    pub name: String,
    /// The part it plays, for containers and processes.
    pub role: Option<Role>,
    pub running: bool,
    /// Its health check's verdict (`healthy`, `unhealthy`, `starting`).
    pub health: Option<String>,
}

/// What one backend holds for one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub backend: BackendName,
    /// The launcher the parts name (`PID:START`), if any.
    pub launcher: Option<String>,
    /// The state directory the parts name, if any.
    pub state_dir: Option<PathBuf>,
    pub parts: Vec<Part>,
}

impl Found {
    pub fn new(backend: BackendName) -> Found {
        Found {
            backend,
            launcher: None,
            state_dir: None,
            parts: Vec::new(),
        }
    }

    /// Whether the launcher named on the parts still runs.
    pub fn launcher_alive(&self) -> bool {
        self.launcher
            .as_deref()
            .and_then(|l| l.parse::<process::Launcher>().ok())
            .is_some_and(|l| l.is_alive())
    }

    /// Whether the role's part runs.
    pub fn running(&self, role: Role) -> bool {
        self.parts.iter().any(|p| p.role == Some(role) && p.running)
    }

    /// The health of the role's running part, if it has a verdict.
    pub fn health(&self, role: Role) -> Option<&str> {
        self.parts
            .iter()
            .find(|p| p.role == Some(role) && p.running)
            .and_then(|p| p.health.as_deref())
    }
}

/// What a teardown removes besides the running parts.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The bottle's network, slow to remove: after a normal exit the
    /// guardian removes it.
    pub network: bool,
    /// The bottle's data (workspace, home, its own image): only when
    /// nothing is to be resumed.
    pub data: bool,
    /// Only what this launcher (`PID:START`) made: a guardian must never
    /// touch the run that resumed its bottle.
    pub launcher: Option<&'a str>,
}

/// The gates' configuration, made from the plan above the backends.
#[derive(Debug, Clone)]
pub struct Gates {
    pub egress: GateConfig,
    /// The git gate's, when the bottle has upstreams.
    pub git: Option<GateConfig>,
    /// The route secrets, for the egress gate's standard input.
    pub secrets: Vec<String>,
}

/// Set once the gates are on their way up: the agent's sandbox starts
/// only then, so the shim's bounded wait for the gate's sockets never
/// includes a first build of the gate's image.
#[derive(Debug)]
pub struct GatesReady(tokio::sync::watch::Sender<bool>);

impl Default for GatesReady {
    fn default() -> GatesReady {
        GatesReady(tokio::sync::watch::channel(false).0)
    }
}

impl GatesReady {
    pub fn mark(&self) {
        self.0.send_replace(true);
    }

    pub async fn wait(&self) {
        let _ = self.0.subscribe().wait_for(|ready| *ready).await;
    }
}

/// One run of the agent's command.
pub struct AgentRun<'a> {
    /// The bottle's own image (approved image changes), if it has one.
    pub own_image: Option<&'a GrantedImage>,
    pub command: &'a [String],
    /// The first run of this launch: the workspace is copied in.
    pub first: bool,
    /// Files provisioned read-only: (host path, path in the sandbox).
    pub provisioned: &'a [(PathBuf, String)],
    pub gates_ready: &'a GatesReady,
    /// Reports a step with the time since the launch began.
    pub timing: &'a (dyn Fn(&str) + Sync),
    /// Where the agent's terminal is.
    pub terminal: Terminal,
}

/// Where a bottle's agent has its terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    /// On the launcher's own streams: the launcher's terminal when they
    /// are one (in raw mode), its pipes when not.
    Launcher,
    /// Detached (`bottle start -d`): the launcher runs in the background
    /// without a terminal, and the agent gets one of its own, which
    /// `bottle attach` reaches. Nothing reads the launcher's input.
    Detached,
}

/// The lifecycle every backend implements. Commands reach a backend only
/// through this trait (see [`registry::AnyBackend`]); what is the same for
/// every backend is in [`lifecycle`].
pub trait Backend: Send + Sync {
    /// What `prepare` resolved for a launch.
    type Prepared: Send + Sync;
    /// What readying the agent's side resolved (an image, a runtime).
    type Agent: Send + Sync;

    fn name(&self) -> BackendName;

    /// Whether this host can run bottles with this backend now, and why
    /// not.
    fn availability(&self) -> impl Future<Output = Availability> + Send;

    /// How the agent will run, for the preflight and `list` ("runc",
    /// "bubblewrap: …; seccomp; Landlock ABI 7; limits: rlimits").
    fn describe_runtime(
        &self,
        plan: &Plan,
    ) -> impl Future<Output = Result<String, BackendError>> + Send;

    /// The backend's own resolution of a plan that passed the shared
    /// validation ([`lifecycle::prepare`]). Pure: creates nothing.
    fn prepare(&self, plan: &Plan) -> Result<Self::Prepared, BackendError>;

    /// Where each gate process sees its files.
    fn gate_paths(&self) -> gate_config::GatePaths;

    /// Starts the gates and marks `ready` once they are on their way up;
    /// returns only when one stops (`Ok` with what to tell the person) or
    /// fails to start.
    fn run_gates(
        &self,
        p: &Self::Prepared,
        gates: Gates,
        ready: &GatesReady,
        reporter: &dyn Reporter,
    ) -> impl Future<Output = Result<String, BackendError>> + Send;

    /// Readies the agent's side: its image, runtime, workspace and home.
    fn ready_agent(
        &self,
        p: &Self::Prepared,
        reporter: &dyn Reporter,
    ) -> impl Future<Output = Result<Self::Agent, BackendError>> + Send;

    /// Runs the agent's command once, attached to the launcher's terminal
    /// or pipes, and returns its exit status. The sandbox is gone after.
    fn run_agent(
        &self,
        p: &Self::Prepared,
        agent: &Self::Agent,
        run: AgentRun<'_>,
        reporter: &dyn Reporter,
    ) -> impl Future<Output = Result<i32, BackendError>> + Send;

    /// Builds a bottle's own image with an approved image change, or
    /// refuses with the reason.
    fn rebuild(
        &self,
        plan: &Plan,
        change: &capability::ImageChange,
        reporter: &dyn Reporter,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Stops the running agent of `identity` (SIGTERM, a grace period,
    /// then SIGKILL), keeping its data. Returns whether one ran.
    fn stop_agent(
        &self,
        identity: &str,
        dir: &BottleDir,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Removes what the backend holds for `identity`, as `scope` says,
    /// whether or not this process made it.
    fn teardown(
        &self,
        identity: &str,
        dir: &BottleDir,
        scope: Scope<'_>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Every bottle this backend holds anything for, by identity. Bottles
    /// of `state_root` are looked up there; others by the backend's own
    /// labels.
    fn enumerate(
        &self,
        state_root: &Path,
    ) -> impl Future<Output = Result<BTreeMap<String, Found>, BackendError>> + Send;

    /// What a terminal (or a tmux pane) runs to reach the running agent
    /// of `identity`.
    fn attach_argv(&self, identity: &str, dir: &BottleDir) -> Result<Vec<String>, BackendError>;

    /// What the backend holds that belongs to no bottle any more (images
    /// no tag names), for `cleanup`.
    fn leftovers(&self) -> impl Future<Output = Vec<String>> + Send;

    /// Removes [`Backend::leftovers`].
    fn remove_leftovers(&self, leftovers: &[String]) -> impl Future<Output = ()> + Send;
}
