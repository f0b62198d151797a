//! The Docker backend: an agent container with no network but loopback,
//! and a gate container that alone has a network. They share one directory
//! of Unix sockets. Everything goes through the Engine API (bollard), with
//! the API version negotiated (Debian's engine speaks 1.41).

mod images;
mod session;
mod spec;

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{
    InspectNetworkOptions, ListContainersOptions, ListNetworksOptions, RemoveContainerOptions,
};
use bottle_gate::config::{EgressConfig, GateConfig};
use bottle_manifest::manifest::Runtime;
use bottle_manifest::plan::Plan;
use futures_util::future::join_all;
use tokio::signal::unix::{SignalKind, signal};

use crate::state::{BottleDir, BottleState, Metadata};
use crate::{Backend, BackendError, Outcome, Reporter};
pub use images::{INPUTS_LABEL, MANAGED_LABEL};
use images::{ImageKind, ImageSpec, SelfBinary};

/// Label every resource of a bottle carries; `list` and `cleanup` find
/// resources by it, never by name alone.
pub const IDENTITY_LABEL: &str = "bot-bottle.identity";
/// Label naming a resource's part in its bottle (`agent`, `gate`, `egress`).
pub const ROLE_LABEL: &str = "bot-bottle.role";

/// Paths inside the containers.
const SOCKET_DIR: &str = "/run/bottle";
const GATE_CONFIG_DIR: &str = "/etc/bottle";
const GATE_AUDIT_LOG: &str = "/var/log/bottle/audit.jsonl";
const BINARY: &str = "/usr/local/bin/bottle";
/// The agent's uid and gid in the images bot-bottle builds.
const AGENT_UID: &str = "1000:1000";

