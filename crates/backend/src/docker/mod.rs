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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{RemoveContainerOptions, StopContainerOptions};
use bottle_gate::ca::{MintedCa, mint_ca};
use bottle_gate::config::GateConfig;
use bottle_manifest::plan::Plan;
use tokio::signal::unix::{SignalKind, signal};

use crate::state::{BottleDir, BottleState, Metadata};
use crate::{Backend, BackendError, Outcome, Reporter};
use bottle_manifest::plan::WorkspacePlan;
use bytes::Bytes;
pub use engine::remove_image;
use engine::{create_container, exit_status, is_conflict, is_not_found, log_tail, start_gate};
pub use images::{INPUTS_LABEL, MANAGED_LABEL};
use images::{ImageKind, ImageSpec, SelfBinary};
use network::{create_network, create_volume, network_addresses, refused_addresses};
pub use runtime::describe_runtime;
use runtime::resolve_runtime;
use teardown::spawn_guardian;
pub use teardown::{Scope, reap, teardown};

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
/// Where each gate process sees its files.
fn gate_paths() -> crate::gate_config::GatePaths {
    crate::gate_config::GatePaths {
        socket_dir: SOCKET_DIR.into(),
        audit_log: GATE_AUDIT_LOG.into(),
        egress_dir: GATE_CONFIG_DIR.into(),
        git_config_dir: GATE_CONFIG_DIR.into(),
        git_dir: GATE_GIT_DIR.into(),
        supervise_dir: GATE_SUPERVISE_DIR.into(),
    }
}

/// Settings of the Docker backend that do not come from the plan.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// `INSTALL_CLAUDE` build argument of the agent image (`auto`, `0`, `1`).
    pub install_claude: String,
    /// Directory for build locks (the state root).
    pub lock_dir: std::path::PathBuf,
    /// How long the shim waits for the gate's sockets.
    pub gate_timeout: Duration,
    /// A fixed name for the agent's container (`BOTTLE_CONTAINER`).
    pub container_name: Option<String>,
}

/// The Docker backend.
#[derive(Debug, Clone)]
pub struct DockerBackend {
    settings: DockerSettings,
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
    /// The egress gate's configuration.
    pub gate_config: GateConfig,
    /// The git gate's configuration, when the bottle has upstreams: a
    /// container of its own, with the SSH keys and nothing else.
    pub git_config: Option<GateConfig>,
    pub git_container: String,
    /// The bottle's CA, minted at prepare time; written at launch.
    pub ca: MintedCa,
    pub gate_image: ImageSpec,
    /// The agent's image; its tag is what the agent container runs
    /// unless the bottle has its own.
    pub agent_image: ImageSpec,
    /// The bottle's own image (approved image changes), built on
    /// `agent_image`.
    pub bottle_image: Option<ImageSpec>,
}

