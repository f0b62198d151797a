//! The Docker backend: an agent container with no network but loopback,
//! and a gate container that alone has a network. They share one directory
//! of Unix sockets. Everything goes through the Engine API (bollard), with
//! the API version negotiated (Debian's engine speaks 1.41).

pub mod build;
pub mod capability;
mod engine;
mod images;
pub mod inventory;
mod network;
mod provision;
mod runtime;
mod session;
mod spec;
mod teardown;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::RemoveContainerOptions;
use bottle_manifest::plan::{Plan, WorkspacePlan};
use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::state::BottleDir;
use crate::{
    AgentRun, Availability, Backend, BackendError, BackendName, Found, Gates, GatesReady, Reporter,
    Scope,
};
pub use engine::remove_image;
use engine::{create_container, exit_status, is_conflict, is_not_found, log_tail, start_gate};
pub use images::{INPUTS_LABEL, MANAGED_LABEL};
use images::{ImageKind, ImageSpec, SelfBinary};
use network::{create_network, create_volume, network_addresses, refused_addresses};
use runtime::resolve_runtime;

/// Label every resource of a bottle carries; `list` and `cleanup` find
/// resources by it, never by name alone.
pub const IDENTITY_LABEL: &str = "bot-bottle.identity";
/// Label naming the state directory of the bottle a resource belongs to.
pub const STATE_LABEL: &str = "bot-bottle.state";
/// Label naming the launcher (`PID:START`) that holds a resource.
pub const LAUNCHER_LABEL: &str = "bot-bottle.launcher";
/// Label naming a resource's part in its bottle (`agent`, `gate`, `egress`).
pub const ROLE_LABEL: &str = "bot-bottle.role";

/// Paths inside the containers.
const SOCKET_DIR: &str = "/run/bottle";
/// The agent's workspace.
const WORKSPACE: &str = "/workspace";
const GATE_CONFIG_DIR: &str = "/etc/bottle";
const GATE_AUDIT_LOG: &str = "/var/log/bottle/audit.jsonl";
/// The gate's writable directory for git mirrors.
const GATE_GIT_DIR: &str = "/var/lib/bottle/git";
/// The gate's supervise directory (requests, control socket).
const GATE_SUPERVISE_DIR: &str = "/var/lib/bottle/supervise";
const BINARY: &str = "/usr/local/bin/bottle";
/// Seconds an interrupted agent gets to exit before it is killed.
const STOP_GRACE_SECS: i32 = 3;

/// Settings of the Docker backend that do not come from the plan.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// How the agent image gets Claude Code.
    pub claude: crate::claude::Install,
    /// Directory for build locks (the state root).
    pub lock_dir: std::path::PathBuf,
    /// How long the shim waits for the gate's sockets.
    pub gate_timeout: Duration,
    /// A fixed name for the agent's container (`BOTTLE_CONTAINER`).
    pub container_name: Option<String>,
}

/// The Docker backend.
#[derive(Debug)]
pub struct DockerBackend {
    settings: DockerSettings,
    engine: OnceCell<Docker>,
}

/// What `prepare` resolved.
#[derive(Debug, Clone)]
pub struct DockerPrepared {
    pub plan: Plan,
    pub dir: BottleDir,
    pub agent_container: String,
    pub gate_container: String,
    /// The volume holding `/workspace`: a plain directory of the engine,
    /// not the container's (slow, copy-on-write) root filesystem.
    pub workspace_volume: String,
    /// The volume holding the agent's home.
    pub home_volume: String,
    /// The network the gate joins.
    pub gate_network: String,
    /// Whether `gate_network` is made for this bottle (and removed with it).
    pub own_network: bool,
    pub labels: HashMap<String, String>,
    /// The git gate's container, when the bottle has upstreams: the SSH
    /// keys and nothing else.
    pub git_container: String,
    pub gate_image: ImageSpec,
    /// The agent's image; its tag is what the agent container runs
    /// unless the bottle has its own.
    pub agent_image: ImageSpec,
}

/// What readying the agent's side resolved: the runtime (`None`: the
/// engine's default).
#[derive(Debug, Clone)]
pub struct DockerAgent {
    runtime: Option<String>,
}

impl DockerBackend {
    pub fn new(settings: DockerSettings) -> DockerBackend {
        DockerBackend {
            settings,
            engine: OnceCell::new(),
        }
    }

