//! The backends of this build by name, as one enum that is itself a
//! [`Backend`]: commands pick one (or all, for `list` and `cleanup`) and
//! never name a backend's type.

use std::collections::BTreeMap;
use std::path::Path;

use bottle_manifest::plan::Plan;

use crate::docker::{DockerBackend, DockerSettings};
use crate::native::{NativeBackend, NativeSettings};
use crate::state::BottleDir;
use crate::{
    AgentRun, Availability, Backend, BackendError, BackendName, Found, Gates, GatesReady, Reporter,
    Scope,
};

/// Settings of every backend, resolved by the binary.
#[derive(Debug, Clone)]
pub struct Settings {
    pub docker: DockerSettings,
    pub native: NativeSettings,
}

/// What the binary resolves for the backends (each takes what applies to
/// it).
#[derive(Debug, Clone)]
pub struct Common {
    /// How bottles get Claude Code.
    pub claude: crate::claude::Install,
    /// Where launchers serialise image builds.
    pub lock_dir: std::path::PathBuf,
    /// How long the shim waits for the gate's sockets.
    pub gate_timeout: std::time::Duration,
    /// A fixed name for the agent's sandbox, where the backend names one.
    pub container_name: Option<String>,
}

impl Settings {
    pub fn new(common: Common) -> Settings {
        Settings {
            native: NativeSettings {
                gate_timeout: common.gate_timeout,
                claude: common.claude.clone(),
            },
            docker: DockerSettings {
                claude: common.claude,
                lock_dir: common.lock_dir,
                gate_timeout: common.gate_timeout,
                container_name: common.container_name,
            },
        }
    }
}

/// One backend of this build.
#[derive(Debug)]
pub enum AnyBackend {
    Docker(Box<DockerBackend>),
    Native(Box<NativeBackend>),
}

/// What `prepare` resolved, for the backend that resolved it.
#[derive(Debug)]
pub enum AnyPrepared {
    Docker(Box<<DockerBackend as Backend>::Prepared>),
    Native(Box<<NativeBackend as Backend>::Prepared>),
}

/// What readying the agent resolved, for the backend that readied it.
#[derive(Debug)]
pub enum AnyAgent {
    Docker(<DockerBackend as Backend>::Agent),
    Native(<NativeBackend as Backend>::Agent),
}

impl AnyBackend {
    pub fn new(name: BackendName, settings: &Settings) -> AnyBackend {
        match name {
            BackendName::Docker => {
                AnyBackend::Docker(Box::new(DockerBackend::new(settings.docker.clone())))
            }
            BackendName::Native => {
                AnyBackend::Native(Box::new(NativeBackend::new(settings.native.clone())))
            }
        }
    }

    /// Every backend of this build.
    pub fn all(settings: &Settings) -> Vec<AnyBackend> {
        BackendName::ALL
            .iter()
            .map(|&name| AnyBackend::new(name, settings))
            .collect()
    }
}

/// Which backend a start uses, and why: `--backend`, else the variable
/// (`BOTTLE_BACKEND` or its alias), else docker when an engine answers and
/// native when none does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub name: BackendName,
    /// Said in the plan and the preflight.
    pub why: String,
}

/// Where the choice may come from, most specific first.
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    /// `--backend`.
    pub flag: Option<BackendName>,
    /// The variable that named one (`BOTTLE_BACKEND`, or the original
    /// tool's `CLAUDE_BOTTLE_BACKEND`) and its value.
    pub env: Option<(&'static str, BackendName)>,
}

/// Picks the backend of a start.
pub async fn choose(wanted: &Wanted, settings: &Settings) -> Choice {
    if let Some(name) = wanted.flag {
        return Choice {
            name,
            why: "--backend".to_owned(),
        };
    }
    if let Some((var, name)) = wanted.env {
        return Choice {
            name,
            why: var.to_owned(),
        };
    }
    match AnyBackend::new(BackendName::Docker, settings)
        .availability()
        .await
    {
        Availability::Usable { .. } => Choice {
            name: BackendName::Docker,
            why: "the default: a Docker engine answers".to_owned(),
        },
        Availability::Unusable { reason, .. } => Choice {
            name: BackendName::Native,
            why: format!("no Docker engine here ({reason})"),
        },
    }
}

fn mismatch(backend: BackendName) -> BackendError {
    BackendError::Other(std::io::Error::other(format!(
        "{backend}: handed what another backend prepared"
    )))
}