impl DockerBackend {
    pub fn new(settings: DockerSettings) -> DockerBackend {
        DockerBackend { settings }
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

impl Backend for DockerBackend {
    type Prepared = DockerPrepared;

    fn name(&self) -> &'static str {
        "docker"
    }

    async fn is_available(&self) -> bool {
        match connect().await {
            Ok(docker) => docker.ping().await.is_ok(),
            Err(_) => false,
        }
    }

    fn prepare(&self, plan: &Plan) -> Result<DockerPrepared, BackendError> {
        let identity = &plan.identity;
        if nix::unistd::getuid().as_raw() == bottle_manifest::plan::AGENT_UID {
            return Err(BackendError::AgentUidIsYours {
                uid: bottle_manifest::plan::AGENT_UID,
            });
        }
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
                build_args: vec![(
                    "INSTALL_CLAUDE".into(),
                    self.settings.install_claude.clone(),
                )],
                ..ImageSpec::new(ImageKind::Agent, &plan.images.agent, &plan.images.base)
            }
        } else {
            // A person's own image gets the binary layered on top.
            ImageSpec::new(
                ImageKind::Derived,
                derived_tag(&plan.images.agent),
                &plan.images.agent,
            )
        };
        let bottle_image = plan
            .images
            .bottle
            .as_ref()
            .map(|own| capability::bottle_image(plan, &agent_image.tag, own))
            .transpose()?;
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
            gate_config: crate::gate_config::egress(
                plan,
                &gate_paths(),
                plan.images.bottle.as_ref().map_or_else(
                    || plan.images.agent.clone(),
                    |own| capability::describe(own, &plan.images.agent),
                ),
            ),
            git_config: crate::gate_config::git(plan, &gate_paths()),
            git_container: format!("{identity}-git"),
            // A bottle keeps its CA for life: resume reads the one it made.
            ca: if BottleDir::new(&plan.state_dir)
                .gate_dir()
                .join("ca.key")
                .is_file()
            {
                BottleDir::new(&plan.state_dir).read_ca()?
            } else {
                mint_ca(identity).map_err(|e| BackendError::Ca(e.to_string()))?
            },
            gate_image,
            agent_image,
            bottle_image,
            plan: plan.clone(),
        })
    }

    async fn launch(
        &self,
        prepared: DockerPrepared,
        reporter: &dyn Reporter,
    ) -> Result<Outcome, BackendError> {
        // Signals first: an interrupt at any point below still tears down.
        let mut signals = Interrupts::new()?;
        let docker = connect().await?;
        prepared.dir.create()?;
        // A restart note no launcher took (its launcher ended first) is
        // stale: this run starts on the image its plan names.
        let _ = capability::take_restart(&prepared.dir);
        prepared
            .dir
            .write_ca(&prepared.ca, prepared.plan.egress.upstream_ca.as_deref())?;
        prepared.dir.write_git(&prepared.plan.git)?;
        spawn_guardian(&prepared.plan.identity, &prepared.dir.root)?;
        prepared.dir.write_json(
            &prepared.dir.metadata(),
            &Metadata::new(&prepared.plan, BottleState::Running),
        )?;

        let outcome = tokio::select! {
            result = self.run(&docker, &prepared, reporter) => result.map(Outcome::Exited),
            signal = signals.recv() => Ok(Outcome::Interrupted(signal)),
        };
        if let Ok(Outcome::Interrupted(_)) = outcome {
            reporter.step("interrupted: stopping the agent, then tearing the bottle down");
            // SIGTERM to the shim, which passes it to the command: a chance
            // to save its work before the container is removed.
            let options = StopContainerOptions {
                t: Some(STOP_GRACE_SECS),
                ..Default::default()
            };
            let _ = docker
                .stop_container(&prepared.agent_container, Some(options))
                .await;
        }
        let torn = Instant::now();
        // After a normal exit the containers are removed before returning
        // and the bottle's own network, an inert object whose removal is
        // slow, is removed by the guardian right after. Interrupts and
        // failures tear everything down before returning.
        let detach_network = prepared.own_network && matches!(outcome, Ok(Outcome::Exited(_)));
        let me = crate::process::Launcher::current()?.to_string();
        // An approved image change keeps the bottle, even under --rm.
        let remove = prepared.plan.remove_on_exit && !capability::is_preserved(&prepared.dir);
        let scope = Scope {
            networks: !detach_network,
            volumes: remove,
            launcher: Some(&me),
        };
        let teardown = teardown(&docker, &prepared.plan.identity, scope).await;
        reporter.detail(&format!("torn down in {} ms", torn.elapsed().as_millis()));
        let kept = if remove {
            prepared.dir.remove()
        } else {
            prepared.dir.write_json(
                &prepared.dir.metadata(),
                &Metadata::new(&prepared.plan, BottleState::Stopped),
            )
        };
        let outcome = outcome?;
        teardown?;
        kept?;
        Ok(outcome)
    }
}