    /// The engine, connected once.
    async fn engine(&self) -> Result<&Docker, BackendError> {
        self.engine.get_or_try_init(connect).await
    }
}

/// Connects to the engine named by `DOCKER_HOST` (or the local socket) and
/// negotiates the API version.
pub async fn connect() -> Result<Docker, BackendError> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| BackendError::DockerUnavailable(e.to_string()))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| BackendError::DockerUnavailable(e.to_string()))
}

/// Where each gate process sees its files.
fn gate_paths() -> crate::gate_config::GatePaths {
    crate::gate_config::GatePaths::standard()
}

/// Where the engine is expected, for messages.
fn engine_address() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "/var/run/docker.sock".to_owned())
}

impl Backend for DockerBackend {
    type Prepared = DockerPrepared;
    type Agent = DockerAgent;

    fn name(&self) -> BackendName {
        BackendName::Docker
    }

    async fn availability(&self) -> Availability {
        let unusable = |e: String| Availability::Unusable {
            reason: format!("the engine does not answer at {} ({e})", engine_address()),
            fix: "start the Docker engine, or set DOCKER_HOST to its socket".to_owned(),
        };
        let docker = match self.engine().await {
            Ok(docker) => docker,
            Err(e) => return unusable(e.to_string()),
        };
        match docker.version().await {
            Ok(v) => Availability::Usable {
                detail: format!(
                    "docker engine {} (API {})",
                    v.version.unwrap_or_default(),
                    v.api_version.unwrap_or_default()
                ),
            },
            Err(e) => unusable(e.to_string()),
        }
    }

    async fn describe_runtime(&self, plan: &Plan) -> Result<String, BackendError> {
        runtime::describe_runtime(self.engine().await?, plan.runtime, &plan.images.base).await
    }

    fn prepare(&self, plan: &Plan) -> Result<DockerPrepared, BackendError> {
        let identity = &plan.identity;
        // The launcher's label lets `cleanup` from another state root (or
        // another user) tell a live bottle from an orphan.
        let labels = HashMap::from([
            (IDENTITY_LABEL.to_owned(), identity.clone()),
            ("bot-bottle.agent".to_owned(), plan.agent.clone()),
            (
                LAUNCHER_LABEL.to_owned(),
                crate::process::Launcher::current()
                    .map(|l| l.to_string())
                    .unwrap_or_default(),
            ),
            (STATE_LABEL.to_owned(), plan.state_dir.display().to_string()),
        ]);
        let (gate_network, own_network) = match &plan.gate_network {
            Some(name) => (name.clone(), false),
            None => (format!("{identity}-egress"), true),
        };
        let gate_image = ImageSpec::new(ImageKind::Gate, &plan.images.gate, &plan.images.base);
        let agent_image = if plan.images.agent_is_default {
            ImageSpec {
                claude: images::claude_layer(&self.settings.claude)?,
                ..ImageSpec::new(ImageKind::Agent, &plan.images.agent, &plan.images.base)
            }
        } else {
            // A person's own image gets the binaries layered on top.
            ImageSpec {
                claude: images::claude_layer(&self.settings.claude)?,
                ..ImageSpec::new(
                    ImageKind::Derived,
                    derived_tag(&plan.images.agent),
                    &plan.images.agent,
                )
            }
        };
        Ok(DockerPrepared {
            dir: BottleDir::new(&plan.state_dir),
            agent_container: self
                .settings
                .container_name
                .clone()
                .unwrap_or_else(|| format!("{identity}-agent")),
            workspace_volume: format!("{identity}-workspace"),
            home_volume: format!("{identity}-home"),
            gate_container: format!("{identity}-gate"),
            gate_network,
            own_network,
            labels,
            git_container: format!("{identity}-git"),
            gate_image,
            agent_image,
            plan: plan.clone(),
        })
    }

    fn gate_paths(&self) -> crate::gate_config::GatePaths {
        gate_paths()
    }

