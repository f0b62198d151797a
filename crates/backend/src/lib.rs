//! Where bottles run. Every backend implements [`Backend`], the lifecycle of
//! DESIGN.md §2: prepare (pure) → launch (create, provision, run, tear
//! down). Docker is the default and, today, the only backend.
#![forbid(unsafe_code)]

pub mod docker;
pub mod gate_config;
pub mod process;
pub mod secrets;
pub mod state;
pub mod workspace;

use std::future::Future;

use bottle_manifest::plan::Plan;

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
        "the agent runs as uid {uid} in the bottle, and so do you: an agent that escaped would be you; start bottles as another user"
    )]
    AgentUidIsYours { uid: u32 },
    #[error("{}: {source}", .path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Other(#[from] std::io::Error),
}

impl BackendError {
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

/// The lifecycle every backend implements.
pub trait Backend {
    /// What `prepare` resolved for `launch`.
    type Prepared: Send;

    /// The name used by `--backend` and in plans.
    fn name(&self) -> &'static str;

    /// Whether this host can run bottles with this backend now.
    fn is_available(&self) -> impl Future<Output = bool> + Send;

    /// Resolves names, paths and the gate's configuration from the plan.
    /// Pure: creates nothing.
    fn prepare(&self, plan: &Plan) -> Result<Self::Prepared, BackendError>;

    /// Creates the bottle, runs its command with the launcher's terminal or
    /// pipes, and tears it down when the command exits or the launcher is
    /// interrupted (SIGINT, SIGTERM, SIGHUP).
    fn launch(
        &self,
        prepared: Self::Prepared,
        reporter: &dyn Reporter,
    ) -> impl Future<Output = Result<Outcome, BackendError>> + Send;
}