impl DockerBackend {
    async fn run(
        &self,
        docker: &Docker,
        p: &DockerPrepared,
        reporter: &dyn Reporter,
    ) -> Result<i32, BackendError> {
        let started = Instant::now();
        let timing = |what: &str| {
            reporter.detail(&format!("{what} ({} ms)", started.elapsed().as_millis()));
        };
        let binary = SelfBinary::current()?;
        let lock_dir = &self.settings.lock_dir;
        // Two paths side by side: the gate's (image, network, container)
        // and the agent's (image, runtime, container). The shim holds the
        // command back until the gate's socket exists, for a bounded time:
        // so the agent starts only once the gate's image is there (a first
        // build can take minutes, its container start does not).
        let (gate_image_ready, mut gate_image_built) = tokio::sync::watch::channel(false);
        let gate_watch = async {
            let network = async {
                if p.own_network {
                    create_network(docker, &p.gate_network, &p.labels).await?;
                }
                network_addresses(docker, &p.gate_network).await
            };
            let image = images::ensure(docker, &p.gate_image, &binary, lock_dir, reporter);
            let ((subnets, gateways), ()) = tokio::try_join!(network, image)?;
            let _ = gate_image_ready.send(true);
            let mut gate_config = p.gate_config.clone();
            // The person's network's subnets are their services; a network
            // of the bottle's own holds nothing but the gate.
            if !p.own_network {
                gate_config.egress.trusted_subnets = subnets;
            }
            gate_config.egress.refused_addresses = refused_addresses(gateways);
            p.dir.write_json(&p.dir.gate_config(), &gate_config)?;
            if let Some(git) = &p.git_config {
                p.dir.write_json(&p.dir.git_gate_config(), git)?;
            }
            let secrets = crate::secrets::resolve(&p.plan)?;
            let git_gate = async {
                if p.git_config.is_some() {
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
            timing("gate started");
            let gone = async {
                if p.git_config.is_some() {
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
            reporter.step(&format!(
                "the gate {container} stopped ({status}): the bottle has no way out there now; its {what} fail until the command ends{}",
                log_tail(docker, container).await
            ));
            std::future::pending::<Result<i32, BackendError>>().await
        };
        let agent_run = async {
            let image = images::ensure(docker, &p.agent_image, &binary, lock_dir, reporter);
            let (runtime, ()) = tokio::try_join!(
                resolve_runtime(docker, p.plan.runtime, &p.plan.images.base),
                image
            )?;
            if let Some(own) = &p.bottle_image {
                images::ensure(docker, own, &binary, lock_dir, reporter).await?;
            }
            if let Some(rt) = &runtime {
                reporter.step(&format!(
                    "agent runtime: {rt}{}",
                    if rt == "runsc" { " (gVisor)" } else { "" }
                ));
            }
            create_volume(docker, &p.workspace_volume, &p.labels, "workspace").await?;
            create_volume(docker, &p.home_volume, &p.labels, "home").await?;
            let mut image = p
                .bottle_image
                .as_ref()
                .map_or(&p.agent_image.tag, |own| &own.tag)
                .clone();
            let mut command = p.plan.command.clone();
            let mut first = true;
            let provisioned = provision::write_files(&p.dir, &p.plan.provision)?;
            loop {
                let agent = spec::agent_container(
                    p,
                    &image,
                    &command,
                    &provisioned,
                    runtime.clone(),
                    session::is_interactive(),
                    self.settings.gate_timeout,
                )?;
                create_container(docker, &p.agent_container, agent).await?;
                provision::provision(docker, &p.agent_container, &p.plan.provision).await?;
                if let Some(workspace) = p.plan.workspace.as_ref().filter(|_| first) {
                    let started = Instant::now();
                    let copied = copy_in(docker, &p.agent_container, workspace).await?;
                    reporter.step(&format!(
                        "workspace: copied {} files ({:.1} MiB) from {} in {} ms{}",
                        copied.files,
                        copied.bytes as f64 / f64::from(1 << 20),
                        workspace.source.display(),
                        started.elapsed().as_millis(),
                        if copied.left_out > 0 {
                            format!("; left out {} that look like secrets", copied.left_out)
                        } else {
                            String::new()
                        }
                    ));
                }
                first = false;
                // The gate's path failing ends this select, so the wait is
                // never left hanging.
                let _ = gate_image_built.wait_for(|built| *built).await;
                let code = session::run(docker, &p.agent_container, &timing).await?;
                // An approved image change stopped the agent: come back on
                // the new image, same identity, same volumes, same gate.
                let Some(restart) = capability::take_restart(&p.dir)? else {
                    return Ok(code);
                };
                let own = capability::bottle_image(&p.plan, &p.agent_image.tag, &restart.image)?;
                reporter.step(&format!(
                    "capability block (request {}): {} comes back on {} with /workspace and home kept",
                    restart.request, p.plan.identity, own.tag
                ));
                remove_agent(docker, &p.agent_container).await?;
                images::ensure(docker, &own, &binary, lock_dir, reporter).await?;
                image = own.tag;
                command = p.plan.resume_command.clone();
            }
        };
        tokio::select! {
            code = agent_run => code,
            failed = gate_watch => failed,
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

/// SIGINT, SIGTERM and SIGHUP of the launcher, as one stream.
struct Interrupts {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn new() -> std::io::Result<Interrupts> {
        Ok(Interrupts {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.hup.recv() => libc::SIGHUP,
        }
    }
}