    async fn run_gates(
        &self,
        p: &DockerPrepared,
        gates: Gates,
        ready: &GatesReady,
        reporter: &dyn Reporter,
    ) -> Result<String, BackendError> {
        let docker = self.engine().await?;
        let binary = SelfBinary::current()?;
        let network = async {
            if p.own_network {
                create_network(docker, &p.gate_network, &p.labels).await?;
            }
            network_addresses(docker, &p.gate_network).await
        };
        let image = images::ensure(
            docker,
            &p.gate_image,
            &binary,
            &self.settings.lock_dir,
            reporter,
        );
        let ((subnets, gateways), ()) = tokio::try_join!(network, image)?;
        // The gate's image is there: what is left to its start is bounded.
        ready.mark();
        let Gates {
            egress: mut gate_config,
            git,
            secrets,
        } = gates;
        // The person's network's subnets are their services; a network
        // of the bottle's own holds nothing but the gate.
        if !p.own_network {
            gate_config.egress.trusted_subnets = subnets;
        }
        gate_config.egress.refused_addresses = refused_addresses(gateways);
        p.dir.write_json(&p.dir.gate_config(), &gate_config)?;
        if let Some(git) = &git {
            p.dir.write_json(&p.dir.git_gate_config(), git)?;
        }
        let git_gate = async {
            if git.is_some() {
                create_container(docker, &p.git_container, spec::git_container(p)).await?;
                start_gate(docker, &p.git_container, Vec::new()).await?;
            }
            Ok::<_, BackendError>(())
        };
        let egress_gate = async {
            create_container(docker, &p.gate_container, spec::gate_container(p)).await?;
            start_gate(docker, &p.gate_container, secrets).await
        };
        tokio::try_join!(egress_gate, git_gate)?;
        reporter.detail("gate started");
        let gone = async {
            if git.is_some() {
                (
                    exit_status(docker, &p.git_container).await,
                    &p.git_container,
                    "pushes and fetches",
                )
            } else {
                std::future::pending().await
            }
        };
        let (status, container, what) = tokio::select! {
            status = exit_status(docker, &p.gate_container) => (status, &p.gate_container, "requests"),
            ended = gone => ended,
        };
        Ok(format!(
            "the gate {container} stopped ({status}): the bottle has no way out there now; its {what} fail until the command ends{}",
            log_tail(docker, container).await
        ))
    }

    async fn ready_agent(
        &self,
        p: &DockerPrepared,
        reporter: &dyn Reporter,
    ) -> Result<DockerAgent, BackendError> {
        let docker = self.engine().await?;
        let binary = SelfBinary::current()?;
        let lock_dir = &self.settings.lock_dir;
        let image = async {
            let mut spec = p.agent_image.clone();
            if let images::ClaudeLayer::Image { tag, id } = &mut spec.claude {
                *id = Some(
                    images::ensure_claude(docker, tag, &self.settings.claude, lock_dir, reporter)
                        .await?,
                );
            }
            images::ensure(docker, &spec, &binary, lock_dir, reporter).await
        };
        let (runtime, ()) = tokio::try_join!(
            resolve_runtime(docker, p.plan.runtime, &p.plan.images.base),
            image
        )?;
        if let Some(own) = &p.plan.images.bottle {
            let image = capability::BottleImage::of(&p.plan, own, &[]);
            capability::build(docker, &image, lock_dir, reporter).await?;
        }
        if let Some(rt) = &runtime {
            reporter.step(&format!(
                "agent runtime: {rt}{}",
                if rt == "runsc" { " (gVisor)" } else { "" }
            ));
        }
        create_volume(docker, &p.workspace_volume, &p.labels, "workspace").await?;
        create_volume(docker, &p.home_volume, &p.labels, "home").await?;
        Ok(DockerAgent { runtime })
    }

    async fn run_agent(
        &self,
        p: &DockerPrepared,
        agent: &DockerAgent,
        run: AgentRun<'_>,
        reporter: &dyn Reporter,
    ) -> Result<i32, BackendError> {
        let docker = self.engine().await?;
        let image = run.own_image.map_or(&p.agent_image.tag, |own| &own.tag);
        if !run.first {
            // The container of the run before the capability block.
            remove_agent(docker, &p.agent_container).await?;
        }
        let spec = spec::agent_container(
            p,
            image,
            run.command,
            run.provisioned,
            agent.runtime.clone(),
            run.terminal,
            self.settings.gate_timeout,
        )?;
        create_container(docker, &p.agent_container, spec).await?;
        provision::provision(docker, &p.agent_container, &p.plan.provision).await?;
        if let Some(workspace) = p.plan.workspace.as_ref().filter(|_| run.first) {
            let started = Instant::now();
            let copied = copy_in(docker, &p.agent_container, workspace).await?;
            reporter.step(&crate::workspace::describe_copy(
                &copied,
                workspace,
                started.elapsed(),
            ));
        }
        run.gates_ready.wait().await;
        match run.terminal {
            crate::Terminal::Launcher => session::run(docker, &p.agent_container, run.timing).await,
            crate::Terminal::Detached => {
                session::run_detached(docker, &p.agent_container, run.timing).await
            }
        }
    }