/// Calls the same method on whichever backend `self` is.
macro_rules! each {
    ($self:ident, $b:ident => $body:expr) => {
        match $self {
            AnyBackend::Docker($b) => $body,
            AnyBackend::Native($b) => $body,
        }
    };
}

impl Backend for AnyBackend {
    type Prepared = AnyPrepared;
    type Agent = AnyAgent;

    fn name(&self) -> BackendName {
        each!(self, b => b.name())
    }

    async fn availability(&self) -> Availability {
        each!(self, b => b.availability().await)
    }

    async fn describe_runtime(&self, plan: &Plan) -> Result<String, BackendError> {
        each!(self, b => b.describe_runtime(plan).await)
    }

    fn prepare(&self, plan: &Plan) -> Result<AnyPrepared, BackendError> {
        Ok(match self {
            AnyBackend::Docker(b) => AnyPrepared::Docker(Box::new(b.prepare(plan)?)),
            AnyBackend::Native(b) => AnyPrepared::Native(Box::new(b.prepare(plan)?)),
        })
    }

    fn gate_paths(&self) -> crate::gate_config::GatePaths {
        each!(self, b => b.gate_paths())
    }

    async fn run_gates(
        &self,
        p: &AnyPrepared,
        gates: Gates,
        ready: &GatesReady,
        reporter: &dyn Reporter,
    ) -> Result<String, BackendError> {
        match (self, p) {
            (AnyBackend::Docker(b), AnyPrepared::Docker(p)) => {
                b.run_gates(p, gates, ready, reporter).await
            }
            (AnyBackend::Native(b), AnyPrepared::Native(p)) => {
                b.run_gates(p, gates, ready, reporter).await
            }
            _ => Err(mismatch(self.name())),
        }
    }

    async fn ready_agent(
        &self,
        p: &AnyPrepared,
        reporter: &dyn Reporter,
    ) -> Result<AnyAgent, BackendError> {
        match (self, p) {
            (AnyBackend::Docker(b), AnyPrepared::Docker(p)) => {
                Ok(AnyAgent::Docker(b.ready_agent(p, reporter).await?))
            }
            (AnyBackend::Native(b), AnyPrepared::Native(p)) => {
                Ok(AnyAgent::Native(b.ready_agent(p, reporter).await?))
            }
            _ => Err(mismatch(self.name())),
        }
    }

    async fn run_agent(
        &self,
        p: &AnyPrepared,
        agent: &AnyAgent,
        run: AgentRun<'_>,
        reporter: &dyn Reporter,
    ) -> Result<i32, BackendError> {
        match (self, p, agent) {
            (AnyBackend::Docker(b), AnyPrepared::Docker(p), AnyAgent::Docker(a)) => {
                b.run_agent(p, a, run, reporter).await
            }
            (AnyBackend::Native(b), AnyPrepared::Native(p), AnyAgent::Native(a)) => {
                b.run_agent(p, a, run, reporter).await
            }
            _ => Err(mismatch(self.name())),
        }
    }

    async fn rebuild(
        &self,
        plan: &Plan,
        change: &crate::capability::ImageChange,
        reporter: &dyn Reporter,
    ) -> Result<(), BackendError> {
        each!(self, b => b.rebuild(plan, change, reporter).await)
    }

    async fn stop_agent(&self, identity: &str, dir: &BottleDir) -> Result<bool, BackendError> {
        each!(self, b => b.stop_agent(identity, dir).await)
    }

    async fn teardown(
        &self,
        identity: &str,
        dir: &BottleDir,
        scope: Scope<'_>,
    ) -> Result<(), BackendError> {
        each!(self, b => b.teardown(identity, dir, scope).await)
    }

    async fn enumerate(&self, state_root: &Path) -> Result<BTreeMap<String, Found>, BackendError> {
        each!(self, b => b.enumerate(state_root).await)
    }

    fn attach_argv(&self, identity: &str, dir: &BottleDir) -> Result<Vec<String>, BackendError> {
        each!(self, b => b.attach_argv(identity, dir))
    }

    async fn leftovers(&self) -> Vec<String> {
        each!(self, b => b.leftovers().await)
    }

    async fn remove_leftovers(&self, leftovers: &[String]) {
        each!(self, b => b.remove_leftovers(leftovers).await)
    }
}