/// Settings of the Docker backend that do not come from the plan.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// `INSTALL_CLAUDE` build argument of the agent image (`auto`, `0`, `1`).
    pub install_claude: String,
    /// Directory for build locks (the state root).
    pub lock_dir: std::path::PathBuf,
    /// How long the shim waits for the gate's sockets.
    pub gate_timeout: Duration,
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
    /// The network the gate joins.
    pub gate_network: String,
    /// Whether `gate_network` is made for this bottle (and removed with it).
    pub own_network: bool,
    pub labels: HashMap<String, String>,
    pub gate_config: GateConfig,
    pub images: Vec<ImageSpec>,
    pub agent_image: String,
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
        let labels = HashMap::from([
            (IDENTITY_LABEL.to_owned(), identity.clone()),
            ("bot-bottle.agent".to_owned(), plan.agent.clone()),
        ]);
        let (gate_network, own_network) = match &plan.gate_network {
            Some(name) => (name.clone(), false),
            None => (format!("{identity}-egress"), true),
        };
        let mut images = vec![ImageSpec {
            kind: ImageKind::Gate,
            tag: plan.images.gate.clone(),
            from: plan.images.base.clone(),
            build_args: Vec::new(),
        }];
        let agent_image = if plan.images.agent_is_default {
            images.push(ImageSpec {
                kind: ImageKind::Agent,
                tag: plan.images.agent.clone(),
                from: plan.images.base.clone(),
                build_args: vec![(
                    "INSTALL_CLAUDE".into(),
                    self.settings.install_claude.clone(),
                )],
            });
            plan.images.agent.clone()
        } else {
            // A person's own image gets the binary layered on top.
            let tag = derived_tag(&plan.images.agent);
            images.push(ImageSpec {
                kind: ImageKind::Derived,
                tag: tag.clone(),
                from: plan.images.agent.clone(),
                build_args: Vec::new(),
            });
            tag
        };
        let allow = plan.egress.allow.iter().map(|r| r.text.clone()).collect();
        let allow_private = plan
            .egress
            .allow_private
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        Ok(DockerPrepared {
            dir: BottleDir::new(&plan.state_dir),
            agent_container: format!("{identity}-agent"),
            gate_container: format!("{identity}-gate"),
            gate_network,
            own_network,
            labels,
            gate_config: GateConfig {
                identity: identity.clone(),
                socket_dir: SOCKET_DIR.into(),
                audit_log: GATE_AUDIT_LOG.into(),
                egress: EgressConfig {
                    allow,
                    allow_private,
                    trusted_subnets: Vec::new(),
                    refused_addresses: Vec::new(),
                },
            },
            images,
            agent_image,
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
        prepared.dir.write_json(
            &prepared.dir.metadata(),
            &Metadata::new(&prepared.plan, BottleState::Running),
        )?;

        let outcome = tokio::select! {
            result = self.run(&docker, &prepared, reporter) => result.map(Outcome::Exited),
            signal = signals.recv() => Ok(Outcome::Interrupted(signal)),
        };
        if let Outcome::Interrupted(_) = outcome.as_ref().unwrap_or(&Outcome::Exited(0)) {
            reporter.step("interrupted: tearing the bottle down");
        }
        let teardown = teardown(&docker, &prepared.plan.identity).await;
        let kept = if prepared.plan.remove_on_exit {
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
        let binary = SelfBinary::current()?;
        let runtime = async { resolve_runtime(docker, p.plan.runtime).await };
        let images = async {
            for spec in &p.images {
                images::ensure(docker, spec, &binary, &self.settings.lock_dir, reporter).await?;
            }
            Ok::<_, BackendError>(())
        };
        let (runtime, images) = tokio::join!(runtime, images);
        images?;
        let runtime = runtime?;
        if let Some(rt) = &runtime {
            reporter.detail(&format!("agent runtime: {rt}"));
        }

        let mut gate_config = p.gate_config.clone();
        if p.own_network {
            create_network(docker, &p.gate_network, &p.labels).await?;
        } else {
            let (subnets, gateways) = network_addresses(docker, &p.gate_network).await?;
            gate_config.egress.trusted_subnets = subnets;
            gate_config.egress.refused_addresses = gateways;
        }
        p.dir.write_json(&p.dir.gate_config(), &gate_config)?;

        let gate = spec::gate_container(p);
        let agent = spec::agent_container(
            p,
            runtime,
            session::is_interactive(),
            self.settings.gate_timeout,
        )?;
        let (gate_created, agent_created) = tokio::join!(
            async {
                create_container(docker, &p.gate_container, gate).await?;
                docker
                    .start_container(&p.gate_container, None)
                    .await
                    .map_err(|e| BackendError::GateFailed(e.to_string()))
            },
            create_container(docker, &p.agent_container, agent),
        );
        gate_created?;
        agent_created?;
        session::run(docker, &p.agent_container).await
    }
}

/// The tag of the image derived from a person's own `image`.
fn derived_tag(image: &str) -> String {
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

async fn resolve_runtime(docker: &Docker, wanted: Runtime) -> Result<Option<String>, BackendError> {
    if wanted == Runtime::Runc {
        return Ok(Some("runc".into()));
    }
    let info = docker
        .info()
        .await
        .map_err(|e| BackendError::docker("read engine info", e))?;
    let has_runsc = info.runtimes.is_some_and(|r| r.contains_key("runsc"));
    match (wanted, has_runsc) {
        (_, true) => Ok(Some("runsc".into())),
        (Runtime::Runsc, false) => Err(BackendError::RuntimeMissing),
        _ => Ok(None),
    }
}

async fn create_network(
    docker: &Docker,
    name: &str,
    labels: &HashMap<String, String>,
) -> Result<(), BackendError> {
    let mut labels = labels.clone();
    labels.insert(ROLE_LABEL.into(), "egress".into());
    docker
        .create_network(NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            internal: Some(false),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .map_err(|e| BackendError::docker(format!("create network {name}"), e))?;
    Ok(())
}

/// Subnets and gateways of a network the person named.
async fn network_addresses(
    docker: &Docker,
    name: &str,
) -> Result<(Vec<ipnet::IpNet>, Vec<std::net::IpAddr>), BackendError> {
    let network = match docker
        .inspect_network(name, None::<InspectNetworkOptions>)
        .await
    {
        Ok(n) => n,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            return Err(BackendError::NetworkMissing {
                name: name.to_owned(),
            });
        }
        Err(e) => return Err(BackendError::docker(format!("inspect network {name}"), e)),
    };
    let configs = network.ipam.and_then(|i| i.config).unwrap_or_default();
    let subnets = configs
        .iter()
        .filter_map(|c| c.subnet.as_deref()?.parse().ok())
        .collect();
    let gateways = configs
        .iter()
        .filter_map(|c| c.gateway.as_deref()?.parse().ok())
        .collect();
    Ok((subnets, gateways))
}

async fn create_container(
    docker: &Docker,
    name: &str,
    body: bollard::models::ContainerCreateBody,
) -> Result<(), BackendError> {
    let options = bollard::query_parameters::CreateContainerOptionsBuilder::new()
        .name(name)
        .build();
    docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| BackendError::docker(format!("create container {name}"), e))?;
    Ok(())
}

/// Removes every container and network labelled with `identity`, whether or
/// not this process recorded creating it (an interrupt can land between
/// the engine creating a container and the reply).
pub async fn teardown(docker: &Docker, identity: &str) -> Result<(), BackendError> {
    let filter = HashMap::from([(
        "label".to_owned(),
        vec![format!("{IDENTITY_LABEL}={identity}")],
    )]);
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filter.clone()),
            ..Default::default()
        }))
        .await
        .map_err(|e| BackendError::docker("list containers", e))?;
    let removals = containers
        .iter()
        .filter_map(|c| c.id.as_deref())
        .map(|id| async move {
            docker
                .remove_container(
                    id,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    }),
                )
                .await
        });
    let mut errors: Vec<String> = join_all(removals)
        .await
        .into_iter()
        .filter_map(|r| r.err().filter(|e| !is_not_found(e)).map(|e| e.to_string()))
        .collect();
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filter),
        }))
        .await
        .map_err(|e| BackendError::docker("list networks", e))?;
    for network in networks {
        if let Some(id) = network.id
            && let Err(e) = docker.remove_network(&id).await
            && !is_not_found(&e)
        {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(BackendError::docker(
            format!("tear down {identity} (run `bottle cleanup` to retry)"),
            errors.join("; "),
        ))
    }
}

fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
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