    async fn rebuild(
        &self,
        plan: &Plan,
        change: &crate::capability::ImageChange,
        reporter: &dyn Reporter,
    ) -> Result<(), BackendError> {
        let image = capability::BottleImage::of(plan, &change.granted, &change.approved);
        // What is built, on record for the person.
        let dir = BottleDir::new(&plan.state_dir).root.join("image");
        let dockerfile = dir.join("Dockerfile");
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&dockerfile, image.dockerfile()))
            .map_err(|source| BackendError::Io {
                path: dockerfile.clone(),
                source,
            })?;
        reporter.step(&format!(
            "building {}'s own image {} (Dockerfile: {})",
            plan.identity,
            change.granted.tag,
            dockerfile.display()
        ));
        capability::build(
            self.engine().await?,
            &image,
            &self.settings.lock_dir,
            reporter,
        )
        .await
    }

    async fn stop_agent(&self, identity: &str, _dir: &BottleDir) -> Result<bool, BackendError> {
        capability::stop_agent(self.engine().await?, identity).await
    }

    async fn teardown(
        &self,
        identity: &str,
        _dir: &BottleDir,
        scope: Scope<'_>,
    ) -> Result<(), BackendError> {
        let docker = self.engine().await?;
        teardown::teardown(docker, identity, scope).await?;
        if scope.data && scope.launcher.is_none() {
            // `cleanup` and `rm`: the bottle's own image goes with it.
            let _ = engine::remove_image(docker, &crate::capability::bottle_tag(identity)).await;
        }
        Ok(())
    }

    async fn enumerate(&self, _state_root: &Path) -> Result<BTreeMap<String, Found>, BackendError> {
        inventory::by_identity(self.engine().await?).await
    }

    fn attach_argv(&self, identity: &str, _dir: &BottleDir) -> Result<Vec<String>, BackendError> {
        // The agent container's terminal; detaching (ctrl-p ctrl-q) leaves
        // the agent running, and signals stay with the terminal.
        Ok(vec![
            "docker".to_owned(),
            "attach".to_owned(),
            "--sig-proxy=false".to_owned(),
            self.settings
                .container_name
                .clone()
                .unwrap_or_else(|| format!("{identity}-agent")),
        ])
    }

    async fn leftovers(&self) -> Vec<String> {
        match self.engine().await {
            Ok(docker) => inventory::dangling_images(docker)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|id| format!("image {id}"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    async fn remove_leftovers(&self, leftovers: &[String]) {
        let Ok(docker) = self.engine().await else {
            return;
        };
        for id in leftovers.iter().filter_map(|l| l.strip_prefix("image ")) {
            let _ = engine::remove_image(docker, id).await;
        }
    }
}

/// Removes the stopped agent container (its volumes stay).
async fn remove_agent(docker: &Docker, container: &str) -> Result<(), BackendError> {
    match docker
        .remove_container(
            container,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
    {
        Err(e) if !is_not_found(&e) => Err(BackendError::docker(format!("remove {container}"), e)),
        _ => Ok(()),
    }
}

/// Streams a copy of the workspace into the (created, not started) agent
/// container, owned by the agent's user.
async fn copy_in(
    docker: &Docker,
    container: &str,
    workspace: &WorkspacePlan,
) -> Result<crate::workspace::Copied, BackendError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let plan = workspace.clone();
    let writer = tokio::task::spawn_blocking(move || crate::workspace::write_tar(&plan, tx));
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let options = bollard::query_parameters::UploadToContainerOptions {
        path: WORKSPACE.into(),
        ..Default::default()
    };
    let uploaded = docker
        .upload_to_container(container, Some(options), bollard::body_stream(stream))
        .await;
    let written = writer.await.map_err(std::io::Error::other)?;
    let copied = written.map_err(|source| BackendError::Io {
        path: workspace.source.clone(),
        source,
    })?;
    uploaded.map_err(|e| BackendError::docker("copy the workspace in", e))?;
    Ok(copied)
}

/// The tag of the image derived from a person's own `image`.
pub(super) fn derived_tag(image: &str) -> String {
    let name: String = image
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("bot-bottle/derived-{}:latest", name.trim_matches('-'))
}
